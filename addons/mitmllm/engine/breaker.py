"""Circuit breakers for the fail-over relay: which upstreams to try, and in what order (sans-I/O).

Theory of operation
-------------------
The relay sends a routed request through a chain of upstreams. After each attempt it classifies
the outcome (`classify`) into a `Kind`, which answers two questions: try the next upstream
(`Kind.retry`)? count against this upstream's breaker (`Kind.counts`)? It then reports the kind
with `Breakers.record` (or the whole attempt with `record_attempt`). Before the first attempt,
`Breakers.order` drops the upstreams whose breaker is open, so a broken upstream costs a request
nothing but a skipped entry.

One `Breaker` per upstream, three states::

    state      signal                                  next       effect
    ---------  --------------------------------------  ---------  ------------------------------
    closed     success                                 closed     failures = 0
    closed     failure, failures < threshold           closed     failures += 1
    closed     failure, failures reach threshold       open       trip: window(level), level += 1
    closed     failure with retry-after                open       until now + retry-after
    closed     retry-after (cooldown)                  open       until now + retry-after
    open       window over (seen on any call)          half_open  one trial may go
    open       success                                 closed     level = 0
    open       failure of an admitted attempt          open       re-trip: longer window
    open       ... with retry-after                    open       until now + retry-after
    open       failure of an attempt begun earlier     open       last_error only
    open       retry-after beyond the window           open       window ends later
    half_open  admit                                   half_open  the trial is claimed
    half_open  success                                 closed     level = 0
    half_open  failure of the trial                    open       re-trip: longer window
    half_open  ... with retry-after                    open       until now + retry-after
    half_open  failure of an attempt begun earlier     half_open  last_error only
    half_open  retry-after (cooldown)                  open       until now + retry-after
    any        client error (4xx), cancellation        same       the claim is released

The window doubles with every trip since the last success: ``open_for * 2**level``, capped at
`max_open_for`. Success anywhere closes the breaker and resets the level.

An attempt is "admitted" when the breaker let it through while not closed: the half-open trial,
or the forced attempt of the last-upstream rule. Only those failures re-trip an open breaker.
Requests that were already in flight when it opened (ten parallel requests hit a dead upstream
at once) fail afterwards, and counting each as a re-trip would push the window to its cap at
the first outage. A claim that is never reported (the relay got its answer from an earlier
upstream) lapses after `trial_lease` seconds, so a half-open breaker cannot stay stuck.

A retry-after (429/503/529) opens the breaker until the upstream said to come back, capped at
`max_open_for` so a bogus header cannot disable an upstream for hours. It is not a trip: the
upstream told us when it recovers, so the window is not lengthened and the level stays. The
attempt that carried it is still recorded as a failure in its own right. Whenever a failure
opens or re-opens the breaker (the one that reaches the threshold, a failed trial, a failed
forced attempt), its retry-after is the window, however long the trip's would have been: the
latest word from the upstream wins. A failure of an attempt begun earlier only lengthens an
open window to its retry-after, never shortens it.

`Breakers.order` keeps at least one upstream: when every breaker of the chain is open, the
upstream whose window ends first is tried anyway (ties go to the earlier in the chain), since it
is the likeliest to have recovered and a real attempt beats a synthesised error.

Nothing here sleeps, logs or does I/O: the clock is injected and state changes are queued as
`Transition` records for the caller to log (`Breakers.drain`).
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable
from collections.abc import Iterable
from collections.abc import Mapping
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from enum import StrEnum
from typing import Any

#: 4xx statuses that mean "not now" rather than "not this request".
RETRYABLE_4XX = frozenset({408, 429})
#: How long an admitted attempt holds its claim on a breaker that is not closed.
TRIAL_LEASE = 60.0
#: Transitions kept for `drain`; older ones are dropped if nobody collects them.
MAX_PENDING = 1000
# 2**64 windows are far past any cap, and keep the float arithmetic finite.
_MAX_LEVEL = 64


class Kind(StrEnum):
    """What one attempt's outcome means for the chain and for the upstream's breaker."""

    OK = "ok"  # 2xx, served in full
    FAILED = "failed"  # the upstream failed before commit: try the next one
    BROKEN = "broken"  # the upstream failed after commit: the client saw part of the answer
    REJECTED = "rejected"  # 4xx other than 408/429: the request's fault, returned as is
    CANCELLED = "cancelled"  # the client went away: stop the chain

    @property
    def retry(self) -> bool:
        """Should the relay try the next upstream of the chain?"""
        return self is Kind.FAILED

    @property
    def counts(self) -> bool:
        """Does this outcome count as a failure of the upstream?"""
        return self is Kind.FAILED or self is Kind.BROKEN


class Cause(StrEnum):
    """Why an attempt failed without (or despite) an HTTP status: the relay's `error` vocabulary."""

    CONNECT = "connect_error"  # refused, reset, DNS or TLS failure
    CONNECT_TIMEOUT = "connect_timeout"
    HEADER_TIMEOUT = "header_timeout"  # connected, but no response head in time
    FIRST_EVENT_TIMEOUT = "first_event_timeout"
    IDLE_TIMEOUT = "idle_timeout"  # no parsed event for too long (pings do not count)
    TOTAL_TIMEOUT = "total_timeout"
    READ_ERROR = "read_error"  # the connection failed or closed before the end of the response
    ERROR_200 = "error_in_200"  # a 200 whose body is an error object (HTTP-5)
    INBAND_ERROR = "inband_error"  # an error event in the stream (ANT-20, OAI-16, RSP-12, GEM-9)
    EMPTY = "empty"  # the stream ended without content (SSE-15)
    BROKEN_STREAM = "broken_stream"  # a finding no repair mends breaks the client (before commit)
    # the answer cannot be written in the client's format (XLT-4, before commit); a request
    # that cannot be written in the upstream's is not recorded at all (no status)
    UNTRANSLATABLE = "untranslatable"
    CANCELLED = "cancelled"  # the client went away


