"""mitmweb / mitmproxy contentviews for LLM flows: the story of a flow, as a person reads it.

* "LLM request": the model the client asked for and the model sent upstream, the stream flag,
  the tools offered, the system prompt and the conversation by role (tool calls with their
  arguments, tool results with the call they answer), and what mitmllm rewrote.
* "LLM stream": for a response event stream, first what happened (the time to the first event
  and in total, usage, how the response ended, every attempt of a routed flow with its findings,
  the repairs, what the client's stream validates as after them), then the answer a client
  assembles, then the numbered events with the findings
  at the event they concern.
* "LLM response": the same story for a whole (JSON) response body, then the body.

The views re-run the (fast, sans-I/O) validator over the stored body, so they also work on flows
loaded from a file; what only the live proxy saw (attempts, timings) comes from the flow's report.
Long lines are wrapped: mitmweb shows the text as it is, without wrapping it.
"""

from __future__ import annotations

import json
import textwrap
from collections import defaultdict
from typing import Any

from mitmproxy import contentviews
from mitmproxy import http
from mitmproxy.contentviews import Contentview
from mitmproxy.contentviews import Metadata

from mitmllm.engine.report import End
from mitmllm.engine.report import FlowReport
from mitmllm.engine.report import Usage
from mitmllm.glue import flowstate
from mitmllm.protocol import detect
from mitmllm.protocol.dialect import INVALID
from mitmllm.protocol.dialect import NO_DATA
from mitmllm.protocol.dialect import SENTINEL
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.findings import Finding
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.stream import check_stream
from mitmllm.protocol.stream import is_event_stream
from mitmllm.protocol.transcript import Part
from mitmllm.protocol.transcript import transcript

#: Lines are wrapped at this width.
WIDTH = 100
_MARK = {"error": "!!", "warning": "! ", "info": "i "}


def _wrap(text: str, indent: str = "", first: str | None = None) -> list[str]:
    """`text` wrapped at WIDTH, its own line breaks kept; `first` prefixes the first line."""
    out: list[str] = []
    lead = indent if first is None else first
    for para in text.splitlines() or [""]:
        out.extend(
            textwrap.wrap(
                para,
                WIDTH,
                initial_indent=lead,
                subsequent_indent=indent,
                break_long_words=True,
                break_on_hyphens=False,
                drop_whitespace=True,
            )
            or [lead.rstrip()]
        )
        lead = indent
    return out


def _finding(f: Finding, indent: str) -> list[str]:
    where = f" @event {f.event}" if f.event is not None else ""
    return _wrap(
        f"{f.rule} {f.severity}{where}: {f.message}",
        indent + "   ",
        first=f"{indent}{_MARK[str(f.severity)]} ",
    )


def _short(value: Any, n: int = 70) -> str:
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    s = s.replace("\n", "\\n")
    return s if len(s) <= n else s[: n - 1] + "…"


def _flow_dialect(flow: http.HTTPFlow | None) -> tuple[Dialect | None, Any]:
    if flow is None:
        return None, None
    report = flowstate.report_of(flow)
    req = flow.request
    body = None
    try:
        raw = req.get_content(strict=False)
        if raw:
            body, _ = parse_json(raw)
    except Exception:
        body = None
    if body is INVALID:
        body = None
    fmt = report.format if report is not None else None
    dialect = detect.by_name(fmt) or detect.from_request(req.method, req.path, body)
    return dialect, body


def _is_llm(flow: http.HTTPFlow | None) -> bool:
    if flow is None:
        return False
    if flowstate.report_of(flow) is not None:
        return True
    dialect, body = _flow_dialect(flow)
    return dialect is not None


def _flow_of(metadata: Metadata) -> http.HTTPFlow | None:
    return metadata.flow if isinstance(metadata.flow, http.HTTPFlow) else None


# --- what happened ---------------------------------------------------------------------------


