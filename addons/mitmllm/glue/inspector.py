"""The inspector: recognise LLM flows, validate their streams and bodies, flag bad flows.

For every LLM call it asks the upstream for an uncompressed body, taps event streams as they pass
(whole events only, never buffering SSE), checks non-streaming bodies, and when the flow ends
writes the findings to `flow.metadata["mitmllm"]`, a one-line `flow.comment` and `flow.marked`,
stores the client-facing bytes so mitmweb shows them, and logs one summary line. What it stores
of a stream is bounded by `mitmllm_keep_body` (the start and the end of a longer one, around a
marker, and TAP-4 on the flow); `mitmllm_spill_dir` keeps longer ones whole on disk.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from fnmatch import fnmatch
from pathlib import Path
from typing import Any
from typing import BinaryIO

from mitmproxy import ctx
from mitmproxy import exceptions
from mitmproxy import flow as mflow
from mitmproxy import http

from mitmllm.engine.keep import AUTO
from mitmllm.engine.keep import DEFAULT_LIMIT
from mitmllm.engine.keep import KEEP_OPTION
from mitmllm.engine.keep import KeptBody
from mitmllm.engine.keep import is_auto
from mitmllm.engine.keep import limit_of
from mitmllm.engine.pipeline import Pipeline
from mitmllm.engine.report import METADATA_KEY
from mitmllm.engine.report import BodyKept
from mitmllm.engine.report import End
from mitmllm.engine.report import FlowReport
from mitmllm.engine.report import Repair
from mitmllm.engine.report import Usage
from mitmllm.engine.report import client_gone
from mitmllm.engine.report import storable
from mitmllm.engine.validation import StreamResult
from mitmllm.engine.validation import ValidationWorker
from mitmllm.engine.validation import WorkerGone
from mitmllm.glue import flowstate
from mitmllm.glue.flowstate import LLMFlow
from mitmllm.glue.runtime import shown
from mitmllm.glue.stored import stored_report
from mitmllm.glue.tap import FramingTap
from mitmllm.glue.tap import Tap
from mitmllm.protocol import detect
from mitmllm.protocol.findings import Finding
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.gate import Gate
from mitmllm.protocol.repair import Repairer
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.stream import StreamChecker
from mitmllm.protocol.stream import check_body
from mitmllm.protocol.stream import check_head
from mitmllm.protocol.stream import is_event_stream

logger = logging.getLogger(__name__)


def recognise(flow: http.HTTPFlow, only_hosts: Sequence[str] = ()) -> LLMFlow | None:
    """Attach LLM flow state to `flow` if it is an LLM API call."""
    req = flow.request
    if only_hosts and not any(fnmatch(req.pretty_host, h) for h in only_hosts):
        return None
    try:
        raw = req.get_content(strict=False)
    except Exception:  # an undecodable body: not something mitmllm can read
        raw = None
    seen = detect.recognise(req.method, req.path, flowstate.query_of(req), raw)
    if not seen.llm:
        return None
    report = FlowReport(
        format=seen.dialect.name if seen.dialect else None, model=seen.model, stream=seen.stream
    )
    return flowstate.attach(flow, LLMFlow(seen.dialect, seen.body, report))


def client_disconnected(error: mflow.Error | None) -> bool:
    """Is this mitmproxy's error for a client that went away (not the upstream)?"""
    return error is not None and client_gone(error.msg)


