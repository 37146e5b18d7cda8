"""The mitmproxy script that ships with the package: ``mitmdump -s "$(mitmllm script)"``.

`mitmllm_addon.py` in this folder is loaded by mitmproxy as a script, never imported; the folder
holds nothing else, because mitmproxy puts a script's folder on ``sys.path`` while it loads it.
"""

from pathlib import Path

#: The script's path, for ``mitmdump -s`` / ``mitmweb -s``.
SCRIPT = Path(__file__).with_name("mitmllm_addon.py")
