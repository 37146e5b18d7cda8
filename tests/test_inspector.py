"""The inspector addon and its tap: mitmproxy's streaming rules, flagging, metadata, modes."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import logging
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import anthropic
import httpx2 as httpx
import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from hypothesis import given
from hypothesis import strategies as st
from mitmproxy import flow as mflow
from mitmproxy import http
from mitmproxy import io
from mitmproxy.addons.view import View
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from mitmllm.engine.report import Attempt
from mitmllm.engine.report import FlowReport
from mitmllm.glue import flowstate
from mitmllm.glue.addons import inspection_addons
from mitmllm.glue.inspector import COMMENT_WIDTH
from mitmllm.glue.inspector import Inspector
from mitmllm.glue.inspector import Recognizer
from mitmllm.glue.inspector import comment
from mitmllm.glue.recorder import is_flagged
from mitmllm.glue.tap import Tap
from mitmllm.protocol.findings import Finding
from mitmllm.protocol.rules import RULES
from mitmllm.protocol.rules import Severity
from tests.anthropic_streams import SHORT_TEXT as HEALTHY
from tests.anthropic_streams import SHORT_TEXT_INDEX_1 as INDEX_1
from tests.proxyharness import running_proxy
from tests.relayharness import ScriptedUpstream


def _flow(body: dict | None = None) -> http.HTTPFlow:
    f = tflow.tflow(
        req=tutils.treq(
            method=b"POST",
            path=b"/v1/messages",
            content=httpx.Request(
                "POST",
                "http://x",
                json=body
                or {
                    "model": "claude-test",
                    "max_tokens": 10,
                    "stream": True,
                    "messages": [{"role": "user", "content": "hi"}],
                },
            ).read(),
        ),
    )
    return f


def _sse_response() -> http.Response:
    return tutils.tresp(content=None, headers=http.Headers(content_type="text/event-stream"))


def _stream(f: http.HTTPFlow, chunks: list[bytes]) -> list[bytes]:
    out: list[bytes] = []
    for c in [*chunks, b""]:
        result = f.response.stream(c)
        assert isinstance(result, list), "a stream callable must always return a list"
        out += result
    return out


async def test_tap_passes_healthy_stream_byte_identical_in_whole_events() -> None:
    recognizer, addon = Recognizer(), Inspector()
    with taddons.context(recognizer, addon) as tctx:
        tctx.configure(addon)
        f = _flow()
        recognizer.request(f)
        assert f.request.headers["accept-encoding"] == "identity"
        f.response = _sse_response()
        addon.responseheaders(f)
        assert isinstance(f.response.stream.__self__, Tap)  # its bound method
        chunks = [HEALTHY[i : i + 7] for i in range(0, len(HEALTHY), 7)]
        out = _stream(f, chunks)
        assert b"".join(out) == HEALTHY
        assert all(piece.endswith(b"\n\n") for piece in out), "only whole events are emitted"
        await addon.response(f)
        meta = f.metadata["mitmllm"]
        assert meta["format"] == "anthropic" and meta["events"] == 7 and meta["findings"] == []
        assert meta["usage"] == {"input": 5, "output": 3}
        assert f.response.raw_content == HEALTHY
        assert not f.marked and not f.comment


async def test_broken_stream_is_flagged_with_rule_ids() -> None:
    recognizer, addon = Recognizer(), Inspector()
    with taddons.context(recognizer, addon) as tctx:
        tctx.configure(addon)
        f = _flow()
        recognizer.request(f)
        f.response = _sse_response()
        addon.responseheaders(f)
        out = _stream(f, [INDEX_1])
        assert b"".join(out) == INDEX_1  # flagged, never changed
        await addon.response(f)
        assert "ANT-7" in f.metadata["mitmllm"]["summary"]
        assert f.marked == ":x:"
        assert f.comment.startswith("ANT-7")


async def test_internal_error_passes_the_rest_through_and_reports_TAP_1(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    recognizer, addon = Recognizer(), Inspector()
    with taddons.context(recognizer, addon) as tctx:
        tctx.configure(addon)
        f = _flow()
        recognizer.request(f)
        f.response = _sse_response()
        addon.responseheaders(f)
        checker = f.response.stream.__self__.pipeline.checker
        calls = {"n": 0}
        original = checker.check

        def exploding(ev, payload):  # type: ignore[no-untyped-def]
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("boom")
            original(ev, payload)

        monkeypatch.setattr(checker, "check", exploding)
        chunks = [HEALTHY[i : i + 50] for i in range(0, len(HEALTHY), 50)]
        out = _stream(f, chunks)
        assert b"".join(out) == HEALTHY, "no byte lost on an internal error"
        await addon.response(f)
        assert f.metadata["mitmllm"]["findings"][0]["rule"] == "TAP-1"


async def test_non_llm_flows_are_untouched() -> None:
    recognizer, addon = Recognizer(), Inspector()
    with taddons.context(recognizer, addon) as tctx:
        tctx.configure(addon)
        f = tflow.tflow(resp=tutils.tresp(headers=http.Headers(content_type="text/event-stream")))
        f.request.headers["accept-encoding"] = "gzip"
        recognizer.request(f)
        f.response = _sse_response()
        addon.responseheaders(f)
        await addon.response(f)
        assert flowstate.get(f) is None
        assert f.response.stream is False
        assert f.request.headers["accept-encoding"] == "gzip"
        assert "mitmllm" not in f.metadata


async def test_wrapped_error_in_buffered_json_body() -> None:
    recognizer, addon = Recognizer(), Inspector()
    with taddons.context(recognizer, addon) as tctx:
        tctx.configure(addon)
        f = _flow({"model": "m", "max_tokens": 5, "messages": []})  # not a stream request
        recognizer.request(f)
        f.response = tutils.tresp(
            content=b'{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}',
            headers=http.Headers(content_type="application/json"),
        )
        addon.responseheaders(f)
        await addon.response(f)
        assert "HTTP-5" in f.metadata["mitmllm"]["summary"]


async def test_a_client_that_closes_after_the_terminal_event_got_a_complete_answer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The OpenAI SDKs close as soon as [DONE] is in: mitmproxy then reports a client that
    disconnected before the end of body, but the stream was whole."""
    recognizer, addon = Recognizer(), Inspector()
    with taddons.context(recognizer, addon) as tctx:
        tctx.configure(addon)
        f = _flow()
        recognizer.request(f)
        f.response = _sse_response()
        addon.responseheaders(f)
        for chunk in (HEALTHY[:100], HEALTHY[100:]):  # every event, but no end of body
            f.response.stream(chunk)
        f.error = mflow.Error("Client disconnected.")
        with caplog.at_level(logging.INFO):
            await addon.error(f)
        meta = f.metadata["mitmllm"]
        assert meta["end"] == "complete" and meta["complete"] is True
        assert meta["findings"] == [] and not f.marked and not is_flagged(f)
        assert "ABORTED" not in caplog.text and "client disconnected" not in caplog.text