class Recognizer:
    """Recognises LLM flows first, so that the rewriter and fail-over see them in `request`.

    The inspector must run last (it flags what the others did), so recognition is its own small
    addon at the front of the chain, and owns the options that say which flows are LLM calls.
    """

    def __init__(self) -> None:
        self.enabled = True
        self.hosts: tuple[str, ...] = ()

    def load(self, loader: Any) -> None:
        loader.add_option(
            "mitmllm_inspect",
            bool,
            True,
            "Validate LLM API flows (SSE framing and wire-format rules) and flag bad ones.",
        )
        loader.add_option(
            "mitmllm_hosts",
            Sequence[str],
            [],
            """Only treat flows to these hosts as LLM calls (glob patterns, e.g. api.anthropic.com,
            *.openai.azure.com). Empty: any host, recognised by path and body.""",
        )

    def configure(self, updated: set[str]) -> None:
        if "mitmllm_inspect" in updated:
            self.enabled = ctx.options.mitmllm_inspect
        if "mitmllm_hosts" in updated:
            hosts = tuple(h.strip() for h in ctx.options.mitmllm_hosts)
            for h in hosts:
                if not h or any(c in h for c in "/ "):
                    raise exceptions.OptionsError(
                        f"mitmllm_hosts: {h!r} is not a host name or glob (no scheme, path or "
                        "spaces), e.g. api.openai.com or *.openai.azure.com"
                    )
            self.hosts = hosts

    def request(self, flow: http.HTTPFlow) -> None:
        if not self.enabled or flow.response is not None or flowstate.get(flow):
            return
        if recognise(flow, self.hosts) is None:
            return
        # The tap reads raw wire bytes: ask for them uncompressed.
        flow.request.headers["accept-encoding"] = "identity"


@dataclass(frozen=True)
class Markers:
    """flow.marked for each kind of flow ('' leaves it unmarked)."""

    error: str = ":x:"
    warning: str = ":warning:"
    failover: str = ":arrows_counterclockwise:"
    repaired: str = ":wrench:"


WORKER_TIMEOUT = 10.0  # seconds to wait for a stream's result from the validation worker
SPILL_OPTION = "mitmllm_spill_dir"
#: The options `bodies_read` looks at.
BODY_READERS = frozenset(
    {
        "save_stream_file",
        "flow_detail",
        "store_streamed_bodies",
        "mitmllm_capture",
        SPILL_OPTION,
        KEEP_OPTION,
    }
)


def bodies_read() -> bool:
    """Does anything read what a flow keeps of its stream? A flow view (mitmweb, the console),
    a flow file (``-w``), the dumper showing bodies (``flow_detail`` 3 or more), mitmproxy's
    own ``store_streamed_bodies``, a fixture capture, or a spill folder. With
    ``mitmllm_keep_body=auto`` (the default) mitmllm keeps a stream only then: mitmdump alone
    keeps nothing of a streamed body either, and a kept body is up to 8 MiB copied into a fresh
    allocation at the flow's end, about 15 page faults an event of a 64 KiB-event stream, for
    bytes nobody read. Another addon that reads bodies asks with a size (or ``all``)."""
    options = ctx.options
    present = set(options.keys())

    def value(name: str) -> Any:
        return getattr(options, name) if name in present else None

    master = getattr(ctx, "master", None)
    if master is not None and master.addons.get("view") is not None:
        return True
    return bool(
        value("save_stream_file")
        or (value("flow_detail") or 0) >= 3
        or value("store_streamed_bodies")
        or value("mitmllm_capture") not in (None, "off")
        or value(SPILL_OPTION)
    )


