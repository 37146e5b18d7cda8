"""The flow report: everything mitmllm learned about one LLM flow, in one typed object.

Every part of mitmllm that looks at a flow reads and writes the same `FlowReport`: the
recogniser fills in what the client asked for, the rewriter what was sent instead, fail-over the
attempts of a routed flow (the relay fills each `Attempt`), the inspector the findings, timings,
usage and how the response ended; the recorder, the contentviews and the command line read it.
Nothing passes between them as a string-keyed dict.

`FlowReport.to_metadata` is the one way a report reaches ``flow.metadata["mitmllm"]`` (JSON-like,
saved with flows and fixtures, searchable with ``~meta``); `FlowReport.from_metadata` reads it
back, including metadata written by earlier versions (``served_model``, ``aborted``, an attempt's
findings as a summary string).

How a response ended (`End`) keeps the two sides apart: a client that went away is never an
upstream failure, and a client that closed its connection once the stream's terminal event had
arrived (the OpenAI SDKs do, right after ``[DONE]``) got a complete answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from enum import StrEnum
from typing import Any

import orjson

from mitmllm.protocol.findings import Finding
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.rules import Severity

#: The key of `flow.metadata` that holds a report.
METADATA_KEY = "mitmllm"


class End(StrEnum):
    """How the response reached its end."""

    COMPLETE = "complete"  # the whole response arrived (a stream up to its terminal event)
    CLIENT_DISCONNECT = "client_disconnect"  # the client went away before the end
    UPSTREAM_FAILURE = "upstream_failure"  # the upstream (or the connection to it) broke off


#: How mitmproxy words a client that went away: HTTP/1, HTTP/2.
_CLIENT_GONE = ("Client disconnected", "stream reset by client")


def client_gone(error: str | None) -> bool:
    """Is this mitmproxy's error message for a client that went away (not the upstream)?"""
    return bool(error) and error.startswith(_CLIENT_GONE)  # type: ignore[union-attr]


@dataclass(slots=True)
class Repair:
    """One thing mitmllm mended in a stream so the client's SDK can read it.

    `rule` is the repair's own ID in the rule registry (``FIX-n``), `mends` the rule ID of the
    breakage it answers (``ANT-7``); `event` / `offset` locate it in the upstream's stream.
    """

    rule: str
    mends: str
    message: str
    event: int | None = None
    offset: int | None = None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"rule": self.rule, "mends": self.mends}
        if self.event is not None:
            d["event"] = self.event
        if self.offset is not None:
            d["offset"] = self.offset
        d["message"] = self.message
        return d

    @classmethod
    def from_finding(cls, f: Finding) -> Repair:
        """A repair from the FIX-* finding the repairer recorded."""
        rule = RULES.get(f.rule)
        mends = ", ".join(rule.mends) if rule is not None else ""
        return cls(f.rule, mends, f.message, f.event, f.offset)

    def to_finding(self) -> Finding:
        """The repair as the FIX-* finding it was recorded as (``~comment FIX-`` finds it)."""
        rule = RULES.get(self.rule)
        severity = rule.severity if rule is not None else Severity.INFO
        return Finding(self.rule, severity, self.message, self.event, self.offset)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Repair:
        return cls(
            rule=str(d.get("rule", "")),
            mends=str(d.get("mends", "")),
            message=str(d.get("message", "")),
            event=d.get("event"),
            offset=d.get("offset"),
        )


