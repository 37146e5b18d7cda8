"""Section `memory`: one long stream through each proxy, and the peak RSS of its process.

An Anthropic stream of 256 MiB (text deltas, event-aligned 64 KiB chunks) goes from an upstream in
its own process through one fresh mitmdump at a time to a client that counts every byte:

* ``plain``: mitmdump streaming event streams (``stream=True``), no mitmllm: the baseline;
* ``tap``: mitmdump with mitmllm (inspect-only: validated in the proxy; nothing reads the
  flow's body, so none is kept, see ``mitmllm_keep_body``);
* ``saving``: the tap writing flows to a file (``-w``): the flow keeps its stream up to
  ``mitmllm_keep_body`` (8 MiB) and is saved with it;
* ``relay``: the same with a route, so the stream goes through the relay too;
* ``capture``: the tap with ``mitmllm_capture=all`` (the recorder keeps the upstream's bytes and
  writes a fixture).

The figure of each is the peak resident memory of its mitmdump process over its whole life
(VmHWM of ``/proc/PID/status``), start-up included, and what mitmllm adds to plain mitmdump's in
the same run. The target, for the tap, saving and the relay: within 64 MiB of plain, whatever the
stream's length. Recording has no target: it holds a second copy of what the flow keeps and
writes it as a fixture, so its memory follows ``mitmllm_keep_body``, not the stream's length.

Runs alone with ``python -m mitmllm.bench --only memory`` (``uv run just bench --only memory``).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from mitmllm.bench.concurrency import status_kib
from mitmllm.bench.corpus import MiB
from mitmllm.bench.corpus import proxy_events
from mitmllm.bench.corpus import proxy_request
from mitmllm.bench.proxy import PLAIN
from mitmllm.bench.proxy import RELAY
from mitmllm.bench.proxy import START_TIMEOUT
from mitmllm.bench.proxy import TAP
from mitmllm.bench.proxy import BenchError
from mitmllm.bench.proxy import Processes
from mitmllm.bench.proxy import Setup
from mitmllm.bench.proxy import processes
from mitmllm.bench.proxy import relay_config
from mitmllm.bench.proxy import setups
from mitmllm.bench.report import Report
from mitmllm.bench.report import at_most
from mitmllm.bench.report import mark

SECTION = "memory"
#: The issue's target: what mitmllm adds to plain mitmdump's peak RSS, whatever the length.
TARGET_ADDED_MIB = 64.0
#: Bytes per upstream write, whole events.
CHUNK = 64 * 1024
#: The request header that asks the upstream for a stream of about this many bytes.
HEADER_BYTES = "x-bench-bytes"
#: Seconds one stream may take before the measurement gives up on a stuck proxy.
STREAM_TIMEOUT = 900.0

CAPTURE = "capture"
SAVING = "saving"  # the tap writing flows to a file (-w)


@dataclass(frozen=True, slots=True)
class MemorySizes:
    mib: int  # the stream's size


# --- the upstream: a long stream, made as it is written ------------------------------------------


def stream_parts() -> tuple[bytes, bytes, bytes]:
    """(head, one chunk of whole text deltas, tail) of a healthy Anthropic stream."""
    events = proxy_events(64)
    deltas = [e for e in events if b"content_block_delta" in e]
    first = events.index(deltas[0])
    last = events.index(deltas[-1])
    block = b"".join(deltas)
    chunk = block * max(1, CHUNK // len(block))
    return b"".join(events[:first]), chunk, b"".join(events[last + 1 :])


async def _serve_stream(request: web.Request) -> web.StreamResponse:
    await request.read()
    total = int(request.headers.get(HEADER_BYTES, str(MiB)))
    head, chunk, tail = stream_parts()
    resp = web.StreamResponse(headers={"content-type": "text/event-stream"})
    resp.enable_chunked_encoding()
    await resp.prepare(request)
    await resp.write(head)
    sent = len(head) + len(tail)
    while sent < total:
        await resp.write(chunk)
        sent += len(chunk)
    await resp.write(tail)
    await resp.write_eof()
    return resp


def expected_bytes(total: int) -> int:
    """What the upstream sends when asked for `total` bytes."""
    head, chunk, tail = stream_parts()
    n = max(0, -(-(total - len(head) - len(tail)) // len(chunk)))
    return len(head) + n * len(chunk) + len(tail)


async def _upstream_main() -> None:
    app = web.Application()
    app.router.add_post("/{tail:.*}", _serve_stream)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)  # type: ignore[union-attr]
    await asyncio.Event().wait()


def serve() -> None:
    """The upstream's process: prints its port, then serves until it is stopped."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_upstream_main())


# --- measurement ----------------------------------------------------------------------------------


