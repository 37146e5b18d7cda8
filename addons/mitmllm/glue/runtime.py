"""Process housekeeping for a long-running proxy.

Python's full garbage collections scan every live object, and in a proxy that has loaded
mitmproxy, the SDK-sized dependencies and mitmllm that is a lot of objects: a full collection
paused every stream for 70-100 ms under load (measured by the bench's concurrency run). Objects
that exist once start-up is over live for the whole process, so they are moved out of the
collector's view (`gc.freeze`); collections then scan only what flows create.
"""

from __future__ import annotations

import gc


class Runtime:
    def running(self) -> None:
        gc.collect()
        gc.freeze()