@dataclass
class Attempt:
    """One try of one upstream for a routed flow, as the relay saw it."""

    upstream: str
    url: str
    outcome: str = "pending"  # ok | client_error | http_<status> | connect_error | ... | cancelled
    status: int | None = None
    error: str | None = None
    ttfe_ms: float | None = None
    duration_ms: float | None = None
    retry_after: float | None = None
    committed: bool = False  # this attempt's response went to the client
    #: what was wrong with this upstream's stream or body
    findings: list[Finding] = field(default_factory=list)
    #: what mitmllm mended in it before the client saw it
    repairs: list[Repair] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.outcome not in ("ok", "pending", "client_error", "cancelled")

    @property
    def summary(self) -> str:
        """Its findings in one line, like `Findings.summary` (``ok`` when there are none)."""
        found = Findings()
        found.extend(self.findings)
        return found.summary()

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"upstream": self.upstream, "url": self.url, "outcome": self.outcome}
        for name in ("status", "error", "ttfe_ms", "duration_ms", "retry_after"):
            value = getattr(self, name)
            if value is not None:
                d[name] = value
        d["committed"] = self.committed
        if self.findings:
            d["findings"] = [f.to_dict() for f in self.findings]
        if self.repairs:
            d["repairs"] = [r.to_dict() for r in self.repairs]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Attempt:
        return cls(
            upstream=str(d.get("upstream", "")),
            url=str(d.get("url", "")),
            outcome=str(d.get("outcome", "pending")),
            status=d.get("status"),
            error=d.get("error"),
            ttfe_ms=d.get("ttfe_ms"),
            duration_ms=d.get("duration_ms"),
            retry_after=d.get("retry_after"),
            committed=bool(d.get("committed", False)),
            findings=_findings_of(d.get("findings")),
            repairs=[Repair.from_dict(r) for r in d.get("repairs") or [] if isinstance(r, dict)],
        )


@dataclass(slots=True)
class Usage:
    """Token counts of one response, named the same for every wire format."""

    input: int | None = None
    output: int | None = None
    cache_read: int | None = None  # input tokens read from the prompt cache
    cache_write: int | None = None  # input tokens written to the prompt cache
    reasoning: int | None = None  # output tokens spent on reasoning / thinking

    def to_dict(self) -> dict[str, int]:
        return {k: v for k in self.__slots__ if (v := getattr(self, k)) is not None}

    @classmethod
    def from_dict(cls, d: Any) -> Usage | None:
        """Counts from a dict with these names; None when it has none of them."""
        if not isinstance(d, dict):
            return None
        counts = {k: v for k in cls.__slots__ if isinstance(v := d.get(k), int)}
        return cls(**counts) if counts else None

    def __str__(self) -> str:
        parts = [f"{self.input if self.input is not None else '?'} in"]
        parts.append(f"{self.output if self.output is not None else '?'} out")
        if self.cache_read:
            parts.append(f"{self.cache_read} cache read")
        if self.cache_write:
            parts.append(f"{self.cache_write} cache write")
        if self.reasoning:
            parts.append(f"{self.reasoning} reasoning")
        return ", ".join(parts)


@dataclass(slots=True)
class BodyKept:
    """How much of a long stream the flow keeps (`mitmllm_keep_body`): the start and the end of
    `of` bytes, `kept` of them in all; the findings still cover every byte."""

    kept: int
    of: int

    @property
    def cut(self) -> int:
        return self.of - self.kept

    def to_dict(self) -> dict[str, int]:
        return {"bytes": self.kept, "of": self.of, "cut": self.cut}

    @classmethod
    def from_dict(cls, d: Any) -> BodyKept | None:
        if not isinstance(d, dict):
            return None
        kept, of = d.get("bytes"), d.get("of")
        if not isinstance(kept, int) or not isinstance(of, int):
            return None
        return cls(kept, of)