class Inspector:
    def __init__(self) -> None:
        self.worker: ValidationWorker | None = None
        self.markers = Markers()
        self.summary = True
        self.use_worker = False
        self.repair = False
        self.keep: int | None = DEFAULT_LIMIT
        self.spill_dir: Path | None = None
        self.keep_auto = True  # mitmllm_keep_body=auto: keep streams when something reads them
        # Something reads what flows keep of their streams (see `bodies_read`); until mitmproxy
        # runs, and outside it, assume so
        self.records = True

    def load(self, loader: Any) -> None:
        loader.add_option(
            "mitmllm_marker_error",
            str,
            ":x:",
            "flow.marked for flows with an error finding (an emoji shortcode).",
        )
        loader.add_option(
            "mitmllm_marker_warning",
            str,
            ":warning:",
            "flow.marked for flows whose worst finding is a warning (empty: do not mark).",
        )
        loader.add_option(
            "mitmllm_marker_failover",
            str,
            ":arrows_counterclockwise:",
            "flow.marked for flows a fallback upstream served without errors.",
        )
        loader.add_option(
            "mitmllm_repair",
            bool,
            False,
            """Repair the event streams of flows that are not routed, as routes do: keep-alives
            spliced inside events, indices, a missing terminator after a complete answer (never
            text, tool arguments, stop reasons or usage). The flow keeps what the upstream sent
            and its findings, and records each repair as a FIX-* finding.""",
        )
        loader.add_option(
            "mitmllm_marker_repaired",
            str,
            ":wrench:",
            "flow.marked for flows whose stream mitmllm repaired so that the client got no error.",
        )
        loader.add_option("mitmllm_summary", bool, True, "Log one summary line per LLM flow.")
        loader.add_option(
            "mitmllm_worker",
            bool,
            False,
            """Validate event streams in a separate process: mitmproxy's event loop then only
            frames events and ships them. Since validation in the proxy counts runs of text
            deltas by their bytes, this costs more than it saves on the streams measured (see
            the README's figures). Streams whose events mitmllm rewrites are still validated in
            the proxy.""",
        )
        loader.add_option(
            KEEP_OPTION,
            str,
            AUTO,
            """How much of an event stream a flow keeps for mitmweb, saved flows and fixtures
            (e.g. 8MiB, or all). A longer stream keeps its first and last half of this around
            a marker, and the flow says so (TAP-4); findings always cover the whole stream.
            auto: 8MiB when something reads it (mitmweb or the console, a flow file, the dumper
            showing bodies, store_streamed_bodies, a capture, a spill folder), else nothing, as
            mitmdump keeps nothing of a streamed body.""",
        )
        loader.add_option(
            SPILL_OPTION,
            str,
            "",
            """A folder where streams longer than mitmllm_keep_body are written whole, one file
            per flow (named in the flow's metadata as body_file). Empty: not kept on disk.""",
        )

    def configure(self, updated: set[str]) -> None:
        names = (
            "mitmllm_marker_error",
            "mitmllm_marker_warning",
            "mitmllm_marker_failover",
            "mitmllm_marker_repaired",
        )
        if updated.intersection(names):
            for name in names:
                value = getattr(ctx.options, name)
                if value and not (value.startswith(":") and value.endswith(":") and len(value) > 2):
                    raise exceptions.OptionsError(
                        f"{name}={value!r}: use an emoji shortcode such as ':warning:' "
                        "(mitmweb shows it in the flow list), or '' to disable"
                    )
            self.markers = Markers(
                error=ctx.options.mitmllm_marker_error,
                warning=ctx.options.mitmllm_marker_warning,
                failover=ctx.options.mitmllm_marker_failover,
                repaired=ctx.options.mitmllm_marker_repaired,
            )
        if "mitmllm_summary" in updated:
            self.summary = ctx.options.mitmllm_summary
        if "mitmllm_repair" in updated:
            self.repair = ctx.options.mitmllm_repair
        if "mitmllm_worker" in updated:
            self.use_worker = ctx.options.mitmllm_worker
            if self.use_worker:
                self._start_worker()
            elif self.worker is not None:
                self.worker.stop()
                self.worker = None
        if KEEP_OPTION in updated:
            text = getattr(ctx.options, KEEP_OPTION)
            self.keep_auto = is_auto(text)
            try:
                self.keep = limit_of(text)
            except ValueError as e:
                raise exceptions.OptionsError(
                    f"{KEEP_OPTION}={text!r}: {e}; use a size such as 8MiB, all, or auto"
                ) from e
        if updated & BODY_READERS:
            self.records = self._bodies_kept()
        if SPILL_OPTION in updated:
            folder = getattr(ctx.options, SPILL_OPTION).strip()
            self.spill_dir = Path(folder).expanduser() if folder else None
            spill_dir = self.spill_dir
            if spill_dir is not None and spill_dir.exists() and not spill_dir.is_dir():
                raise exceptions.OptionsError(
                    f"{SPILL_OPTION}={folder!r} is not a folder; name a folder (it is "
                    "created when the first long stream arrives)"
                )

    # --- hooks ---------------------------------------------------------------------------------

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = flowstate.get(flow)
        if state is None or flow.response is None or state.tap is not None:
            return
        resp = flow.response
        check_head(
            state.findings,
            status=resp.status_code,
            headers=resp.headers,
            wants_stream=state.wants_stream,
        )
        if not is_event_stream(resp.headers.get("content-type")):
            return  # buffered; checked in `response`
        encoding = resp.headers.get("content-encoding", "").strip().lower()
        if encoding not in ("", "identity"):
            state.findings.add(
                "TAP-2", f"event stream is {encoding}-encoded; passed through unvalidated"
            )
            resp.stream = True
            return
        t0 = flow.request.timestamp_start
        body = self.kept_body(flow) if self.records else KeptBody(0)
        repair = self.repair and state.plan is None  # routes repair in the relay
        if self.worker is not None and self.worker.alive and not state.rewrites and not repair:
            state.tap = FramingTap(self.worker, state.format, state.request, t0, body=body)
        elif repair:
            state.tap = Tap(repairing_pipeline(state), t0, body=body)
        else:
            checker = StreamChecker(
                state.dialect, state.findings, request=state.request, autodetect=True
            )
            state.tap = Tap(Pipeline(checker, state.rewrites), t0, body=body)
        # The tap's bound method, not the tap: mitmproxy calls an object through its type's
        # call slot, which packs each chunk into a tuple and looks `__call__` up again; a bound
        # method is called as it is (0.13-0.25 µs a chunk less in process, on every chunk)
        resp.stream = state.tap.__call__  # type: ignore[assignment]  # the stub lists no list

    def _bodies_kept(self) -> bool:
        """Do flows keep their streams: asked for with a size, or read by something?"""
        return not self.keep_auto or bodies_read()

    def kept_body(self, flow: http.HTTPFlow) -> KeptBody:
        """What the flow will keep of its stream (see the options)."""
        folder = self.spill_dir

        def spill() -> BinaryIO:
            assert folder is not None
            folder.mkdir(parents=True, exist_ok=True)
            return open(folder / f"{flow.id}.sse", "wb")  # noqa: SIM115 (closed at the end)

        return KeptBody(self.keep, spill=spill if folder else None, option=KEEP_OPTION)

    async def response(self, flow: http.HTTPFlow) -> None:
        if not flow.live and flowstate.get(flow) is None:
            self._stored(flow)
        else:
            await self._finish(flow)

    async def error(self, flow: http.HTTPFlow) -> None:
        if not flow.live and flowstate.get(flow) is None:
            if flow.response is None:  # else its `response` hook has reported it
                self._stored(flow)
        else:
            await self._finish(flow)

    def _stored(self, flow: http.HTTPFlow) -> None:
        """A flow read from a file (mitmdump -nr, mitmweb --rfile): its findings, in detail."""
        report = stored_report(flow)
        if report is None:
            return
        if METADATA_KEY not in flow.metadata:  # recorded without mitmllm: show what it finds
            flowstate.publish(flow, report)
            flag(flow, report, self.markers)
        level = logging.WARNING if report.worst == Severity.ERROR else logging.INFO
        if self.summary and shown(level):
            details = "".join(f"\n  {f}" for f in report.findings)
            logger.log(level, summary_line(flow, report) + details)

    # --- the validation worker ---------------------------------------------------------------

    def running(self) -> None:
        self.records = self._bodies_kept()
        if self.use_worker:
            self._start_worker()

    def done(self) -> None:
        if self.worker is not None:
            self.worker.stop()
            self.worker = None

    def _start_worker(self) -> None:
        if self.worker is not None:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return  # not running yet: `running` starts it
        self.worker = ValidationWorker()
        loop.create_task(self.worker.start())

    async def _worker_result(
        self, tap: FramingTap, state: LLMFlow, end_checks: bool
    ) -> StreamResult | None:
        try:
            result = await asyncio.wait_for(tap.result(end_checks), WORKER_TIMEOUT)
        except (WorkerGone, TimeoutError) as e:
            state.findings.add("TAP-1", f"stream not validated: {e or 'worker timed out'}")
            return None
        state.findings.extend([Finding.from_dict(f) for f in result.findings])
        for rule_id, n in result.suppressed.items():
            state.findings.suppressed[rule_id] += n
        if tap.failed:
            state.findings.add("TAP-1", "the framing tap failed; the rest was passed through")
        return result

    # --- the end of a flow ---------------------------------------------------------------------

    async def _finish(self, flow: http.HTTPFlow) -> None:
        state = flowstate.get(flow)
        if state is None or state.finalized:
            return
        state.finalized = True
        report = state.report
        tap = state.tap
        resp = flow.response
        client_gone = client_disconnected(flow.error)
        result: StreamResult | None = None
        if tap is not None and resp is not None:
            if isinstance(tap, Tap):
                # the whole events it passed on before validating and recording them
                tap.settle()
            if resp.raw_content is None and tap.body.limit != 0:
                # After streaming the body is gone; store what the client got (record only, the
                # wire is done). Also after an abort: mitmweb then shows what did arrive.
                resp.raw_content = tap.sent
            note_kept(tap.body, report)
            # The upstream's end-of-stream rules (truncation) judge the upstream: not when the
            # client is the one that went away.
            end_checks = tap.finished or not client_gone
            if not tap.finished and end_checks and isinstance(tap, Tap):
                # The connection died mid-stream: what the tap still held never reached the client.
                held = tap.close()
                if held:
                    report.undelivered_bytes = len(held)
            if isinstance(tap, FramingTap):
                result = await self._worker_result(tap, state, end_checks)
            else:
                result = StreamResult.of(tap.pipeline.checker)
                if tap.pipeline.repairer is not None:
                    record_repair(state, tap.pipeline)
            if tap.finished or (result is not None and result.complete):
                # A client may close as soon as the terminal event is in (the OpenAI SDKs do,
                # after [DONE]): it got the whole answer.
                report.end = End.COMPLETE
            else:
                report.end = End.CLIENT_DISCONNECT if client_gone else End.UPSTREAM_FAILURE
        else:
            if resp is not None and not resp.stream:
                payload = check_body(
                    state.dialect,
                    state.findings,
                    status=resp.status_code,
                    body=resp.raw_content or b"",
                    content_type=resp.headers.get("content-type"),
                    request=state.request,
                )
                if state.dialect is not None:
                    report.usage = Usage.from_dict(state.dialect.body_usage(payload))
            if flow.error is None:
                report.end = End.COMPLETE
            else:
                report.end = End.CLIENT_DISCONNECT if client_gone else End.UPSTREAM_FAILURE
        if report.end is not End.COMPLETE and flow.error is not None:
            report.end_error = flow.error.msg
        fill_report(flow, state, result)
        flowstate.publish(flow, report)
        flag(flow, report, self.markers)
        level = logging.WARNING if report.worst == Severity.ERROR else logging.INFO
        if self.summary and shown(level):
            logger.log(level, summary_line(flow, report))


