"""mitmweb / mitmproxy contentviews for LLM flows.

* "LLM stream": a response event stream as numbered events with a one-line summary each, the
  findings inline at the event they concern, then the message a client would have assembled.
  The body is what the client got; when mitmllm repaired the stream, a header says what the
  upstream sent and each repair (FIX-*) made on the way.
* "LLM request": model, stream flag, tools (names and schema sizes), message count, and what
  mitmllm rewrote.

Both re-run the (fast, sans-I/O) validator over the stored body, so they also work on flows
loaded from a file.
"""

from __future__ import annotations

import json
from collections import defaultdict
from typing import Any

from mitmproxy import contentviews
from mitmproxy import http
from mitmproxy.contentviews import Contentview
from mitmproxy.contentviews import Metadata

from mitmllm.glue.flowstate import METADATA_KEY
from mitmllm.protocol import detect
from mitmllm.protocol.dialect import INVALID
from mitmllm.protocol.dialect import NO_DATA
from mitmllm.protocol.dialect import SENTINEL
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.findings import Finding
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.stream import check_stream
from mitmllm.protocol.stream import is_event_stream

_MARK = {"error": "!!", "warning": "! ", "info": "i "}


def _flow_dialect(flow: http.HTTPFlow | None) -> tuple[Dialect | None, Any]:
    if flow is None:
        return None, None
    meta = flow.metadata.get(METADATA_KEY) or {}
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
    dialect = detect.by_name(meta.get("format")) or detect.from_request(req.method, req.path, body)
    return dialect, body


def _is_llm(flow: http.HTTPFlow | None) -> bool:
    if flow is None:
        return False
    if METADATA_KEY in flow.metadata:
        return True
    dialect, body = _flow_dialect(flow)
    return dialect is not None


def _short(value: Any, n: int = 70) -> str:
    s = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    s = s.replace("\n", "\\n")
    return s if len(s) <= n else s[: n - 1] + "…"


def render_stream(data: bytes, dialect: Dialect | None, request: Any = None) -> str:
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
        out.append(f"  {_MARK[f.severity]} {f.rule} {f.severity}: {f.message}")
    out.append("")
    for ev, payload in pairs:
        out.append(f"#{ev.index:<4} {_describe(ev, payload, dialect)}")
        for f in by_event.pop(ev.index, []):
            out.append(f"      {_MARK[f.severity]} {f.rule} {f.severity}: {f.message}")
    if checker.trailing:
        out.append(
            f"#{len(pairs):<4} (unterminated, {len(checker.trailing)} bytes) "
            f"{_short(checker.trailing.decode('utf-8', 'replace'))}"
        )
    for _index, rest in sorted(by_event.items(), key=lambda kv: kv[0] or 0):
        for f in rest:
            out.append(f"      {_MARK[f.severity]} {f.rule} {f.severity}: {f.message}")
    if dialect is not None:
        out.append("")
        out.extend(_assembled(dialect, pairs))
    return "\n".join(out) + "\n"


def render_repairs(meta: dict[str, Any]) -> str:
    """What the upstream sent and what mitmllm mended, for a flow whose stream it repaired."""
    repairs = [f for f in meta.get("findings") or () if str(f.get("rule", "")).startswith("FIX-")]
    if not repairs:
        return ""
    sent = [
        f"{a.get('upstream')}: {a['findings']}"
        for a in meta.get("attempts") or ()
        if a.get("committed") and a.get("findings")
    ] or [str(meta.get("summary", ""))]
    out = [f"repaired by mitmllm; the upstream sent {'; '.join(sent)}"]
    out.append(f"the client got these bytes, which validate as: {meta.get('client', '-')}")
    for f in repairs:
        where = f" @event {f['event']}" if f.get("event") is not None else ""
        mends = ", ".join(RULES[f["rule"]].mends) if f["rule"] in RULES else ""
        out.append(f"  {f['rule']}{where} (mends {mends}): {f.get('message', '')}")
    return "\n".join(out) + "\n\n"


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
    return summary or (ev.event or _short(payload))


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
            out.append(f"{prefix}tool call {b.name} ({b.id or '-'}): {_short(shown, 400)}")
        elif b.kind in ("text", "thinking", "refusal"):
            out.append(f"{prefix}{b.kind}:")
            out.extend("  " + line for line in (b.text or "").splitlines() or [""])
        else:
            out.append(f"{prefix}{b.kind} {b.name or ''}: {_short(b.text or b.input, 200)}")
    out.append(f"stop: {msg.stop_reason or '-'}")
    if msg.usage:
        out.append(f"usage: {_short(msg.usage, 200)}")
    if msg.error:
        out.append(f"error: {msg.error}")
    return out


