"""The rewriter: the configuration's model rules applied to every LLM request.

A rule maps the requested model (by glob and request conditions) to an upstream model, constrains
parameters and sanitizes tool schemas; responses then show the client the model and tool names it
asked for (restamp), in streams and in whole bodies. A request no rule touches is left
byte-identical; one whose body cannot be rewritten is left as is and flagged (REQ-3).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from mitmproxy import http

from mitmllm.engine.config import Config
from mitmllm.engine.rewrite import response_rewrites
from mitmllm.engine.rewrite import rule_rewrite
from mitmllm.glue import flowstate
from mitmllm.glue.configaddon import ConfigLoader
from mitmllm.protocol import models
from mitmllm.protocol.dialect import is_json
from mitmllm.protocol.findings import Findings
from mitmllm.protocol.schemas import lint
from mitmllm.protocol.stream import parse_json

logger = logging.getLogger("mitmllm.rewrite")

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
        dialect = state.dialect
        path = flow.request.path.split("?", 1)[0]
        body = state.request
        _lint(dialect.name, body, state.findings, flavoured=False)
        rules = self.config.model_rules
        if not rules:
            return
        if state.model is None or (dialect.name != "gemini" and not isinstance(body, dict)):
            state.findings.add(
                "REQ-3",
                "body is not a JSON object"
                if not isinstance(body, dict)
                else "no string model in the body",
            )
            return
        facts = models.facts(
            dialect.name, path, dict(flow.request.query.items()), body, state.model
        )
        rule = models.select(rules, facts)
        if rule is None:
            return
        work = orjson.loads(orjson.dumps(body)) if isinstance(body, dict) else body
        rw = rule_rewrite(dialect, path, work, rule)
        if rw.path_changed:
            query = flow.request.path[len(path) :]
            flow.request.path = rw.path + query
        if rw.body_changed:
            flow.request.content = rw.body_bytes()
            state.request = rw.body
        state.info["rewrite"] = rw.to_dict() | {"rule": rw.rule}
        state.served_model = rw.model_to or state.model
        client_model = state.model if rule.restamp and rw.model_to else None
        state.rewrites.extend(response_rewrites(dialect, client_model=client_model, names=rw.names))
        if rw.model_to:
            logger.info(
                "mitmllm rewrite %s: %s -> %s (rule %s)",
                flow.request.pretty_host,
                state.model,
                rw.model_to,
                rw.rule,
            )

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state = flowstate.get(flow)
        if state is None or flow.response is None:
            return
        served = state.served_model
        if served and served != state.model and SERVED_MODEL_HEADER not in flow.response.headers:
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
        changed = False
        for rewrite in state.rewrites:
            try:
                changed |= bool(rewrite(payload))
            except Exception:
                logger.exception("mitmllm: response rewrite failed; body left as is")
                return
        if changed:
            resp.content = orjson.dumps(payload)
            state.info["body_rewritten"] = True


def _lint(fmt: str, body: Any, findings: Findings, *, flavoured: bool) -> None:
    found = Findings()
    lint(fmt, body, found)
    for f in found:
        # A 'custom' tool is fine for the official APIs; it matters when a flavour targets an
        # upstream that rejects it.
        if f.rule == "REQ-2" and not flavoured:
            continue
        findings.extend([f])
