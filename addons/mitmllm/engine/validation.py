"""Stream validation in a worker process, so the proxy's event loop only frames events.

mitmproxy runs every addon on one event loop. Validating an event (parse its JSON, run the
dialect's state machine) costs a few microseconds, which at one event per upstream chunk is a
noticeable share of what mitmproxy itself spends on the chunk. With a worker, the tap only
frames each chunk (so the client still gets whole events at once) and queues the bytes; a batch
goes to the worker every few milliseconds over a socket pair, and the worker runs the very same
`StreamChecker`. The checker gives the same findings for any chunking, so validating the
batches is validating the stream. Results come back when the flow ends.

Wire protocol, both ways: a 4-byte big-endian length, then a pickled list of messages.
To the worker: ``("open", sid, format | None, request)``, ``("feed", sid, bytes)``,
``("close", sid, end_checks)``. From it: ``(sid, StreamResult)``.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import multiprocessing
import pickle
import socket
import struct
from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mitmllm.protocol import detect
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.stream import StreamChecker

logger = logging.getLogger("mitmllm.validation")

_HEADER = struct.Struct(">I")
FLUSH_SECONDS = 0.005  # how long bytes may wait before they are sent to the worker
FLUSH_BYTES = 256 * 1024  # send at once when this much is queued


@dataclass
class StreamResult:
    """What validating one stream found, in a form that crosses the process boundary."""

    findings: list[dict[str, Any]] = field(default_factory=list)
    suppressed: dict[str, int] = field(default_factory=dict)
    events: int = 0
    format: str | None = None
    model: str | None = None
    finish: str | None = None
    error: str | None = None
    complete: bool = False
    usage: dict[str, int] = field(default_factory=dict)  # normalized (Dialect.usage)

    @classmethod
    def of(cls, checker: StreamChecker) -> StreamResult:
        v = checker.validator
        return cls(
            findings=checker.findings.to_list(),
            suppressed=dict(checker.findings.suppressed),
            events=checker.events,
            format=checker.dialect.name if checker.dialect else None,
            model=v.model if v else None,
            finish=v.finish if v else None,
            error=v.error if v else None,
            complete=bool(v and v.complete),
            usage=checker.dialect.usage(v.usage) if v and checker.dialect else {},
        )


# --- the worker process --------------------------------------------------------------------


def serve(sock: socket.socket) -> None:
    """The worker's main loop: validate streams until the proxy closes the socket."""
    checkers: dict[int, StreamChecker] = {}
    failed: dict[int, str] = {}
    reader = sock.makefile("rb")
    while True:
        header = reader.read(_HEADER.size)
        if len(header) < _HEADER.size:
            return
        (size,) = _HEADER.unpack(header)
        batch = pickle.loads(reader.read(size))
        results = []
        for message in batch:
            kind, sid = message[0], message[1]
            try:
                if kind == "open":
                    dialect = detect.by_name(message[2])
                    checkers[sid] = StreamChecker(dialect, request=message[3], autodetect=True)
                elif kind == "feed":
                    if sid not in failed:
                        checkers[sid].feed(message[2])
                elif kind == "close":
                    checker = checkers.pop(sid)
                    if sid in failed:
                        checker.findings.add("TAP-1", failed.pop(sid))
                    elif message[2]:  # run the end-of-stream checks
                        checker.close()
                    results.append((sid, StreamResult.of(checker)))
            except Exception as e:  # one bad stream must not stop the others
                failed[sid] = f"internal error {type(e).__name__}: {e}"[:200]
                if kind == "close":
                    found = Findings()
                    found.add("TAP-1", failed.pop(sid))
                    results.append((sid, StreamResult(findings=found.to_list())))
        if results:
            payload = pickle.dumps(results, protocol=pickle.HIGHEST_PROTOCOL)
            sock.sendall(_HEADER.pack(len(payload)) + payload)


# --- the proxy side ------------------------------------------------------------------------


class WorkerGone(RuntimeError):
    """The worker process exited; streams it held cannot be validated."""


class ValidationWorker:
    """Runs `serve` in a child process and talks to it without blocking the event loop."""

    def __init__(self) -> None:
        self._process: multiprocessing.process.BaseProcess | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._queue: list[tuple[Any, ...]] = []
        self._queued_bytes = 0
        self._flush_handle: asyncio.TimerHandle | None = None
        self._pending: dict[int, asyncio.Future[StreamResult]] = {}
        self._ids = itertools.count(1)
        self.alive = False
        self.started = asyncio.Event()  # set once the process runs and is connected

    async def start(self) -> None:
        parent, child = socket.socketpair()
        ctx = multiprocessing.get_context("spawn")
        self._process = ctx.Process(
            target=serve, args=(child,), name="mitmllm-validation", daemon=True
        )
        self._process.start()
        child.close()
        reader, self._writer = await asyncio.open_connection(sock=parent)
        self._reader_task = asyncio.get_running_loop().create_task(self._read(reader))
        self.alive = True
        self.started.set()
        logger.info("mitmllm: validation worker started (pid %s)", self._process.pid)

    def stop(self) -> None:
        self.alive = False
        if self._flush_handle is not None:
            self._flush_handle.cancel()
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
        if self._process is not None:
            self._process.join(timeout=1)
            if self._process.is_alive():
                self._process.kill()
        self._fail_pending("the validation worker was stopped")

    # --- streams ---

    def open(self, fmt: str | None, request: Any) -> int:
        sid = next(self._ids)
        self._send(("open", sid, fmt, request), 0)
        return sid

    def feed(self, sid: int, data: bytes) -> None:
        if data:
            self._send(("feed", sid, data), len(data))

    def close(self, sid: int, end_checks: bool = True) -> asyncio.Future[StreamResult]:
        """The stream ended; its result arrives in the returned future. Without `end_checks`
        the end-of-stream rules (truncation) are not run: the client ended it, not the upstream."""
        future: asyncio.Future[StreamResult] = asyncio.get_running_loop().create_future()
        if not self.alive:
            future.set_exception(WorkerGone("the validation worker is not running"))
            return future
        self._pending[sid] = future
        self._send(("close", sid, end_checks), 0)
        self._flush()
        return future

    # --- transport ---

    def _send(self, message: tuple[Any, ...], size: int) -> None:
        if not self.alive:
            return
        self._queue.append(message)
        self._queued_bytes += size
        if self._queued_bytes >= FLUSH_BYTES:
            self._flush()
        elif self._flush_handle is None:
            self._flush_handle = asyncio.get_running_loop().call_later(FLUSH_SECONDS, self._flush)

    def _flush(self) -> None:
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._queue or self._writer is None:
            return
        payload = pickle.dumps(self._queue, protocol=pickle.HIGHEST_PROTOCOL)
        self._queue, self._queued_bytes = [], 0
        self._writer.write(_HEADER.pack(len(payload)) + payload)  # buffered: never blocks

    async def _read(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                (size,) = _HEADER.unpack(await reader.readexactly(_HEADER.size))
                for sid, result in pickle.loads(await reader.readexactly(size)):
                    future = self._pending.pop(sid, None)
                    if future is not None and not future.done():
                        future.set_result(result)
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            if self.alive:
                logger.error("mitmllm: the validation worker exited; validating in the proxy")
        finally:
            self.alive = False
            self._fail_pending("the validation worker exited")

    def _fail_pending(self, why: str) -> None:
        pending, self._pending = self._pending, {}
        for future in pending.values():
            if not future.done():
                future.set_exception(WorkerGone(why))
                with contextlib.suppress(Exception):
                    future.exception()  # retrieved: no "never retrieved" warning
