"""`mitmllm check`: raw SSE recordings, fixtures and flow files; the table, --json, exit status."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from mitmproxy import io as mio

from mitmllm.cli import check
from mitmllm.cli.check import CheckReport
from mitmllm.cli.check import kind_of
from mitmllm.engine import fixtures
from tests import anthropic_streams

RECORDINGS = Path(__file__).parent / "recordings"
SPLICED = RECORDINGS / "anthropic-keepalive-inside-tool-call.sse"
HEALTHY = RECORDINGS / "anthropic-tool-call.sse"
CAPTURES = Path(__file__).parents[1] / "captures"
DROP = CAPTURES / "scenarios" / "anthropic--claude-sonnet-4-6--drop--872f79.json"


def run(*paths: Path, **kw: object) -> tuple[int, str]:
    out = io.StringIO()
    status = check.main(list(paths), out=out, **kw)  # type: ignore[arg-type]
    return status, out.getvalue()


def test_a_healthy_recording_is_ok_and_exits_0() -> None:
    status, text = run(HEALTHY)
    assert status == 0
    assert text.splitlines()[0] == (
        f"{HEALTHY}: anthropic, 15 events, complete, tokens 472 in, 89 out: ok"
    )


def test_a_spliced_keepalive_is_a_table_of_rule_severity_event_and_message() -> None:
    status, text = run(SPLICED)
    assert status == 1, "an error finding fails the run, so it drops into CI"
    lines = text.splitlines()
    assert lines[1].split() == ["rule", "severity", "event", "message"]
    rows = {line.split()[0]: line.split(None, 3) for line in lines[2:] if line.startswith("  ")}
    assert rows["SSE-18"][1:3] == ["error", "10"]
    assert rows["PAY-1"][1:3] == ["error", "9"]
    assert "keep-alive was spliced inside a line" in rows["SSE-18"][3]
    assert lines[-1] == "1 stream(s) checked: 3 error(s), 0 warning(s), 2 info"


def test_json_follows_its_documented_schema() -> None:
    status, text = run(SPLICED, HEALTHY, as_json=True)
    data = json.loads(text)
    report = CheckReport.model_validate(data)  # the schema `mitmllm check --schema` prints
    assert report.exit_status == status == 1
    spliced, healthy = (f.streams[0] for f in report.files)
    assert [f.kind for f in report.files] == ["sse", "sse"]
    assert spliced.format == "anthropic" and spliced.events == 16 and spliced.complete is True
    assert healthy.usage == {"input": 472, "output": 89}
    first = data["files"][0]["streams"][0]["findings"][0]
    assert set(first) == {"rule", "severity", "event", "offset", "message"}
    assert healthy.findings == [] and report.totals.streams == 2
    assert report.totals.error == 3 and report.totals.unreadable == 0


def test_the_schema_documents_every_field() -> None:
    schema = CheckReport.model_json_schema()
    finding = schema["$defs"]["FindingOut"]["properties"]
    assert {"rule", "severity", "event", "offset", "message"} <= set(finding)
    assert all("description" in finding[k] for k in ("rule", "event", "message"))
    assert "exit_status" in schema["properties"]


def test_the_wire_format_can_be_given_for_a_recording(tmp_path: Path) -> None:
    chat = tmp_path / "chat.sse"
    chat.write_bytes(anthropic_streams.TOOL)
    status, text = run(chat, dialect="openai-chat", as_json=True)
    stream = json.loads(text)["files"][0]["streams"][0]
    assert stream["format"] == "openai-chat"
    assert status == 1 and stream["findings"], "an Anthropic stream read as Chat is broken"


@pytest.mark.parametrize("as_json", [False, True], ids=["table", "json"])
def test_half_a_surrogate_pair_in_a_finding_is_printed_as_its_escape(
    as_json: bool, tmp_path: Path
) -> None:
    """An in-band error whose message ends in half a surrogate pair (``\\ud83d``: an emoji cut
    at a token boundary) once made both outputs raise, UTF-8 having no bytes for it."""
    recording = tmp_path / "cut.sse"
    recording.write_bytes(
        anthropic_streams.TOOL.split(b"event: content_block_start")[0]
        + b'event: error\ndata: {"type":"error","error":{"type":"overloaded_error",'
        + b'"message":"boom \\ud83d"}}\n\n'
    )
    raw = io.BytesIO()
    out = io.TextIOWrapper(raw, encoding="utf-8")  # as stdout writes: UTF-8, strict
    status = check.main([recording], dialect="anthropic", as_json=as_json, out=out)
    out.flush()
    text = raw.getvalue().decode("utf-8")
    assert status == 1
    if as_json:
        messages = [f["message"] for f in json.loads(text)["files"][0]["streams"][0]["findings"]]
    else:
        messages = [line for line in text.splitlines() if line.startswith("  ANT-20")]
    assert any("boom \\ud83d" in m for m in messages), text


def test_a_fixture_gives_the_findings_it_expects() -> None:
    fixture = fixtures.load_fixture(DROP)
    status, text = run(DROP, as_json=True)
    stream = json.loads(text)["files"][0]["streams"][0]
    assert [f["rule"] for f in stream["findings"]] == [f.rule for f in fixture.expect.findings]
    assert stream["complete"] is False and status == 1


def test_a_folder_is_searched_for_fixtures() -> None:
    report = check.run([CAPTURES / "healthy"])
    assert len(report.files) == len(list((CAPTURES / "healthy").glob("*.json")))
    assert all(f.kind == "fixture" and not f.error for f in report.files)
    assert report.exit_status == 0


def test_a_flow_file_is_checked_flow_by_flow(tmp_path: Path) -> None:
    flows = tmp_path / "recorded.mitm"
    healthy = next((CAPTURES / "healthy").glob("anthropic--*.json"))
    with flows.open("wb") as fh:
        writer = mio.FlowWriter(fh)
        for path in (healthy, DROP):
            writer.add(fixtures.to_flow(fixtures.load_fixture(path)))
    status, text = run(flows)
    assert status == 1
    assert f"{flows}#1: anthropic" in text and f"{flows}#2: anthropic" in text
    assert "ANT-18  error" in text


def test_an_unreadable_file_exits_2_and_says_why(tmp_path: Path) -> None:
    bad = tmp_path / "broken.mitm"
    bad.write_bytes(b"12:not a flow,")
    status, text = run(bad, tmp_path / "missing.sse", HEALTHY)
    assert status == 2
    assert f"{bad}: cannot check: not a mitmproxy flow file" in text
    assert f"{tmp_path / 'missing.sse'}: cannot check: cannot read it" in text
    assert "2 file(s) could not be read" in text


@pytest.mark.parametrize(
    ("name", "data", "kind"),
    [
        ("x.sse", b"{", "sse"),
        ("x.json", b"data: 1\n\n", "fixture"),
        ("x.mitm", b"", "flows"),
        ("noext", b'{\n  "format_version": 1,', "fixture"),
        ("noext", b"1234:", "flows"),
        ("noext", b"event: message_start\ndata: {}\n\n", "sse"),
    ],
)
def test_what_a_file_is_comes_from_its_name_then_its_content(
    name: str, data: bytes, kind: str
) -> None:
    assert kind_of(Path(name), data) == kind
