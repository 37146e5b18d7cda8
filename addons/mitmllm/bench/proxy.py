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
to the first body byte (TTFB) of short streams; with the relay, the latency each event gets
through each setup (a paced, stamped stream: `mitmllm.bench.latency`). The setups take turns
(rotating order) within each repetition, and the ratios compare medians of the same run. The
concurrency section (`mitmllm.bench.concurrency`) then starts the setups afresh and loads them
one after the other. Every proxy is started with ``-q`` on a free 127.0.0.1 port and killed on
the way out, Ctrl-C included.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
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

from mitmllm.bench import concurrency
from mitmllm.bench.concurrency import ConcurrencySizes
from mitmllm.bench.concurrency import Endpoint
from mitmllm.bench.corpus import LIFECYCLE_EVENTS
from mitmllm.bench.corpus import proxy_events
from mitmllm.bench.corpus import proxy_request
from mitmllm.bench.latency import LatencyError
from mitmllm.bench.latency import PacedStream
from mitmllm.bench.latency import paced_run
from mitmllm.bench.report import Report
from mitmllm.bench.report import at_least
from mitmllm.bench.report import at_most
from mitmllm.bench.report import hot_spots
from mitmllm.bench.report import mark
from mitmllm.bench.report import median
from mitmllm.bench.report import percentile
from mitmllm.bench.report import ratio
from mitmllm.bench.upstream import HEADER_ACCEPT_ENCODING
from mitmllm.engine.relay import UPSTREAM_HEADER

SECTION = "proxy"
RELAY_SECTION = "relay"
CONCURRENCY_SECTION = "concurrency"
SECTIONS = (SECTION, RELAY_SECTION, CONCURRENCY_SECTION)

#: The issue's targets, at one event per upstream chunk.
TARGET_EVENTS_RATIO = 0.9
TARGET_ADDED_TTFB_MS = 0.5
#: ... and the relay's, against plain mitmdump.
TARGET_RELAY_EVENTS_RATIO = 0.7
TARGET_RELAY_ADDED_TTFB_MS = 2.0
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
WORKER = "worker"  # the addon with mitmllm_worker on: the proxy only frames
RELAY = "relay"

# Runs mitmdump from this interpreter, whatever the PATH says.
_MITMDUMP = "import sys; from mitmproxy.tools.main import mitmdump; sys.exit(mitmdump())"
# Loaded into a proxy to profile the flows whose request carries PROFILE_HEADER, one profile per
# header value, while any of them runs: not the start-up, not the idle time. Concurrent flows
# share the profile, which runs from the first one's request headers to the last one's end.
_PROFILE_SCRIPT = """\
import cProfile

_profiles = {{}}
_running = {{}}


def requestheaders(flow):
    key = flow.request.headers.get({header!r})
    if key:
        if not _running.get(key):
            _profiles.setdefault(key, cProfile.Profile()).enable()
        _running[key] = _running.get(key, 0) + 1
        flow.metadata["bench-profiled"] = key


def response(flow):
    key = flow.metadata.pop("bench-profiled", None)
    if key:
        _running[key] -= 1
        if not _running[key]:
            _profiles[key].disable()


error = response


def done():
    for key, profile in _profiles.items():
        profile.dump_stats({out!r} + "." + key)
"""
PROFILE_HEADER = "x-bench-profile"

