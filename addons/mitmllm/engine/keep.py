"""What a flow keeps of a stream that may be long: bounded, and saying when it was cut.

A tap sees every byte of a stream, but a stream can run for hours; keeping all of it for mitmweb,
saved flows and fixtures would make the proxy's memory grow with it. `KeptBody` keeps the whole
body up to `limit` bytes. Beyond that it keeps the first and the last half of the limit (the
start shows how the answer began, the end how it finished) with a marker between, an SSE comment
saying how many bytes were left out, so that what is kept still reads as a stream. It cuts
between the pieces it is given (the taps give whole events), or inside a piece at an event
boundary, and inside an event only when one event is larger than half the limit.

With a spill file, a body that outgrows the limit goes to that file whole: what was held until
then, and every byte after it as it passes. Nothing is lost, and memory stays bounded all the
same; bodies within the limit never touch the disk.

Validation never looks at what is kept here: findings come from the whole stream.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Callable
from typing import BinaryIO

from mitmllm.engine.config import parse_size

# The end of an SSE block: a line end, then a blank line (see `mitmllm.protocol.sse`).
_BLANK_LINE = re.compile(rb"(?>\r\n|\r|\n)(?>\r\n|\r|\n)")

#: The option that sets the limit, its default (`AUTO`), and the limit that stands for.
KEEP_OPTION = "mitmllm_keep_body"
AUTO = "auto"
DEFAULT_LIMIT = 8 * 1024 * 1024


def is_auto(text: str) -> bool:
    """Does the ``mitmllm_keep_body`` option leave it to mitmllm whether a flow keeps its
    stream (`DEFAULT_LIMIT` of it when something reads it, see the inspector)?"""
    return text.strip().lower() == AUTO


def limit_of(text: str) -> int | None:
    """The ``mitmllm_keep_body`` option: a size such as ``8MiB``, ``all`` (no limit), or
    ``auto`` (`DEFAULT_LIMIT`)."""
    if text.strip().lower() == "all":
        return None
    if is_auto(text):
        return DEFAULT_LIMIT
    size = parse_size(text)
    if size < 1024:
        raise ValueError(f"{text!r} is too small to show a stream; use at least 1KiB")
    return size


def marker(cut: int, option: str) -> bytes:
    """The comment that stands where bytes were left out (valid SSE, ignored by clients)."""
    return b": mitmllm: %d bytes of the stream were not kept here (%s)\n\n" % (
        cut,
        option.encode(),
    )


class KeptBody:
    """Bytes appended piece by piece, kept up to `limit` (None: all; 0: none, only counted). See
    the module docstring."""

    def __init__(
        self,
        limit: int | None,
        *,
        spill: Callable[[], BinaryIO] | None = None,
        option: str = "limit",
    ) -> None:
        if limit is not None and limit < 2 and limit != 0:
            raise ValueError(f"a kept body needs a limit of at least 2 bytes, got {limit}")
        self.limit = limit
        self._open_spill = spill  # opens the file a body over the limit goes to
        self.spill: BinaryIO | None = None
        self.spill_name: str | None = None  # the file's name, once there is one
        self.spill_error: str | None = None
        self.option = option  # named in the marker
        self.total = 0  # bytes appended
        self.over = False  # the limit was reached: from here on, what is kept is cut
        self._parts: list[bytes] = []  # everything, while it fits
        self._size = 0
        # Once over the limit: the first bytes, then the last (views into `_value` once it is
        # built, so that what is kept is held once).
        self._head: bytes | memoryview | None = None
        self._tail: deque[bytes | memoryview] = deque()
        self._tail_size = 0
        self._value: bytes | None = None

    @property
    def cut(self) -> int:
        """Bytes appended but not kept."""
        if self._head is None:
            return 0
        return self.total - len(self._head) - self._tail_size

    def append(self, piece: bytes) -> None:
        if not piece:
            return
        self.total += len(piece)
        if self.limit == 0:  # nothing kept: nothing reads it (see `Inspector`)
            return
        self._value = None
        if self.spill is not None:
            self._write(piece)
        if self._head is None:
            if self.limit is None or self._size + len(piece) <= self.limit:
                self._parts.append(piece)
                self._size += len(piece)
                return
            self._split()
            if self.spill is not None:
                self._write(piece)  # the piece that went over the limit
        self._tail.append(piece)
        self._tail_size += len(piece)
        self._trim()

    def extend(self, pieces: list[bytes], size: int) -> None:
        """`append` each of `pieces` (`size` bytes together, none empty): in one step while
        they fit, so that a tap that records a batch at once keeps what one that records
        piece by piece keeps (the cut points depend on the pieces)."""
        if self.limit == 0:  # nothing kept
            self.total += size
            return
        if self._head is None and (self.limit is None or self._size + size <= self.limit):
            self._value = None
            self._parts += pieces
            self._size += size
            self.total += size
            return
        for piece in pieces:
            self.append(piece)

    def _split(self) -> None:
        """The limit is reached: the pieces so far become the head and the start of the tail."""
        assert self.limit is not None
        self.over = True
        if self._open_spill is not None:
            try:
                self.spill = self._open_spill()
                self.spill_name = str(getattr(self.spill, "name", "") or "") or None
            except OSError as e:
                self.spill_error = f"{type(e).__name__}: {e}"
            for p in self._parts:
                self._write(p)
        half = self.limit // 2
        head: list[bytes] = []
        size = 0
        parts = self._parts
        i = 0
        while i < len(parts) and size + len(parts[i]) <= half:
            head.append(parts[i])
            size += len(parts[i])
            i += 1
        if not head and parts:  # the first piece alone is larger than half: its start
            head.append(parts[0][:half])
            self._tail.append(parts[0][half:])
            self._tail_size += len(parts[0]) - half
            i = 1
        self._head = b"".join(head)
        for p in parts[i:]:
            self._tail.append(p)
            self._tail_size += len(p)
        self._parts = []
        self._size = 0

    def _write(self, piece: bytes) -> None:
        assert self.spill is not None
        try:
            self.spill.write(piece)
        except OSError as e:  # a full disk: the stream goes on, the file says where it stopped
            self.spill_error = f"{type(e).__name__}: {e}"
            self.spill.close()
            self.spill = None

    def _trim(self) -> None:
        """Keep the tail within its room: whole pieces go from its start; the piece that
        straddles the cut keeps its end from an event boundary inside it, or, one event larger
        than half the room, its last bytes (a small event goes whole)."""
        assert self.limit is not None
        room = self.limit - self.limit // 2
        tail = self._tail
        while self._tail_size > room:
            first = tail.popleft()
            self._tail_size -= len(first)
            if self._tail_size >= room:
                continue
            start = len(first) - (room - self._tail_size)
            m = _BLANK_LINE.search(first, start)
            if m is not None and m.end() < len(first):  # an event boundary inside the piece
                keep = first[m.end() :]
            elif 2 * len(first) > room:  # a big event (or the end of one): its end
                keep = first[start:]
            else:  # a small event that does not fit: left out whole
                keep = b""
            if keep:
                tail.appendleft(keep)
                self._tail_size += len(keep)

    @property
    def value(self) -> bytes:
        """What is kept: everything, or the start, the marker and the end."""
        if self._value is None:
            if self._head is None:
                self._value = b"".join(self._parts)
                self._parts = [self._value] if self._value else []
            else:
                head = self._head
                glue = b"" if bytes(head[-1:]) in (b"\n", b"\r") else b"\n\n"
                # One join: what is kept is held twice for a moment, never three times.
                value = b"".join([head, glue, marker(self.cut, self.option), *self._tail])
                view = memoryview(value)
                self._head = view[: len(head)]
                self._tail = deque([view[len(value) - self._tail_size :]])
                self._value = value
        return self._value

    def close(self) -> None:
        if self.spill is not None:
            self.spill.close()
            self.spill = None