def repairing_pipeline(state: LLMFlow) -> Pipeline:
    """The tap's pipeline for an inspect-only flow with repairs on: what the upstream sent is
    checked into the flow's findings (with the repairs made), what the client gets on its own,
    and a commit gate records what a fail-over route would have made of the stream."""
    upstream = StreamChecker(state.dialect, state.findings, request=state.request, autodetect=True)
    client = StreamChecker(state.dialect, request=state.request, autodetect=True)
    repairer = Repairer(state.dialect, state.findings, request=state.request)
    gate = state.gate = Gate(state.dialect, client.findings, collect=False)
    return Pipeline(
        client, state.rewrites, upstream=upstream, repairer=repairer, gate=gate, lazy=True
    )


def record_repair(state: LLMFlow, pipeline: Pipeline) -> None:
    """What the client got after the repairs, and what a route's gate would have decided."""
    report = state.report
    client = pipeline.checker.findings
    report.client = client.summary()
    report.client_clean = not client.by_severity(Severity.ERROR)
    report.repairs = [Repair.from_finding(f) for f in state.findings if f.rule.startswith("FIX-")]
    gate = state.gate
    if gate is not None:
        gate.close()
        if gate.failed:
            report.gate = f"a route would fail over: {gate.outcome} ({gate.reason})"


