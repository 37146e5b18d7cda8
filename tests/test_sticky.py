"""Session stickiness: key specs, session keys, TTL and LRU of the pinning table."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from mitmproxy.http import Headers

from mitmllm.engine.sticky import KeySpec
from mitmllm.engine.sticky import StickySessions
from mitmllm.engine.sticky import parse_spec
from mitmllm.engine.sticky import session_key
from mitmllm.engine.sticky import validate_spec


class Clock:
    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


# --- key specs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "parsed", "canonical"),
    [
        ("header:x-session-id", KeySpec("header", name="x-session-id"), "header:x-session-id"),
        ("header:X-Session-ID", KeySpec("header", name="x-session-id"), "header:x-session-id"),
        (" header: x-session-id ", KeySpec("header", name="x-session-id"), "header:x-session-id"),
        ("body:user", KeySpec("body", path=("user",)), "body:user"),
        (
            "body:metadata.user_id",
            KeySpec("body", path=("metadata", "user_id")),
            "body:metadata.user_id",
        ),
        (
            "body:messages.0.content",
            KeySpec("body", path=("messages", "0", "content")),
            "body:messages.0.content",
        ),
    ],
)
def test_parse_spec(spec: str, parsed: KeySpec, canonical: str) -> None:
    assert parse_spec(spec) == parsed
    assert str(parsed) == canonical
    assert validate_spec(spec) == spec


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "has no source"),
        ("x-session-id", "has no source"),
        ("cookie:session", "unknown source 'cookie', expected 'header' or 'body'"),
        ("Header:x-session-id", "unknown source 'Header'"),
        ("header:", "a header name is missing after 'header:'"),
        ("body:", "a path is missing after 'body:'"),
        ("header:x session", "'x session' is not a valid header name"),
        ("header:x-id:2", "is not a valid header name"),
        ("body:metadata..user_id", "empty segment in path 'metadata..user_id'"),
        ("body:.user", "empty segment"),
        ("body:user.", "empty segment"),
    ],
)
def test_bad_spec_is_refused_with_a_clear_message(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)) as e:
        validate_spec(spec)
    assert repr(spec) in str(e.value)  # the message names the offending value


def test_non_string_spec_is_refused() -> None:
    with pytest.raises(ValueError, match="must be a string"):
        parse_spec(42)  # type: ignore[arg-type]


def test_session_key_rejects_a_bad_spec() -> None:
    with pytest.raises(ValueError, match="unknown source"):
        session_key("query:session", {}, None)


# --- session keys ---------------------------------------------------------------------------


BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-5",
    "user": "user-42",
    "metadata": {"user_id": "alice@example.com", "n": 7, "blank": "", "none": None},
    "messages": [
        {"role": "user", "content": [{"type": "text", "text": "hello"}]},
        {"role": "assistant", "content": "hi"},
    ],
    "empty": [],
}


@pytest.mark.parametrize(
    ("spec", "raw"),
    [
        ("body:user", "user-42"),
        ("body:metadata.user_id", "alice@example.com"),
        ("body:metadata.n", "7"),
        ("body:messages.1.content", "hi"),
        ("body:messages.0.content", '[{"text":"hello","type":"text"}]'),
        ("body:messages.0.content.0.text", "hello"),
    ],
)
def test_session_key_from_body(spec: str, raw: str) -> None:
    key = session_key(spec, {}, BODY)
    assert key == session_key("header:x-session-id", {"x-session-id": raw}, None)
    assert key is not None and re.fullmatch(r"[0-9a-f]{32}", key)


@pytest.mark.parametrize(
    "spec",
    [
        "body:missing",
        "body:metadata.missing",
        "body:metadata.blank",
        "body:metadata.none",
        "body:messages.2.content",  # past the end
        "body:messages.first",  # a name on a list
        "body:user.name",  # a name on a string
        "body:empty",
        "body:metadata.user_id.0",
    ],
)
def test_no_session_key_when_the_body_has_none(spec: str) -> None:
    assert session_key(spec, {}, BODY) is None


@pytest.mark.parametrize("body", [None, "text", 42, [], ["user"]])
def test_no_session_key_from_a_body_that_is_not_an_object(body: Any) -> None:
    assert session_key("body:user", {}, body) is None


def test_digits_are_dictionary_keys_in_objects() -> None:
    assert session_key("body:by_id.0", {}, {"by_id": {"0": "s"}}) is not None


def test_structured_values_give_the_same_key_whatever_the_key_order() -> None:
    a = {"content": [{"type": "text", "text": "hello"}]}
    b = {"content": [{"text": "hello", "type": "text"}]}
    assert session_key("body:content", {}, a) == session_key("body:content", {}, b)


@pytest.mark.parametrize(
    "headers",
    [
        {"x-session-id": "abc"},
        {"X-Session-Id": "abc"},
        {"X-SESSION-ID": " abc "},
        Headers(x_session_id="abc"),
        Headers([(b"X-Session-ID", b"abc")]),
    ],
    ids=["dict", "dict-mixed-case", "dict-upper-padded", "mitmproxy", "mitmproxy-mixed-case"],
)
def test_session_key_from_header_is_case_insensitive(headers: Any) -> None:
    assert session_key("header:X-Session-ID", headers, None) == session_key(
        "header:x-session-id", {"x-session-id": "abc"}, None
    )


@pytest.mark.parametrize("headers", [{}, {"x-other": "abc"}, {"x-session-id": "  "}])
def test_no_session_key_without_the_header(headers: dict[str, str]) -> None:
    assert session_key("header:x-session-id", headers, {"user": "u"}) is None


def test_session_key_never_holds_the_raw_value() -> None:
    key = session_key("body:metadata.user_id", {}, BODY)
    assert key is not None
    assert "alice" not in key
    assert len(key) == 32
    assert key != session_key("body:user", {}, BODY)
    assert key == session_key(parse_spec("body:metadata.user_id"), {}, BODY)


def test_session_key_survives_unencodable_text() -> None:
    assert session_key("body:user", {}, {"user": "\ud800"}) is not None  # a lone surrogate
    assert session_key("body:n", {}, {"n": 2**70}) is None  # beyond what JSON numbers carry here


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63) | st.floats() | st.text(max_size=5),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.sampled_from(["a", "b", "0", "1"]), children, max_size=3)
    ),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(body=JSON, path=st.lists(st.sampled_from(["a", "b", "0", "1"]), min_size=1, max_size=4))
def test_session_key_never_raises_on_any_body(body: Any, path: list[str]) -> None:
    key = session_key(KeySpec("body", path=tuple(path)), {}, body)
    assert key is None or re.fullmatch(r"[0-9a-f]{32}", key)


# --- the pinning table ----------------------------------------------------------------------


def sessions(clock: Clock, ttl: float = 60, max_entries: int = 100) -> StickySessions:
    return StickySessions(ttl=ttl, clock=clock, max_entries=max_entries)


def test_set_then_get() -> None:
    s = sessions(Clock())
    assert s.get("claude", "k1") is None
    s.set("claude", "k1", "fallback")
    assert s.get("claude", "k1") == "fallback"
    s.set("claude", "k1", "spare")
    assert s.get("claude", "k1") == "spare"
    assert len(s) == 1


def test_routes_do_not_share_sessions() -> None:
    s = sessions(Clock())
    s.set("claude", "k1", "fallback")
    assert s.get("gpt", "k1") is None


def test_entry_expires_ttl_after_set() -> None:
    clock = Clock()
    s = sessions(clock, ttl=60)
    s.set("claude", "k1", "fallback")
    clock.advance(59.9)
    assert s.get("claude", "k1") == "fallback"
    clock.advance(0.1)
    assert s.get("claude", "k1") is None
    assert len(s) == 0


def test_get_does_not_extend_but_set_does() -> None:
    clock = Clock()
    s = sessions(clock, ttl=60)
    s.set("claude", "k1", "fallback")
    for _ in range(5):
        clock.advance(20)
        s.get("claude", "k1")
    assert s.get("claude", "k1") is None
    s.set("claude", "k1", "fallback")
    clock.advance(40)
    s.set("claude", "k1", "fallback")
    clock.advance(40)
    assert s.get("claude", "k1") == "fallback"


def test_forget() -> None:
    s = sessions(Clock())
    s.set("claude", "k1", "fallback")
    assert s.forget("claude", "k1") is True
    assert s.get("claude", "k1") is None
    assert s.forget("claude", "k1") is False


def test_no_key_means_no_stickiness() -> None:
    s = sessions(Clock())
    s.set("claude", None, "fallback")
    assert len(s) == 0
    assert s.get("claude", None) is None
    assert s.forget("claude", None) is False


def test_least_recently_used_goes_first() -> None:
    s = sessions(Clock(), max_entries=2)
    s.set("r", "a", "up-a")
    s.set("r", "b", "up-b")
    assert s.get("r", "a") == "up-a"  # a is now more recent than b
    s.set("r", "c", "up-c")
    assert len(s) == 2
    assert s.get("r", "b") is None
    assert s.get("r", "a") == "up-a"
    assert s.get("r", "c") == "up-c"


def test_memory_stays_bounded() -> None:
    s = sessions(Clock(), max_entries=50)
    for i in range(1000):
        s.set("r", f"k{i}", "up")
        assert len(s) <= 50
    assert s.get("r", "k999") == "up"
    assert s.get("r", "k949") is None


def test_expired_entries_go_before_live_ones() -> None:
    clock = Clock()
    s = sessions(clock, ttl=60, max_entries=3)
    s.set("r", "old", "up")
    clock.advance(30)
    s.set("r", "live", "up")
    clock.advance(40)  # old expired, live has 20 s left
    s.set("r", "new", "up")
    assert len(s) == 2
    assert s.get("r", "live") == "up"


def test_purge_drops_expired_entries() -> None:
    clock = Clock()
    s = sessions(clock, ttl=60)
    s.set("r", "a", "up")
    s.set("r", "b", "up")
    clock.advance(30)
    s.set("r", "c", "up")
    s.get("r", "a")  # recency does not keep an entry alive
    clock.advance(30)
    assert s.purge() == 2
    assert len(s) == 1
    assert s.get("r", "c") == "up"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"ttl": 0}, "ttl must be positive"),
        ({"ttl": -5}, "ttl must be positive"),
        ({"ttl": 60, "max_entries": 0}, "max_entries must be at least 1"),
    ],
)
def test_bad_settings_are_refused(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        StickySessions(**kwargs)
