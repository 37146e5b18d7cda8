"""Sections `proxy`, `relay` and `concurrency`: mitmdump with and without mitmllm, measured
against each other in the same run.

Three processes, so that the proxy has a core: the benchmark's upstream
(`mitmllm.bench.upstream`, one SSE event per HTTP chunk as fast as the socket takes them),
`mitmdump` in reverse mode, and the client in this process (aiohttp, reading raw chunks and
counting events). Each way of reaching the upstream is a `Setup`:

* ``direct``: no proxy; shows the upstream and the client outrun mitmproxy;
* ``plain``: mitmdump streaming event streams (``flow.response.stream = True``), no mitmllm;
* ``addon``: mitmdump with ``-s mitmllm_addon.py``: every event decoded and validated on the way;
* ``relay``: the addon plus a config file that routes the stream through mitmllm's relay; it
  joins the run when the addon chain has the ``mitmllm_config`` option (see `relay_ready`).

Figures: events/s of a long stream at one event per upstream chunk and at several, and the time
to the first body byte (TTFB) of short streams; the setups take turns (rotating order) within
each repetition, and the ratios compare medians of the same run. Every proxy is started with
``-q`` on a free 127.0.0.1 port and killed on the way out, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pstats
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from pathlib import Path
from typing import Any

import aiohttp

from mitmllm.bench.corpus import proxy_events
from mitmllm.bench.corpus import proxy_request
from mitmllm.bench.report import Figure
from mitmllm.bench.report import Report
from mitmllm.bench.report import at_least
from mitmllm.bench.report import at_most
from mitmllm.bench.report import hot_spots
from mitmllm.bench.report import mark
from mitmllm.bench.report import median
from mitmllm.bench.report import percentile
from mitmllm.bench.upstream import HEADER_ACCEPT_ENCODING
from mitmllm.engine.relay import UPSTREAM_HEADER

SECTION = "proxy"
RELAY_SECTION = "relay"
CONCURRENCY_SECTION = "concurrency"
SECTIONS = (SECTION, RELAY_SECTION, CONCURRENCY_SECTION)

#: The issue's targets, at one event per upstream chunk.
TARGET_EVENTS_RATIO = 0.9
TARGET_ADDED_TTFB_MS = 0.5
#: Several events per upstream chunk, as a busy upstream's TCP segments carry them.
REALISTIC_PER_CHUNK = 4
#: Events in each TTFB request: a short answer.
SHORT_EVENTS = 8
#: Seconds a proxy may take to start listening (mitmdump takes a few).
START_TIMEOUT = 60.0
#: Seconds one request may take before the benchmark gives up on a stuck proxy.
REQUEST_TIMEOUT = 300.0

#: The upstream's name in the relay's config; the relay names it in a response header.
RELAY_UPSTREAM = "bench"

DIRECT = "direct"
PLAIN = "plain"
ADDON = "addon"
RELAY = "relay"

# Runs mitmdump from this interpreter, whatever the PATH says.
_MITMDUMP = "import sys; from mitmproxy.tools.main import mitmdump; sys.exit(mitmdump())"
# Loaded into a proxy to profile the flows whose request carries PROFILE_HEADER, one profile per
# header value, from their request headers to their end: not the start-up, not the idle time.
_PROFILE_SCRIPT = """\
import cProfile

_profiles = {{}}


def requestheaders(flow):
    key = flow.request.headers.get({header!r})
    if key:
        _profiles.setdefault(key, cProfile.Profile()).enable()


def response(flow):
    key = flow.request.headers.get({header!r})
    if key:
        _profiles[key].disable()


error = response


def done():
    for key, profile in _profiles.items():
        profile.dump_stats({out!r} + "." + key)