def note_kept(body: KeptBody, report: FlowReport) -> None:
    """Say on the flow when what it keeps is not the whole stream, and where the rest went."""
    body.close()
    if not body.cut:
        return
    report.body_kept = BodyKept(kept=body.total - body.cut, of=body.total)
    where = f"the start and the end of {body.total} bytes ({KEEP_OPTION})"
    if body.spill_name is not None:
        report.body_file = body.spill_name
        where += f"; the whole stream is in {body.spill_name}"
    if body.spill_error is not None:
        report.body_file_error = body.spill_error
        where += f"; writing it to {SPILL_OPTION} failed ({body.spill_error})"
    report.findings.add("TAP-4", f"the flow keeps {where}")


def fill_report(flow: http.HTTPFlow, state: LLMFlow, result: StreamResult | None = None) -> None:
    """What the response and the tap tell, into the flow's report."""
    report = state.report
    resp = flow.response
    tap = state.tap
    if resp is not None:
        report.status = resp.status_code
    if result is not None:
        report.events = result.events
        if result.format is not None and state.dialect is None:
            report.format = result.format
        if result.format is not None:
            if result.model and result.model != state.model:
                report.model_reported = result.model
            report.finish = result.finish or None
            report.error = result.error or None
            report.complete = result.complete
            if result.usage:
                report.usage = Usage.from_dict(result.usage)
    if tap is not None:
        if tap.first_event_ms is not None:
            report.ttfe_ms = round(tap.first_event_ms, 1)
        report.chunks = tap.chunk_count
        report.bytes = tap.received
        report.events_rewritten = tap.rewritten
    if flow.request.timestamp_start and resp is not None and resp.timestamp_end:
        report.duration_ms = round((resp.timestamp_end - flow.request.timestamp_start) * 1000, 1)


