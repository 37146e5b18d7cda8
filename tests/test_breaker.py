"""Circuit breakers: outcome classification, the transition table, windows, cooldown, order()."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st

from mitmllm.engine.breaker import Breaker
from mitmllm.engine.breaker import Breakers
from mitmllm.engine.breaker import Cause
from mitmllm.engine.breaker import Kind
from mitmllm.engine.breaker import State
from mitmllm.engine.breaker import Transition
from mitmllm.engine.breaker import classify
from mitmllm.engine.breaker import retry_after

CLOSED, OPEN, HALF_OPEN = State.CLOSED, State.OPEN, State.HALF_OPEN


class Clock:
    """A clock that moves only when told to."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> Clock:
    return Clock()


def breaker(clock: Clock) -> Breaker:
    return Breaker("primary", failures=3, open_for=30, max_open_for=300, clock=clock)


def trip(b: Breaker) -> None:
    for _ in range(b.threshold):
        b.record(Kind.FAILED, "HTTP 500")


# --- classify -------------------------------------------------------------------------------

CLASSIFY = [
    # (id, status, error, committed, kind)
    ("2xx", 200, None, False, Kind.OK),
    ("2xx-committed", 200, None, True, Kind.OK),
    ("connect-error", None, Cause.CONNECT, False, Kind.FAILED),
    ("connect-timeout", None, Cause.CONNECT_TIMEOUT, False, Kind.FAILED),
    ("header-timeout", None, Cause.HEADER_TIMEOUT, False, Kind.FAILED),
    ("read-error-before-commit", 200, Cause.READ_ERROR, False, Kind.FAILED),
    ("total-timeout", 200, Cause.TOTAL_TIMEOUT, False, Kind.FAILED),
    ("first-event-timeout", 200, Cause.FIRST_EVENT_TIMEOUT, False, Kind.FAILED),
    ("idle-stall-before-commit", 200, Cause.IDLE_TIMEOUT, False, Kind.FAILED),
    ("500", 500, None, False, Kind.FAILED),
    ("502", 502, None, False, Kind.FAILED),
    ("503", 503, None, False, Kind.FAILED),
    ("529-overloaded", 529, None, False, Kind.FAILED),
    ("408", 408, None, False, Kind.FAILED),
    ("429", 429, None, False, Kind.FAILED),
    ("HTTP-5-error-in-200", 200, Cause.ERROR_200, False, Kind.FAILED),
    ("inband-error-before-commit", 200, Cause.INBAND_ERROR, False, Kind.FAILED),
    ("SSE-15-empty-stream", 200, Cause.EMPTY, False, Kind.FAILED),
    ("XLT-4-untranslatable-stream", 200, Cause.UNTRANSLATABLE, False, Kind.FAILED),
    ("unnamed-error", None, "ssl: certificate verify failed", False, Kind.FAILED),
    ("redirect", 307, None, False, Kind.FAILED),
    ("400-client-fault", 400, None, False, Kind.REJECTED),
    ("401", 401, None, False, Kind.REJECTED),
    ("404", 404, None, False, Kind.REJECTED),
    ("413", 413, None, False, Kind.REJECTED),
    ("422", 422, None, False, Kind.REJECTED),
    ("4xx-status-decides-over-error", 400, Cause.ERROR_200, False, Kind.REJECTED),
    ("cancelled", None, Cause.CANCELLED, False, Kind.CANCELLED),
    ("cancelled-after-200", 200, Cause.CANCELLED, False, Kind.CANCELLED),
    ("cancelled-after-commit", 200, Cause.CANCELLED, True, Kind.CANCELLED),
    ("stall-after-commit", 200, Cause.IDLE_TIMEOUT, True, Kind.BROKEN),
    ("inband-error-after-commit", 200, Cause.INBAND_ERROR, True, Kind.BROKEN),
    ("read-error-after-commit", 200, Cause.READ_ERROR, True, Kind.BROKEN),
]


@pytest.mark.parametrize(
    ("status", "error", "committed", "kind"),
    [row[1:] for row in CLASSIFY],
    ids=[row[0] for row in CLASSIFY],
)
def test_classify(status: int | None, error: str | None, committed: bool, kind: Kind) -> None:
    assert classify(status, error, committed=committed) is kind


