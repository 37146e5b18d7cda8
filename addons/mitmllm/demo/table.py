"""The demo's results: each row's answer next to its saved flow, as one aligned table.

The flows are read back from the file mitmdump wrote, so the table shows what anyone opening
that file sees: the findings, the upstream that served and the time to the first event all come
from ``flow.metadata["mitmllm"]`` and the response headers as saved.
"""

from __future__ import annotations

from collections.abc import Iterable
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from typing import Any

from mitmproxy import http
from mitmproxy import io

from mitmllm.demo.scenarios import ROW_HEADER
from mitmllm.demo.scenarios import Group
from mitmllm.demo.scenarios import Row
from mitmllm.engine.report import METADATA_KEY
from mitmllm.engine.report import FlowReport
from mitmllm.mock.scenarios import HEADER_UPSTREAM
from mitmllm.mock.upstream import ReceivedRequest

if TYPE_CHECKING:  # the SDKs behind `clients` take seconds to import; the table needs none
    from mitmllm.demo.clients import Answer

COLUMNS = ("scenario", "upstream did", "client received", "findings", "served by", "TTFE")
#: Widest a cell may be; longer text is cut with an ellipsis.
MAX_WIDTH = (30, 38, 46, 26, 9, 7)


def read_flows(path: Path) -> list[http.HTTPFlow]:
    """Every HTTP flow in a mitmproxy flow file; a record cut off at the end is ignored."""
    flows: list[http.HTTPFlow] = []
    with path.open("rb") as f:
        try:
            for flow in io.FlowReader(f).stream():
                if isinstance(flow, http.HTTPFlow):
                    flows.append(flow)
        except Exception:  # a record still being written: read the rest next time
            pass
    return flows


def flows_by_row(flows: Iterable[http.HTTPFlow]) -> dict[str, http.HTTPFlow]:
    """The saved flow of each row, by the row key the client sent in its request."""
    return {f.request.headers[ROW_HEADER]: f for f in flows if ROW_HEADER in f.request.headers}


@dataclass(frozen=True, slots=True)
class Result:
    """One row: what was asked, what the client got, and the flow mitmdump saved."""

    row: Row
    answer: Answer
    flow: http.HTTPFlow | None
    seen: ReceivedRequest | None = None  # the request as the primary mock received it

    @property
    def report(self) -> FlowReport:
        """mitmllm's report on the flow, as saved in its metadata."""
        if self.flow is None:
            return FlowReport()
        return FlowReport.from_metadata(self.flow.metadata.get(METADATA_KEY))

    @property
    def rules(self) -> list[str]:
        """Rule IDs of the flow's errors and warnings, and of what mitmllm did to the request
        and the route (REQ-*, RLY-* infos), in order."""
        out: list[str] = []
        for f in self.report.findings:
            shown = f.severity != "info" or f.rule.startswith(_INFO_SHOWN)
            if shown and f.rule not in out:
                out.append(f.rule)
        return out

    @property
    def served_by(self) -> str | None:
        """The mock that answered (its name header), else the route's upstream."""
        resp = self.flow.response if self.flow is not None else None
        if resp is not None and HEADER_UPSTREAM in resp.headers:
            return resp.headers[HEADER_UPSTREAM]
        return self.report.upstream

    @property
    def ttfe_ms(self) -> float | None:
        value = self.report.ttfe_ms
        return float(value) if value is not None else None

    def cells(self) -> tuple[str, ...]:
        ttfe = self.ttfe_ms
        return (
            self.row.key,
            self.upstream_did(),
            self.client_received(),
            " ".join(self.rules) or ("-" if self.flow is not None else "(no flow saved)"),
            self.served_by or "-",
            f"{ttfe:.0f} ms" if ttfe is not None else "-",
        )

    def upstream_did(self) -> str:
        """The row's description; for rewrites, what the upstream actually received."""
        seen = self.seen
        if self.row.group is not Group.REWRITE or seen is None:
            return self.row.did
        if self.row.scenario == "tool":
            names = _tool_names(seen.json)
            return f"got tool {_name(names[0])}" if names else self.row.did
        return f"got model {seen.model}"

    def client_received(self) -> str:
        return client_received(self.row, self.answer)

    @property
    def flagged(self) -> bool:
        """The flow has an error or warning finding (mitmweb marks it)."""
        return self.report.worst in ("error", "warning")


def client_received(row: Row, answer: Answer) -> str:
    """What the client got; for rewrites, the model and tool names it saw."""
    if row.group is not Group.REWRITE or answer.error is not None:
        return answer.describe()
    if answer.tools:
        return f"tool call {_name(answer.tools[0])}"
    return f"{answer.describe()} as {answer.model}"


#: Info findings worth a column: what mitmllm did to a request (REQ), a route (RLY) and a
#: stream (FIX).
_INFO_SHOWN = ("REQ-", "RLY-", "FIX-")


def _name(name: str) -> str:
    """A long tool name by its end and length: the part a sanitizer changes."""
    return name if len(name) <= 24 else f"…{name[-16:]} ({len(name)} chars)"


def _tool_names(body: Any) -> list[str]:
    tools = body.get("tools") if isinstance(body, dict) else None
    names = []
    for tool in tools if isinstance(tools, list) else []:
        fn = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(fn, dict) and isinstance(fn.get("name"), str):
            names.append(fn["name"])
    return names


# --- rendering ------------------------------------------------------------------------------


def _cut(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def render(results: Sequence[Result]) -> str:
    """The table: a header, then the rows under a line per group."""
    cells = [tuple(_cut(c, w) for c, w in zip(r.cells(), MAX_WIDTH, strict=True)) for r in results]
    widths = [max([len(name), *(len(row[i]) for row in cells)]) for i, name in enumerate(COLUMNS)]

    def line(values: Sequence[str]) -> str:
        return "  ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)).rstrip()

    out = [line(COLUMNS), line(["-" * w for w in widths])]
    group = None
    for result, row in zip(results, cells, strict=True):
        if result.row.group is not group:
            group = result.row.group
            out.append(f"[{group.value}] {group.note}")
        out.append(line(row))
    return "\n".join(out)


def summary(results: Sequence[Result], seconds: float) -> str:
    """One line: how many rows, flagged flows, fall-backs, client errors."""
    flagged = sum(1 for r in results if r.flagged)
    fell_back = sum(1 for r in results if r.report.fell_back)
    raised = sum(1 for r in results if r.answer.error is not None)
    quiet = sum(1 for r in results if r.flagged and r.answer.error is None)
    return (
        f"{len(results)} scenarios in {seconds:.1f} s: {flagged} flows flagged "
        f"({quiet} of them without any exception in the client), {fell_back} answered by the "
        f"fallback, {raised} clients raised an exception"
    )