def memory_setups(procs: Processes, upstream_port: int) -> list[Setup]:
    """plain, tap, saving, relay, capture (see the module docstring)."""
    by_name = {s.name: s for s in setups(procs.workdir, upstream_port, (PLAIN, TAP))}
    plain, addon = by_name[PLAIN], by_name[TAP]
    assert addon.args is not None
    config = procs.workdir / "memory-relay.yaml"
    config.write_text(relay_config(upstream_port), encoding="utf-8")
    captures = procs.workdir / "captures"
    return [
        plain,
        Setup(TAP, addon.args, tapped=True, description="mitmdump + mitmllm, inspect only"),
        Setup(
            SAVING,
            (*addon.args, "-w", str(procs.workdir / "memory.mitm")),
            tapped=True,
            description="mitmdump -w + mitmllm: flows saved, keeping their streams",
        ),
        Setup(
            RELAY,
            (*addon.args, "--set", f"mitmllm_config={config}"),
            tapped=True,
            relayed=True,
            description="mitmdump + mitmllm, routed through the relay",
        ),
        Setup(
            CAPTURE,
            (
                *addon.args,
                "--set",
                "mitmllm_capture=all",
                "--set",
                f"mitmllm_capture_dir={captures}",
            ),
            tapped=True,
            description="mitmdump + mitmllm, recording fixtures",
        ),
    ]


async def upstream(procs: Processes) -> int:
    proc = procs.spawn(
        "memory-upstream", [sys.executable, "-c", "from mitmllm.bench.memory import serve; serve()"]
    )
    stdout = proc.popen.stdout
    assert stdout is not None
    try:
        line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), START_TIMEOUT)
    except TimeoutError:
        line = b""
    if not line.strip().isdigit():
        raise BenchError(f"the memory benchmark's upstream did not start:\n{proc.log_tail()}")
    return int(line)


async def one_stream(port: int, total: int) -> tuple[int, float]:
    """Bytes the client got from a stream of `total` bytes through `port`, and seconds."""
    path, headers, body = proxy_request(8, 1)
    headers[HEADER_BYTES] = str(total)
    got = 0
    t0 = time.perf_counter()
    timeout = aiohttp.ClientTimeout(total=STREAM_TIMEOUT)
    async with aiohttp.ClientSession(timeout=timeout, auto_decompress=False) as http:
        async with http.post(f"http://127.0.0.1:{port}{path}", data=body, headers=headers) as r:
            if r.status != 200:
                raise BenchError(f"port {port} answered {r.status}: {(await r.read())[:200]!r}")
            async for piece in r.content.iter_any():
                got += len(piece)
    return got, time.perf_counter() - t0


@dataclass
class Measured:
    setup: Setup
    peak_mib: float
    seconds: float
    got: int


async def measure(procs: Processes, setup: Setup, upstream_port: int, total: int) -> Measured:
    """One fresh mitmdump for `setup`, one stream through it, its peak RSS."""
    proc = procs.proxy(setup, upstream_port)
    try:
        await procs.listening(proc)
        got, seconds = await one_stream(proc.port, total)
        await asyncio.sleep(0.5)  # the end of the flow: the tap's and the recorder's work
        peak = status_kib(proc.popen.pid, "VmHWM")
    finally:
        procs.stop(proc)
    if peak is None:
        raise BenchError("the peak RSS needs /proc/PID/status (Linux)")
    return Measured(setup, peak / 1024, seconds, got)


def run(report: Report, sizes: MemorySizes) -> None:
    asyncio.run(_run(report, sizes))


async def _run(report: Report, sizes: MemorySizes) -> None:
    total = sizes.mib * MiB
    report.heading(f"memory: one {sizes.mib} MiB stream, peak RSS of each mitmdump, same run")
    report.print(
        f"  Anthropic text deltas in {CHUNK // 1024} KiB chunks; one fresh mitmdump per setup; "
        "peak = VmHWM over the process's life"
    )
    with processes() as procs:
        port = await upstream(procs)
        want = expected_bytes(total)
        results = []
        for setup in memory_setups(procs, port):
            m = await measure(procs, setup, port, total)
            if m.got != want:
                raise BenchError(f"{setup.name}: the client got {m.got} bytes of {want}")
            results.append(m)
    plain = results[0]
    rows = []
    for m in results:
        peak = report.add(SECTION, f"{m.setup.name}: peak RSS", m.peak_mib, "MiB")
        if m.setup.name == PLAIN:
            added = "-"
        else:
            fig = report.add(
                SECTION,
                f"{m.setup.name}: peak RSS added to plain",
                m.peak_mib - plain.peak_mib,
                "MiB",
                at_most(TARGET_ADDED_MIB) if m.setup.name in (TAP, SAVING, RELAY) else None,
            )
            added = mark(fig)
        rows.append(
            [
                m.setup.name,
                mark(peak),
                added,
                f"{want / MiB / m.seconds:,.0f} MiB/s",
                m.setup.description,
            ]
        )
    report.table(["setup", "peak RSS", "added", "throughput", "what"], rows)