"""
PROFILE_HEADER = "x-bench-profile"

# The baseline: stream event streams as the addon does, and nothing else.
_PLAIN_SCRIPT = '''\
"""Stream event streams, nothing else: the baseline mitmllm is measured against."""


def responseheaders(flow):
    if flow.response.headers.get("content-type", "").startswith("text/event-stream"):
        flow.response.stream = True
'''


class BenchError(Exception):
    """The measurement itself went wrong (a proxy did not start, a stream lost events)."""


@dataclass(frozen=True, slots=True)
class ProxySizes:
    events: int  # events in the long stream
    reps: int  # measured repetitions of the long stream per setup and row
    ttfb_requests: int  # short requests per setup
    warmup_requests: int


@dataclass(frozen=True, slots=True)
class Setup:
    """One way for the client to reach the upstream."""

    name: str
    #: mitmdump arguments besides mode, listen address and -q; None: no proxy (direct)
    args: tuple[str, ...] | None
    #: the addon must have recognised the stream (it asks the upstream for identity encoding)
    tapped: bool = False
    #: the relay must have served the stream (it names the upstream in a response header)
    relayed: bool = False
    description: str = ""


def addon_script() -> Path:
    """The entry script users pass to mitmdump with -s."""
    import mitmllm

    script = Path(mitmllm.__file__).resolve().parent.parent / "mitmllm_addon.py"
    if not script.is_file():
        raise BenchError(f"mitmllm's entry script is not next to the package: {script}")
    return script


def setups(workdir: Path, upstream_port: int, *, relay: bool) -> list[Setup]:
    plain = workdir / "plain_stream.py"
    plain.write_text(_PLAIN_SCRIPT, encoding="utf-8")
    script = str(addon_script())
    out = [
        Setup(DIRECT, None, description="client to upstream, no proxy"),
        Setup(PLAIN, ("-s", str(plain)), description="mitmdump, stream=True for event streams"),
        Setup(ADDON, ("-s", script), tapped=True, description="mitmdump -s mitmllm_addon.py"),
    ]
    if relay:
        out.append(relay_setup(workdir, upstream_port))
    return out


# --- the relay: one more entry ---------------------------------------------------------------


def relay_config(upstream_port: int) -> str:
    """A config file that routes the benchmark's stream through the relay to the upstream."""
    return (
        "version: 1\n"
        "upstreams:\n"
        f"  - name: {RELAY_UPSTREAM}\n"
        f"    base_url: http://127.0.0.1:{upstream_port}\n"
        "    format: anthropic\n"
        "    auth: none\n"
        "routes:\n"
        "  - name: bench\n"
        "    match: {path: /v1/messages}\n"
        "    chain:\n"
        f"      - upstream: {RELAY_UPSTREAM}\n"
    )


def relay_setup(workdir: Path, upstream_port: int) -> Setup:
    config = workdir / "relay.yaml"
    config.write_text(relay_config(upstream_port), encoding="utf-8")
    return Setup(
        RELAY,
        ("-s", str(addon_script()), "--set", f"mitmllm_config={config}"),
        tapped=True,
        relayed=True,
        description="the addon with a route through the relay",
    )


def relay_ready() -> str | None:
    """None when the addon chain has the relay's config option, else why the relay is skipped."""
    from mitmllm.glue.addons import all_addons

    names: set[str] = set()

    class OptionNames:
        def add_option(self, name: str, *args: Any, **kwargs: Any) -> None:
            names.add(name)

        def add_command(self, *args: Any, **kwargs: Any) -> None:
            pass

    try:
        for addon in all_addons():
            load = getattr(addon, "load", None)
            if load is not None:
                load(OptionNames())
    except Exception as e:
        return f"not available yet (the addon chain did not load: {type(e).__name__})"
    if "mitmllm_config" not in names:
        return "not available yet (the addon chain has no mitmllm_config option)"
    return None


# --- processes -------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    port: int = 0

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.strip().splitlines()[-lines:])