# Loaded into every proxy: notes each full garbage collection (start and length, ns, on the
# monotonic clock the benchmark reads too). A full collection stops every flow of the process
# for its length, which a cProfile of the proxy cannot show, and a latency's tail can.
GC_SCRIPT = """\
import gc
import time

_started = 0


def _observe(phase, info):
    global _started
    if info["generation"] != 2:
        return
    if phase == "start":
        _started = time.monotonic_ns()
    else:
        with open({out!r}, "a") as f:
            f.write("%d %d\\n" % (_started, time.monotonic_ns() - _started))


gc.callbacks.append(_observe)
"""

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
    reps: int  # measured repetitions of the long stream (and the paced one) per setup and row
    ttfb_requests: int  # short requests per setup
    warmup_requests: int
    latency_events: int  # events in the paced stream of the relay's per-event latency
    latency_rate: float  # its deltas per second: light load, every event on its own


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
        Setup(
            WORKER,
            ("-s", script, "--set", "mitmllm_worker=true"),
            tapped=True,
            description="the same, validating in the worker process",
        ),
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
    gc_log: Path | None = None  # the full collections of a proxy (see GC_SCRIPT)

    def full_collections(self, start: int, end: int) -> list[float]:
        """The length (ms) of each full collection that began between `start` and `end` (ns)."""
        if self.gc_log is None:
            return []
        try:
            lines = self.gc_log.read_text(encoding="ascii").splitlines()
        except OSError:
            return []
        out = []
        for line in lines:
            began, _, length = line.partition(" ")
            if length and start <= int(began) <= end:
                out.append(int(length) / 1e6)
        return out

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
        name = setup.name if profile_to is None else f"{setup.name}-profiled"
        gc_log = self.workdir / f"{name}.gc"
        gc_script = self.workdir / f"gc_{name}.py"
        gc_script.write_text(GC_SCRIPT.format(out=str(gc_log)), encoding="utf-8")
        proc = self.spawn(name, [*argv, "-s", str(gc_script)])
        proc.port = port
        proc.gc_log = gc_log
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


def check(setup: Setup, stream: Stream | PacedStream, expected: int) -> None:
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
    if isinstance(stream, PacedStream) and stream.stamps != expected - LIFECYCLE_EVENTS:
        raise BenchError(
            f"{setup.name}: {stream.stamps} stamped deltas arrived whole, "
            f"{expected - LIFECYCLE_EVENTS} were sent"
        )


# --- measurement -----------------------------------------------------------------------------


@dataclass
class Running:
    """The upstream and a listening proxy per setup."""

    upstream: Process
    setups: list[Setup]
    proxies: dict[str, Process]

    def port(self, setup: Setup) -> int:
        proxy = self.proxies.get(setup.name)
        return proxy.port if proxy is not None else self.upstream.port

    def pid(self, setup: Setup) -> int | None:
        proxy = self.proxies.get(setup.name)
        return proxy.popen.pid if proxy is not None else None

    def setup(self, name: str) -> Setup | None:
        return next((s for s in self.setups if s.name == name), None)


async def start(procs: Processes, report: Report, *, relay: bool) -> Running:
    upstream = await procs.upstream()
    all_setups = setups(procs.workdir, upstream.port, relay=relay)
    proxies = {s.name: procs.proxy(s, upstream.port) for s in all_setups if s.args is not None}
    t0 = time.perf_counter()
    await asyncio.gather(*(procs.listening(p) for p in proxies.values()))
    report.print(
        f"  {len(proxies)} mitmdump processes listening after {time.perf_counter() - t0:.1f} s"
    )
    return Running(upstream, all_setups, proxies)


@dataclass
class Measured:
    """What one run measured, per setup."""

    setups: list[Setup]
    #: events/s of the long stream, per (row label, setup name)
    rates: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    #: TTFB in seconds per setup
    ttfb: dict[str, list[float]] = field(default_factory=dict)
    #: per-event latency in ms per setup: every delta of the paced streams but their first
    latency: dict[str, list[float]] = field(default_factory=dict)


#: (label, events per upstream chunk) of the long-stream rows; the targets apply to the first.
ROWS: tuple[tuple[str, int], ...] = (
    ("1 event/chunk", 1),
    (f"{REALISTIC_PER_CHUNK} events/chunk", REALISTIC_PER_CHUNK),
)
#: Events of the paced stream that warms a setup up before its latency is measured.
PACED_WARMUP_EVENTS = 16


def expected_events(events: int) -> int:
    return len(proxy_events(events))


