"""Request rewriting (model, parameters, tool schemas) and the matching response rewrites.

Shared by the rewriter addon (the configuration's model rules, for every LLM flow) and the relay
(each upstream's own model mapping and tool flavour). Rules work on a parsed copy of the body;
what they changed is then spliced into the client's bytes (`body_bytes`), so escapes, spacing,
key order and numbers of any size reach the upstream as the client wrote them, and a request no
rule touches stays byte-identical.
"""

from __future__ import annotations

from dataclasses import dataclass
from dataclasses import field
from typing import Any

from mitmllm.engine.pipeline import Rewrite
from mitmllm.engine.pipeline import TextBlind
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.models import ModelRule
from mitmllm.protocol.models import Param
from mitmllm.protocol.models import apply_params
from mitmllm.protocol.schemas import sanitize
from mitmllm.protocol.splice import Edit
from mitmllm.protocol.splice import SpliceError
from mitmllm.protocol.splice import diff
from mitmllm.protocol.splice import encode
from mitmllm.protocol.splice import splice


@dataclass
class RequestRewrite:
    """What was done to one request."""

    path: str
    body: Any
    rule: str | None = None
    model_from: str | None = None
    model_to: str | None = None
    params: list[dict[str, Any]] = field(default_factory=list)
    tools: dict[str, Any] = field(default_factory=dict)
    names: dict[str, str] = field(default_factory=dict)  # upstream tool name -> client's
    body_changed: bool = False
    path_changed: bool = False
    #: why the body had to be written anew instead of spliced (None: spliced)
    reencoded: str | None = None

    @property
    def changed(self) -> bool:
        return self.body_changed or self.path_changed

    def body_bytes(self, original: bytes, before: Any) -> bytes:
        """The client's bytes `original` (which parse to `before`) with the values this rewrite
        changed spliced in; every other byte stays the client's."""
        try:
            return splice(original, diff(before, self.body))
        except SpliceError as e:  # bytes that are not what was parsed: write the whole body
            self.reencoded = str(e)
            return encode(self.body)

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {}
        if self.rule is not None:
            d["rule"] = self.rule
        if self.model_to is not None and self.model_to != self.model_from:
            d["model_from"] = self.model_from
            d["model"] = self.model_to
        if self.params:
            d["params"] = self.params
        if self.tools.get("changes") or self.tools.get("notes"):
            d["tools"] = self.tools
        changes = list(self.tools.get("changes", []))
        changes += [
            {
                "action": p.get("action"),
                "path": p.get("param"),
                "before": p.get("before"),
                "after": p.get("after"),
                "reason": "parameter constraint",
            }
            for p in self.params
        ]
        if changes:
            d["changes"] = changes
        if self.names:
            d["names"] = self.names
        if self.reencoded is not None:
            d["reencoded"] = self.reencoded
        return d


def rewrite_request(
    dialect: Dialect,
    path: str,
    body: Any,
    *,
    model: str | None = None,
    params: dict[str, Param] | None = None,
    flavour: str | None = None,
    rule: str | None = None,
) -> RequestRewrite:
    """Ask for `model`, apply `params`, sanitize tools for `flavour`. `body` changes in place."""
    current = dialect.request_model(path, body)
    out = RequestRewrite(path=path, body=body, rule=rule, model_from=current)
    if model is not None and model != current:
        try:
            new_path, _ = dialect.set_request_model(path, body, model)
        except (TypeError, ValueError, KeyError):
            new_path = None  # no body to carry it, or a path without a model: left as is
        if new_path is not None:
            out.model_to = model
            if new_path != path:
                out.path, out.path_changed = new_path, True
            else:
                out.body_changed = True
    if params and isinstance(body, dict):
        changes = apply_params(body, params)
        if changes:
            out.params = [c.to_dict() for c in changes]
            out.body_changed = True
    if flavour and flavour != "none" and isinstance(body, dict):
        result = sanitize(dialect.name, body, flavour)
        out.tools = result.to_dict()
        out.names = dict(result.names)
        if result.changes:
            out.body_changed = True
    return out


def rule_rewrite(dialect: Dialect, path: str, body: Any, rule: ModelRule) -> RequestRewrite:
    return rewrite_request(
        dialect,
        path,
        body,
        model=rule.to,
        params=dict(rule.params),
        flavour=rule.tools,
        rule=rule.name or ",".join(rule.match),
    )


def response_rewrites(
    dialect: Dialect, *, client_model: str | None, names: dict[str, str] | None
) -> list[Rewrite]:
    """Rewrites that show the client its own model and tool names again (as edits to splice).
    Neither reads nor edits the model's text, so both are `TextBlind`."""
    out: list[Rewrite] = []
    if client_model:
        out.append(
            TextBlind(
                lambda payload: dialect.restamp(payload, client_model),
                marks=(dialect.restamp_key,),
            )
        )
    if names:
        mapping = dict(names)
        out.append(TextBlind(lambda payload: dialect.rename_tools(payload, mapping)))
    return out


def edits_of(rewrites: list[Rewrite], payload: Any) -> list[Edit]:
    """Every edit `rewrites` make to one parsed payload."""
    edits: list[Edit] = []
    for rewrite in rewrites:
        edits += rewrite(payload)
    return edits
