"""Which wire format is this? From the request (path, body), or from the first stream event.

Paths are matched by suffix so gateways that mount an API under a prefix
(`/api/openai/v1/chat/completions`) are recognised; the body decides the rest (a POST that does
not carry a JSON object is never an LLM call).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

from mitmllm.protocol.dialect import INVALID
from mitmllm.protocol.dialect import Dialect
from mitmllm.protocol.payload import parse_json


@cache
def dialects() -> tuple[Dialect, ...]:
    """Every dialect, most specific path first."""
    from mitmllm.protocol import anthropic
    from mitmllm.protocol import gemini
    from mitmllm.protocol import openai_chat
    from mitmllm.protocol import openai_responses

    return (
        openai_responses.DIALECT,
        openai_chat.DIALECT,
        anthropic.DIALECT,
        gemini.DIALECT,
    )


def by_name(name: str | None) -> Dialect | None:
    for d in dialects():
        if d.name == name:
            return d
    return None


def names() -> list[str]:
    return [d.name for d in dialects()]


def from_request(method: str, path: str, body: Any) -> Dialect | None:
    """The dialect of a request; `path` without its query, `body` parsed JSON or None."""
    path = path.split("?", 1)[0]
    for d in dialects():
        if d.match_request(method, path, body):
            return d
    return None


def from_payload(payload: Any, event_name: str | None) -> Dialect | None:
    """The dialect of a stream, from its first JSON event."""
    for d in dialects():
        if d.match_payload(payload, event_name):
            return d
    return None


def looks_like_llm_request(method: str, body: Any) -> bool:
    """A POST whose JSON body has the shape of some LLM API call (used for unknown paths)."""
    if method != "POST" or not isinstance(body, dict):
        return False
    return (
        "model" in body
        and any(k in body for k in ("messages", "input", "prompt"))
        or ("contents" in body)
    )


@dataclass(frozen=True, slots=True)
class Recognised:
    """What a request is, as far as mitmllm is concerned."""

    llm: bool  # an LLM API call (a known dialect, or an LLM-shaped body on another path)
    dialect: Dialect | None
    body: Any  # the parsed JSON body, or None
    stream: bool  # it asks for an event stream
    model: str | None  # the model it asks for

    @property
    def autodetect(self) -> bool:
        """The dialect must be told from the response (an LLM call on an unknown path)."""
        return self.dialect is None


def recognise(
    method: str, path: str, query: Mapping[str, str], raw_body: bytes | None
) -> Recognised:
    """Recognise a request by its path, then by the shape of its body."""
    body: Any = None
    if raw_body:
        value, _ = parse_json(raw_body)
        body = None if value is INVALID else value
    path = path.split("?", 1)[0]
    dialect = from_request(method, path, body)
    if dialect is not None:
        stream = dialect.wants_stream(path, query, body)
        model = dialect.request_model(path, body)
    else:
        stream = bool(isinstance(body, dict) and body.get("stream"))
        model = None
    if model is None and isinstance(body, dict) and isinstance(body.get("model"), str):
        model = body["model"]
    llm = dialect is not None or looks_like_llm_request(method, body)
    return Recognised(llm, dialect, body, stream, model)