async def measure(
    client: aiohttp.ClientSession, running: Running, sizes: ProxySizes, *, event_latency: bool
) -> Measured:
    """Throughput and TTFB per setup; with `event_latency`, the per-event latency too."""
    all_setups = running.setups
    m = Measured(all_setups)
    long_total = expected_events(sizes.events)
    short_total = expected_events(SHORT_EVENTS)
    # Warm-up: connections, caches, the upstream's framing; and proof of each setup's path.
    for s in all_setups:
        port = running.port(s)
        check(s, await fetch(client, port, sizes.events, 1), long_total)
        for _ in range(sizes.warmup_requests):
            check(s, await fetch(client, port, SHORT_EVENTS, 1), short_total)
        if event_latency:
            await paced(client, running, s, PACED_WARMUP_EVENTS, sizes.latency_rate)
    for label, per_chunk in ROWS:
        for rep in range(sizes.reps):
            for s in rotated(all_setups, rep):
                got = await fetch(client, running.port(s), sizes.events, per_chunk)
                check(s, got, long_total)
                m.rates.setdefault((label, s.name), []).append(got.rate)
    for i in range(sizes.ttfb_requests):
        for s in rotated(all_setups, i):
            got = await fetch(client, running.port(s), SHORT_EVENTS, 1)
            check(s, got, short_total)
            m.ttfb.setdefault(s.name, []).append(got.ttfb)
    if event_latency:
        for rep in range(sizes.reps):
            for s in rotated(all_setups, rep):
                lat = await paced(client, running, s, sizes.latency_events, sizes.latency_rate)
                m.latency.setdefault(s.name, []).extend(lat)
    return m


async def paced(
    client: aiohttp.ClientSession, running: Running, setup: Setup, events: int, rate: float
) -> list[float]:
    """One paced stream through `setup`; the latency of each of its deltas, in ms."""
    run = await paced_run(
        client,
        running.port(setup),
        streams=1,
        events=events,
        rate=rate,
        check=functools.partial(check, setup, expected=expected_events(events)),
    )
    return run.latencies_ms()


def rotated(items: list[Setup], n: int) -> list[Setup]:
    """`items` starting at position n: no setup always goes first."""
    k = n % len(items)
    return items[k:] + items[:k]


STREAM = "stream"
TTFB = "ttfb"
LOAD = "load"
#: Seconds of the concurrency load that a profile covers: enough to show where the time goes.
PROFILE_LOAD_SECONDS = 2.0


async def profiled(
    procs: Processes,
    setup: Setup,
    upstream: Process,
    workloads: Sequence[str],
    sizes: ProxySizes,
    load: ConcurrencySizes | None = None,
) -> dict[str, pstats.Stats]:
    """Run each workload (STREAM: the long stream; TTFB: short requests; LOAD: a shorter
    concurrency load) through `setup` with every flow profiled; their stats."""
    out = procs.workdir / f"{setup.name}.prof"
    proc = procs.proxy(setup, upstream.port, profile_to=out)
    await procs.listening(proc)
    async with http_client() as client:
        await fetch(client, proc.port, SHORT_EVENTS, 1)  # the first connection, not profiled
        for workload in workloads:
            if workload == STREAM:
                await fetch(client, proc.port, sizes.events, 1, profile=workload)
            elif workload == LOAD and load is not None:
                deltas = round(PROFILE_LOAD_SECONDS * load.rate)
                events = min(load.events, LIFECYCLE_EVENTS + deltas)
                await paced_run(
                    client,
                    proc.port,
                    streams=load.streams,
                    events=events,
                    rate=load.rate,
                    ramp=load.ramp,
                    headers={PROFILE_HEADER: workload},
                )
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


async def print_hot_spots(
    report: Report,
    procs: Processes,
    running: Running,
    setup: Setup,
    workloads: Sequence[str],
    sizes: ProxySizes,
    load: ConcurrencySizes | None = None,
) -> None:
    """Profile `setup` under each workload (a fresh proxy, so the figures' processes stay as
    they were) and print the hot spots."""
    if not workloads:
        return
    stats = await profiled(procs, setup, running.upstream, workloads, sizes, load)
    what = {
        STREAM: "a long stream",
        TTFB: "short requests",
        LOAD: f"{load.streams if load else 0} paced streams",
    }
    title = {ADDON: "mitmdump + addon", RELAY: "mitmdump + addon + relay"}.get(setup.name, "")
    for workload in workloads:
        report.print()
        if workload in stats:
            hot_spots(report, f"{title or setup.name}, {what[workload]}", stats[workload])
        else:
            report.print(f"  (no profile of {what[workload]}: mitmdump did not write one)")


# --- sections --------------------------------------------------------------------------------

#: Failures that end one part of the run; the other parts still measure.
MEASUREMENT_ERRORS = (BenchError, LatencyError, aiohttp.ClientError, TimeoutError)


