"""``mitmllm check FILE...``: mitmllm's findings for recordings, without a proxy.

Three kinds of file, told apart by name and content (or named with ``--format``):

* ``sse``: a raw event stream as an SDK or a bug report records it (``.sse``, ``.txt``), exactly
  the bytes of the response body; its wire format comes from its first JSON event (or
  ``--dialect``);
* ``fixture``: a fixture from ``captures/`` (``.json``), replayed at its recorded chunking as the
  test suite does;
* ``flows``: a mitmproxy flow file (``.mitm``, ``.flows``, or whatever mitmproxy wrote), every
  LLM flow in it checked as ``mitmdump -nr`` with mitmllm would.

Folders are searched for fixtures. The exit status is 1 when any error finding was found, 2
when a file cannot be read, 0 otherwise, so the command drops into CI. ``--json`` prints the
`CheckReport` model (its JSON Schema: ``mitmllm check --schema``).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Literal
from typing import TextIO

from pydantic import BaseModel
from pydantic import Field

from mitmllm.engine import fixtures
from mitmllm.engine.report import FlowReport
from mitmllm.engine.report import Usage
from mitmllm.engine.report import storable
from mitmllm.protocol import detect
from mitmllm.protocol.findings import Finding
from mitmllm.protocol.rules import Severity
from mitmllm.protocol.stream import StreamChecker

Kind = Literal["sse", "fixture", "flows"]
KINDS: tuple[str, ...] = ("sse", "fixture", "flows")
SCHEMA_VERSION = 1

#: Exit statuses.
OK, ERRORS, UNREADABLE = 0, 1, 2


# --- the result, as --json prints it ---------------------------------------------------------


class FindingOut(BaseModel):
    rule: str = Field(description="Rule ID, e.g. ANT-7 (see the README's rule list).")
    severity: Literal["error", "warning", "info"]
    event: int | None = Field(
        default=None, description="0-based number of the SSE block it concerns, if one."
    )
    offset: int | None = Field(default=None, description="Byte offset of that block.")
    message: str = Field(description="What broke, and what an official client does about it.")

    @classmethod
    def of(cls, f: Finding) -> FindingOut:
        return cls(
            rule=f.rule,
            severity=str(f.severity),  # type: ignore[arg-type]
            event=f.event,
            offset=f.offset,
            message=f.message,
        )


class StreamOut(BaseModel):
    name: str = Field(description="The file, or FILE#N for the N-th flow (1-based) of a flow file.")
    format: str | None = Field(
        description="Wire format (anthropic, openai-chat, openai-responses, gemini); null: unknown."
    )
    events: int | None = Field(default=None, description="SSE blocks read (null: not a stream).")
    complete: bool | None = Field(
        default=None, description="The stream's success terminator arrived (null: no stream)."
    )
    usage: dict[str, int] = Field(
        default_factory=dict,
        description="Token counts the response carried: input, output, cache_read, cache_write, "
        "reasoning (those it has).",
    )
    findings: list[FindingOut] = Field(default_factory=list)
    suppressed: dict[str, int] = Field(
        default_factory=dict, description="Repeats of a rule beyond the first ten, by rule ID."
    )


class FileOut(BaseModel):
    path: str
    kind: Kind | None = Field(description="How the file was read; null if it could not be.")
    streams: list[StreamOut] = Field(default_factory=list)
    error: str | None = Field(default=None, description="Why the file could not be read.")


class Totals(BaseModel):
    streams: int
    error: int = Field(description="Error findings in all streams.")
    warning: int
    info: int
    unreadable: int = Field(description="Files that could not be read.")


class CheckReport(BaseModel):
    """What ``mitmllm check --json`` prints."""

    version: int = Field(default=SCHEMA_VERSION, description="Version of this schema.")
    files: list[FileOut]
    totals: Totals
    exit_status: int = Field(description="0 clean, 1 error findings, 2 a file could not be read.")


# --- reading files ---------------------------------------------------------------------------


class Unreadable(Exception):
    """A file that is not what it was taken for; the message says why."""


def kind_of(path: Path, data: bytes) -> Kind:
    """What a file is, by its name, else by its first bytes."""
    suffix = path.suffix.lower()
    if suffix in (".sse", ".txt", ".log"):
        return "sse"
    if suffix == ".json":
        return "fixture"
    if suffix in (".mitm", ".flows", ".flow", ".dump"):
        return "flows"
    head = data.lstrip()[:64]
    if head.startswith(b"{") and b"format_version" in data[:4096]:
        return "fixture"
    if head[:1].isdigit() and b":" in head[:12]:
        return "flows"  # tnetstring: length, colon
    return "sse"


def check_sse(path: Path, data: bytes, dialect: str | None) -> list[StreamOut]:
    chosen = detect.by_name(dialect) if dialect else None
    checker = StreamChecker(chosen, autodetect=chosen is None)
    checker.feed(data)
    checker.close()
    found, v = checker.dialect, checker.validator
    report = FlowReport(format=found.name if found else None, stream=True)
    report.findings, report.events = checker.findings, checker.events
    if found is not None and v is not None:
        report.complete = v.complete
        report.usage = Usage.from_dict(found.usage(v.usage))
    return [_stream_out(str(path), report)]


def check_fixture(path: Path) -> list[StreamOut]:
    try:
        fixture = fixtures.load_fixture(path)
    except fixtures.FixtureError as e:
        raise Unreadable(str(e)) from e
    result = fixtures.replay_fixture(fixture)
    report = FlowReport(format=fixture.format, model=fixture.model, stream=fixture.stream)
    report.findings = result.findings
    if fixture.response is not None and fixture.stream:
        report.events, report.complete = result.events, result.terminal == "complete"
    return [_stream_out(str(path), report)]


def check_flows(path: Path) -> list[StreamOut]:
    from mitmproxy import http
    from mitmproxy import io as mio
    from mitmproxy.exceptions import FlowReadException

    from mitmllm.glue.stored import stored_report

    out: list[StreamOut] = []
    try:
        with path.open("rb") as fh:
            for n, flow in enumerate(mio.FlowReader(fh).stream(), 1):
                if not isinstance(flow, http.HTTPFlow):
                    continue
                report = stored_report(flow)
                if report is not None:
                    out.append(_stream_out(f"{path}#{n}", report))
    except FlowReadException as e:
        raise Unreadable(f"not a mitmproxy flow file ({e})") from e
    return out


def _stream_out(name: str, report: FlowReport) -> StreamOut:
    """One stream's result: what its flow report says."""
    return StreamOut(
        name=name,
        format=report.format,
        events=report.events,
        complete=report.complete if report.events is not None else None,
        usage=report.usage.to_dict() if report.usage is not None else {},
        findings=[FindingOut.of(f) for f in report.findings],
        suppressed=dict(report.findings.suppressed),
    )


