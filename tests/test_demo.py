"""The demo: its scenario table and configuration, and one real ``--quick`` run end to end.

The end-to-end run goes through the demo's command-line entry point, with mitmdump as a child
process as a newcomer runs it; the saved flow file is then checked row by row.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from io import StringIO
from pathlib import Path

import orjson
import pytest
from mitmproxy import http
from mitmproxy import io

from mitmllm.demo.__main__ import DEFAULT_OUT
from mitmllm.demo.__main__ import main
from mitmllm.demo.__main__ import web_command
from mitmllm.demo.clients import Answer
from mitmllm.demo.config import demo_config
from mitmllm.demo.config import upstream_name
from mitmllm.demo.mitmdump import Mitmdump
from mitmllm.demo.mitmdump import MitmdumpError
from mitmllm.demo.mitmdump import command
from mitmllm.demo.mitmdump import shown
from mitmllm.demo.scenarios import ALIAS_FROM
from mitmllm.demo.scenarios import ALIAS_TO
from mitmllm.demo.scenarios import LONG_TOOL_NAME
from mitmllm.demo.scenarios import ROW_HEADER
from mitmllm.demo.scenarios import ROWS
from mitmllm.demo.scenarios import Group
from mitmllm.demo.scenarios import Row
from mitmllm.demo.scenarios import select
from mitmllm.demo.table import COLUMNS
from mitmllm.demo.table import Result
from mitmllm.demo.table import render
from mitmllm.engine.config import parse_config
from mitmllm.glue.failover import match_route
from mitmllm.mock.scenarios import SCENARIOS
from mitmllm.mock.scenarios import expected_rules

QUICK = select(quick=True)
PRIMARY = "http://127.0.0.1:1"
FALLBACK = "http://127.0.0.1:2"


def _path(row: Row) -> str:
    return {
        "anthropic": "/v1/messages",
        "openai-chat": "/v1/chat/completions",
        "openai-responses": "/v1/responses",
        "gemini": f"/v1beta/models/{row.request_model}:streamGenerateContent",
    }[row.fmt]


# --- the scenario table and the configuration (no processes) --------------------------------


def test_rows_are_unique_and_every_mock_scenario_applies_to_its_format() -> None:
    assert len({r.key for r in ROWS}) == len(ROWS)
    for row in ROWS:
        assert row.fmt in SCENARIOS[row.scenario].expected, row.key


def test_quick_subset_keeps_one_of_every_group() -> None:
    assert {r.group for r in QUICK} == set(Group)
    assert len(QUICK) < len(ROWS)


@pytest.mark.parametrize(
    "row", [r for r in ROWS if r.group is Group.BROKEN], ids=lambda r: r.key.replace(" ", "-")
)
def test_broken_rows_break_a_rule(row: Row) -> None:
    assert expected_rules(row.scenario, row.fmt), "a broken row must show a finding"


def test_healthy_rows_break_none() -> None:
    for row in ROWS:
        if row.group is Group.HEALTHY:
            assert expected_rules(row.scenario, row.fmt) == set(), row.key


def test_config_is_valid_and_routes_exactly_the_failover_rows() -> None:
    config = parse_config(demo_config(PRIMARY, FALLBACK), "demo")
    for row in ROWS:
        route = match_route(config, "127.0.0.1", _path(row), row.request_model, row.fmt)
        assert (route is not None) == row.routed, row.key
        if route is not None:
            hops = [h.upstream for h in route.chain]
            fallback = upstream_name(row.fallback_format, "fallback")
            assert hops == [upstream_name(row.fmt, "primary"), fallback]
            assert route.translate == (row.fallback_format != row.fmt)
            fallback_model = route.chain[1].map_model(row.request_model)
            assert fallback_model is not None and "~" not in fallback_model, "fallback is healthy"
    assert config.breaker.failures >= len(ROWS), "no breaker may open during the demo"


def test_config_rules_alias_and_tool_flavour() -> None:
    config = parse_config(demo_config(PRIMARY, FALLBACK), "demo")
    alias, tools = config.models
    assert alias.match == (ALIAS_FROM,) and alias.to == ALIAS_TO and alias.restamp
    assert tools.tools == "openai"


def test_mitmdump_command_line_is_shown_as_typed() -> None:
    args = command(PRIMARY, Path("/elsewhere/c.yaml"), Path("/elsewhere/flows.mitm"))
    line = shown(args)
    assert line.startswith("mitmllm proxy ")
    assert f"--mode reverse:{PRIMARY}" in line  # the URL's // survives
    assert "--set mitmllm_config=/elsewhere/c.yaml" in line and "-w /elsewhere/flows.mitm" in line


def test_web_command_is_the_justfile_recipe_for_the_default_out() -> None:
    assert web_command(DEFAULT_OUT, DEFAULT_OUT / "flows.mitm") == "uv run just web"
    other = web_command(Path("/x/out"), Path("/x/out/flows.mitm"))
    assert other == "mitmllm web --rfile /x/out/flows.mitm"


def test_answer_describes_what_the_client_got() -> None:
    assert Answer("Hello there you", True).describe() == "complete message, 3 words"
    assert Answer("Hi", False).describe() == "1 word, no end reason, no error"
    assert Answer("", False).describe() == "empty answer, no end reason, no error"
    assert Answer("", True, tools=("get_time",)).describe() == "tool call get_time"
    err = Answer("Hello from", False, error="APIStatusError overloaded_error")
    assert err.describe() == "APIStatusError overloaded_error after 2 words"


def test_table_names_every_row_in_aligned_columns() -> None:
    results = [Result(r, Answer("Hello from the mock", True), None) for r in ROWS]
    text = render(results)
    lines = text.splitlines()
    header = lines[0]
    starts = [header.index(c) for c in COLUMNS]
    rows = [line for line in lines[2:] if not line.startswith("[")]
    assert len(rows) == len(ROWS)
    for row, line in zip(ROWS, rows, strict=True):
        assert line.startswith(row.key)
        # every cell starts under its heading
        assert all(line[s - 2 : s] == "  " for s in starts[1:]), line
    assert "(no flow saved)" in text


# --- failures of the demo itself -------------------------------------------------------------


def test_unusable_out_dir_exits_1_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    assert main(["--out", str(blocker / "out")]) == 1
    err = capsys.readouterr().err
    assert "cannot create the output directory" in err


async def test_mitmdump_that_cannot_start_says_why(tmp_path: Path) -> None:
    args = command(PRIMARY, tmp_path / "missing.yaml", tmp_path / "flows.mitm")
    proxy = Mitmdump(args, tmp_path / "mitmdump.log")
    with pytest.raises(MitmdumpError, match="exited with status") as caught:
        try:
            await proxy.start()
        finally:
            await proxy.stop()
    assert "mitmllm_config" in str(caught.value)
    assert proxy.returncode not in (None, 0)


# --- one --quick run, end to end -------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    returncode: int
    stdout: str
    stderr: str
    flows: dict[str, http.HTTPFlow]
    out: Path


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    # In this process (the SDKs are imported already); mitmdump is a child process as ever.
    out = tmp_path_factory.mktemp("demo") / "out"
    stdout, stderr = StringIO(), StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        returncode = main(["--quick", "--out", str(out)])
    flows: dict[str, http.HTTPFlow] = {}
    if (out / "flows.mitm").exists():
        with (out / "flows.mitm").open("rb") as f:
            for flow in io.FlowReader(f).stream():
                assert isinstance(flow, http.HTTPFlow)
                flows[flow.request.headers[ROW_HEADER]] = flow
    yield Run(returncode, stdout.getvalue(), stderr.getvalue(), flows, out)


def _flagged(flow: http.HTTPFlow) -> set[str]:
    findings = flow.metadata["mitmllm"]["findings"]
    return {f["rule"] for f in findings if f["severity"] in ("error", "warning")}


def _rules(flow: http.HTTPFlow) -> set[str]:
    return {f["rule"] for f in flow.metadata["mitmllm"]["findings"]}


def test_quick_run_exits_0_and_saves_a_flow_per_row(quick_run: Run) -> None:
    assert quick_run.returncode == 0, quick_run.stderr + quick_run.stdout
    assert set(quick_run.flows) == {r.key for r in QUICK}
    for out in ("flows.mitm", "mitmdump.log", "mitmllm-demo.yaml"):
        assert (quick_run.out / out).is_file()
    assert "listening at 127.0.0.1:" in (quick_run.out / "mitmdump.log").read_text()


def test_quick_run_prints_progress_the_table_and_the_web_command(quick_run: Run) -> None:
    stdout = quick_run.stdout
    progress, _, rest = stdout.partition("stopping mitmdump")
    table_part, _, _ = rest.partition("scenarios in")
    digits = len(str(len(QUICK)))
    for i, row in enumerate(QUICK, 1):
        assert f"[{i:>{digits}}/{len(QUICK)}] {row.key}" in progress
        assert f"\n{row.key} " in table_part, f"the table must name {row.key}"
    assert all(c in table_part for c in COLUMNS)
    last = stdout.strip().splitlines()[-1]
    flows = quick_run.out / "flows.mitm"
    assert last.endswith(f"--rfile {flows}") and "mitmllm web " in last


@pytest.mark.parametrize(
    "row",
    [r for r in QUICK if r.group is Group.BROKEN],
    ids=lambda r: (
        f"{r.key.replace(' ', '-')}-{'-'.join(sorted(expected_rules(r.scenario, r.fmt)))}"
    ),
)
def test_quick_run_flags_broken_rows_with_their_rules(quick_run: Run, row: Row) -> None:
    flow = quick_run.flows[row.key]
    assert _flagged(flow) == expected_rules(row.scenario, row.fmt)
    assert flow.marked == ":x:" and flow.comment
    assert flow.response is not None and flow.response.headers["x-mock-upstream"] == "primary"


def test_quick_run_healthy_row_is_clean(quick_run: Run) -> None:
    flow = quick_run.flows["anthropic healthy"]
    assert flow.metadata["mitmllm"]["findings"] == [] and not flow.marked
    assert flow.metadata["mitmllm"]["complete"] is True
    assert flow.metadata["mitmllm"]["ttfe_ms"] >= 0


@pytest.mark.parametrize(
    "row",
    [r for r in QUICK if r.routed and r.served_by == "fallback"],
    ids=lambda r: f"{r.key.replace(' ', '-')}-RLY-1",
)
def test_RLY_1_quick_run_fallback_rows_are_served_by_the_fallback(quick_run: Run, row: Row) -> None:
    flow = quick_run.flows[row.key]
    meta = flow.metadata["mitmllm"]
    fallback = upstream_name(row.fallback_format, "fallback")
    assert meta["upstream"] == fallback and meta["fell_back"] is True
    assert [a["upstream"] for a in meta["attempts"]] == [
        upstream_name(row.fmt, "primary"),
        fallback,
    ]
    assert flow.response is not None and flow.response.headers["x-mock-upstream"] == "fallback"
    assert _rules(flow) == {"RLY-1"} and flow.marked == ":arrows_counterclockwise:"
    assert meta["complete"] is True
    assert f"{row.key}" in quick_run.stdout


def test_quick_run_an_anthropic_client_falls_back_to_an_openai_chat_upstream(
    quick_run: Run,
) -> None:
    flow = quick_run.flows["anthropic 529 to chat"]
    meta = flow.metadata["mitmllm"]
    assert meta["translated"] == "anthropic -> openai-chat"
    primary, fallback = meta["attempts"]
    assert (primary["outcome"], primary["status"]) == ("http_529", 529)
    assert fallback["outcome"] == "ok" and fallback["url"].endswith("/v1/chat/completions")
    # the flow is the client's: its path, and an Anthropic stream with the model it asked for
    assert flow.request.path == "/v1/messages"
    body = flow.response.raw_content if flow.response else None
    assert body is not None and b"event: message_stop" in body and b"[DONE]" not in body
    assert b'"model":"claude-demo-translate~overloaded"' in body
    assert meta["complete"] is True
    line = next(x for x in quick_run.stdout.splitlines() if "] anthropic 529 to chat" in x)
    assert "complete message" in line


def test_RLY_3_quick_run_stall_after_commit_ends_with_an_error_event(quick_run: Run) -> None:
    flow = quick_run.flows["anthropic stall-after-commit"]
    meta = flow.metadata["mitmllm"]
    assert meta["upstream"] == "anthropic-primary" and "RLY-3" in _rules(flow)
    assert flow.response is not None and b"event: error" in (flow.response.raw_content or b"")
    assert b"message_stop" not in (flow.response.raw_content or b"")
    line = next(x for x in quick_run.stdout.splitlines() if "] anthropic stall-after-commit" in x)
    assert "timeout_error" in line


def test_quick_run_alias_reaches_the_upstream_as_its_target(quick_run: Run) -> None:
    flow = quick_run.flows["anthropic model alias"]
    assert orjson.loads(flow.request.content or b"")["model"] == ALIAS_TO
    body = flow.response.raw_content if flow.response else None
    assert body is not None and f'"model":"{ALIAS_FROM}"'.encode() in body
    assert ALIAS_TO.encode() not in body, "the client sees the alias only"


def test_REQ_1_quick_run_tool_schema_is_sanitized_upstream_and_named_back(quick_run: Run) -> None:
    flow = quick_run.flows["chat tool schema"]
    (tool,) = orjson.loads(flow.request.content or b"")["tools"]
    assert len(tool["function"]["name"]) <= 64
    assert tool["function"]["parameters"]["type"] == "object"
    assert "REQ-1" in _rules(flow)
    body = flow.response.raw_content if flow.response else None
    assert body is not None and LONG_TOOL_NAME.encode() in body
    assert tool["function"]["name"].encode() not in body


@pytest.mark.parametrize(
    "row", [r for r in QUICK if r.group is Group.REPAIR], ids=lambda r: r.key.replace(" ", "-")
)
def test_quick_run_repaired_rows_are_served_mended_by_the_primary(quick_run: Run, row: Row) -> None:
    flow = quick_run.flows[row.key]
    meta = flow.metadata["mitmllm"]
    assert meta["upstream"] == upstream_name(row.fmt, "primary") and "fell_back" not in meta
    (attempt,) = meta["attempts"]
    assert attempt["outcome"] == "ok" and attempt["repairs"]
    assert any(r.startswith("FIX-") for r in _rules(flow)) and flow.marked == ":wrench:"
    assert meta["complete"] is True
