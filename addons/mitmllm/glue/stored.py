"""Reports for flows read from a file (``mitmdump -nr flows.mitm``, ``mitmweb --rfile``, ``mitmllm
check flows.mitm``).

A stored flow has no tap: its request and response bodies are validated now, as the inspector
would have validated them live (the findings do not depend on how the body was chunked). What the
bytes cannot tell (the attempts of a routed flow, the route, what mitmllm rewrote, REQ-*, RLY-*
and TAP-* findings) comes from the report saved with the flow, when there is one.
"""

from __future__ import annotations

from mitmproxy import http

from mitmllm.engine import fixtures
from mitmllm.engine.report import METADATA_KEY
from mitmllm.engine.report import End
from mitmllm.engine.report import FlowReport
from mitmllm.engine.report import Usage
from mitmllm.engine.report import client_gone
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.stream import StreamChecker
from mitmllm.protocol.stream import check_body
from mitmllm.protocol.stream import check_head
from mitmllm.protocol.stream import is_event_stream

#: Rule families only the live proxy can observe; kept from the saved report.
LIVE_ONLY = ("REQ-", "RLY-", "TAP-")


def stored_report(flow: http.HTTPFlow) -> FlowReport | None:
    """The report of a stored LLM flow, its bodies validated now; None if it is no LLM call."""
    req = flow.request
    seen = fixtures.recognise(req.method, req.path, req.raw_content or b"")
    saved = flow.metadata.get(METADATA_KEY)
    if not seen.llm and saved is None:
        return None
    report = FlowReport.from_metadata(saved) if isinstance(saved, dict) else FlowReport()
    kept = [f for f in report.findings if f.rule.startswith(LIVE_ONLY)]
    report.findings = Findings()
    report.findings.extend(kept)
    if seen.dialect is not None:
        report.format = seen.dialect.name
    report.model = report.model or seen.model
    report.stream = seen.stream
    error = flow.error.msg if flow.error else None
    resp = flow.response
    if resp is None:
        report.end = End.CLIENT_DISCONNECT if client_gone(error) else End.UPSTREAM_FAILURE
        report.end_error = error
        return report
    report.status = resp.status_code
    findings = report.findings
    check_head(findings, status=resp.status_code, headers=resp.headers, wants_stream=seen.stream)
    body = resp.raw_content or b""
    if is_event_stream(resp.headers.get("content-type")):
        checker = StreamChecker(seen.dialect, findings, request=seen.body, autodetect=True)
        checker.feed(body)
        if not client_gone(error):  # truncation judges the upstream, not a client that left
            checker.close()
        v = checker.validator
        report.events = checker.events
        if checker.dialect is not None:
            report.format = checker.dialect.name
        if v is not None:
            report.complete = v.complete
            report.finish = v.finish or None
            report.error = v.error or None
            if v.model and v.model != report.model:
                report.model_reported = v.model
            if checker.dialect is not None:
                report.usage = Usage.from_dict(checker.dialect.usage(v.usage))
        complete = bool(v is not None and v.complete)
    else:
        payload = check_body(
            seen.dialect,
            findings,
            status=resp.status_code,
            body=body,
            content_type=resp.headers.get("content-type"),
            request=seen.body,
        )
        if seen.dialect is not None:
            report.usage = Usage.from_dict(seen.dialect.body_usage(payload))
        complete = False
    if error is None or complete:
        report.end = End.COMPLETE
    else:
        report.end = End.CLIENT_DISCONNECT if client_gone(error) else End.UPSTREAM_FAILURE
        report.end_error = error
    if req.timestamp_start and resp.timestamp_end:
        report.duration_ms = round((resp.timestamp_end - req.timestamp_start) * 1000, 1)
    return report