class LLMStreamContentview(Contentview):
    """Numbered events, findings inline, then the reassembled message."""

    @property
    def name(self) -> str:
        return "LLM stream"

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        flow = metadata.flow if isinstance(metadata.flow, http.HTTPFlow) else None
        dialect, body = _flow_dialect(flow)
        meta = (flow.metadata.get(METADATA_KEY) or {}) if flow is not None else {}
        return render_repairs(meta) + render_stream(data, dialect, body)

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        msg = metadata.http_message
        if not isinstance(msg, http.Response) or not is_event_stream(metadata.content_type):
            return -1
        flow = metadata.flow if isinstance(metadata.flow, http.HTTPFlow) else None
        return 2.0 if _is_llm(flow) else 0.5


def render_request(body: Any, dialect: Dialect | None, path: str, meta: dict[str, Any]) -> str:
    out: list[str] = []
    out.append(f"format: {dialect.title if dialect else 'unrecognised'}")
    model = dialect.request_model(path, body) if dialect else None
    out.append(f"model: {model or '-'}")
    if meta.get("rewrite"):
        rw = meta["rewrite"]
        if rw.get("model"):
            out.append(f"  rewritten to: {rw['model']} (rule {rw.get('rule') or '-'})")
    wants = dialect.wants_stream(path, {}, body) if dialect else None
    out.append(f"stream: {wants}")
    if isinstance(body, dict):
        msgs = body.get("messages", body.get("contents", body.get("input")))
        if isinstance(msgs, list):
            out.append(f"messages: {len(msgs)}")
        elif isinstance(msgs, str):
            out.append("input: 1 (string)")
    tools = dialect.request_tools(body) if dialect else []
    out.append(f"tools: {len(tools)}")
    for t in tools:
        size = len(json.dumps(t.schema, ensure_ascii=False)) if t.schema is not None else 0
        out.append(f"  - {t.name} ({t.kind}, schema {size} bytes)")
    changes = (meta.get("rewrite") or {}).get("changes") or []
    if changes:
        out.append("")
        out.append("rewrites (before -> after):")
        for c in changes:
            where = c.get("path") or c.get("tool") or ""
            out.append(f"  - {c.get('action', 'change')} {where}: {c.get('reason', '')}")
            if "before" in c or "after" in c:
                out.append(f"      before: {_short(c.get('before'), 300)}")
                out.append(f"      after:  {_short(c.get('after'), 300)}")
    return "\n".join(out) + "\n"


class LLMRequestContentview(Contentview):
    """Model, stream flag, tools and message count of an LLM request."""

    @property
    def name(self) -> str:
        return "LLM request"

    @property
    def syntax_highlight(self) -> Any:
        return "yaml"

    def prettify(self, data: bytes, metadata: Metadata) -> str:
        flow = metadata.flow if isinstance(metadata.flow, http.HTTPFlow) else None
        body, _ = parse_json(data) if data else (None, None)
        if body is INVALID:
            raise ValueError("request body is not JSON")
        path = flow.request.path.split("?", 1)[0] if flow else ""
        dialect = None
        meta: dict[str, Any] = {}
        if flow is not None:
            meta = flow.metadata.get(METADATA_KEY) or {}
            dialect = detect.by_name(meta.get("format")) or detect.from_request(
                flow.request.method, path, body
            )
        return render_request(body, dialect, path, meta)

    def render_priority(self, data: bytes, metadata: Metadata) -> float:
        if not isinstance(metadata.http_message, http.Request):
            return -1
        flow = metadata.flow if isinstance(metadata.flow, http.HTTPFlow) else None
        return 2.0 if _is_llm(flow) else -1


def register() -> None:
    contentviews.add(LLMStreamContentview())
    contentviews.add(LLMRequestContentview())
