"""Flows and fixtures of neutral streams, as the recorder makes them (not a test module)."""

from __future__ import annotations

import orjson
from mitmproxy import http
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from mitmllm.engine import fixtures
from mitmllm.engine.fixtures import Fixture
from tests.streamcheck import split

URL = "http://llm.test/v1/generate"
REQUEST = {"model": "m-1", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
# Neutral payloads: no dialect claims them, so only the generic SSE/PAY rules apply.
HEALTHY = b'data: {"n": 1}\n\ndata: {"text": "caf\xc3\xa9 \xe4\xb8\x96"}\n\ndata: [DONE]\n\n'
CRLF = HEALTHY.replace(b"\n", b"\r\n")


def sse_flow(
    body: bytes,
    *,
    request: dict | None = None,
    url: str = URL,
    status: int = 200,
    headers: dict[str, str] | None = None,
) -> http.HTTPFlow:
    f = tflow.tflow(
        req=tutils.treq(method=b"POST", content=orjson.dumps(request or REQUEST)),
        resp=tutils.tresp(
            status_code=status,
            content=body,
            headers=http.Headers(content_type="text/event-stream", **(headers or {})),
        ),
    )
    f.request.url = url
    f.request.headers["content-type"] = "application/json"
    assert f.response is not None
    f.response.timestamp_start = f.request.timestamp_start + 0.005  # headers after 5 ms
    f.response.timestamp_end = f.request.timestamp_start + 0.25
    return f


def recorded(body: bytes, cuts: list[int] | None = None, **kw: object) -> Fixture:
    """A fixture as the recorder makes it: upstream bytes and chunk times from the tap."""
    pieces = split(body, cuts or [])
    chunks, offset = [], 0
    for i, piece in enumerate(pieces):
        chunks.append((offset, 10.0 * (i + 1)))
        offset += len(piece)
    return fixtures.from_flow(sse_flow(body, **kw), upstream_body=body, chunks=chunks)  # type: ignore[arg-type]