def classify(status: int | None, error: str | None, *, committed: bool = False) -> Kind:
    """The kind of an attempt's outcome.

    `status` is the upstream's HTTP status (None if no response head arrived), `error` a `Cause`
    (or any other text: an unnamed failure is the upstream's), `committed` whether the client
    had already been sent the response head and content.
    """
    if error == Cause.CANCELLED:
        return Kind.CANCELLED
    if committed:
        return Kind.OK if error is None else Kind.BROKEN
    if status is not None and not 200 <= status < 300:
        if 400 <= status < 500 and status not in RETRYABLE_4XX:
            return Kind.REJECTED
        return Kind.FAILED  # 5xx (529 included), 408, 429, and redirects an API never sends
    if error is not None:
        return Kind.FAILED
    if status is None:
        raise ValueError("classify() needs an HTTP status or an error")
    return Kind.OK


def retry_after(
    headers: Mapping[str, str], wall_clock: Callable[[], float] = time.time
) -> float | None:
    """Seconds an upstream asked us to wait, from ``retry-after-ms`` or ``retry-after``.

    ``retry-after`` is delta-seconds or an HTTP date (compared with `wall_clock`);
    ``retry-after-ms`` is what OpenAI sends and its SDK prefers. None when absent or unreadable.
    """
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms is not None:
        try:
            value = float(ms) / 1000
        except ValueError:
            value = math.nan
        if math.isfinite(value) and value >= 0:
            return value
    text = lowered.get("retry-after")
    if text is None:
        return None
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            when = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:  # "-0000": UTC by RFC 5322
            when = when.replace(tzinfo=UTC)
        return max(when.timestamp() - wall_clock(), 0.0)
    return value if math.isfinite(value) and value >= 0 else None


