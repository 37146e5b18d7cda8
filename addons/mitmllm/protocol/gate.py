"""The commit gate: per event, hold it, commit the attempt, or fail it and say why (sans-I/O).

Theory of operation
-------------------
A fail-over attempt may still be abandoned as long as the client has seen nothing of it. So the
response (its headers and its lifecycle events: ``message_start``, pings, empty block starts,
``response.created``, role-only chunks) is held back until the first event that carries content,
in the dialect's own judgement (`Dialect.is_content`). That event commits the attempt: what was
held goes to the client, and everything after it passes.

Before commit, an attempt fails when

* an event is an in-band error (`Dialect.error_of`): outcome ``inband_error``;
* a finding that breaks the client is reported on what the client would get, i.e. after the
  repairs (`mitmllm.protocol.repair`) had their chance: outcome ``broken_stream``. Which rules
  break a client follows from the registry (`Rule.fails`: errors of the stream's rules whose
  effect is that a client raises, loses or misreads the answer); a route can name its own list;
* the stream ends with no content event: outcome ``empty``.

A failed gate stays failed: nothing of the attempt is ever released, so after a failure the client
sees neither a success terminator nor a second ``message_start`` from it. After commit the gate
passes every event but one that starts the stream over (a rule marked `restarts`: a second
``message_start`` or ``response.created``, as after a gateway's retry): that fails it with outcome
``restarted``, and the event is held back, so the client never sees two answers in one stream.
Ending the client's stream with the format's terminal error event then, as after any other
failure after commit (a stall, a cut), is the caller's.

`Gate.push` takes each event the client would get, in order, after it was checked (so its
findings are in); `Gate.take` returns the bytes that may go out now; `Gate.close` ends it. The
relay uses one per attempt, the tap one per flow (to record what a relay would have decided).
"""

from __future__ import annotations

from collections.abc import Collection
from enum import StrEnum
from typing import Any

from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.payload import NO_DATA
from mitmllm.protocol.payload import SENTINEL
from mitmllm.protocol.payload import is_json
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.sse import Event

#: The rules whose findings fail an attempt before commit, unless a route names its own.
DEFAULT_FAILS: frozenset[str] = frozenset(r.id for r in RULES.values() if r.fails)
#: The rules that say a stream starts over: after commit they end it (see the module docstring).
RESTARTS: frozenset[str] = frozenset(r.id for r in RULES.values() if r.restarts)
#: The "stream failed" rules: their event is an in-band error, which fails the attempt as one.
FAILED = frozenset({"ANT-20", "OAI-16", "RSP-12", "GEM-9"})


class Verdict(StrEnum):
    HOLD = "hold"  # not committed yet: the event is held back
    COMMIT = "commit"  # this event commits the attempt: what was held goes out, with it
    PASS = "pass"  # committed before: the event goes out
    FAIL = "fail"  # the attempt failed before commit: nothing of it ever goes out