def test_classify_needs_a_status_or_an_error() -> None:
    with pytest.raises(ValueError, match="status or an error"):
        classify(None, None)


@pytest.mark.parametrize(
    ("kind", "retry", "counts"),
    [
        (Kind.OK, False, False),
        (Kind.FAILED, True, True),
        (Kind.BROKEN, False, True),
        (Kind.REJECTED, False, False),
        (Kind.CANCELLED, False, False),
    ],
    ids=str,
)
def test_kind_answers_retry_and_counts(kind: Kind, retry: bool, counts: bool) -> None:
    assert kind.retry is retry
    assert kind.counts is counts


# --- retry-after ----------------------------------------------------------------------------

WALL = 1_445_412_480.0  # Wed, 21 Oct 2015 07:28:00 GMT


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "2"}, 2.0),
        ({"Retry-After": " 20 "}, 20.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "1500", "retry-after": "9"}, 1.5),
        ({"retry-after-ms": "soon", "retry-after": "9"}, 9.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:30 GMT"}, 30.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:30 -0000"}, 30.0),
        ({"retry-after": "Wed, 21 Oct 2015 07:27:00 GMT"}, 0.0),
        ({"retry-after": "later"}, None),
        ({"retry-after": "-5"}, None),
        ({"retry-after": "nan"}, None),
        ({"content-type": "application/json"}, None),
    ],
)
def test_retry_after(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after(headers, wall_clock=lambda: WALL) == seconds


# --- the transition table -------------------------------------------------------------------


def start_closed(b: Breaker, clock: Clock) -> None:
    pass


def start_closed_two_failures(b: Breaker, clock: Clock) -> None:
    b.record(Kind.FAILED)
    b.record(Kind.FAILED)


def start_open(b: Breaker, clock: Clock) -> None:
    trip(b)


def start_open_forced(b: Breaker, clock: Clock) -> None:
    trip(b)
    assert b.admit(force=True)


def start_half_open(b: Breaker, clock: Clock) -> None:
    trip(b)
    clock.advance(30)
    assert b.remaining() is None


def start_trial(b: Breaker, clock: Clock) -> None:
    start_half_open(b, clock)
    assert b.admit()


def do(kind: Kind) -> Callable[[Breaker, Clock], None]:
    return lambda b, clock: b.record(kind, "x")


def wait(seconds: float) -> Callable[[Breaker, Clock], None]:
    return lambda b, clock: clock.advance(seconds)


def told(kind: Kind, seconds: float) -> Callable[[Breaker, Clock], None]:
    """A failure that carried retry-after: `seconds`."""
    return lambda b, clock: b.record(kind, "x", retry_after=seconds)


def cooldown(seconds: float) -> Callable[[Breaker, Clock], None]:
    return lambda b, clock: b.cooldown(seconds)


def admit(b: Breaker, clock: Clock) -> None:
    assert not b.admit()


# (id, start, signal, state after, transitions (old, new), failures after, seconds left or None)
# fmt: off
TABLE = [
    ("closed-success", start_closed_two_failures, do(Kind.OK), CLOSED, [], 0, None),
    ("closed-failure-below-threshold", start_closed, do(Kind.FAILED), CLOSED, [], 1, None),
    ("closed-failure-trips", start_closed_two_failures, do(Kind.FAILED), OPEN,
     [(CLOSED, OPEN)], 3, 30),
    ("closed-broken-counts", start_closed_two_failures, do(Kind.BROKEN), OPEN,
     [(CLOSED, OPEN)], 3, 30),
    ("closed-rejected-4xx-not-counted", start_closed_two_failures, do(Kind.REJECTED), CLOSED,
     [], 2, None),
    ("closed-cancelled-not-counted", start_closed_two_failures, do(Kind.CANCELLED), CLOSED,
     [], 2, None),
    ("closed-cooldown", start_closed, cooldown(10), OPEN, [(CLOSED, OPEN)], 0, 10),
    ("closed-failure-with-retry-after", start_closed, told(Kind.FAILED, 7), OPEN,
     [(CLOSED, OPEN)], 1, 7),
    ("closed-failure-reaching-threshold-with-retry-after", start_closed_two_failures,
     told(Kind.FAILED, 7), OPEN, [(CLOSED, OPEN)], 3, 7),
    ("open-window-over", start_open, wait(30), HALF_OPEN, [(OPEN, HALF_OPEN)], 3, None),
    ("open-window-not-over", start_open, wait(29.5), OPEN, [], 3, 0.5),
    ("open-refuses", start_open, admit, OPEN, [], 3, 30),
    ("open-success", start_open, do(Kind.OK), CLOSED, [(OPEN, CLOSED)], 0, None),
    ("open-failure-begun-earlier", start_open, do(Kind.FAILED), OPEN, [], 4, 30),
    ("open-forced-failure-retrips", start_open_forced, do(Kind.FAILED), OPEN,
     [(OPEN, OPEN)], 4, 60),
    ("open-forced-rejected-not-counted", start_open_forced, do(Kind.REJECTED), OPEN, [], 3, 30),
    ("open-forced-cancelled-not-counted", start_open_forced, do(Kind.CANCELLED), OPEN,
     [], 3, 30),
    ("open-forced-failure-with-retry-after", start_open_forced, told(Kind.FAILED, 7), OPEN,
     [(OPEN, OPEN)], 4, 7),
    ("open-failure-begun-earlier-with-shorter-retry-after", start_open, told(Kind.FAILED, 5),
     OPEN, [], 4, 30),
    ("open-failure-begun-earlier-with-longer-retry-after", start_open, told(Kind.FAILED, 100),
     OPEN, [(OPEN, OPEN)], 4, 100),
    ("open-cooldown-shorter", start_open, cooldown(5), OPEN, [], 3, 30),
    ("open-cooldown-longer", start_open, cooldown(100), OPEN, [(OPEN, OPEN)], 3, 100),
    ("half-open-admits-one-trial", start_trial, admit, HALF_OPEN, [], 3, None),
    ("half-open-trial-success", start_trial, do(Kind.OK), CLOSED, [(HALF_OPEN, CLOSED)], 0,
     None),
    ("half-open-trial-failure", start_trial, do(Kind.FAILED), OPEN, [(HALF_OPEN, OPEN)], 4, 60),
    ("half-open-trial-broken", start_trial, do(Kind.BROKEN), OPEN, [(HALF_OPEN, OPEN)], 4, 60),
    ("half-open-trial-failure-with-retry-after", start_trial, told(Kind.FAILED, 7), OPEN,
     [(HALF_OPEN, OPEN)], 4, 7),
    ("half-open-failure-begun-earlier", start_half_open, do(Kind.FAILED), HALF_OPEN, [], 4, None),
    ("half-open-success-begun-earlier", start_half_open, do(Kind.OK), CLOSED,
     [(HALF_OPEN, CLOSED)], 0, None),
    ("half-open-trial-rejected-not-counted", start_trial, do(Kind.REJECTED), HALF_OPEN, [], 3,
     None),
    ("half-open-trial-cancelled-not-counted", start_trial, do(Kind.CANCELLED), HALF_OPEN, [], 3,
     None),
    ("half-open-cooldown", start_half_open, cooldown(10), OPEN, [(HALF_OPEN, OPEN)], 3, 10),
]
# fmt: on


@pytest.mark.parametrize(
    ("start", "signal", "state", "transitions", "failures", "left"),
    [row[1:] for row in TABLE],
    ids=[row[0] for row in TABLE],
)
def test_transition_table(
    clock: Clock,
    start: Callable[[Breaker, Clock], None],
    signal: Callable[[Breaker, Clock], None],
    state: State,
    transitions: list[tuple[State, State]],
    failures: int,
    left: float | None,
) -> None:
    b = breaker(clock)
    start(b, clock)
    b.remaining()  # let the passage of time show before draining
    b.outbox.clear()
    signal(b, clock)
    assert b.remaining() == (None if left is None else pytest.approx(left))
    assert b.state is state
    assert [(t.old, t.new) for t in b.outbox] == transitions
    assert all(t.name == "primary" and t.reason for t in b.outbox)
    assert b.failures == failures


def test_rejected_or_cancelled_trial_frees_the_trial(clock: Clock) -> None:
    b = breaker(clock)
    start_trial(b, clock)
    b.record(Kind.CANCELLED)
    assert b.admit()
    b.record(Kind.REJECTED)
    assert b.admit()
    assert not b.admit()


def test_cancellation_neither_counts_nor_resets_the_streak(clock: Clock) -> None:
    b = breaker(clock)
    b.record(Kind.FAILED)
    b.record(Kind.FAILED)
    for _ in range(10):
        b.record(Kind.CANCELLED)
        b.record(Kind.REJECTED)
    assert b.state is CLOSED
    b.record(Kind.FAILED)
    assert b.state is OPEN


def test_success_resets_the_consecutive_count(clock: Clock) -> None:
    b = breaker(clock)
    for _ in range(5):
        b.record(Kind.FAILED)
        b.record(Kind.FAILED)
        b.record(Kind.OK)
    assert b.state is CLOSED
    assert b.trips == 0


# --- windows --------------------------------------------------------------------------------


def test_retrip_doubles_the_window_up_to_the_cap(clock: Clock) -> None:
    b = breaker(clock)
    trip(b)
    windows = [b.remaining()]
    for _ in range(5):
        clock.advance(b.remaining() or 0)
        assert b.admit()
        b.record(Kind.FAILED, "connect")
        windows.append(b.remaining())
    assert windows == [30, 60, 120, 240, 300, 300]
    assert b.trips == 6


def test_retrip_while_open_extends_from_now(clock: Clock) -> None:
    b = breaker(clock)
    trip(b)
    clock.advance(20)
    assert b.admit(force=True)
    b.record(Kind.FAILED)
    assert b.remaining() == 60  # a new, longer window from now; not 60 - 20


def test_success_closes_and_resets_the_backoff(clock: Clock) -> None:
    b = breaker(clock)
    trip(b)
    clock.advance(30)
    b.admit()
    b.record(Kind.FAILED)
    assert b.remaining() == 60
    clock.advance(60)
    b.admit()
    b.record(Kind.OK)
    assert b.state is CLOSED
    trip(b)
    assert b.remaining() == 30


def test_failures_begun_before_the_trip_do_not_escalate(clock: Clock) -> None:
    b = breaker(clock)
    for _ in range(10):  # ten parallel requests to a dead upstream
        b.record(Kind.FAILED, "connect")
    assert b.remaining() == 30
    assert b.trips == 1
    assert b.failures == 10


def test_an_unreported_trial_lapses(clock: Clock) -> None:
    b = breaker(clock)
    start_trial(b, clock)
    assert not b.admit()
    clock.advance(59)
    assert not b.admit()
    clock.advance(1)
    assert b.admit()


def test_huge_level_stays_finite(clock: Clock) -> None:
    b = breaker(clock)
    b.level = 10_000
    trip(b)
    assert b.remaining() == 300


# --- cooldown (retry-after) -------------------------------------------------------------------


@dataclass
class Attempt:
    """The shape of the relay's record of one attempt."""

    outcome: str
    status: int | None = None
    committed: bool = False
    retry_after: float | None = None
    error: str | None = None


@pytest.mark.parametrize(
    ("attempt", "kind", "last_error"),
    [
        (Attempt("ok", 200), Kind.OK, None),
        (Attempt("ok", 200, committed=True), Kind.OK, None),
        (Attempt("pending"), None, None),
        (Attempt("connect_error", error="ConnectionRefusedError"), Kind.FAILED,
         "connect_error: ConnectionRefusedError"),
        (Attempt("http_529", 529, error="Overloaded"), Kind.FAILED, "http_529: Overloaded"),
        (Attempt("http_400", 400, error="bad tool schema"), Kind.REJECTED, None),
        (Attempt("client_error", 422), Kind.REJECTED, None),
        (Attempt("error_in_200", 200), Kind.FAILED, "error_in_200"),
        (Attempt("stall_after_commit", 200, committed=True), Kind.BROKEN, "stall_after_commit"),
        (Attempt("cancelled", 200), Kind.CANCELLED, None),
    ],
    ids=lambda v: v.outcome if isinstance(v, Attempt) else None,
)  # fmt: skip
def test_record_attempt(
    clock: Clock, attempt: Attempt, kind: Kind | None, last_error: str | None
) -> None:
    bs = Breakers(clock=clock)
    assert bs.record_attempt("a", attempt) is kind
    assert bs["a"].failures == (1 if kind is not None and kind.counts else 0)
    assert bs["a"].last_error == last_error


def test_record_attempt_cools_down_on_retry_after(clock: Clock) -> None:
    bs = Breakers(clock=clock)
    bs.record_attempt("a", Attempt("http_429", 429, retry_after=7.0))
    assert bs["a"].remaining() == 7


def test_cooldown_is_capped_at_max_open_for(clock: Clock) -> None:
    b = breaker(clock)
    b.cooldown(86_400)
    assert b.remaining() == 300


@pytest.mark.parametrize("seconds", [0, -1, math.nan])
def test_cooldown_without_time_does_nothing(clock: Clock, seconds: float) -> None:
    b = breaker(clock)
    b.cooldown(seconds)
    assert b.state is CLOSED
    assert not b.outbox


def test_cooldown_is_not_a_trip(clock: Clock) -> None:
    b = breaker(clock)
    b.cooldown(100)
    assert (b.trips, b.level, b.failures) == (0, 0, 0)
    clock.advance(100)
    assert b.admit()
    b.record(Kind.FAILED)
    assert b.remaining() == 30  # the first trip's window, not a doubled one


def test_record_with_retry_after_counts_and_cools_down(clock: Clock) -> None:
    bs = Breakers(["primary"], clock=clock)
    bs.record("primary", Kind.FAILED, detail="HTTP 429", retry_after=20)
    b = bs["primary"]
    assert b.failures == 1
    assert b.remaining() == 20
    assert b.last_error == "HTTP 429"
    bs.record("primary", Kind.FAILED, detail="HTTP 529", retry_after=2)
    bs.record("primary", Kind.FAILED, detail="HTTP 529", retry_after=2)
    assert b.remaining() == 20  # open already; the later ones are failures of earlier attempts


def test_a_trial_that_is_told_to_wait_again_waits_what_it_was_told(clock: Clock) -> None:
    # retry-after: 7, the trial after it gets 429 with retry-after: 7 again: open for 7 s, not
    # for the default 30 s window of a trip.
    bs = Breakers(["a", "b"], clock=clock)
    limited = Attempt("http_429", 429, retry_after=7.0)
    for _ in range(3):  # enough to trip it, were it not told when to come back
        bs.record_attempt("a", limited)
    assert bs["a"].remaining() == 7
    clock.advance(7)
    assert bs.order(["a", "b"]) == ["a", "b"]  # the trial
    bs.record_attempt("a", limited)
    assert bs["a"].remaining() == 7
    assert bs["a"].level == 0 and bs["a"].trips == 0
    clock.advance(7)
    assert bs.order(["a"]) == ["a"]
    bs.record_attempt("a", Attempt("http_429", 429, retry_after=2.0))  # a shorter word wins
    assert bs["a"].remaining() == 2


# --- Breakers: order() ----------------------------------------------------------------------


def test_order_all_closed_is_the_chain(clock: Clock) -> None:
    bs = Breakers(clock=clock)
    assert bs.order(["a", "b", "c"]) == ["a", "b", "c"]


def test_order_skips_open_upstreams(clock: Clock) -> None:
    bs = Breakers(clock=clock)
    trip(bs["a"])
    trip(bs["c"])
    assert bs.order(["a", "b", "c"]) == ["b"]


def test_order_skips_an_open_last_upstream_when_another_remains(clock: Clock) -> None:
    bs = Breakers(clock=clock)
    trip(bs["b"])
    assert bs.order(["a", "b"]) == ["a"]


def test_order_all_open_tries_the_one_whose_window_ends_first(clock: Clock) -> None:
    bs = Breakers(clock=clock)
    trip(bs["a"])
    clock.advance(10)
    trip(bs["b"])
    clock.advance(10)
    bs["c"].cooldown(5)
    assert bs.order(["a", "b", "c"]) == ["c"]
    bs.record("c", Kind.CANCELLED)
    clock.advance(5)
    assert bs.order(["a", "b", "c"]) == ["c"]  # half-open: its trial
    # With the trial in flight all three are unavailable; c is the closest to done.
    assert bs.order(["a", "b", "c"]) == ["c"]
    assert bs["c"].state is HALF_OPEN


def test_order_all_open_tie_goes_to_the_earlier_upstream(clock: Clock) -> None:
    bs = Breakers(clock=clock)
    trip(bs["b"])
    trip(bs["a"])
    assert bs.order(["b", "a"]) == ["b"]
    assert bs.order(["a", "b"]) == ["a"]


def test_order_forced_last_upstream_failure_extends_its_window(clock: Clock) -> None:
    bs = Breakers(clock=clock)
    trip(bs["a"])
    assert bs.order(["a"]) == ["a"]
    bs.record("a", Kind.FAILED, detail="HTTP 503")
    assert bs["a"].remaining() == 60
    assert bs.order(["a"]) == ["a"]
    bs.record("a", Kind.OK)
    assert bs["a"].state is CLOSED


def test_order_half_open_gives_one_trial_then_falls_back(clock: Clock) -> None:
    bs = Breakers(clock=clock)
    trip(bs["a"])
    clock.advance(30)
    assert bs.order(["a", "b"]) == ["a", "b"]
    assert bs.order(["a", "b"]) == ["b"]
    bs.record("a", Kind.OK)
    assert bs.order(["a", "b"]) == ["a", "b"]


def test_order_keeps_repeated_upstreams_together(clock: Clock) -> None:
    bs = Breakers(clock=clock)
    chain = ["a", "b", "a"]  # a with two models
    assert bs.order(chain) == chain
    trip(bs["a"])
    assert bs.order(chain) == ["b"]
    clock.advance(30)
    assert bs.order(chain) == ["a", "b", "a"]  # both hops of a ride on its one trial


def test_order_of_nothing_is_nothing(clock: Clock) -> None:
    assert Breakers(clock=clock).order([]) == []


# --- Breakers: snapshot, transitions, settings ----------------------------------------------


def test_snapshot_lists_every_upstream(clock: Clock) -> None:
    bs = Breakers(["primary", "fallback", "spare"], clock=clock)
    trip(bs["primary"])
    clock.advance(12.5)
    bs.record("fallback", Kind.FAILED, detail="connect_timeout")
    bs["spare"].cooldown(100)
    clock.advance(100)
    assert bs.snapshot() == [
        {"name": "primary", "state": "half_open", "failures": 3, "open_until": None,
         "trips": 1, "last_error": "HTTP 500"},
        {"name": "fallback", "state": "closed", "failures": 1, "open_until": None,
         "trips": 0, "last_error": "connect_timeout"},
        {"name": "spare", "state": "half_open", "failures": 0, "open_until": None,
         "trips": 0, "last_error": None},
    ]  # fmt: skip


def test_snapshot_open_until_is_seconds_from_now(clock: Clock) -> None:
    bs = Breakers(["primary"], clock=clock)
    trip(bs["primary"])
    clock.advance(12.25)
    (entry,) = bs.snapshot()
    assert entry["state"] == "open"
    assert entry["open_until"] == 17.75


def test_drain_returns_transitions_in_order_once(clock: Clock) -> None:
    bs = Breakers(clock=clock)
    trip(bs["a"])
    trip(bs["b"])
    clock.advance(30)
    bs.order(["a"])
    bs.record("a", Kind.OK)
    got = bs.drain()
    assert [(t.name, t.old, t.new) for t in got] == [
        ("a", CLOSED, OPEN),
        ("b", CLOSED, OPEN),
        ("a", OPEN, HALF_OPEN),
        ("a", HALF_OPEN, CLOSED),
    ]
    assert bs.drain() == []
    assert str(got[0]) == (
        "upstream a: breaker closed -> open (3 consecutive failures, last: HTTP 500; open for 30s)"
    )


def test_transition_is_a_small_immutable_record() -> None:
    t = Transition("a", CLOSED, OPEN, "why")
    with pytest.raises(AttributeError):
        t.name = "b"  # type: ignore[misc]


def test_settings_apply_to_new_breakers(clock: Clock) -> None:
    bs = Breakers(failures=1, open_for=5, max_open_for=10, clock=clock)
    bs.record("a", Kind.FAILED)
    assert bs["a"].remaining() == 5


def test_configure_keeps_state_of_remaining_upstreams(clock: Clock) -> None:
    bs = Breakers(["a", "b"], clock=clock)
    trip(bs["a"])
    bs.configure(["a", "c"], failures=1, open_for=10, max_open_for=20)
    assert [e["name"] for e in bs.snapshot()] == ["a", "c"]
    assert bs["a"].state is OPEN
    assert bs["a"].remaining() == 30  # the running window is kept
    bs.record("c", Kind.FAILED)
    assert bs["c"].remaining() == 10


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"failures": 0}, "failures must be at least 1"),
        ({"open_for": 0}, "open_for must be positive"),
        ({"open_for": 60, "max_open_for": 30}, "must not be shorter than open_for"),
        ({"trial_lease": -1}, "trial_lease must be positive"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Breakers(**kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=message):
        Breaker("a", **kwargs)  # type: ignore[arg-type]


# --- properties -----------------------------------------------------------------------------

OPS = st.lists(
    st.one_of(
        st.tuples(st.just("record"), st.sampled_from(list(Kind))),
        st.tuples(st.just("wait"), st.floats(0, 400)),
        st.tuples(st.just("cooldown"), st.floats(-10, 1000)),
        st.tuples(st.just("told"), st.floats(-10, 1000)),
        st.tuples(st.just("admit"), st.booleans()),
    ),
    max_size=40,
)


def state_of(b: Breaker) -> tuple[object, ...]:
    return (b.state, b.failures, b.level, b.open_until, b.trips, b.last_error)


@settings(max_examples=150, deadline=None)
@given(ops=OPS, neutral=st.sampled_from([Kind.CANCELLED, Kind.REJECTED]))
def test_breaker_invariants(ops: list[tuple[str, object]], neutral: Kind) -> None:
    clock = Clock()
    b = breaker(clock)
    for op, arg in ops:
        if op == "record":
            assert isinstance(arg, Kind)
            b.record(arg)
        elif op == "wait":
            assert isinstance(arg, float)
            clock.advance(arg)
        elif op == "cooldown":
            assert isinstance(arg, float)
            b.cooldown(arg)
        elif op == "told":
            assert isinstance(arg, float)
            b.record(Kind.FAILED, "429", retry_after=arg)
        else:
            b.admit(force=bool(arg))
        left = b.remaining()
        assert (left is not None) == (b.state is OPEN)
        assert left is None or 0 < left <= b.max_open_for + 1e-9  # float rounding of now + w
        assert b.trips >= b.level
        # Cancellations and client errors never change what the breaker says about the upstream.
        before = state_of(b)
        b.record(neutral)
        assert state_of(b) == before


@settings(max_examples=100, deadline=None)
@given(
    chain=st.lists(st.sampled_from("abcd"), min_size=1, max_size=6),
    tripped=st.sets(st.sampled_from("abcd")),
    waited=st.floats(0, 60),
)
def test_order_never_leaves_a_chain_empty(
    chain: list[str], tripped: set[str], waited: float
) -> None:
    clock = Clock()
    bs = Breakers(clock=clock)
    for name in sorted(tripped):
        trip(bs[name])
    clock.advance(waited)
    got = bs.order(chain)
    assert got
    assert got == [n for n in chain if n in set(got)]  # a subsequence, repeats kept together
    open_now = {n for n in chain if bs[n].state is OPEN}
    if set(chain) - open_now:  # something was available: no open upstream is forced in
        assert not set(got) & open_now