def check_file(path: Path, kind: str, dialect: str | None) -> list[FileOut]:
    """The results for one path (a folder gives one per fixture in it)."""
    if path.is_dir():
        found = fixtures.iter_fixtures(path)
        if not found:
            return [FileOut(path=str(path), kind=None, error="no fixtures (*.json) in this folder")]
        return [r for p in found for r in check_file(p, "fixture", dialect)]
    try:
        data = path.read_bytes()
    except OSError as e:
        return [FileOut(path=str(path), kind=None, error=f"cannot read it ({e.strerror})")]
    chosen: Kind = kind_of(path, data) if kind == "auto" else kind  # type: ignore[assignment]
    try:
        if chosen == "sse":
            streams = check_sse(path, data, dialect)
        elif chosen == "fixture":
            streams = check_fixture(path)
        else:
            streams = check_flows(path)
    except Unreadable as e:
        return [FileOut(path=str(path), kind=chosen, error=str(e))]
    return [FileOut(path=str(path), kind=chosen, streams=streams)]


def run(paths: Sequence[Path], kind: str = "auto", dialect: str | None = None) -> CheckReport:
    files = [r for p in paths for r in check_file(p, kind, dialect)]
    counts = {s: 0 for s in ("error", "warning", "info")}
    for f in files:
        for s in f.streams:
            for finding in s.findings:
                counts[finding.severity] += 1
    unreadable = sum(1 for f in files if f.error)
    status = UNREADABLE if unreadable else ERRORS if counts["error"] else OK
    return CheckReport(
        files=files,
        totals=Totals(streams=sum(len(f.streams) for f in files), unreadable=unreadable, **counts),
        exit_status=status,
    )


# --- printing --------------------------------------------------------------------------------

_ORDER = {str(Severity.ERROR): 0, str(Severity.WARNING): 1, str(Severity.INFO): 2}


def render(report: CheckReport, out: TextIO) -> None:
    """A table of findings per stream, then the totals."""
    for f in report.files:
        if f.error:
            print(f"{f.path}: cannot check: {f.error}", file=out)
            continue
        if not f.streams:
            print(f"{f.path}: no LLM flow in it", file=out)
        for s in f.streams:
            print(_headline(s), file=out)
            if not s.findings:
                continue
            rows = [("rule", "severity", "event", "message")]
            rows += [
                (x.rule, x.severity, "-" if x.event is None else str(x.event), x.message)
                for x in s.findings
            ]
            widths = [max(len(r[i]) for r in rows) for i in range(3)]
            for r in rows:
                print(
                    f"  {r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:>{widths[2]}}  {r[3]}",
                    file=out,
                )
            for rule, n in s.suppressed.items():
                print(f"  ({rule}: {n} more not shown)", file=out)
    t = report.totals
    print(
        f"{t.streams} stream(s) checked: {t.error} error(s), {t.warning} warning(s), "
        f"{t.info} info" + (f"; {t.unreadable} file(s) could not be read" if t.unreadable else ""),
        file=out,
    )


def _headline(s: StreamOut) -> str:
    parts = [s.format or "unrecognised format"]
    if s.events is not None:
        parts.append(f"{s.events} events")
    if s.complete is not None:
        parts.append("complete" if s.complete else "incomplete")
    usage = Usage.from_dict(s.usage)
    if usage is not None:
        parts.append(f"tokens {usage}")
    worst = min((x.severity for x in s.findings), key=_ORDER.__getitem__, default=None)
    verdict = "ok" if worst is None else f"{len(s.findings)} finding(s), worst {worst}"
    return f"{s.name}: {', '.join(parts)}: {verdict}"


def main(
    paths: Sequence[Path],
    *,
    kind: str = "auto",
    dialect: str | None = None,
    as_json: bool = False,
    out: TextIO | None = None,
) -> int:
    out = out if out is not None else sys.stdout
    report = run(paths, kind, dialect)
    # half a surrogate pair (an upstream's ``\\ud83d``, PAY-4) in a finding's words or a model
    # name has no UTF-8: shown as the escape's text, as in a flow's metadata
    report = CheckReport.model_validate(storable(report.model_dump()))
    if as_json:
        print(report.model_dump_json(indent=2), file=out)
    else:
        render(report, out)
    return report.exit_status