@dataclass
class Processes:
    """Every subprocess of the section; `close` (also on Ctrl-C) ends whatever still runs."""

    workdir: Path
    running: list[Process] = field(default_factory=list)

    def spawn(self, name: str, argv: Sequence[str]) -> Process:
        log = self.workdir / f"{name}.log"
        with open(log, "wb") as err:
            popen = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err
            )
        proc = Process(name, popen, log)
        self.running.append(proc)
        return proc

    async def upstream(self) -> Process:
        proc = self.spawn("upstream", [sys.executable, "-m", "mitmllm.bench.upstream"])
        stdout = proc.popen.stdout
        assert stdout is not None
        try:
            line = await asyncio.wait_for(asyncio.to_thread(stdout.readline), START_TIMEOUT)
        except TimeoutError:
            line = b""
        if not line.strip().isdigit():
            raise BenchError(f"the benchmark upstream did not start:\n{proc.log_tail()}")
        proc.port = int(line)
        return proc

    def proxy(self, setup: Setup, upstream_port: int, *, profile_to: Path | None = None) -> Process:
        assert setup.args is not None
        port = free_port()
        args = list(setup.args)
        if profile_to is not None:
            script = self.workdir / f"profile_{setup.name}.py"
            script.write_text(
                _PROFILE_SCRIPT.format(header=PROFILE_HEADER, out=str(profile_to)), encoding="utf-8"
            )
            args += ["-s", str(script)]
        argv = [
            sys.executable,
            "-c",
            _MITMDUMP,
            "-q",
            "--mode",
            f"reverse:http://127.0.0.1:{upstream_port}",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(port),
            *args,
        ]
        proc = self.spawn(setup.name if profile_to is None else f"{setup.name}-profiled", argv)
        proc.port = port
        return proc

    async def listening(self, proc: Process) -> None:
        """Wait until `proc` accepts connections on its port."""
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if proc.popen.poll() is not None:
                raise BenchError(
                    f"mitmdump ({proc.name}) exited with {proc.popen.returncode}:\n"
                    f"{proc.log_tail()}"
                )
            try:
                _reader, writer = await asyncio.open_connection("127.0.0.1", proc.port)
            except OSError:
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"mitmdump ({proc.name}) did not listen within "
                        f"{START_TIMEOUT:g} s:\n{proc.log_tail()}"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    def stop(self, proc: Process, timeout: float = 10.0) -> None:
        """Ask `proc` to shut down (mitmdump then writes its profile), kill it if it does not."""
        if proc in self.running:
            self.running.remove(proc)
        popen = proc.popen
        if popen.poll() is None:
            popen.send_signal(signal.SIGINT if os.name == "posix" else signal.SIGTERM)
            try:
                popen.wait(timeout)
            except subprocess.TimeoutExpired:
                popen.kill()
                popen.wait()
        if popen.stdout is not None:
            popen.stdout.close()

    def close(self) -> None:
        for proc in reversed(list(self.running)):
            if proc.popen.poll() is None:
                proc.popen.kill()
        for proc in list(self.running):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(5)
            if proc.popen.stdout is not None:
                proc.popen.stdout.close()
        self.running.clear()


@contextlib.contextmanager
def processes() -> Iterator[Processes]:
    with tempfile.TemporaryDirectory(prefix="mitmllm-bench-") as tmp:
        procs = Processes(Path(tmp))
        try:
            yield procs
        finally:
            procs.close()


# --- the client ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Stream:
    """One response as the client saw it."""

    ttfb: float  # seconds from sending the request to the first body byte
    seconds: float  # ... to the last body byte
    events: int
    accept_encoding: str  # what the upstream was asked for
    served_by: str | None  # the upstream the relay names, if the relay served it

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def fetch(
    client: aiohttp.ClientSession,
    port: int,
    events: int,
    per_chunk: int,
    *,
    profile: str | None = None,
) -> Stream:
    """One streaming request; events are counted as the blank lines that end them. With
    `profile`, a profiling proxy adds the flow to the profile of that name."""
    path, headers, body = proxy_request(events, per_chunk)
    if profile:
        headers[PROFILE_HEADER] = profile
    url = f"http://127.0.0.1:{port}{path}"
    count = 0
    last = b""
    first: float | None = None
    t0 = time.perf_counter()
    async with client.post(url, data=body, headers=headers) as resp:
        if resp.status != 200:
            text = (await resp.read())[:300]
            raise BenchError(f"{url} answered {resp.status}: {text!r}")
        async for chunk in resp.content.iter_any():
            if first is None:
                first = time.perf_counter()
            count += chunk.count(b"\n\n") + (last == b"\n" and chunk[:1] == b"\n")
            last = chunk[-1:]
        end = time.perf_counter()
        seen = resp.headers.get(HEADER_ACCEPT_ENCODING, "")
        served_by = resp.headers.get(UPSTREAM_HEADER)
    if first is None:
        raise BenchError(f"{url} sent an empty body")
    return Stream(first - t0, end - t0, count, seen, served_by)