@pytest.mark.parametrize("message", ["Client disconnected.", "stream reset by client (CANCEL)"])
async def test_a_client_that_leaves_mid_stream_is_no_upstream_finding(message: str) -> None:
    """What the upstream never had the chance to send is not its truncation (ANT-18, SSE-14)."""
    recognizer, addon = Recognizer(), Inspector()
    with taddons.context(recognizer, addon) as tctx:
        tctx.configure(addon)
        f = _flow()
        recognizer.request(f)
        f.response = _sse_response()
        addon.responseheaders(f)
        f.response.stream(HEALTHY[: HEALTHY.index(b"event: content_block_stop") + 30])
        f.error = mflow.Error(message)
        await addon.error(f)
        meta = f.metadata["mitmllm"]
        assert meta["end"] == "client_disconnect" and meta["end_error"] == message
        assert meta["findings"] == [] and not f.marked and not is_flagged(f)


async def test_an_upstream_that_breaks_off_mid_stream_is_flagged() -> None:
    recognizer, addon = Recognizer(), Inspector()
    with taddons.context(recognizer, addon) as tctx:
        tctx.configure(addon)
        f = _flow()
        recognizer.request(f)
        f.response = _sse_response()
        addon.responseheaders(f)
        f.response.stream(HEALTHY[: HEALTHY.index(b"event: content_block_stop")])
        f.error = mflow.Error("HTTP/1 protocol error: incomplete chunked read")
        await addon.error(f)
        meta = f.metadata["mitmllm"]
        assert meta["end"] == "upstream_failure" and "ANT-18" in meta["summary"]
        assert f.marked == ":x:" and is_flagged(f)