def story(report: FlowReport, usage: Usage | None = None) -> list[str]:
    """Timings, usage, how the response ended, the attempts and the repairs."""
    out: list[str] = []
    times = []
    if report.ttfe_ms is not None:
        times.append(f"first event after {_ms(report.ttfe_ms)}")
    if report.duration_ms is not None:
        times.append(f"{_ms(report.duration_ms)} in total")
    if times:
        out.append("time: " + ", ".join(times))
    usage = usage or report.usage
    if usage is not None and usage.to_dict():
        out.append(f"usage: {usage}")
    if report.end is End.CLIENT_DISCONNECT:
        out.append(f"ended: the client went away before the end ({report.end_error or '-'})")
    elif report.end is End.UPSTREAM_FAILURE:
        out.append(f"ended: the upstream broke off ({report.end_error or '-'})")
    if report.attempts:
        route = f" (route {report.route})" if report.route else ""
        out += ["", f"--- attempts{route}: {_relay_outcome(report)} ---"]
        for i, a in enumerate(report.attempts, 1):
            served = "  <- served the client" if a.committed else ""
            status = f"HTTP {a.status}" if a.status is not None else "no response"
            timing = [f"first event {_ms(a.ttfe_ms)}"] if a.ttfe_ms is not None else []
            if a.duration_ms is not None:
                timing.append(_ms(a.duration_ms))
            line = f"{i}. {a.upstream}: {a.outcome}, {status}, {', '.join(timing) or '-'}{served}"
            out += _wrap(line, "     ", first="")
            if a.error:
                out += _wrap(a.error, "     ", first="   error: ")
            out += [line for f in a.findings for line in _finding(f, "   ")]
            for r in a.repairs:
                out += _wrap(f"{r.rule} mends {r.mends}: {r.message}", "     ", first="   fix ")
    if report.repairs:
        out += ["", f"--- repairs: {len(report.repairs)} ---"]
        for r in report.repairs:
            where = f" @event {r.event}" if r.event is not None else ""
            out += _wrap(f"{r.rule} mends {r.mends}{where}: {r.message}", "   ")
        if report.client is not None:
            out.append(f"   the client got the mended stream, which validates as: {report.client}")
    if report.gate:
        out.append(report.gate)
    return out


def _relay_outcome(report: FlowReport) -> str:
    if report.upstream and report.fell_back:
        return f"served by {report.upstream} after {len(report.attempts) - 1} failed"
    if report.upstream:
        return f"served by {report.upstream}"
    return {"failed_before_commit": "every upstream failed", "cancelled": "the client left"}.get(
        report.relay or "", report.relay or "pending"
    )


def _ms(value: float) -> str:
    return f"{value:.0f} ms" if value < 10_000 else f"{value / 1000:.1f} s"


# --- LLM stream --------------------------------------------------------------------------------


def render_stream(
    data: bytes, dialect: Dialect | None, request: Any = None, report: FlowReport | None = None
) -> str:
    findings, pairs, checker = check_stream(dialect, data, request=request)
    dialect = checker.dialect
    by_event: dict[int | None, list[Finding]] = defaultdict(list)
    for f in findings:
        by_event[f.event].append(f)
    out: list[str] = []
    title = dialect.title if dialect else "unrecognised stream"
    out.append(f"{title}: {len(pairs)} events, {len(data)} bytes — {findings.summary()}")
    if findings.suppressed:
        more = ", ".join(f"{r} +{n}" for r, n in findings.suppressed.items())
        out.append(f"(repeats not shown: {more})")
    for f in by_event.pop(None, []):
        out += _finding(f, "  ")
    usage = None
    if dialect is not None and checker.validator is not None:
        usage = Usage.from_dict(dialect.usage(checker.validator.usage))
    out += story(report or FlowReport(), usage)
    if dialect is not None:
        out.append("")
        out.extend(_assembled(dialect, pairs))
    out += ["", "--- events ---"]
    for ev, payload in pairs:
        out.append(f"#{ev.index:<4} {_describe(ev, payload, dialect)}")
        for f in by_event.pop(ev.index, []):
            out += _finding(f, "      ")
    if checker.trailing:
        out.append(
            f"#{len(pairs):<4} (unterminated, {len(checker.trailing)} bytes) "
            f"{_short(checker.trailing.decode('utf-8', 'replace'))}"
        )
    for _index, rest in sorted(by_event.items(), key=lambda kv: kv[0] or 0):
        for f in rest:
            out += _finding(f, "      ")
    return "\n".join(out) + "\n"