class State(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class Transition:
    """A breaker changed state (or re-tripped: `old` and `new` both open)."""

    name: str
    old: State
    new: State
    reason: str

    def __str__(self) -> str:
        return f"upstream {self.name}: breaker {self.old} -> {self.new} ({self.reason})"


def _check_settings(
    failures: int, open_for: float, max_open_for: float, trial_lease: float
) -> None:
    if failures < 1:
        raise ValueError(f"breaker failures must be at least 1, got {failures}")
    if open_for <= 0:
        raise ValueError(f"breaker open_for must be positive, got {open_for}")
    if max_open_for < open_for:
        raise ValueError(
            f"breaker max_open_for ({max_open_for}) must not be shorter than open_for ({open_for})"
        )
    if trial_lease <= 0:
        raise ValueError(f"breaker trial_lease must be positive, got {trial_lease}")


class Breaker:
    """The breaker of one upstream. See the module docstring for its transition table."""

    def __init__(
        self,
        name: str,
        *,
        failures: int = 3,
        open_for: float = 30.0,
        max_open_for: float = 300.0,
        trial_lease: float = TRIAL_LEASE,
        clock: Callable[[], float] = time.monotonic,
        outbox: deque[Transition] | None = None,
    ) -> None:
        _check_settings(failures, open_for, max_open_for, trial_lease)
        self.name = name
        self.threshold = failures
        self.open_for = float(open_for)
        self.max_open_for = float(max_open_for)
        self.trial_lease = float(trial_lease)
        self.clock = clock
        self.outbox: deque[Transition] = outbox if outbox is not None else deque(maxlen=MAX_PENDING)

        self.state = State.CLOSED
        #: consecutive failures since the last success
        self.failures = 0
        #: trips since the last success; the next window is open_for * 2**level
        self.level = 0
        #: when the open window ends (clock time; meaningful while open)
        self.open_until = 0.0
        #: trips over the breaker's lifetime
        self.trips = 0
        self.last_error: str | None = None
        # lease expiries of admitted attempts not yet reported
        self._claims: list[float] = []

    # --- what the relay calls ----------------------------------------------------------------

    def admit(self, *, force: bool = False) -> bool:
        """May an attempt go to this upstream now? Claims the trial when half-open.

        `force` admits it even when open (the last-upstream rule).
        """
        now = self._tick()
        if self.state is State.CLOSED:
            return True
        if force or (self.state is State.HALF_OPEN and not self._claims):
            self._claims.append(now + self.trial_lease)
            return True
        return False

    def record(
        self, kind: Kind, detail: str | None = None, *, retry_after: float | None = None
    ) -> None:
        """Report the outcome of an attempt. `detail` (e.g. ``HTTP 529``) becomes `last_error`;
        `retry_after` (seconds) is when the upstream said to come back."""
        self._tick()
        claimed = bool(self._claims)
        if claimed:
            self._claims.pop(0)
        if kind is Kind.OK:
            self._succeed()
        elif kind.counts:
            error = detail or str(kind)
            if retry_after is not None and retry_after > 0 and self._reopens(claimed):
                self.failures += 1
                self.last_error = error
                self._open_until_told(retry_after, f"{error}; retry-after")
                return
            self._fail(error, claimed)
            if retry_after is not None:
                self.cooldown(retry_after)
        # REJECTED and CANCELLED say nothing about the upstream: releasing the claim is all.

    def cooldown(self, seconds: float) -> None:
        """Open at least `seconds` from now (capped at `max_open_for`), as a retry-after asks."""
        now = self._tick()
        if not seconds > 0:  # also rejects NaN
            return
        if self.state is State.OPEN and self.open_until >= now + min(seconds, self.max_open_for):
            return
        self._open_until_told(seconds, "retry-after")

    # --- reading ------------------------------------------------------------------------------

    def remaining(self) -> float | None:
        """Seconds until the open window ends, or None when not open."""
        now = self._tick()
        if self.state is not State.OPEN:
            return None
        return self.open_until - now

    def snapshot(self) -> dict[str, Any]:
        remaining = self.remaining()
        return {
            "name": self.name,
            "state": str(self.state),
            "failures": self.failures,
            "open_until": None if remaining is None else round(remaining, 3),
            "trips": self.trips,
            "last_error": self.last_error,
        }

    def configure(self, *, failures: int, open_for: float, max_open_for: float) -> None:
        """New settings; the state is kept (they apply from the next trip on)."""
        _check_settings(failures, open_for, max_open_for, self.trial_lease)
        self.threshold = failures
        self.open_for = float(open_for)
        self.max_open_for = float(max_open_for)

    # --- the state machine --------------------------------------------------------------------

    def _tick(self) -> float:
        """Apply the passage of time: an open window may be over, claims may have lapsed."""
        now = self.clock()
        if self._claims:
            self._claims = [t for t in self._claims if t > now]
        if self.state is State.OPEN and now >= self.open_until:
            self.state = State.HALF_OPEN
            self._emit(State.OPEN, "open window over; the next request is a trial")
        return now

    def _succeed(self) -> None:
        self.failures = 0
        self.level = 0
        if self.state is State.CLOSED:
            return
        old = self.state
        self.state = State.CLOSED
        self.open_until = 0.0
        self._claims.clear()
        self._emit(old, "trial succeeded" if old is State.HALF_OPEN else "success while open")

    def _reopens(self, claimed: bool) -> bool:
        """Would a failure now open the breaker, or re-open it (see `_fail`)?"""
        if self.state is State.CLOSED:
            return self.failures + 1 >= self.threshold
        return claimed

    def _open_until_told(self, seconds: float, reason: str) -> None:
        """Open until `seconds` from now (capped): the upstream's word, not a trip."""
        seconds = min(float(seconds), self.max_open_for)
        old = self.state
        self.state = State.OPEN
        self.open_until = self.clock() + seconds
        self._emit(old, f"{reason} {seconds:g}s")

    def _fail(self, error: str, claimed: bool) -> None:
        self.failures += 1
        self.last_error = error
        if self.state is State.CLOSED:
            if self.failures >= self.threshold:
                self._trip(f"{self.failures} consecutive failures, last: {error}")
        elif claimed:
            what = "trial failed" if self.state is State.HALF_OPEN else "failed again while open"
            self._trip(f"{what}: {error}")
        # else: an attempt from before the breaker opened; it tells nothing new

    def _trip(self, reason: str) -> None:
        now = self.clock()
        window = min(self.open_for * 2.0 ** min(self.level, _MAX_LEVEL), self.max_open_for)
        old = self.state
        self.state = State.OPEN
        self.open_until = max(self.open_until if old is State.OPEN else now, now + window)
        self.level += 1
        self.trips += 1
        self._emit(old, f"{reason}; open for {window:g}s")

    def _emit(self, old: State, reason: str) -> None:
        self.outbox.append(Transition(self.name, old, self.state, reason))


class Breakers:
    """The breakers of all upstreams, by name; created on first use with the shared settings."""

    def __init__(
        self,
        names: Iterable[str] = (),
        *,
        failures: int = 3,
        open_for: float = 30.0,
        max_open_for: float = 300.0,
        trial_lease: float = TRIAL_LEASE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        _check_settings(failures, open_for, max_open_for, trial_lease)
        self.failures = failures
        self.open_for = open_for
        self.max_open_for = max_open_for
        self.trial_lease = trial_lease
        self.clock = clock
        self._outbox: deque[Transition] = deque(maxlen=MAX_PENDING)
        self._breakers: dict[str, Breaker] = {}
        for name in names:
            self[name]

    def __getitem__(self, name: str) -> Breaker:
        b = self._breakers.get(name)
        if b is None:
            b = self._breakers[name] = Breaker(
                name,
                failures=self.failures,
                open_for=self.open_for,
                max_open_for=self.max_open_for,
                trial_lease=self.trial_lease,
                clock=self.clock,
                outbox=self._outbox,
            )
        return b

    def __contains__(self, name: object) -> bool:
        return name in self._breakers

    def __len__(self) -> int:
        return len(self._breakers)

    def configure(
        self, names: Iterable[str], *, failures: int, open_for: float, max_open_for: float
    ) -> None:
        """Apply a new configuration: breakers of upstreams that remain keep their state."""
        _check_settings(failures, open_for, max_open_for, self.trial_lease)
        self.failures, self.open_for, self.max_open_for = failures, open_for, max_open_for
        keep = list(dict.fromkeys(names))
        old = self._breakers
        self._breakers = {}
        for name in keep:
            b = old.get(name)
            if b is not None:
                b.configure(failures=failures, open_for=open_for, max_open_for=max_open_for)
                self._breakers[name] = b
            else:
                self[name]

    def order(self, chain: Sequence[str]) -> list[str]:
        """The chain without the upstreams whose breaker is open, never empty for a non-empty chain.

        An upstream listed twice (two hops with different models) is kept or dropped as a whole,
        so the k-th occurrence of a name in the result is the k-th hop with that name. Admitting
        a half-open upstream claims its one trial; when every breaker is open, the one whose
        window ends first is admitted anyway (ties: the earlier in the chain).
        """
        names = list(dict.fromkeys(chain))
        admitted = {name for name in names if self[name].admit()}
        if not admitted and names:
            now = self.clock()

            def ends(i_name: tuple[int, str]) -> tuple[float, int]:
                i, name = i_name
                left = self[name].remaining()
                return (now if left is None else now + left, i)

            _, last = min(enumerate(names), key=ends)
            self[last].admit(force=True)
            admitted = {last}
        return [name for name in chain if name in admitted]

    def record(
        self,
        name: str,
        kind: Kind,
        *,
        detail: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        """Report an attempt's outcome; `retry_after` (seconds) also opens it for that long."""
        self[name].record(kind, detail, retry_after=retry_after)

    def record_attempt(self, name: str, attempt: Any) -> Kind | None:
        """Record a relay attempt: anything with `outcome`, `status`, `committed`, `retry_after`
        and `error`, where outcome is ``ok``, ``client_error``, ``http_<status>``, ``pending`` or
        a `Cause`. Returns the kind recorded (None for a pending attempt)."""
        outcome = str(getattr(attempt, "outcome", "") or "pending")
        if outcome == "pending":
            return None
        status = getattr(attempt, "status", None)
        committed = bool(getattr(attempt, "committed", False))
        if outcome == "ok":
            kind = Kind.OK
        elif status is not None and (outcome == "client_error" or outcome.startswith("http_")):
            kind = classify(status, None, committed=committed)
        else:
            kind = classify(status, outcome, committed=committed)
        error = getattr(attempt, "error", None)
        detail = f"{outcome}: {error}"[:200] if error else outcome
        self.record(name, kind, detail=detail, retry_after=getattr(attempt, "retry_after", None))
        return kind

    def cooldown(self, name: str, seconds: float) -> None:
        self[name].cooldown(seconds)

    def snapshot(self) -> list[dict[str, Any]]:
        """Every upstream's breaker: name, state, failures, open_until (seconds from now or
        None), trips, last_error; in configuration order."""
        return [b.snapshot() for b in self._breakers.values()]

    def drain(self) -> list[Transition]:
        """The transitions since the last call, oldest first, for the caller to log."""
        out = list(self._outbox)
        self._outbox.clear()
        return out