def flag(flow: http.HTTPFlow, report: FlowReport, markers: Markers) -> None:
    """Mark the flow for the flow list and write a one-line comment."""
    worst = report.worst
    if worst is None:
        return
    if worst == Severity.ERROR and not report.repaired:
        marker = markers.error
    elif report.fell_back:
        marker = markers.failover
    elif report.repaired:
        marker = markers.repaired
    elif worst == Severity.WARNING:
        marker = markers.warning
    else:
        marker = ""
    if marker and not flow.marked:
        flow.marked = marker
    flow.comment = comment(report)


#: Longest comment: the flow list shows about this much of it.
COMMENT_WIDTH = 120


def comment(report: FlowReport) -> str:
    """One short line for the flow list: every rule ID once (the worst first, with what a
    failed attempt showed), then what the worst finding saw, without the rule's client effect
    (the contentview and the metadata have it in full)."""
    findings = report.findings
    worst = report.worst
    first = next((f for f in findings if f.severity == worst), next(iter(findings)))
    ids = findings.summary()
    seen = set(findings.rules())
    for a in report.attempts:
        more = [r for r in dict.fromkeys(f.rule for f in a.findings) if r not in seen]
        if more:
            ids += f" [{a.upstream}: {', '.join(more)}]"
            seen.update(more)
    effect = RULES[first.rule].effect if first.rule in RULES else ""
    detail = first.message.removesuffix(f"; {effect}") if effect else first.message
    text = storable(f"{ids}: {detail}")
    return text if len(text) <= COMMENT_WIDTH else text[: COMMENT_WIDTH - 1] + "…"


def summary_line(flow: http.HTTPFlow, report: FlowReport) -> str:
    parts = [
        report.format or "llm?",
        report.model or "-",
        str(report.status if report.status is not None else "---"),
        "stream" if report.stream else "json",
    ]
    if report.events is not None:
        parts.append(f"{report.events} events")
    if report.ttfe_ms is not None:
        parts.append(f"ttfe {report.ttfe_ms:.0f}ms")
    if report.duration_ms is not None:
        parts.append(f"{report.duration_ms / 1000:.2f}s")
    if report.upstream:
        failed = len(report.attempts) - 1
        parts.append(f"via {report.upstream}" + (f" after {failed} failed" if failed > 0 else ""))
    elif report.relay == "failed_before_commit":
        parts.append(f"all {len(report.attempts)} upstreams failed")
    if report.end is End.UPSTREAM_FAILURE:
        parts.append("ABORTED")
    elif report.end is End.CLIENT_DISCONNECT:
        parts.append("client disconnected")
    return f"mitmllm {flow.request.pretty_host}: " + " ".join(parts) + f" | {report.summary}"
