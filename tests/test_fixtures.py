"""Fixture files: the format, flow-file round trips, redaction, the expectation replay."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import settings
from hypothesis import strategies as st
from mitmproxy import http
from mitmproxy import io as mio
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from mitmllm import fixtures_cli
from mitmllm.engine import fixtures
from mitmllm.engine.fixtures import Fixture
from mitmllm.protocol import detect
from tests.support.fixtureflows import CRLF
from tests.support.fixtureflows import HEALTHY
from tests.support.fixtureflows import REQUEST
from tests.support.fixtureflows import URL
from tests.support.fixtureflows import recorded
from tests.support.fixtureflows import sse_flow


def rules(fx: Fixture) -> list[str]:
    return [f.rule for f in fx.expect.findings]


# --- the file ------------------------------------------------------------------------------------


def test_file_is_reviewable_json_with_a_line_per_body_line(tmp_path: Path) -> None:
    fx = recorded(HEALTHY, [5, 20])
    text = fx.to_json()
    assert text.endswith("}\n") and text.startswith('{\n  "format_version": 1,')
    data = json.loads(text)
    assert data["response"]["body"] == [
        'data: {"n": 1}\n',
        "\n",
        'data: {"text": "café 世"}\n',
        "\n",
        "data: [DONE]\n",
        "\n",
    ]
    assert data["response"]["chunks"] == [[0, 10.0], [5, 20.0], [20, 30.0]]
    assert '    "chunks": [\n      [0, 10.0],\n' in text  # a chunk per line, reviewable
    assert "encoding" not in data["response"]
    assert data["expect"] == {"terminal": "complete", "findings": []}
    path = fixtures.save_fixture(fx, tmp_path / "a.json")
    assert fixtures.load_fixture(path).to_json() == text  # stable: load + write is the identity


def test_non_utf8_body_is_stored_as_base64_and_said_so() -> None:
    body = b'data: {"x": "\xff\xfe"}\n\n'
    fx = recorded(body)
    data = json.loads(fx.to_json())
    assert data["response"]["encoding"] == "base64"
    assert base64.b64decode("".join(data["response"]["body"])) == body
    assert fx.response is not None and fx.response.content == body


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300) | st.text(max_size=200).map(lambda s: s.encode()))
def test_any_body_survives_the_file_byte_for_byte(body: bytes) -> None:
    stored, encoding = fixtures.encode_body(body)
    data = json.loads(fixtures.render({"b": stored}))
    assert fixtures.decode_body(data["b"], encoding) == body


def test_line_separators_are_escaped_so_editors_keep_one_line_per_body_line() -> None:
    fx = recorded(b'data: {"t": "a\xe2\x80\xa8b\xc2\x85c"}\n\n')
    text = fx.to_json()
    assert "\u2028" not in text and "\x85" not in text and "\\u2028" in text
    assert fixtures.parse_fixture(text).response.content == fx.response.content  # type: ignore[union-attr]


def test_load_errors_name_the_file_and_the_field(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("{\n  nope\n}")
    with pytest.raises(fixtures.FixtureError, match=r"bad.json:2:3: not JSON"):
        fixtures.load_fixture(path)
    data = json.loads(recorded(HEALTHY).to_json())
    data["expect"]["findings"] = [{"rule": "ANT-999", "severity": "error", "event": 1}]
    path.write_text(json.dumps(data))
    with pytest.raises(fixtures.FixtureError, match=r"expect\.findings\.0\.rule: .*ANT-999"):
        fixtures.load_fixture(path)
    data = json.loads(recorded(HEALTHY).to_json())
    data["response"]["chunks"] = [[0, 1.0], [999, 2.0]]
    path.write_text(json.dumps(data))
    with pytest.raises(fixtures.FixtureError, match=r"offset 999 is past the body"):
        fixtures.load_fixture(path)


# --- names and files ------------------------------------------------------------------------------


def has_dialect(name: str) -> bool:
    try:
        return detect.by_name(name) is not None
    except ImportError:
        return False


@pytest.mark.skipif(not has_dialect("anthropic"), reason="no anthropic dialect module")
def test_ANT_7_name_is_format_model_first_rule_hash() -> None:
    start = (
        b'event: message_start\ndata: {"type":"message_start","message":{"id":"msg_1",'
        b'"type":"message","role":"assistant","model":"claude-x","content":[],'
        b'"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":1,"output_tokens":1}}}\n\n'
    )
    block = (  # the first block has index 1: ANT-7
        b'event: content_block_start\ndata: {"type":"content_block_start","index":1,'
        b'"content_block":{"type":"text","text":""}}\n\n'
    )
    end = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
    request = {"model": "claude-x", "max_tokens": 5, "stream": True, "messages": []}
    fx = recorded(start + block + end, request=request, url="https://api.anthropic.com/v1/messages")
    assert fx.format == "anthropic" and fx.model == "claude-x"
    assert fx.expect.findings[0].model_dump() == {"rule": "ANT-7", "severity": "error", "event": 1}
    name = fixtures.fixture_name(fx)
    assert name.startswith("anthropic--claude-x--ANT-7--") and len(name.rsplit("--")[-1]) == 6


def test_names_are_stable_and_a_different_fixture_is_never_overwritten(tmp_path: Path) -> None:
    fx = recorded(HEALTHY)
    name = fixtures.fixture_name(fx)
    assert name.startswith("http--m-1--ok--")
    assert fixtures.fixture_name(recorded(HEALTHY, [3])) == name  # same exchange, same name
    first = fixtures.write_new(tmp_path, fx)
    assert first.name == f"{name}.json"
    assert fixtures.write_new(tmp_path, recorded(HEALTHY)) == first  # identical: left alone
    other = recorded(HEALTHY, [3])  # same exchange, other chunking: a different file
    second = fixtures.write_new(tmp_path, other)
    assert second.name == f"{name}-2.json"
    assert fixtures.load_fixture(first) == fx and fixtures.load_fixture(second) == other


def test_iter_fixtures_finds_json_files_sorted_and_skips_hidden_folders(tmp_path: Path) -> None:
    for rel in ("b.json", "a/c.json", ".hidden/d.json", "notes.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("{}")
    assert fixtures.iter_fixtures(tmp_path) == [tmp_path / "a/c.json", tmp_path / "b.json"]
    assert fixtures.iter_fixtures(tmp_path / "missing") == []
    assert fixtures.iter_fixtures(tmp_path / "b.json") == [tmp_path / "b.json"]


# --- round trips through mitmproxy flow files ----------------------------------------------------


def _variety() -> list[Fixture]:
    plain = recorded(CRLF, [1, 7, 8, 30])
    cut_flow = sse_flow(HEALTHY[:30])
    cut_flow.error = tflow.terr("HTTP/1 protocol error: incomplete chunked read")
    cut = fixtures.from_flow(cut_flow, upstream_body=HEALTHY[:30], chunks=[(0, 5.0), (20, 9.5)])
    no_response = tflow.tflow(req=tutils.treq(method=b"POST", content=orjson.dumps(REQUEST)))
    no_response.request.url = URL
    no_response.error = tflow.terr("[Errno 111] Connect call failed")
    rewritten = sse_flow(HEALTHY)
    rewritten.marked = ":x:"
    rewritten.comment = "SSE-14 | it broke"
    rewritten.metadata["mitmllm"] = {
        "format": None,
        "model": "m-1",
        "stream": True,
        "attempts": [{"upstream": "primary", "outcome": "529"}, {"upstream": "b", "outcome": "ok"}],
        "findings": [{"rule": "RLY-1", "severity": "info", "message": "fallback"}],
        "nested": {"z": [1, 2.5, None, True], "a": "x"},
    }
    rewritten.metadata["other_addon"] = {"k": b"bytes are stored as text"}
    binary = recorded(b'data: {"x": 1}\n\n\xff\n\n', [4])
    return [
        plain,
        cut,
        fixtures.from_flow(no_response),
        fixtures.from_flow(rewritten, upstream_body=HEALTHY.replace(b"n", b"N")),
        binary,
        fixtures.from_flow(sse_flow(HEALTHY, status=529)),
    ]


def test_round_trip_fixture_to_flow_file_to_fixture_is_lossless(tmp_path: Path) -> None:
    originals = _variety()
    for i, fx in enumerate(originals):
        fixtures.save_fixture(fx, tmp_path / "in" / f"{i}.json")
    n = fixtures.fixtures_to_flows([tmp_path / "in"], tmp_path / "flows.mitm")
    assert n == len(originals)
    out = fixtures.flows_to_fixtures(tmp_path / "flows.mitm", tmp_path / "out")
    assert len(out) == len(originals)
    for path, original in zip(out, originals, strict=True):
        back = fixtures.load_fixture(path)
        assert back == original
        assert back.to_json() == original.to_json()


def test_flow_file_shows_client_body_marks_comment_and_metadata_in_mitmweb(tmp_path: Path) -> None:
    fx = _variety()[3]
    fixtures.save_fixture(fx, tmp_path / "x.json")
    fixtures.fixtures_to_flows([tmp_path / "x.json"], tmp_path / "f.mitm")
    with open(tmp_path / "f.mitm", "rb") as fh:
        [flow] = list(mio.FlowReader(fh).stream())
    assert isinstance(flow, http.HTTPFlow) and flow.response is not None
    assert flow.response.raw_content == HEALTHY  # what the client got, not the upstream body
    assert flow.marked == ":x:" and flow.comment.startswith("SSE-14")
    assert flow.metadata["mitmllm"]["attempts"][0]["outcome"] == "529"
    assert flow.metadata["mitmllm"]["model"] == "m-1"
    assert flow.request.url.startswith(URL)
    assert orjson.loads(flow.request.raw_content or b"") == REQUEST


@settings(max_examples=25, deadline=None)
@given(
    body=st.binary(min_size=1, max_size=200),
    cuts=st.lists(st.integers(1, 199), max_size=8),
    marked=st.sampled_from(["", ":x:", ":warning:"]),
)
def test_round_trip_holds_for_any_body_and_chunking(
    body: bytes, cuts: list[int], marked: str
) -> None:
    fx = recorded(body, cuts)
    fx.marked = marked
    buf = io.BytesIO()
    mio.FlowWriter(buf).add(fixtures.to_flow(fx))
    buf.seek(0)
    [flow] = list(mio.FlowReader(buf).stream())
    assert isinstance(flow, http.HTTPFlow)
    assert fixtures.from_flow(flow) == fx


def test_flows_without_tap_are_one_chunk_with_unknown_timing_and_a_note(tmp_path: Path) -> None:
    f = sse_flow(HEALTHY)
    fx = fixtures.from_flow(f)
    assert fx.response is not None and fx.response.timing == "unknown"
    assert len(fx.response.chunks) == 1 and fx.response.content == HEALTHY
    assert any("chunk timing unknown" in n for n in fx.notes)
    with open(tmp_path / "plain.mitm", "wb") as fh:
        mio.FlowWriter(fh).add(f)
        mio.FlowWriter(fh).add(tflow.tflow(resp=True))  # not an LLM call: skipped
    [path] = fixtures.flows_to_fixtures(tmp_path / "plain.mitm", tmp_path / "out")
    assert fixtures.load_fixture(path) == fx
    everything = fixtures.flows_to_fixtures(tmp_path / "plain.mitm", tmp_path / "a", all_flows=True)
    assert len(everything) == 2


# --- redaction ------------------------------------------------------------------------------------

SECRET = "sk-test-0123456789abcdef"


def _with_secret(place: str, secret: str = SECRET) -> http.HTTPFlow:
    request = dict(REQUEST)
    if place == "json-field":
        request["api_key"] = secret
    if place == "nested-json-field":
        request["auth"] = {"client_secret": secret}
    url = URL
    if place == "query-key":
        url = f"{URL}?alt=sse&key={secret}"
    if place == "extra-query":
        url = f"{URL}?my_token={secret}"
    f = sse_flow(HEALTHY, request=request, url=url)
    headers = {
        "authorization": f"Bearer {secret}",
        "proxy-authorization": f"Basic {secret}",
        "x-api-key": secret,
        "api-key": secret,
        "x-goog-api-key": secret,
        "cookie": f"session={secret}; theme=dark",
        "extra-header": secret,
    }
    if place in headers:
        f.request.headers["x-my-token" if place == "extra-header" else place] = headers[place]
    if place == "set-cookie":
        f.response.headers["set-cookie"] = f"session={secret}; HttpOnly"  # type: ignore[union-attr]
    return f


PLACES = [
    "authorization",
    "proxy-authorization",
    "x-api-key",
    "api-key",
    "x-goog-api-key",
    "cookie",
    "set-cookie",
    "query-key",
    "extra-header",
    "extra-query",
    "json-field",
    "nested-json-field",
]


@pytest.mark.parametrize("place", PLACES)
def test_a_secret_never_reaches_the_fixture_or_the_flow_file(place: str, tmp_path: Path) -> None:
    f = _with_secret(place)
    # The same secret echoed elsewhere must go too: comment, metadata, error, response body.
    f.comment = f"key was {SECRET}"
    f.metadata["mitmllm"] = {"format": None, "model": "m-1", "stream": True, "seen": [SECRET]}
    f.error = tflow.terr(f"upstream said: bad key {SECRET}")
    body = HEALTHY + f'data: {{"echo": "{SECRET}"}}\n\n'.encode()
    f.response.raw_content = body  # type: ignore[union-attr]
    fx = fixtures.from_flow(
        f, upstream_body=body, chunks=[(0, 1.0), (40, 2.0)], redact_names=["x-my-token", "my_token"]
    )
    path = fixtures.write_new(tmp_path, fx)
    text = path.read_text()
    assert SECRET not in text
    assert SECRET.encode() not in fixtures.load_fixture(path).response.content  # type: ignore[union-attr]
    assert fx.redacted, "the redaction is recorded in the fixture"
    fixtures.fixtures_to_flows([path], tmp_path / "f.mitm")
    assert SECRET.encode() not in (tmp_path / "f.mitm").read_bytes()
    # Masks in bodies keep the length, so the recorded chunk boundaries still fit.
    assert len(fx.response.content) == len(body)  # type: ignore[union-attr]


def test_redaction_is_recorded_where_it_happened() -> None:
    f = _with_secret("authorization")
    f.request.url = f"{URL}?key=abc"
    fx = fixtures.from_flow(f)
    assert {"request.headers.authorization", "request.query.key"} <= set(fx.redacted)
    assert ("authorization", fixtures.REDACTED) in fx.request.headers
    assert fx.request.url.endswith("?key=<redacted>")
    # A second pass (re-recording a recorded flow) finds nothing new and changes nothing.
    assert fixtures.redact(fx) == fx


def test_known_secrets_no_header_carries_are_hunted_too() -> None:
    # An upstream's own key is never in the flow's headers, but its error message may echo it.
    f = tflow.tflow(resp=True)
    own = "sk-upstream-own-key-123"
    f.comment = f"primary: http_500 bad key {own}"
    f.metadata["mitmllm"] = {"attempts": [{"error": f"bad key {own}"}]}
    fx = fixtures.from_flow(f, secrets=[own])
    assert own not in fx.to_json()
    assert fx.redacted == ["attempts", "comment"]


def test_secret_in_a_non_utf8_body_is_masked_before_base64() -> None:
    f = _with_secret("x-api-key")
    body = b"data: \xff" + SECRET.encode() + b"\n\n"
    fx = fixtures.from_flow(f, upstream_body=body, chunks=[(0, 1.0)])
    assert fx.response is not None and fx.response.encoding == "base64"
    assert SECRET.encode() not in fx.response.content
    assert "response.body" in fx.redacted


@pytest.mark.parametrize("nested", [False, True], ids=["field", "nested-field"])
def test_a_secret_with_half_a_surrogate_pair_is_masked_and_the_flow_recorded(nested: bool) -> None:
    """A secret-named field whose value escapes half a surrogate pair (``\\ud83d``, which
    UTF-8 has no bytes for): masked like any other; recording such a flow once raised."""
    secret = "sk-cut\ud83dkey"
    request: dict[str, Any] = dict(REQUEST)
    if nested:
        request["auth"] = {"client_secret": secret}
    else:
        request["api_key"] = secret
    f = sse_flow(HEALTHY, url=URL)
    f.request.content = json.dumps(request).encode()
    assert b"\\ud83d" in f.request.content
    fx = fixtures.from_flow(f)
    text = fx.to_json()
    assert "sk-cut" not in text and "ud83d" not in text
    assert fx.redacted == ["request.body.auth.client_secret" if nested else "request.body.api_key"]


@settings(max_examples=30, deadline=None)
@given(
    secret=st.text("abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=5, max_size=40).map(
        lambda s: "sk-" + s  # a prefix, so the secret cannot be a word the file uses anyway
    ),
    place=st.sampled_from([p for p in PLACES if p not in ("extra-header", "extra-query")]),
)
def test_property_no_listed_secret_survives(secret: str, place: str) -> None:
    text = fixtures.from_flow(_with_secret(place, secret)).to_json()
    assert secret not in text


# --- expectation replay ---------------------------------------------------------------------------

SPLIT_UTF8_CUTS = [HEALTHY.index(b"\xc3") + 1, HEALTHY.index(b"\xe4") + 2]


@pytest.mark.parametrize(
    ("body", "cuts"),
    [
        pytest.param(HEALTHY, SPLIT_UTF8_CUTS, id="SSE-1-split-utf8"),
        pytest.param(CRLF, [CRLF.index(b"\r\n") + 1, CRLF.index(b"\r\n\r\n") + 3], id="SSE-4-crlf"),
        pytest.param(CRLF, list(range(1, len(CRLF))), id="SSE-4-one-byte-chunks"),
    ],
)
def test_split_utf8_and_crlf_replay_byte_identical(body: bytes, cuts: list[int]) -> None:
    fx = recorded(body, cuts)
    assert fx.response is not None and len(fx.response.chunks) == len(cuts) + 1
    result = fixtures.replay_fixture(fx)
    assert result.client_body == body
    assert list(result.findings) == []
    assert fx.expect.client_body_sha256 is None and fx.expect.terminal == "complete"


@pytest.mark.parametrize(
    ("make", "terminal", "expected_rules"),
    [
        pytest.param(lambda: recorded(HEALTHY), "complete", [], id="complete"),
        pytest.param(
            lambda: recorded(HEALTHY + b'data: {"tail": 1}'), "truncated", ["SSE-14"], id="SSE-14"
        ),
        pytest.param(lambda: recorded(b""), "truncated", ["SSE-15"], id="SSE-15"),
        pytest.param(
            lambda: fixtures.from_flow(sse_flow(HEALTHY, status=500)),
            "failed",
            ["HTTP-1"],
            id="HTTP-1",
        ),
        pytest.param(lambda: _variety()[1], "aborted", ["SSE-14"], id="aborted"),
        pytest.param(lambda: _variety()[2], "failed", [], id="no-response"),
    ],
)
def test_terminal_state_and_findings(make, terminal: str, expected_rules: list[str]) -> None:  # type: ignore[no-untyped-def]
    fx = make()
    assert fx.expect.terminal == terminal
    assert rules(fx) == expected_rules


def test_a_cut_stream_replays_what_the_client_got_without_end_of_stream_checks() -> None:
    fx = _variety()[1]
    result = fixtures.replay_fixture(fx)
    # The partial event after the last blank line was held back, and SSE-14 is not reported:
    # the tap never saw the end of the stream.
    assert result.client_body == HEALTHY[: HEALTHY.index(b"\n\n") + 2]
    assert fx.expect.client_body_sha256 is not None


def test_check_fixture_fails_with_a_diff_and_update_rewrites(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = fixtures.save_fixture(recorded(HEALTHY + b"data: {oops}\n\n"), tmp_path / "x.json")
    assert fixtures.check_fixture(path, update=False) == ""
    fx = fixtures.load_fixture(path)
    assert rules(fx) == ["PAY-1"]
    fx.expect.findings = []  # an expectation that no longer holds
    fx.expect.terminal = "truncated"
    fixtures.save_fixture(fx, path)
    with pytest.raises(AssertionError) as err:
        fixtures.check_fixture(path, update=False)
    message = str(err.value)
    assert '+      {"rule": "PAY-1", "severity": "error", "event": 3}' in message
    assert '-    "terminal": "truncated"' in message and fixtures.UPDATE_ENV in message
    monkeypatch.setenv(fixtures.UPDATE_ENV, "1")
    diff = fixtures.check_fixture(path)
    assert "PAY-1" in diff and "PAY-1" in capsys.readouterr().err
    assert rules(fixtures.load_fixture(path)) == ["PAY-1"]
    assert fixtures.check_fixture(path) == ""


def test_check_fixture_catches_client_bytes_that_are_no_longer_the_upstream_body(
    tmp_path: Path,
) -> None:
    fx = recorded(HEALTHY)
    fx.expect.client_body_sha256 = "0" * 64  # as if a past pipeline had changed the bytes
    path = fixtures.save_fixture(fx, tmp_path / "x.json")
    with pytest.raises(AssertionError, match="client_body_sha256"):
        fixtures.check_fixture(path, update=False)


def test_iter_and_check_make_a_three_line_test_module(tmp_path: Path) -> None:
    for body in (HEALTHY, CRLF, HEALTHY + b"data: x"):
        fixtures.write_new(tmp_path / "captures", recorded(body, [3, 9]))
    paths = fixtures.iter_fixtures(tmp_path / "captures")
    assert len(paths) == 3
    for path in paths:
        fixtures.check_fixture(path, update=False)


# --- the command line -----------------------------------------------------------------------------


def test_cli_to_flows_from_flows_check_and_update(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    captures = tmp_path / "captures"
    fixtures.write_new(captures, recorded(HEALTHY, [4]))
    broken = fixtures.write_new(captures, recorded(HEALTHY + b"data: {x}\n\n"))
    flows = tmp_path / "captures.mitm"
    assert fixtures_cli.main(["to-flows", str(captures), "-o", str(flows)]) == 0
    assert fixtures_cli.main(["from-flows", str(flows), "-o", str(tmp_path / "back")]) == 0
    back = {p.name: p.read_text() for p in fixtures.iter_fixtures(tmp_path / "back")}
    assert back == {p.name: p.read_text() for p in fixtures.iter_fixtures(captures)}
    assert fixtures_cli.main(["check", str(captures)]) == 0

    fx = fixtures.load_fixture(broken)
    fx.expect.findings = []
    fixtures.save_fixture(fx, broken)
    capsys.readouterr()
    assert fixtures_cli.main(["check", str(captures)]) == 1
    out = capsys.readouterr()
    assert '+      {"rule": "PAY-1"' in out.out and "1 of 2 fixtures as expected" in out.err
    assert fixtures_cli.main(["update", str(captures)]) == 0
    assert "PAY-1" in capsys.readouterr().out
    assert fixtures_cli.main(["check", str(captures)]) == 0
    assert fixtures_cli.main(["check", str(tmp_path / "nothing")]) == 2
    assert "no fixtures under" in capsys.readouterr().err
