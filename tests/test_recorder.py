"""The recorder addon: options, what it records and when, and record -> replay through a proxy."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from mitmproxy import exceptions
from mitmproxy import http
from mitmproxy import io as mio
from mitmproxy.addons import view
from mitmproxy.test import taddons
from mitmproxy.test import tflow
from mitmproxy.test import tutils

from mitmllm.engine import fixtures
from mitmllm.engine.replay import ReplayUpstream
from mitmllm.glue import flowstate
from mitmllm.glue.inspector import Inspector
from mitmllm.glue.inspector import Recognizer
from mitmllm.glue.recorder import Recorder
from mitmllm.protocol.splice import Edit
from tests.proxyharness import running_proxy

REQUEST = {"model": "m-1", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
HEALTHY = b'data: {"n": 1}\r\n\r\ndata: {"text": "caf\xc3\xa9"}\r\n\r\ndata: [DONE]\r\n\r\n'
CHUNKS = [HEALTHY[:5], HEALTHY[5:29], HEALTHY[29:]]  # the second cut is inside the "é"
SECRET = "sk-ant-api03-very-secret-value"


def llm_flow() -> http.HTTPFlow:
    f = tflow.tflow(req=tutils.treq(method=b"POST", content=orjson.dumps(REQUEST)))
    f.request.url = "http://llm.test/v1/generate"
    f.request.headers["x-api-key"] = SECRET
    f.request.timestamp_start = time.time()
    return f


def stream(
    inspector: Inspector,
    recorder: Recorder,
    f: http.HTTPFlow,
    chunks: list[bytes],
    *,
    end: bool = True,
) -> bytes:
    """Run `f` through the hooks as mitmproxy would for a streamed SSE response."""
    Recognizer().request(f)
    f.response = tutils.tresp(content=None, headers=http.Headers(content_type="text/event-stream"))
    inspector.responseheaders(f)
    recorder.responseheaders(f)
    assert callable(f.response.stream)
    sent: list[bytes] = []
    for c in [*chunks, *([b""] if end else [])]:
        out = f.response.stream(c)
        assert isinstance(out, list), "the stream callable must always return a list"
        sent += out
    if end:
        f.response.timestamp_end = time.time()
        asyncio.run(inspector.response(f))  # the inspector's end hooks are async
        recorder.response(f)
    else:
        f.error = tflow.terr("HTTP/1 protocol error: incomplete chunked read")
        asyncio.run(inspector.error(f))
        recorder.error(f)
    return b"".join(sent)


def written(directory: Path) -> list[fixtures.Fixture]:
    return [fixtures.load_fixture(p) for p in fixtures.iter_fixtures(directory)]


@pytest.fixture
def addons(tmp_path: Path):  # type: ignore[no-untyped-def]
    inspector, recorder = Inspector(), Recorder()
    with taddons.context(inspector, recorder) as tctx:
        tctx.configure(recorder, mitmllm_capture_dir=str(tmp_path), mitmllm_capture="all")
        yield inspector, recorder, tctx


# --- options --------------------------------------------------------------------------------------


def test_options_are_validated_with_errors_that_say_what_to_do() -> None:
    r = Recorder()
    with taddons.context(r) as tctx:
        with pytest.raises(exceptions.OptionsError, match=r"mitmllm_capture_filter: .*'~d \('"):
            tctx.configure(r, mitmllm_capture_filter="~d (")
        with pytest.raises(exceptions.OptionsError, match="needs mitmllm_capture_filter"):
            tctx.configure(r, mitmllm_capture="filter")
        with pytest.raises(exceptions.OptionsError, match="mitmllm_redact: 'x token'"):
            tctx.configure(r, mitmllm_redact=["x token"])
        with pytest.raises(exceptions.OptionsError, match="not one of off, all, flagged"):
            tctx.configure(r, mitmllm_capture="sometimes")
        tctx.configure(r, mitmllm_capture="filter", mitmllm_capture_filter="~meta ANT-")
        assert r.filter is not None
        assert "mitmllm.capture" in tctx.master.commands.commands


# --- automatic recording --------------------------------------------------------------------------


def test_all_records_upstream_bytes_chunk_timing_and_expectations(addons, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inspector, recorder, _ = addons
    f = llm_flow()
    sent = stream(inspector, recorder, f, CHUNKS)
    assert sent == HEALTHY
    [fx] = written(tmp_path)
    assert fx.response is not None and fx.response.content == HEALTHY
    assert [o for o, _ in fx.response.chunks] == [0, 5, 29]
    assert fx.response.timing == "recorded"
    assert all(0 <= ms < 5000 for _, ms in fx.response.chunks)
    assert fx.expect.terminal == "complete" and fx.expect.findings == []
    assert fx.model == "m-1" and fx.stream is True
    assert SECRET not in fx.source.read_text()  # type: ignore[union-attr]
    assert f.metadata[fixtures.CAPTURED_KEY] == str(fx.source)
    assert fixtures.check_fixture(fx.source, update=False) == ""  # type: ignore[arg-type]


def test_flagged_records_only_flows_with_problems(addons, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inspector, recorder, tctx = addons
    tctx.configure(recorder, mitmllm_capture="flagged")
    stream(inspector, recorder, llm_flow(), CHUNKS)
    assert written(tmp_path) == []
    stream(inspector, recorder, llm_flow(), [HEALTHY + b"data: {oops}\n\n"])
    [fx] = written(tmp_path)
    assert [f.rule for f in fx.expect.findings] == ["PAY-1"]
    assert fixtures.fixture_name(fx).startswith("http--m-1--PAY-1--")


def test_filter_records_the_flows_the_expression_matches(addons, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inspector, recorder, tctx = addons
    tctx.configure(recorder, mitmllm_capture="filter", mitmllm_capture_filter="~d other.test")
    stream(inspector, recorder, llm_flow(), CHUNKS)
    assert written(tmp_path) == []
    tctx.configure(recorder, mitmllm_capture_filter="~d llm.test & ~meta m-1")
    stream(inspector, recorder, llm_flow(), CHUNKS)
    assert len(written(tmp_path)) == 1


def test_off_records_nothing_and_leaves_the_stream_callable_alone(addons, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inspector, recorder, tctx = addons
    tctx.configure(recorder, mitmllm_capture="off")
    f = llm_flow()
    stream(inspector, recorder, f, CHUNKS)
    assert f.response is not None and f.response.stream == flowstate.get(f).tap.__call__  # type: ignore[union-attr]
    assert written(tmp_path) == []


def test_a_cut_stream_is_recorded_with_its_error_and_terminal_state(addons, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inspector, recorder, _ = addons
    f = llm_flow()
    sent = stream(inspector, recorder, f, CHUNKS[:2], end=False)
    [fx] = written(tmp_path)
    assert fx.error == "HTTP/1 protocol error: incomplete chunked read"
    assert fx.expect.terminal == "aborted"
    assert fx.response is not None and fx.response.content == b"".join(CHUNKS[:2])
    assert fx.response.client_content == sent  # the held-back partial event never reached it
    assert fixtures.fixture_name(fx).startswith("http--m-1--SSE-14--")
    assert fixtures.check_fixture(fx.source, update=False) == ""  # type: ignore[arg-type]


def test_rewritten_streams_keep_the_upstream_body_and_the_client_body(
    addons, tmp_path: Path
) -> None:  # type: ignore[no-untyped-def]
    inspector, recorder, _ = addons
    f = llm_flow()
    Recognizer().request(f)

    def bump(payload: Any) -> list[Edit]:
        if isinstance(payload, dict) and "n" in payload:
            return [Edit(("n",), 2)]
        return []

    flowstate.get(f).rewrites.append(bump)  # type: ignore[union-attr]
    sent = stream(inspector, recorder, f, CHUNKS)
    assert sent == HEALTHY.replace(b'{"n": 1}', b'{"n": 2}')
    [fx] = written(tmp_path)
    assert fx.response is not None
    assert fx.response.content == HEALTHY and fx.response.client_content == sent


# --- the command ----------------------------------------------------------------------------------


def test_capture_command_records_flows_loaded_from_a_file(addons, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inspector, recorder, tctx = addons
    # the command runs in mitmweb or the console: their flow view reads what flows keep
    tctx.master.addons.add(view.View())
    tctx.configure(recorder, mitmllm_capture="off", mitmllm_capture_dir=str(tmp_path / "picked"))
    f = llm_flow()
    stream(inspector, recorder, f, CHUNKS)
    with open(tmp_path / "saved.mitm", "wb") as fh:
        mio.FlowWriter(fh).add(f)
    loaded = list(fixtures.read_flows(tmp_path / "saved.mitm"))
    assert recorder.capture([*loaded, tflow.ttcpflow()]) == 1
    [fx] = written(tmp_path / "picked")
    assert fx.response is not None and fx.response.content == HEALTHY
    assert fx.response.timing == "unknown" and len(fx.response.chunks) == 1
    assert any("chunk timing unknown" in n for n in fx.notes)
    assert SECRET not in fx.source.read_text()  # type: ignore[union-attr]


def test_capture_command_takes_a_flow_spec_like_marked(tmp_path: Path) -> None:
    inspector, recorder, flows = Inspector(), Recorder(), view.View()
    with taddons.context(flows, inspector, recorder) as tctx:
        tctx.configure(recorder, mitmllm_capture_dir=str(tmp_path))
        marked, plain = llm_flow(), llm_flow()
        stream(inspector, recorder, marked, [HEALTHY + b"data: {oops}\n\n"])  # PAY-1: marked
        stream(inspector, recorder, plain, CHUNKS)
        flows.add([marked, plain])
        assert marked.marked and not plain.marked
        assert tctx.command(recorder.capture, "@marked") == 1
        [fx] = written(tmp_path)
        assert [f.rule for f in fx.expect.findings] == ["PAY-1"]


def test_capture_command_uses_the_live_tap_and_skips_running_flows(addons, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    inspector, recorder, tctx = addons
    # the command runs in mitmweb or the console: their flow view reads what flows keep
    tctx.master.addons.add(view.View())
    tctx.configure(recorder, mitmllm_capture="off")
    done = llm_flow()
    stream(inspector, recorder, done, CHUNKS)
    running = llm_flow()
    running.live = True
    assert recorder.capture([done, running]) == 1
    [fx] = written(tmp_path)
    assert fx.response is not None and [o for o, _ in fx.response.chunks] == [0, 5, 29]
    assert recorder.capture([done]) == 1  # the same flow again: the same file, not a copy
    assert len(written(tmp_path)) == 1


# --- through a real proxy: record, then replay what was recorded ----------------------------------


async def _upstream(chunks: list[bytes], gap: float) -> AsyncIterator[int]:
    async def handle(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
        await resp.prepare(request)
        for c in chunks:
            await asyncio.sleep(gap)
            await resp.write(c)
        await resp.write_eof()
        return resp

    app = web.Application()
    app.router.add_post("/{tail:.*}", handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    finally:
        await runner.cleanup()


async def _through_proxy(upstream_port: int, capture_dir: Path) -> tuple[bytes, fixtures.Fixture]:
    async with running_proxy(
        [Recognizer(), Inspector(), Recorder()],
        mode=f"reverse:http://127.0.0.1:{upstream_port}",
        mitmllm_capture="all",
        mitmllm_capture_dir=str(capture_dir),
    ) as proxy:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{proxy.url}/v1/generate?key={SECRET}",
                json=REQUEST,
                headers={"x-api-key": SECRET, "authorization": f"Bearer {SECRET}"},
            ) as resp,
        ):
            body = await resp.read()
        await proxy.log.wait(1)
    [fx] = written(capture_dir)
    return body, fx


async def test_record_through_the_proxy_then_replay_the_recording(tmp_path: Path) -> None:
    gen = _upstream(CHUNKS, gap=0.04)
    port = await anext(gen)
    try:
        body, first = await _through_proxy(port, tmp_path / "first")
    finally:
        await gen.aclose()
    assert body == HEALTHY
    assert SECRET not in first.source.read_text()  # type: ignore[union-attr]
    assert first.response is not None and [o for o, _ in first.response.chunks] == [0, 5, 29]
    assert fixtures.check_fixture(first.source, update=False) == ""  # type: ignore[arg-type]

    # The recording, served by the replay upstream, recorded again through the proxy.
    async with ReplayUpstream([first.source], speed=1.0) as up:  # type: ignore[list-item]
        body2, second = await _through_proxy(up.port, tmp_path / "second")
    assert body2 == HEALTHY
    assert second.response is not None
    assert second.response.chunks[0][0] == 0
    assert [o for o, _ in second.response.chunks] == [0, 5, 29], "chunk boundaries replayed"
    gaps1 = [
        b[1] - a[1] for a, b in zip(first.response.chunks, first.response.chunks[1:], strict=False)
    ]
    gaps2 = [
        b[1] - a[1]
        for a, b in zip(second.response.chunks, second.response.chunks[1:], strict=False)
    ]
    assert gaps2 == pytest.approx(gaps1, abs=30), "chunk timing replayed"
    assert second.expect == first.expect
    assert fixtures.fixture_name(second) == fixtures.fixture_name(first)


async def test_a_long_stream_is_recorded_as_its_start_and_its_end(tmp_path: Path) -> None:
    events = [b'data: {"n": %d, "pad": "%s"}\r\n\r\n' % (i, b"x" * 80) for i in range(2000)]
    chunks = [b"".join(events[i : i + 20]) for i in range(0, len(events), 20)]
    whole = b"".join(events)
    gen = _upstream(chunks, gap=0)
    port = await anext(gen)
    try:
        async with running_proxy(
            [Recognizer(), Inspector(), Recorder()],
            mode=f"reverse:http://127.0.0.1:{port}",
            mitmllm_capture="all",
            mitmllm_capture_dir=str(tmp_path),
            mitmllm_keep_body="8KiB",
        ) as proxy:
            async with aiohttp.ClientSession() as s, s.post(proxy.url, json=REQUEST) as resp:
                got = await resp.read()
            await proxy.log.wait(1)
    finally:
        await gen.aclose()
    assert got == whole
    [fx] = written(tmp_path)
    assert fx.response is not None
    kept = fx.response.content
    assert len(kept) <= 8 * 1024 + 100
    assert kept.startswith(events[0]) and kept.endswith(events[-1])
    assert b"not kept here (mitmllm_keep_body)" in kept
    assert any(f"the stream was {len(whole)} bytes" in n for n in fx.notes)
    assert fx.response.timing == "unknown"  # offsets past a cut fit no kept body
    assert fx.comment.startswith("TAP-4")  # the flow said so, and the fixture keeps it