@pytest.mark.parametrize(
    ("status", "rule", "marked"), [(400, "HTTP-6", ""), (422, "HTTP-6", ""), (429, "HTTP-1", ":x:")]
)
async def test_a_client_s_own_4xx_is_not_marked_like_an_upstream_failure(
    status: int, rule: str, marked: str
) -> None:
    recognizer, addon = Recognizer(), Inspector()
    with taddons.context(recognizer, addon) as tctx:
        tctx.configure(addon)
        f = _flow()
        recognizer.request(f)
        f.response = tutils.tresp(
            status_code=status,
            content=b'{"type":"error","error":{"type":"invalid_request_error","message":"no"}}',
            headers=http.Headers(content_type="application/json"),
        )
        addon.responseheaders(f)
        await addon.response(f)
        assert [x["rule"] for x in f.metadata["mitmllm"]["findings"]] == [rule]
        assert f.marked == marked


def test_the_comment_is_short_and_names_each_rule_once() -> None:
    report = FlowReport()
    report.findings.add("ANT-7", "content_block_start at index 1 with no block 0", event=1)
    report.findings.add("ANT-7", "content_block_delta for block 1", event=2)
    report.findings.add("SSE-6", "comment inside an event", event=3)
    report.attempts = [
        Attempt(
            "primary",
            "http://p",
            outcome="inband_error",
            findings=[
                Finding("SSE-18", Severity.ERROR, "spliced"),
                Finding("SSE-6", Severity.WARNING, "c"),
            ],
        )
    ]
    text = comment(report)
    assert text == (
        "ANT-7 x2, SSE-6 [primary: SSE-18]: content_block_start at index 1 with no block 0"
    )
    assert RULES["ANT-7"].effect not in text
    wordy = FlowReport()
    wordy.findings.add("PAY-1", "data is not JSON: " + "x" * 300)
    long = comment(wordy)
    assert len(long) == COMMENT_WIDTH and long.startswith("PAY-1: data is not JSON: xxx")
    assert long.endswith("…")


def test_options_are_validated() -> None:
    recognizer, addon = Recognizer(), Inspector()
    with taddons.context(recognizer, addon) as tctx:
        with pytest.raises(Exception, match="emoji shortcode"):
            tctx.configure(addon, mitmllm_marker_error="red")
        with pytest.raises(Exception, match="not a host name"):
            tctx.configure(recognizer, mitmllm_hosts=["https://api.openai.com/v1"])
        tctx.configure(recognizer, mitmllm_hosts=["*.openai.azure.com"])
        tctx.configure(addon, mitmllm_marker_warning="")


# --- through a real proxy ----------------------------------------------------------------------


async def _upstream(bodies: dict[str, bytes], tls: ssl.SSLContext | None = None):  # type: ignore[no-untyped-def]
    seen: list[dict[str, str]] = []

    async def handle(request: web.Request) -> web.StreamResponse:
        seen.append(dict(request.headers))
        body = bodies[request.path]
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for i in range(0, len(body), 40):
            await resp.write(body[i : i + 40])
            await asyncio.sleep(0)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, port, seen