def _describe(ev: Any, payload: Any, dialect: Dialect | None) -> str:
    if payload is NO_DATA:
        if ev.is_blank:
            return "(blank line)"
        if ev.is_comment:
            return f": {_short(' | '.join(ev.comments))}"
        return f"event: {ev.event} (no data)"
    if payload is SENTINEL:
        return ev.data or "[DONE]"
    if payload is INVALID:
        return f"(not JSON) {_short(ev.data)}"
    summary = ""
    if dialect is not None:
        try:
            summary = dialect.summarize(ev, payload)
        except Exception as e:  # a view must render whatever the payload holds
            summary = f"(cannot summarise: {type(e).__name__})"
    return _short(summary or ev.event or payload, WIDTH - 6)


def _assembled(dialect: Dialect, pairs: list[tuple[Any, Any]]) -> list[str]:
    try:
        msg = dialect.assemble(pairs)
    except Exception as e:
        return [f"--- message: cannot assemble ({type(e).__name__}: {e}) ---"]
    out = ["--- message ---"]
    if msg.id or msg.model:
        out.append(f"id: {msg.id or '-'}   model: {msg.model or '-'}")
    for b in msg.blocks:
        prefix = f"[choice {b.choice}] " if b.choice else ""
        if b.kind == "tool_call":
            shown = b.input if b.input is not None else b.text
            out += _wrap(
                f"{prefix}tool call {b.name} ({b.id or '-'}): {_short(shown, 2000)}", "    "
            )
        elif b.kind in ("text", "thinking", "refusal"):
            out.append(f"{prefix}{b.kind}:")
            out += _wrap(b.text or "", "  ")
        else:
            out += _wrap(f"{prefix}{b.kind} {b.name or ''}: {_short(b.text or b.input, 400)}", "  ")
    out.append(f"stop: {msg.stop_reason or '-'}")
    if msg.error:
        out += _wrap(f"error: {msg.error}", "  ")
    return out


class LLMStreamContentview(Contentview):
    """What happened, the reassembled answer, then the numbered events with their findings."""

    @property
    def name(self) -> str:
        return "LLM stream"

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        flow = _flow_of(metadata)
        dialect, body = _flow_dialect(flow)
        report = flowstate.report_of(flow) if flow is not None else None
        return render_stream(data, dialect, body, report)

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        msg = metadata.http_message
        if not isinstance(msg, http.Response) or not is_event_stream(metadata.content_type):
            return -1
        return 2.0 if _is_llm(_flow_of(metadata)) else 0.5


# --- LLM response (a whole JSON body) --------------------------------------------------------


def render_response(body: Any, dialect: Dialect | None, report: FlowReport) -> str:
    out = [f"{dialect.title if dialect else 'LLM'} response — {report.summary}"]
    out += [line for f in report.findings for line in _finding(f, "  ")]
    usage = Usage.from_dict(dialect.body_usage(body)) if dialect is not None else None
    out += story(report, usage)
    out += ["", "--- body ---"]
    text = json.dumps(body, indent=2, ensure_ascii=False) if body is not INVALID else "(not JSON)"
    for line in text.splitlines():
        if len(line) <= WIDTH:
            out.append(line)
        else:
            lead = line[: len(line) - len(line.lstrip())]
            out += _wrap(line.lstrip(), lead + "  ", first=lead)
    return "\n".join(out) + "\n"


class LLMResponseContentview(Contentview):
    """The story of an LLM flow whose response is a whole JSON body, then the body."""

    @property
    def name(self) -> str:
        return "LLM response"

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        flow = _flow_of(metadata)
        dialect, _ = _flow_dialect(flow)
        report = (flowstate.report_of(flow) if flow is not None else None) or FlowReport()
        body, _ = parse_json(data) if data else (None, None)
        return render_response(body, dialect, report)

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        msg = metadata.http_message
        if not isinstance(msg, http.Response) or "json" not in (metadata.content_type or ""):
            return -1
        return 2.0 if _is_llm(_flow_of(metadata)) else -1