@dataclass
class FlowReport:
    """What mitmllm knows about one LLM flow. See the module docstring for who fills what."""

    # --- what the client asked for ---
    format: str | None = None  # wire format (anthropic, openai-chat, openai-responses, gemini)
    model: str | None = None  # the model the client asked for
    stream: bool = False  # the client asked for an event stream
    # --- what mitmllm did to the request ---
    model_sent: str | None = None  # the model sent upstream, when mitmllm changed it
    rewrite: dict[str, Any] | None = None  # the model rule's request rewrite (RequestRewrite)
    # --- fail-over (routed flows) ---
    route: str | None = None
    client_url: str | None = None  # the URL the client addressed (query secrets redacted)
    attempts: list[Attempt] = field(default_factory=list)
    relay: str | None = None  # ok | failed_before_commit | failed_after_commit | cancelled
    upstream: str | None = None  # the upstream that served
    translated: str | None = None  # "anthropic -> openai-chat" when it spoke another format
    fell_back: bool = False  # served by another upstream than the chain's first
    # --- the response ---
    status: int | None = None
    model_reported: str | None = None  # the model the response named, when not the one asked for
    events: int | None = None
    chunks: int | None = None
    bytes: int | None = None
    events_rewritten: int = 0
    body_rewritten: bool = False
    finish: str | None = None  # stop / finish reason
    error: str | None = None  # an in-band error's message
    complete: bool | None = None  # the stream's success terminator arrived
    usage: Usage | None = None
    ttfe_ms: float | None = None  # request start to the first event the client was sent
    duration_ms: float | None = None  # request start to the end of the response
    end: End | None = None
    end_error: str | None = None  # mitmproxy's error when the response did not complete
    undelivered_bytes: int | None = None  # held by the tap when the connection died
    body_kept: BodyKept | None = None  # set when the flow keeps only part of a long stream
    body_file: str | None = None  # where the whole stream went (mitmllm_spill_dir)
    body_file_error: str | None = None  # why writing it there failed
    # --- verdict ---
    findings: Findings = field(default_factory=Findings)
    repairs: list[Repair] = field(default_factory=list)  # what the client got mended
    #: what the client got after the repairs (inspect-only flows with repairs on): its findings
    #: in one line, and whether it had no error
    client: str | None = None
    client_clean: bool | None = None
    #: what a fail-over route's commit gate would have made of the stream (inspect-only flows)
    gate: str | None = None

    # --- questions the flag, the log line and the recorder ask ---

    @property
    def worst(self) -> Severity | None:
        return self.findings.worst

    @property
    def summary(self) -> str:
        """Findings in one line (``ANT-7 x2, SSE-14`` or ``ok``)."""
        return self.findings.summary()

    @property
    def client_gone(self) -> bool:
        return self.end is End.CLIENT_DISCONNECT

    @property
    def upstream_failed(self) -> bool:
        """The upstream broke off the response, or every upstream of a route failed."""
        return self.end is End.UPSTREAM_FAILURE or self.relay in (
            "failed_before_commit",
            "failed_after_commit",
        )

    @property
    def flagged(self) -> bool:
        """Worth a second look: a warning or error finding, a repair, a failed or failed-over
        upstream. A client's own disconnect is not."""
        return bool(
            self.worst in (Severity.ERROR, Severity.WARNING)
            or self.repairs
            or self.fell_back
            or len(self.attempts) > 1
            or self.upstream_failed
        )

    @property
    def repaired(self) -> bool:
        """mitmllm mended the stream and the client got it without an error."""
        if not self.repairs:
            return False
        if self.client_clean is not None:
            return self.client_clean
        return self.findings.worst is not Severity.ERROR

    # --- flow.metadata ---

    def to_metadata(self) -> dict[str, Any]:
        """The report as ``flow.metadata["mitmllm"]``: JSON-like, empty fields left out."""
        meta: dict[str, Any] = {"format": self.format, "model": self.model, "stream": self.stream}
        for name in _SCALARS:
            value = getattr(self, name)
            if value is not None and not (name in _UNSET_WHEN_FALSE and not value):
                meta[name] = value
        if self.end is not None:
            meta["end"] = str(self.end)
        if self.usage is not None and self.usage.to_dict():
            meta["usage"] = self.usage.to_dict()
        if self.body_kept is not None:
            meta["body_kept"] = self.body_kept.to_dict()  # ~meta body_kept
        if self.rewrite:
            meta["rewrite"] = self.rewrite
        if self.attempts:
            meta["attempts"] = [a.to_dict() for a in self.attempts]
        if self.repairs:
            meta["repairs"] = [r.to_dict() for r in self.repairs]
            if self.repaired:
                meta["repaired"] = True  # ~meta repaired
        meta["findings"] = self.findings.to_list()
        if self.findings.suppressed:
            meta["suppressed"] = dict(self.findings.suppressed)
        meta["summary"] = self.summary
        try:
            orjson.dumps(meta)  # a few µs: holds the metadata anything a flow file cannot?
        except orjson.JSONEncodeError:
            meta = storable(meta)
        return meta

    @classmethod
    def from_metadata(cls, meta: Any) -> FlowReport:
        """A report from ``flow.metadata["mitmllm"]`` (or a fixture's copy of it).

        Unknown keys are ignored and wrong types dropped: a saved flow is input, not a contract.
        """
        if not isinstance(meta, dict):
            return cls()
        report = cls(
            format=_str(meta.get("format")),
            model=_str(meta.get("model")),
            stream=bool(meta.get("stream", False)),
        )
        for name in _SCALARS:
            if name in meta and isinstance(meta[name], _TYPES[name]):
                setattr(report, name, meta[name])
        if report.model_sent is None:  # written before model_sent / model_reported
            report.model_sent = _str(meta.get("served_model"))
        if isinstance(meta.get("end"), str) and meta["end"] in End._value2member_map_:
            report.end = End(meta["end"])
        elif isinstance(meta.get("aborted"), str):  # written before `end`
            report.end, report.end_error = End.UPSTREAM_FAILURE, meta["aborted"]
        report.usage = Usage.from_dict(meta.get("usage"))
        report.body_kept = BodyKept.from_dict(meta.get("body_kept"))
        if isinstance(meta.get("rewrite"), dict):
            report.rewrite = meta["rewrite"]
        report.attempts = [
            Attempt.from_dict(a) for a in meta.get("attempts") or [] if isinstance(a, dict)
        ]
        report.repairs = [
            Repair.from_dict(r) for r in meta.get("repairs") or [] if isinstance(r, dict)
        ]
        report.findings.extend(_findings_of(meta.get("findings")))
        suppressed = meta.get("suppressed")
        if isinstance(suppressed, dict):
            for rule, n in suppressed.items():
                if isinstance(n, int):
                    report.findings.suppressed[str(rule)] += n
        return report