def http_client() -> aiohttp.ClientSession:
    """Keep-alive connections, raw bytes, and a limit that only a stuck proxy reaches."""
    return aiohttp.ClientSession(
        auto_decompress=False,
        timeout=aiohttp.ClientTimeout(total=REQUEST_TIMEOUT),
        connector=aiohttp.TCPConnector(limit=0),
    )


def check(setup: Setup, stream: Stream, expected: int) -> Stream:
    """The stream arrived whole, through the path `setup` promises."""
    if stream.events != expected:
        raise BenchError(f"{setup.name}: {stream.events} events arrived, {expected} were sent")
    tapped = stream.accept_encoding == "identity"
    if tapped != setup.tapped:
        raise BenchError(
            f"{setup.name}: the upstream was asked for accept-encoding "
            f"{stream.accept_encoding!r}; mitmllm "
            + ("did not recognise" if setup.tapped else "unexpectedly tapped")
            + " the benchmark stream"
        )
    if setup.relayed and stream.served_by != RELAY_UPSTREAM:
        raise BenchError(f"{setup.name}: the stream did not come through the relay")
    return stream


# --- measurement -----------------------------------------------------------------------------


@dataclass
class Measured:
    """What one run measured, per setup."""

    setups: list[Setup]
    #: events/s of the long stream, per (row label, setup name)
    rates: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: TTFB in seconds per setup
    ttfb: dict[str, list[float]] = field(default_factory=dict)


#: (label, events per upstream chunk) of the long-stream rows; the targets apply to the first.
ROWS: tuple[tuple[str, int], ...] = (
    ("1 event/chunk", 1),
    (f"{REALISTIC_PER_CHUNK} events/chunk", REALISTIC_PER_CHUNK),
)


def expected_events(events: int) -> int:
    return len(proxy_events(events))


async def measure(
    procs: Processes, sizes: ProxySizes, *, relay: bool, report: Report
) -> tuple[Measured, Process]:
    upstream = await procs.upstream()
    all_setups = setups(procs.workdir, upstream.port, relay=relay)
    ports: dict[str, int] = {}
    proxies = {s.name: procs.proxy(s, upstream.port) for s in all_setups if s.args is not None}
    t0 = time.perf_counter()
    await asyncio.gather(*(procs.listening(p) for p in proxies.values()))
    report.print(
        f"  {len(proxies)} mitmdump processes listening after {time.perf_counter() - t0:.1f} s"
    )
    for s in all_setups:
        ports[s.name] = proxies[s.name].port if s.name in proxies else upstream.port
    m = Measured(all_setups)
    long_total = expected_events(sizes.events)
    short_total = expected_events(SHORT_EVENTS)
    async with http_client() as client:
        # Warm-up: connections, caches, the upstream's framing; and proof of each setup's path.
        for s in all_setups:
            check(s, await fetch(client, ports[s.name], sizes.events, 1), long_total)
            for _ in range(sizes.warmup_requests):
                check(s, await fetch(client, ports[s.name], SHORT_EVENTS, 1), short_total)
        for label, per_chunk in ROWS:
            for rep in range(sizes.reps):
                for s in rotated(all_setups, rep):
                    got = await fetch(client, ports[s.name], sizes.events, per_chunk)
                    check(s, got, long_total)
                    m.rates.setdefault((label, s.name), []).append(got.rate)
        for i in range(sizes.ttfb_requests):
            for s in rotated(all_setups, i):
                got = await fetch(client, ports[s.name], SHORT_EVENTS, 1)
                check(s, got, short_total)
                m.ttfb.setdefault(s.name, []).append(got.ttfb)
    return m, upstream


def rotated(items: list[Setup], n: int) -> list[Setup]:
    """`items` starting at position n: no setup always goes first."""
    k = n % len(items)
    return items[k:] + items[:k]


STREAM = "stream"
TTFB = "ttfb"


async def profiled(
    procs: Processes, setup: Setup, upstream: Process, workloads: Sequence[str], sizes: ProxySizes
) -> dict[str, pstats.Stats]:
    """Run each workload (STREAM: the long stream; TTFB: short requests) through `setup` with
    every flow profiled; their stats."""
    out = procs.workdir / f"{setup.name}.prof"
    proc = procs.proxy(setup, upstream.port, profile_to=out)
    await procs.listening(proc)
    async with http_client() as client:
        await fetch(client, proc.port, SHORT_EVENTS, 1)  # the first connection, not profiled
        for workload in workloads:
            if workload == STREAM:
                await fetch(client, proc.port, sizes.events, 1, profile=workload)
            else:
                for _ in range(max(sizes.ttfb_requests, 20)):
                    await fetch(client, proc.port, SHORT_EVENTS, 1, profile=workload)
    procs.stop(proc)
    stats = {}
    for workload in workloads:
        path = Path(f"{out}.{workload}")
        if path.exists():
            stats[workload] = pstats.Stats(str(path))
    return stats