def run(report: Report, sizes: ProxySizes, load: ConcurrencySizes, sections: Sequence[str]) -> None:
    """The proxy, relay and concurrency sections (those selected), on one set of processes."""
    relay_reason = relay_ready()
    wanted = [s for s in SECTIONS if s in sections]
    if wanted == [RELAY_SECTION] and relay_reason is not None:
        relay_unavailable(report, relay_reason)
        return
    allow_open_files(8 * load.streams + 256)
    try:
        asyncio.run(_run(report, sizes, load, wanted, relay_reason))
    except MEASUREMENT_ERRORS as e:
        failed(report, wanted, e)


def failed(report: Report, sections: Sequence[str], error: Exception) -> None:
    report.fail(f"the {', '.join(sections)} measurement failed: {type(error).__name__}: {error}")
    for section in sections:
        report.add(section, "measurement", None, note="failed (see above)")


def allow_open_files(wanted: int) -> None:
    """Raise the soft limit on open files (inherited by the proxies) to `wanted` where the hard
    limit allows: every stream holds a few sockets in each process."""
    try:
        import resource
    except ImportError:  # not on Windows
        return
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))


async def _run(
    report: Report,
    sizes: ProxySizes,
    load: ConcurrencySizes,
    sections: Sequence[str],
    relay_reason: str | None,
) -> None:
    """The selected sections; without the relay (`relay_reason` says why) its rows say so."""
    relay = relay_reason is None
    want_proxy = SECTION in sections
    want_relay = RELAY_SECTION in sections and relay
    with processes() as procs:
        if want_proxy or want_relay:
            if want_proxy:
                report.heading(
                    "proxy: mitmdump + mitmllm against plain mitmdump (stream=True), same run"
                )
                report.print(
                    "  upstream: one Anthropic event (150-200 bytes) per HTTP chunk, in its own "
                    f"process; long stream: {sizes.events:,} events, median of {sizes.reps}; "
                    f"TTFB: {sizes.ttfb_requests} requests of {SHORT_EVENTS} events"
                )
            else:
                relay_heading(report, sizes)
            try:
                running = await start(procs, report, relay=want_relay)
                await _proxy_and_relay(report, procs, running, sizes, want_proxy, want_relay)
            except MEASUREMENT_ERRORS as e:
                failed(report, [s for s in (SECTION, RELAY_SECTION) if s in sections], e)
            finally:
                # The concurrency run gets processes of its own: its memory figures must not
                # carry what these ones kept of the long streams.
                procs.close()
        if relay_reason is not None and RELAY_SECTION in sections:
            relay_unavailable(report, relay_reason)
        if CONCURRENCY_SECTION in sections:
            concurrency.describe(report, load)
            try:
                running = await start(procs, report, relay=relay)
                await _concurrency(report, procs, running, sizes, load)
            except MEASUREMENT_ERRORS as e:
                failed(report, [CONCURRENCY_SECTION], e)
            if relay_reason is not None:
                concurrency.unavailable(report, RELAY, load, relay_reason)


async def _proxy_and_relay(
    report: Report,
    procs: Processes,
    running: Running,
    sizes: ProxySizes,
    want_proxy: bool,
    want_relay: bool,
) -> None:
    async with http_client() as client:
        m = await measure(client, running, sizes, event_latency=want_relay)
    if want_proxy:
        missed_rate, missed_ttfb = proxy_figures(report, m)
        addon = running.setup(ADDON)
        assert addon is not None
        workloads = [w for w, missed in ((STREAM, missed_rate), (TTFB, missed_ttfb)) if missed]
        await print_hot_spots(report, procs, running, addon, workloads, sizes)
    if want_relay:
        if want_proxy:
            relay_heading(report, sizes)
        missed_rate, missed_ttfb = relay_figures(report, m)
        relay = running.setup(RELAY)
        assert relay is not None
        workloads = [w for w, missed in ((STREAM, missed_rate), (TTFB, missed_ttfb)) if missed]
        await print_hot_spots(report, procs, running, relay, workloads, sizes)