#: Plain fields written as they are, in this order.
_SCALARS = (
    "status",
    "model_sent",
    "model_reported",
    "route",
    "client_url",
    "relay",
    "upstream",
    "translated",
    "fell_back",
    "events",
    "chunks",
    "bytes",
    "events_rewritten",
    "body_rewritten",
    "finish",
    "error",
    "complete",
    "ttfe_ms",
    "duration_ms",
    "end_error",
    "undelivered_bytes",
    "body_file",
    "body_file_error",
    "client",
    "client_clean",
    "gate",
)
#: Fields left out while false or zero (what did not happen).
_UNSET_WHEN_FALSE = frozenset({"fell_back", "events_rewritten", "body_rewritten"})
_TYPES: dict[str, type | tuple[type, ...]] = {
    "status": int,
    "model_sent": str,
    "model_reported": str,
    "route": str,
    "client_url": str,
    "relay": str,
    "upstream": str,
    "translated": str,
    "fell_back": bool,
    "events": int,
    "chunks": int,
    "bytes": int,
    "events_rewritten": int,
    "body_rewritten": bool,
    "finish": str,
    "error": str,
    "complete": bool,
    "ttfe_ms": (int, float),
    "duration_ms": (int, float),
    "end_error": str,
    "undelivered_bytes": int,
    "body_file": str,
    "body_file_error": str,
    "client": str,
    "client_clean": bool,
    "gate": str,
}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _findings_of(value: Any) -> list[Finding]:
    """Findings from saved metadata: a list of finding dicts, or (older attempts) a summary
    string such as ``"ok"`` or ``"ANT-7 x2, SSE-14"``, whose rules get their default severity."""
    if isinstance(value, list):
        out = []
        for d in value:
            if isinstance(d, dict) and isinstance(d.get("rule"), str):
                try:
                    out.append(Finding.from_dict(d))
                except (KeyError, ValueError):
                    continue
        return out
    if isinstance(value, str) and value != "ok":
        out = []
        for part in value.split(","):
            rule = part.strip().split(" ", 1)[0]
            if rule in RULES:
                out.append(Finding(rule, RULES[rule].severity, "(recorded as a summary)"))
        return out
    return []


def storable(value: Any) -> Any:
    """`value` (JSON-like) with every str UTF-8 can hold: half a surrogate pair, which an
    upstream's ``\\ud83d`` escape gives (a model's emoji cut at a token boundary: PAY-4) and
    which reaches the report in a model name, an error or a finding's words, is written as
    that escape's text. mitmproxy saves flows as UTF-8 and refuses it: the flow would not be
    saved, nor shown in mitmweb."""
    if isinstance(value, str):
        if value.isascii():
            return value
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return value.encode("utf-8", "backslashreplace").decode("utf-8")
        return value
    if isinstance(value, dict):
        return {storable(k): storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [storable(v) for v in value]
    return value