# --- sections --------------------------------------------------------------------------------


def run(report: Report, sizes: ProxySizes, sections: Sequence[str]) -> None:
    """The proxy section, and the relay and concurrency sections when selected."""
    relay_reason = relay_ready()
    want_proxy = SECTION in sections
    want_relay = RELAY_SECTION in sections and relay_reason is None
    if want_proxy or want_relay:
        try:
            asyncio.run(_run(report, sizes, want_proxy, want_relay))
        except BenchError as e:
            report.fail(f"the proxy measurement failed: {e}")
            report.add(SECTION, "measurement", None, note="failed (see above)")
    if RELAY_SECTION in sections and relay_reason is not None:
        relay_unavailable(report, relay_reason)
    if CONCURRENCY_SECTION in sections:
        concurrency(report)


async def _run(report: Report, sizes: ProxySizes, want_proxy: bool, want_relay: bool) -> None:
    if want_proxy:
        report.heading("proxy: mitmdump + mitmllm against plain mitmdump (stream=True), same run")
        report.print(
            f"  upstream: one Anthropic event (150-200 bytes) per HTTP chunk, in its own process; "
            f"long stream: {sizes.events:,} events, median of {sizes.reps}; "
            f"TTFB: {sizes.ttfb_requests} requests of {SHORT_EVENTS} events"
        )
    else:
        report.heading("relay: tap-only and relay against plain mitmdump, same run")
    with processes() as procs:
        m, upstream = await measure(procs, sizes, relay=want_relay, report=report)
        addon = next(s for s in m.setups if s.name == ADDON)
        if want_proxy:
            missed_rate, missed_ttfb = proxy_figures(report, m)
            workloads = [w for w, missed in ((STREAM, missed_rate), (TTFB, missed_ttfb)) if missed]
            if workloads:
                stats = await profiled(procs, addon, upstream, workloads, sizes)
                for workload in workloads:
                    report.print()
                    what = "a long stream" if workload == STREAM else "short requests"
                    if workload in stats:
                        hot_spots(report, f"mitmdump + addon, {what}", stats[workload])
                    else:
                        report.print(f"  (no profile of {what}: mitmdump did not write one)")
        if want_relay:
            if want_proxy:
                report.heading("relay: tap-only and relay against plain mitmdump, same run")
            relay_figures(report, m)


def _rate(m: Measured, label: str, name: str) -> float:
    return median(m.rates.get((label, name), []))


