"""``python -m mitmllm``: the ``mitmllm`` command (see `mitmllm.cli`)."""

import sys

from mitmllm.cli import main

sys.exit(main())