async def _concurrency(
    report: Report, procs: Processes, running: Running, sizes: ProxySizes, load: ConcurrencySizes
) -> None:
    loaded = []
    for s in running.setups:
        proc = running.proxies.get(s.name)
        endpoint = Endpoint(
            s.name,
            running.port(s),
            running.pid(s),
            s.description,
            proc.full_collections if proc is not None else None,
        )
        # A session per setup: its connections close before the next setup is loaded.
        async with http_client() as client:
            await paced(client, running, s, PACED_WARMUP_EVENTS, load.rate)
            loaded.append(
                await concurrency.load(
                    client,
                    endpoint,
                    load,
                    check=functools.partial(check, s, expected=expected_events(load.events)),
                )
            )
    missed = concurrency.figures(report, loaded, load, baseline=DIRECT, targeted=RELAY)
    relay = running.setup(RELAY)
    if missed and relay is not None:
        await print_hot_spots(report, procs, running, relay, [LOAD], sizes, load)


def _rate(m: Measured, label: str, name: str) -> float:
    return median(m.rates.get((label, name), []))


def proxy_figures(report: Report, m: Measured) -> tuple[bool, bool]:
    """Print and record the proxy section; (events/s target missed, TTFB target missed)."""
    table = []
    missed_rate = False
    for i, (label, _per_chunk) in enumerate(ROWS):
        direct, plain, addon, worker = (_rate(m, label, n) for n in (DIRECT, PLAIN, ADDON, WORKER))
        fd = report.add(SECTION, f"{label}: direct", direct, "events/s")
        fp = report.add(SECTION, f"{label}: plain mitmdump", plain, "events/s")
        fa = report.add(SECTION, f"{label}: mitmdump + addon", addon, "events/s")
        fw = report.add(
            SECTION, f"{label}: mitmdump + addon, validation worker", worker, "events/s"
        )
        ratio = report.add(
            SECTION,
            f"{label}: addon / plain",
            addon / plain,
            "x",
            at_least(TARGET_EVENTS_RATIO) if i == 0 else None,
        )
        wratio = report.add(
            SECTION,
            f"{label}: addon with validation worker / plain",
            worker / plain,
            "x",
            at_least(TARGET_EVENTS_RATIO) if i == 0 else None,
        )
        # The upstream and client must outrun the proxy, or the ratios measure them instead.
        headroom = report.add(
            SECTION, f"{label}: direct / plain", direct / plain, "x", at_least(1.0)
        )
        missed_rate |= ratio.missed and wratio.missed
        table.append(
            [
                label,
                mark(fd),
                mark(fp),
                mark(fa),
                mark(ratio),
                mark(fw),
                mark(wratio),
                mark(headroom),
            ]
        )
    report.table(
        [
            "events/s",
            "direct",
            "plain",
            "addon",
            "addon/plain",
            "worker",
            "worker/plain",
            "direct/plain",
        ],
        table,
    )
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
#: The per-event latency figures, by setup: the direct run's own, the proxies' added to it.
LATENCY_NAMES = {
    DIRECT: "per-event latency p50: direct (baseline)",
    PLAIN: "per-event latency p50 added: plain",
    ADDON: "per-event latency p50 added: tap-only",
    WORKER: "per-event latency p50 added: tap-only, validation worker",
    RELAY: "per-event latency p50 added: relay",
}
LATENCY_RATIOS = (
    "per-event latency added: relay / plain",
    "per-event latency added: relay / tap-only",
)


def relay_heading(report: Report, sizes: ProxySizes) -> None:
    report.heading("relay: tap-only and relay against plain mitmdump, same run")
    report.print(
        f"  per-event latency: one paced stream of {sizes.latency_events - LIFECYCLE_EVENTS} "
        f"stamped deltas at {sizes.latency_rate:g}/s per setup and repetition; per delta after "
        "the first, client receive - upstream send; added = a proxy's percentile - the direct "
        "run's"
    )