def proxy_figures(report: Report, m: Measured) -> tuple[bool, bool]:
    """Print and record the proxy section; (events/s target missed, TTFB target missed)."""
    table = []
    missed_rate = False
    for i, (label, _per_chunk) in enumerate(ROWS):
        direct, plain, addon = (_rate(m, label, n) for n in (DIRECT, PLAIN, ADDON))
        fd = report.add(SECTION, f"{label}: direct", direct, "events/s")
        fp = report.add(SECTION, f"{label}: plain mitmdump", plain, "events/s")
        fa = report.add(SECTION, f"{label}: mitmdump + addon", addon, "events/s")
        ratio = report.add(
            SECTION,
            f"{label}: addon / plain",
            addon / plain,
            "x",
            at_least(TARGET_EVENTS_RATIO) if i == 0 else None,
        )
        # The upstream and client must outrun the proxy, or the ratios measure them instead.
        headroom = report.add(
            SECTION, f"{label}: direct / plain", direct / plain, "x", at_least(1.0)
        )
        missed_rate |= ratio.missed
        table.append([label, mark(fd), mark(fp), mark(fa), mark(ratio), mark(headroom)])
    report.table(["events/s", "direct", "plain", "addon", "addon/plain", "direct/plain"], table)
    report.print()
    ttfb_rows = []
    p50: dict[str, float] = {}
    for s in m.setups:
        if s.name == RELAY:
            continue
        xs = [t * 1000 for t in m.ttfb.get(s.name, [])]
        p50[s.name] = percentile(xs, 50)
        f50 = report.add(SECTION, f"TTFB p50: {s.name}", p50[s.name], "ms")
        f90 = report.add(SECTION, f"TTFB p90: {s.name}", percentile(xs, 90), "ms")
        ttfb_rows.append([s.name, mark(f50), mark(f90), s.description])
    added = report.add(
        SECTION,
        "TTFB p50 added by the addon (addon - plain)",
        p50[ADDON] - p50[PLAIN],
        "ms",
        at_most(TARGET_ADDED_TTFB_MS),
    )
    plain_ttfb = [t * 1000 for t in m.ttfb.get(PLAIN, [])]
    addon_ttfb = [t * 1000 for t in m.ttfb.get(ADDON, [])]
    added90 = report.add(
        SECTION,
        "TTFB p90 added by the addon (addon - plain)",
        percentile(addon_ttfb, 90) - percentile(plain_ttfb, 90),
        "ms",
    )
    ratio = report.add(SECTION, "TTFB p50 addon / plain", p50[ADDON] / p50[PLAIN], "x")
    report.table(["TTFB", "p50", "p90", "setup"], ttfb_rows)
    report.print(
        f"  added by the addon: p50 {mark(added)}, p90 {mark(added90)}; "
        f"addon/plain p50 {mark(ratio)}"
    )
    return missed_rate, added.missed


RELAY_TTFB = "TTFB p50 added by the relay (relay - plain)"


def relay_figures(report: Report, m: Measured) -> None:
    """The relay against tap-only (the addon) and plain mitmdump, from the same run."""
    report.print(
        "  note: the relay reads the upstream in bulk and writes whole events in batches, so "
        "mitmproxy handles fewer, larger chunks than the upstream wrote"
    )
    figures: list[Figure] = []
    for label, _per_chunk in ROWS:
        plain, addon, relay = (_rate(m, label, n) for n in (PLAIN, ADDON, RELAY))
        figures += [
            report.add(RELAY_SECTION, f"{label}: relay", relay, "events/s"),
            report.add(RELAY_SECTION, f"{label}: relay / plain", relay / plain, "x"),
            report.add(RELAY_SECTION, f"{label}: relay / tap-only", relay / addon, "x"),
        ]
    plain_ms, relay_ms = ([t * 1000 for t in m.ttfb.get(n, [])] for n in (PLAIN, RELAY))
    added = percentile(relay_ms, 50) - percentile(plain_ms, 50)
    figures.append(report.add(RELAY_SECTION, RELAY_TTFB, added, "ms"))
    figures.append(relay_event_latency(report))
    for f in figures:
        report.print(f"  {f.name}: {mark(f)}")


def relay_event_latency(report: Report) -> Figure:
    """Hook: the latency the relay adds to each event (upstream write to client read), which
    needs an upstream that stamps its events with the time they were written."""
    return report.add(RELAY_SECTION, "per-event latency added", None, note="not available yet")


def relay_unavailable(report: Report, reason: str) -> None:
    """The relay rows while the relay cannot be measured, and why."""
    report.heading("relay: tap-only and relay against plain mitmdump")
    figures = [
        report.add(RELAY_SECTION, f"{label}: relay{what}", None, note=reason)
        for label, _per_chunk in ROWS
        for what in ("", " / plain", " / tap-only")
    ]
    figures.append(report.add(RELAY_SECTION, RELAY_TTFB, None, note=reason))
    figures.append(relay_event_latency(report))
    for f in figures:
        report.print(f"  {f.name}: {f.shown()}")


def concurrency(report: Report) -> None:
    """Hook for the concurrency run: N streams at a realistic token rate through one proxy.

    To measure: events/s held across all streams, p50/p99 inter-event latency added by the proxy
    (against the upstream's own pacing), and the proxy's resident memory.
    """
    report.heading("concurrency: many streams at a realistic token rate through one proxy")
    for name in (
        "events/s held",
        "added inter-event latency p50",
        "added inter-event latency p99",
        "proxy RSS",
    ):
        f = report.add(CONCURRENCY_SECTION, name, None, note="not available yet")
        report.print(f"  {f.name}: {f.shown()}")