# --- LLM request -------------------------------------------------------------------------------


def render_request(body: Any, dialect: Dialect | None, path: str, report: FlowReport) -> str:
    out: list[str] = []
    out.append(f"format: {dialect.title if dialect else 'unrecognised'}")
    in_body = dialect.request_model(path, body) if dialect else None
    asked = report.model or in_body
    sent = report.model_sent or in_body
    rw = report.rewrite or {}
    if asked and sent and asked != sent:
        out.append(f"model asked: {asked}")
        why = f"rule {rw.get('rule') or '-'}" if rw.get("model") == sent else None
        if why is None and report.upstream:
            why = f"route {report.route or '-'}, upstream {report.upstream}"
        out.append(f"model sent:  {sent}" + (f" ({why})" if why else ""))
    else:
        out.append(f"model: {asked or '-'}")
    wants = dialect.wants_stream(path, {}, body) if dialect else None
    out.append(f"stream: {wants}")
    tools = dialect.request_tools(body) if dialect else []
    out.append(f"tools offered: {len(tools)}")
    for t in tools:
        size = len(json.dumps(t.schema, ensure_ascii=False)) if t.schema is not None else 0
        out.append(f"  - {t.name} ({t.kind}, schema {size} bytes)")
    talk = transcript(dialect, path, body)
    if talk.system:
        out += ["", "--- system ---"]
        for text in talk.system:
            out += _wrap(text, "  ")
    if talk.turns:
        out += ["", f"--- conversation: {len(talk.turns)} messages ---"]
        for turn in talk.turns:
            out.append(f"{turn.role}:")
            for part in turn.parts:
                out += _part(part)
    if talk.unread:
        out += ["", "--- not shown above (no counterpart in the neutral model) ---"]
        out += [f"  - {note}" for note in talk.unread]
    changes = rw.get("changes") or []
    if changes:
        out.append("")
        out.append("--- rewrites (before -> after) ---")
        for c in changes:
            where = c.get("path") or c.get("tool") or ""
            out.append(f"  - {c.get('action', 'change')} {where}: {c.get('reason', '')}")
            if "before" in c or "after" in c:
                out.append(f"      before: {_short(c.get('before'), 300)}")
                out.append(f"      after:  {_short(c.get('after'), 300)}")
    return "\n".join(out) + "\n"


def _part(p: Part) -> list[str]:
    if p.kind == "text":
        return _wrap(p.text, "  ")
    if p.kind == "thinking":
        return _wrap(p.text, "    ", first="  (thinking) ")
    if p.kind == "tool_call":
        return _wrap(p.text, "      ", first=f"  tool call {p.name or '?'} ({p.id or '-'}): ")
    if p.kind == "tool_result":
        what = "tool error" if p.error else "tool result"
        named = f" {p.name}" if p.name else ""
        return _wrap(p.text, "      ", first=f"  {what}{named} for {p.id or '-'}: ")
    return [f"  ({p.kind}: {p.name or '-'})"]


class LLMRequestContentview(Contentview):
    """Models asked and sent, tools offered, the system prompt and the conversation by role."""

    @property
    def name(self) -> str:
        return "LLM request"

    @property
    def syntax_highlight(self) -> Any:
        return "none"

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        flow = _flow_of(metadata)
        body, _ = parse_json(data) if data else (None, None)
        if body is INVALID:
            raise ValueError("request body is not JSON")
        path = flow.request.path.split("?", 1)[0] if flow else ""
        dialect = None
        report = (flowstate.report_of(flow) if flow is not None else None) or FlowReport()
        if flow is not None:
            dialect = detect.by_name(report.format) or detect.from_request(
                flow.request.method, path, body
            )
        return render_request(body, dialect, path, report)

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        if not isinstance(metadata.http_message, http.Request):
            return -1
        return 2.0 if _is_llm(_flow_of(metadata)) else -1


def register() -> None:
    contentviews.add(LLMStreamContentview())
    contentviews.add(LLMResponseContentview())
    contentviews.add(LLMRequestContentview())