def relay_figures(report: Report, m: Measured) -> tuple[bool, bool]:
    """The relay against tap-only (the addon) and plain mitmdump, from the same run; (events/s
    target missed, TTFB target missed)."""
    report.print(
        "  note: the relay reads the upstream in bulk and writes whole events in batches, so "
        "mitmproxy handles fewer, larger chunks than the upstream wrote"
    )
    rows = []
    missed_rate = False
    for i, (label, _per_chunk) in enumerate(ROWS):
        plain, addon, relay = (_rate(m, label, n) for n in (PLAIN, ADDON, RELAY))
        fr = report.add(RELAY_SECTION, f"{label}: relay", relay, "events/s")
        fp = report.add(
            RELAY_SECTION,
            f"{label}: relay / plain",
            relay / plain,
            "x",
            at_least(TARGET_RELAY_EVENTS_RATIO) if i == 0 else None,
        )
        fa = report.add(RELAY_SECTION, f"{label}: relay / tap-only", relay / addon, "x")
        missed_rate |= fp.missed
        rows.append([label, f"{plain:,.0f}", f"{addon:,.0f}", mark(fr), mark(fp), mark(fa)])
    report.table(["events/s", "plain", "tap-only", "relay", "relay/plain", "relay/tap-only"], rows)
    report.print()
    ttfb = {n: percentile([t * 1000 for t in m.ttfb.get(n, [])], 50) for n in (PLAIN, ADDON, RELAY)}
    added = report.add(
        RELAY_SECTION,
        RELAY_TTFB,
        ttfb[RELAY] - ttfb[PLAIN],
        "ms",
        at_most(TARGET_RELAY_ADDED_TTFB_MS),
    )
    by_plain = report.add(RELAY_SECTION, "TTFB p50 relay / plain", ttfb[RELAY] / ttfb[PLAIN], "x")
    by_tap = report.add(RELAY_SECTION, "TTFB p50 relay / tap-only", ttfb[RELAY] / ttfb[ADDON], "x")
    report.print(
        f"  TTFB p50: plain {ttfb[PLAIN]:.2f} ms, tap-only {ttfb[ADDON]:.2f} ms, relay "
        f"{ttfb[RELAY]:.2f} ms; added by the relay {mark(added)}; relay/plain {mark(by_plain)}, "
        f"relay/tap-only {mark(by_tap)}"
    )
    report.print()
    relay_event_latency(report, m)
    return missed_rate, added.missed


def relay_event_latency(report: Report, m: Measured) -> None:
    """The latency each event gets through each setup, and what the proxies add to it."""
    p50 = {s.name: percentile(m.latency.get(s.name, []), 50) for s in m.setups}
    p99 = {s.name: percentile(m.latency.get(s.name, []), 99) for s in m.setups}
    rows = []
    added: dict[str, float] = {}
    for s in m.setups:
        name = s.name
        if name == DIRECT:
            f = report.add(RELAY_SECTION, LATENCY_NAMES[name], p50[name], "ms")
            added50 = added99 = "-"
        else:
            added[name] = p50[name] - p50[DIRECT]
            f = report.add(RELAY_SECTION, LATENCY_NAMES[name], added[name], "ms")
            added50 = mark(f)
            added99 = f"{p99[name] - p99[DIRECT]:.3f} ms"
        rows.append(
            [
                name,
                f"{len(m.latency.get(name, [])):,}",
                f"{p50[name]:.3f} ms",
                f"{percentile(m.latency.get(name, []), 90):.3f} ms",
                f"{p99[name]:.3f} ms",
                added50,
                added99,
            ]
        )
    report.table(
        ["per-event latency", "events", "p50", "p90", "p99", "added p50", "added p99"], rows
    )
    ratios = [
        report.add(RELAY_SECTION, LATENCY_RATIOS[0], ratio(added[RELAY], added[PLAIN]), "x"),
        report.add(RELAY_SECTION, LATENCY_RATIOS[1], ratio(added[RELAY], added[ADDON]), "x"),
    ]
    report.print("  " + "; ".join(f"{f.name}: {mark(f)}" for f in ratios) + " (of the added p50)")


def relay_unavailable(report: Report, reason: str) -> None:
    """The relay rows while the relay cannot be measured, and why."""
    report.heading("relay: tap-only and relay against plain mitmdump")
    figures = [
        report.add(RELAY_SECTION, f"{label}: relay{what}", None, note=reason)
        for label, _per_chunk in ROWS
        for what in ("", " / plain", " / tap-only")
    ]
    figures.append(report.add(RELAY_SECTION, RELAY_TTFB, None, note=reason))
    figures += [
        report.add(RELAY_SECTION, name, None, note=reason)
        for name in (LATENCY_NAMES[RELAY], *LATENCY_RATIOS)
    ]
    for f in figures:
        report.print(f"  {f.name}: {f.shown()}")