class Gate:
    """The commit decision for one attempt. See the module docstring."""

    def __init__(
        self,
        dialect: Dialect | None,
        findings: Findings,
        *,
        fails: Collection[str] | None = None,
        collect: bool = True,
    ) -> None:
        self.dialect = dialect
        self.collect = collect  # keep the bytes for `take` (False: only decide, as the tap does)
        self.findings = findings  # of what the client would get
        self.fails = DEFAULT_FAILS if fails is None else frozenset(fails)
        self.verdict = Verdict.HOLD
        self.outcome: str | None = None  # inband_error | broken_stream | empty, once failed
        self.reason: str | None = None  # what failed it, for humans
        self.rule: str | None = None  # the rule that failed it (broken_stream)
        self.commit_event: int | None = None  # the client's event number that committed
        self.events = 0  # events pushed
        self.progress = 0  # events that carry data and are not heartbeats (for idle timers)
        self._data = 0  # events with data other than the sentinel
        self._sentinels = 0
        self._seen = 0  # findings already judged
        self.failed_after_commit = False  # the failure came after commit (outcome restarted)
        self._out: list[bytes] = []  # held back, or waiting for `take`

    @property
    def committed(self) -> bool:
        return self.verdict is Verdict.COMMIT or self.verdict is Verdict.PASS

    @property
    def failed(self) -> bool:
        return self.verdict is Verdict.FAIL

    def push(self, ev: Event, payload: Any) -> Verdict:
        """Judge one event of what the client would get (checked already)."""
        self.events += 1
        dialect = self.dialect
        if payload is not NO_DATA and not (
            dialect is not None and dialect.is_heartbeat(ev, payload)
        ):
            self.progress += 1
        if payload is SENTINEL:
            self._sentinels += 1
        elif payload is not NO_DATA:
            self._data += 1  # JSON, or data that does not parse
        if self.verdict is Verdict.FAIL:
            return self.verdict
        if self.committed:
            if self._restarted():
                return self.verdict
            self.verdict = Verdict.PASS
            if self.collect:
                self._out.append(ev.raw)
            return self.verdict
        if self._broken(ev, payload):
            return self.verdict
        if self.collect:
            self._out.append(ev.raw)
        dialect = self.dialect
        content = dialect.is_content(ev, payload) if dialect is not None else is_json(payload)
        if content:
            self.verdict = Verdict.COMMIT
            self.commit_event = ev.index
        return self.verdict

    def passed(self, raw: bytes, events: int) -> None:
        """`events` content events (`raw`, their bytes) after commit, judged by the caller
        as `push` would judge them: data, not heartbeats (steady deltas: see
        `mitmllm.protocol.steady`)."""
        if not self.committed:
            raise ValueError("only a committed gate passes events unseen")
        self.events += events
        self.progress += events
        self._data += events
        self.verdict = Verdict.PASS
        if self.collect:
            self._out.append(raw)

    def take(self) -> bytes:
        """The bytes that may go to the client now: nothing while holding or after failing
        before commit; after a failure after commit, what passed before the failing event."""
        if not self._out or not (self.committed or self.failed_after_commit):
            return b""
        out = self._out[0] if len(self._out) == 1 else b"".join(self._out)
        self._out.clear()
        return out

    def close(self) -> Verdict:
        """The upstream's stream ended (every event pushed, its end-of-stream rules checked)."""
        if self.verdict is Verdict.HOLD and not self._broken(None, None):
            self._fail("empty", self._empty_reason())
        return self.verdict

    def _broken(self, ev: Event | None, payload: Any) -> bool:
        """Fail on an in-band error, or on a new finding that breaks the client (an empty
        stream's findings only say it is empty)."""
        items = self.findings.items
        found = items[self._seen :]
        self._seen = len(items)
        if ev is not None and self.dialect is not None and is_json(payload):
            err = self.dialect.error_of(payload)
            if err is not None:
                self._fail("inband_error", err)
                return True
        for f in found:
            if f.severity is Severity.ERROR and f.rule in self.fails and f.rule not in FAILED:
                if not self._data:
                    self._fail("empty", self._empty_reason())
                else:
                    self.rule = f.rule
                    self._fail("broken_stream", f"{f.rule}: {f.message}")
                return True
        return False

    def _restarted(self) -> bool:
        """After commit: fail on a new finding that says the stream starts over."""
        items = self.findings.items
        found = items[self._seen :]
        self._seen = len(items)
        for f in found:
            if f.severity is Severity.ERROR and f.rule in RESTARTS:
                self.rule = f.rule
                self._fail("restarted", f"{f.rule}: {f.message}")
                return True
        return False

    def _fail(self, outcome: str, reason: str) -> None:
        self.failed_after_commit = self.committed
        self.verdict = Verdict.FAIL
        self.outcome = outcome
        self.reason = reason[:300]
        if not self.failed_after_commit:
            self._out.clear()  # held back, and now never sent

    def _empty_reason(self) -> str:
        if self._sentinels and not self._data:
            return "stream carried only the [DONE] sentinel"
        if self.events:
            return f"stream ended after {self.events} block(s) without content"
        return "stream ended without any event"
