"""The rewriter: the configuration's model rules applied to every LLM request.

A rule maps the requested model (by glob and request conditions) to an upstream model, constrains
parameters and sanitizes tool schemas; responses then show the client the model and tool names it
asked for (restamp), in streams and in whole bodies. A request no rule touches is left
byte-identical; one whose body cannot be rewritten is left as is and flagged (REQ-3).
"""

from __future__ import annotations

import logging
from typing import Any

from mitmproxy import http

from mitmllm.engine.config import Config
from mitmllm.engine.rewrite import RequestRewrite
from mitmllm.engine.rewrite import edits_of
from mitmllm.engine.rewrite import response_rewrites
from mitmllm.engine.rewrite import rule_rewrite
from mitmllm.glue import flowstate
from mitmllm.glue.configaddon import ConfigLoader
from mitmllm.glue.flowstate import LLMFlow
from mitmllm.glue.runtime import shown
from mitmllm.protocol import models
from mitmllm.protocol.dialect import is_json
from mitmllm.protocol.findings import Finding
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.findings import Severity
from mitmllm.protocol.payload import copy_json
from mitmllm.protocol.payload import parse_json
from mitmllm.protocol.schemas import lint
from mitmllm.protocol.splice import SpliceError
from mitmllm.protocol.splice import splice

logger = logging.getLogger(__name__)

SERVED_MODEL_HEADER = "x-mitmllm-served-model"


class Rewriter:
    def __init__(self, config: ConfigLoader) -> None:
        self.loader = config

    @property
    def config(self) -> Config:
        return self.loader.config

    def request(self, flow: http.HTTPFlow) -> None:
        state = flowstate.get(flow)
        if state is None or state.dialect is None or flow.response is not None:
            return
        body = state.request
        rw = self._rewrite(flow, state)
        fixed = rw.body if rw is not None and rw.tools else None
        _lint(state.dialect.name, body, state.findings, fixed=fixed)

    def _rewrite(self, flow: http.HTTPFlow, state: LLMFlow) -> RequestRewrite | None:
        """Apply the first matching model rule to the request; what was done, if anything."""
        dialect = state.dialect
        assert dialect is not None
        rules = self.config.model_rules
        if not rules:
            return None
        path = flow.request.path.split("?", 1)[0]
        body = state.request
        if state.model is None or (not dialect.model_in_path and not isinstance(body, dict)):
            state.findings.add(
                "REQ-3",
                "body is not a JSON object"
                if not isinstance(body, dict)
                else "no string model in the body",
            )
            return None
        query = flowstate.query_of(flow.request)
        rule = models.select(rules, models.facts(dialect.name, path, query, body, state.model))
        if rule is None:
            return None
        work = copy_json(body) if isinstance(body, dict) else body
        rw = rule_rewrite(dialect, path, work, rule)
        if rw.path_changed:
            flow.request.path = rw.path + flow.request.path[len(path) :]
        if rw.body_changed:
            original = flow.request.get_content(strict=False) or b""
            flow.request.content = rw.body_bytes(original, body)
            state.request = rw.body
        state.report.rewrite = rw.to_dict() | {"rule": rw.rule}
        if rw.model_to and rw.model_to != state.model:
            state.report.model_sent = rw.model_to
        client_model = state.model if rule.restamp and rw.model_to else None
        state.rewrites.extend(response_rewrites(dialect, client_model=client_model, names=rw.names))
        if rw.model_to and shown(logging.INFO):
            logger.info(
                "mitmllm rewrite %s: %s -> %s (rule %s)",
                flow.request.pretty_host,
                state.model,
                rw.model_to,
                rw.rule,
            )
        return rw

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = flowstate.get(flow)
        if state is None or flow.response is None:
            return
        served = state.report.model_sent
        if served and SERVED_MODEL_HEADER not in flow.response.headers:
            flow.response.headers[SERVED_MODEL_HEADER] = served

    def response(self, flow: http.HTTPFlow) -> None:
        """Whole (non-streamed) JSON bodies get the same response rewrites as streams."""
        state = flowstate.get(flow)
        resp = flow.response
        if state is None or resp is None or not state.rewrites or state.tap is not None:
            return
        if resp.stream or "json" not in resp.headers.get("content-type", ""):
            return
        raw = resp.get_content(strict=False)
        if not raw:
            return
        payload, _ = parse_json(raw)
        if not is_json(payload):
            return
        try:
            edits = edits_of(state.rewrites, payload)
            if not edits:
                return
            resp.content = splice(raw, edits)  # only the rewritten values' bytes change
        except SpliceError as e:
            state.findings.add("TAP-3", f"response body not rewritten ({e}); passed on as is")
            return
        except Exception:
            logger.exception("mitmllm: response rewrite failed; body left as is")
            return
        state.report.body_rewritten = True


def _lint(fmt: str, body: Any, findings: Findings, *, fixed: Any = None) -> None:
    """Request lints (REQ-*) on the body as the client sent it.

    With `fixed` (the body after tool sanitizing), a problem the sanitizer removed is kept as
    info: the client's request had it, the upstream never saw it. REQ-2 ('custom' tools) only
    matters when a flavour targets an upstream that rejects them.
    """
    found = Findings()
    lint(fmt, body, found)
    remaining: set[tuple[str, str]] = set()
    if fixed is not None:
        after = Findings()
        lint(fmt, fixed, after)
        remaining = {(f.rule, f.message) for f in after}
    for f in found:
        if fixed is None:
            if f.rule != "REQ-2":
                findings.extend([f])
        elif (f.rule, f.message) in remaining:
            findings.extend([f])
        else:
            note = f"{f.message} (sanitized for the upstream)"
            findings.extend([Finding(f.rule, Severity.INFO, note)])