@pytest.fixture
async def upstream() -> AsyncIterator[tuple[int, list[dict[str, str]]]]:
    runner, port, seen = await _upstream({"/v1/messages": HEALTHY, "/bad/v1/messages": INDEX_1})
    yield port, seen
    await runner.cleanup()


async def test_reverse_mode_sdk_reads_byte_identical_stream(
    upstream: tuple[int, list[dict[str, str]]],
) -> None:
    port, seen = upstream
    async with running_proxy(inspection_addons(), mode=f"reverse:http://127.0.0.1:{port}") as proxy:
        client = anthropic.AsyncAnthropic(api_key="test", base_url=proxy.url, max_retries=0)
        async with client.messages.stream(
            model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
        ) as stream:
            message = await stream.get_final_message()
        await client.close()
        assert message.content[0].text == "Hello 世界"
        (flow,) = await proxy.log.wait(1)
        assert flow.response.raw_content == HEALTHY
        meta = flow.metadata["mitmllm"]
        assert meta["format"] == "anthropic" and meta["findings"] == [] and meta["complete"]
        assert meta["ttfe_ms"] >= 0 and meta["chunks"] >= 1
        assert seen[0]["Accept-Encoding"] == "identity"

        bad = anthropic.AsyncAnthropic(api_key="t", base_url=proxy.url + "/bad", max_retries=0)
        with pytest.raises(IndexError):  # what anthropic-python does on ANT-7
            async with bad.messages.stream(
                model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "x"}]
            ) as stream:
                await stream.get_final_message()
        await bad.close()
        flows = await proxy.log.wait(2)
        assert flows[1].marked == ":x:" and "ANT-7" in flows[1].comment


def _self_signed() -> tuple[bytes, bytes]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=2))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return (
        cert.public_bytes(serialization.Encoding.PEM),
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )


async def test_explicit_https_proxy_with_mitmproxy_ca(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cert, key = _self_signed()
    (tmp_path / "up.pem").write_bytes(cert + key)
    tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    tls.load_cert_chain(tmp_path / "up.pem")
    runner, port, _ = await _upstream({"/v1/messages": HEALTHY}, tls)
    try:
        async with running_proxy(
            inspection_addons(), mode="regular", confdir=str(tmp_path), ssl_insecure=True
        ) as proxy:
            ca = tmp_path / "mitmproxy-ca-cert.pem"
            http_client = httpx.AsyncClient(
                proxy=proxy.url, verify=ssl.create_default_context(cafile=str(ca))
            )
            client = anthropic.AsyncAnthropic(
                api_key="test",
                base_url=f"https://127.0.0.1:{port}",
                http_client=http_client,
                max_retries=0,
            )
            async with client.messages.stream(
                model="claude-test", max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            ) as stream:
                message = await stream.get_final_message()
            assert message.content[0].text == "Hello 世界"
            (flow,) = await proxy.log.wait(1)
            assert flow.request.scheme == "https"
            assert flow.metadata["mitmllm"]["findings"] == []
            assert flow.response.raw_content == HEALTHY
            await http_client.aclose()
    finally:
        await runner.cleanup()


# --- a long stream: what the flow keeps is bounded, findings are whole -------------------------


def long_stream(deltas: int) -> bytes:
    """HEALTHY with `deltas` text deltas, one of them (in the middle) not JSON (PAY-1)."""
    head, _, rest = HEALTHY.partition(b"event: content_block_delta")
    delta = b"event: content_block_delta" + rest[: rest.index(b"\n\n") + 2]
    middle = [delta] * deltas
    middle[deltas // 2] = b"event: content_block_delta\ndata: {not json\n\n"
    return head + b"".join(middle) + rest[rest.index(b"\n\n") + 2 :]


async def test_a_long_stream_keeps_its_start_and_end_and_all_its_findings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    body = long_stream(3000)  # ~350 KB
    steps = [(0.0, body[i : i + 4096]) for i in range(0, len(body), 4096)]
    spill = tmp_path / "spill"
    async with ScriptedUpstream(steps=steps) as upstream:
        async with running_proxy(
            inspection_addons(),
            mode=f"reverse:{upstream.url}",
            mitmllm_keep_body="16KiB",
            mitmllm_spill_dir=str(spill),
        ) as proxy:
            client = anthropic.AsyncAnthropic(api_key="k", base_url=proxy.url, max_retries=0)
            got = bytearray()
            async with client.messages.with_streaming_response.create(
                model="claude-test",
                max_tokens=10,
                stream=True,
                messages=[{"role": "user", "content": "hi"}],
            ) as resp:
                async for piece in resp.iter_bytes():
                    got += piece
            await client.close()
            (f,) = await proxy.log.wait(1)
    assert bytes(got) == body  # the client gets every byte
    kept = f.response.raw_content
    assert len(kept) <= 16 * 1024 + 100
    assert kept.startswith(body[:2000]) and kept.endswith(body[-2000:])
    assert b"bytes of the stream were not kept here (mitmllm_keep_body)" in kept
    meta = f.metadata["mitmllm"]
    assert meta["body_kept"]["of"] == len(body) and meta["body_kept"]["cut"] > 300_000
    rules = {x["rule"] for x in meta["findings"]}
    assert {"TAP-4", "PAY-1"} <= rules  # PAY-1 lies in the part not kept: found all the same
    assert meta["events"] == body.count(b"\n\n")
    assert (spill / f"{f.id}.sse").read_bytes() == body
    assert meta["body_file"] == str(spill / f"{f.id}.sse")
    assert "TAP-4" in f.comment.split(" | ")[0]  # mitmweb's comment column says so


_query_text = st.text(alphabet="ab=&?#%+;/ é1", max_size=24)


@given(path=_query_text, query=_query_text)
def test_the_query_recognition_reads_is_the_one_mitmproxy_gives(path: str, query: str) -> None:
    """`query_of` reads the path itself: the same mapping as mitmproxy's query view (first
    value of a repeated key; no fragment; escapes decoded)."""
    req = tutils.treq(path=("/v1/" + path + "?" + query).encode())
    assert flowstate.query_of(req) == dict(req.query.items())


@pytest.mark.parametrize("reader", ["none", "flow file", "view", "size"])
async def test_a_stream_is_kept_only_when_something_reads_it(tmp_path: Path, reader: str) -> None:
    """mitmllm_keep_body=auto: mitmdump alone keeps nothing of a stream (as it keeps nothing of a
    streamed body itself); a flow file (-w), a flow view (mitmweb, the console) or a size
    asked for make flows keep it. Findings and counts cover the stream either way."""
    body = long_stream(50)
    opts: dict[str, Any] = {"mitmllm_keep_body": "16KiB" if reader == "size" else "auto"}
    if reader == "flow file":
        opts["save_stream_file"] = str(tmp_path / "flows.mitm")
    async with ScriptedUpstream(steps=[(0.0, body)]) as upstream:
        async with running_proxy(
            inspection_addons(), mode=f"reverse:{upstream.url}", **opts
        ) as proxy:
            if reader == "view":
                proxy.master.addons.add(View())
                inspector = next(a for a in proxy.addons if isinstance(a, Inspector))
                inspector.running()  # mitmweb has its view when mitmproxy runs
            async with aiohttp.ClientSession() as client:
                async with client.post(
                    proxy.url + "/v1/messages",
                    json={"model": "claude-test", "stream": True, "messages": []},
                ) as resp:
                    assert await resp.read() == body
            (f,) = await proxy.log.wait(1)
    meta = f.metadata["mitmllm"]
    assert meta["events"] == body.count(b"\n\n")
    assert "PAY-1" in {x["rule"] for x in meta["findings"]}
    if reader == "none":
        assert not f.response.raw_content
    else:
        assert f.response.raw_content == body
    if reader == "flow file":
        with (tmp_path / "flows.mitm").open("rb") as fh:
            (saved,) = list(io.FlowReader(fh).stream())
        assert saved.response.raw_content == body
