"""Sections `proxy`, `sizes`, `relay` and `concurrency`: mitmdump with and without mitmllm,
measured against each other in the same run.

Three processes, so that the proxy has a core: the benchmark's upstream
(`mitmllm.bench.upstream`, one SSE event per HTTP chunk, or a few, as fast as the socket takes
them), `mitmdump` in reverse mode, and the client in this process (aiohttp, reading raw chunks and
counting events). Each way of reaching the upstream is a `Setup`:

* ``direct``: no proxy; shows the upstream and the client outrun mitmproxy;
* ``plain``: mitmdump streaming event streams (``flow.response.stream = True``), no mitmllm;
* ``tap``: mitmdump with ``-s mitmllm_addon.py``, inspect-only: every event decoded and
  validated on the way;
* ``worker``: the same with ``mitmllm_worker``: the proxy frames, a process validates;
* ``restamp``: the tap with a model rule, so every model value of the answer is restamped to
  the alias the client asked for (`mitmllm.bench.corpus.RESTAMP_ALIAS`);
* ``repair``: the same with ``mitmllm_repair`` on: every chunk is checked before it goes on
  (a repair may change it), and restamped;
* ``relay``: the addon plus a config file that routes the stream through mitmllm's relay; it
  joins the run when the addon chain has the ``mitmllm_config`` option (see `relay_ready`).

The headline figure is the proxy's CPU time per event: user + system time of the mitmdump
process (and of the processes it started: the validation worker) over a run (`cpu_seconds`:
each thread's scheduler runtime where the kernel keeps it, else ``/proc/PID/stat``'s ticks),
divided by the events the client read, next to events/s; the ratio against plain mitmdump
measured in the same run is what the targets judge. A run is a few streams of `stream_events`
events one after the other on one connection, so the per-flow work counts too. Rows (`Row`):
every wire format at one and at four events per upstream chunk (section `proxy`), again with
OpenAI's pads (Chat, Responses) and with texts of code and other languages (``mixed texts``),
4 KiB and 64 KiB events (section `sizes`); within each repetition the setups take turns stream
by stream (rotating order), and the figures are medians of the repetitions. The proxy section also
measures the time to the first body byte (TTFB) of short streams; with the relay, the latency
each event gets through each setup (a paced, stamped stream: `mitmllm.bench.latency`). The
concurrency section (`mitmllm.bench.concurrency`) then starts the setups afresh and loads them
one after the other.
With ``--against REV`` (`Baseline`), the addon setups of the proxy section (tap, restamp,
repair) run a second time from git revision REV's code, named ``tap@REV`` and so on, taking turns
with the others: each row then has this code's CPU per event against REV's, from the same
repetitions, where a change of a few per cent shows through the machine's drift.
Every proxy is started with ``-q`` on a free 127.0.0.1 port and killed on the way out, Ctrl-C
included.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import io
import math
import os
import pstats
import signal
import socket
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Collection
from collections.abc import Iterator
from collections.abc import Sequence
from dataclasses import dataclass
from dataclasses import field
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiohttp

from mitmllm.bench import concurrency
from mitmllm.bench import cores
from mitmllm.bench.concurrency import ConcurrencySizes
from mitmllm.bench.concurrency import Endpoint
from mitmllm.bench.concurrency import tree_cpu_seconds
from mitmllm.bench.corpus import ANTHROPIC
from mitmllm.bench.corpus import FORMATS
from mitmllm.bench.corpus import GEMINI
from mitmllm.bench.corpus import LIFECYCLE_EVENTS
from mitmllm.bench.corpus import PADDED_FORMATS
from mitmllm.bench.corpus import RESTAMP_ALIAS
from mitmllm.bench.corpus import KiB
from mitmllm.bench.corpus import MiB
from mitmllm.bench.corpus import lifecycle_events
from mitmllm.bench.corpus import proxy_events
from mitmllm.bench.corpus import proxy_request
from mitmllm.bench.latency import LatencyError
from mitmllm.bench.latency import PacedStream
from mitmllm.bench.latency import paced_run
from mitmllm.bench.report import Figure
from mitmllm.bench.report import Report
from mitmllm.bench.report import Target
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
SIZES_SECTION = "sizes"
RELAY_SECTION = "relay"
CONCURRENCY_SECTION = "concurrency"
SECTIONS = (SECTION, SIZES_SECTION, RELAY_SECTION, CONCURRENCY_SECTION)

#: The issues' targets for the inspect-only tap against plain mitmdump, in every row of the
#: proxy section: CPU time per event at most, events/s at least.
TARGET_CPU_RATIO = 1.15
TARGET_EVENTS_RATIO = 0.9
#: Restamping, and restamping with repairs on (only the model value changes), against the tap's
#: own CPU time per event.
TARGET_RESTAMP_RATIO = 1.10
#: 64 KiB events: the tap's CPU time per event against plain mitmdump's.
TARGET_BIG_CPU_RATIO = 1.3
TARGET_ADDED_TTFB_MS = 0.5
#: The relay's targets against plain mitmdump (at one event per upstream chunk).
TARGET_RELAY_EVENTS_RATIO = 0.7
TARGET_RELAY_ADDED_TTFB_MS = 2.0
#: Several events per upstream chunk, as a busy upstream's TCP segments carry them.
REALISTIC_PER_CHUNK = 4
#: The event sizes of the sizes section (text per delta, bytes): the issue's 4 KiB and 64 KiB.
BIG_EVENTS = (4 * KiB, 64 * KiB)
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
TAP = "tap"  # the addon, inspect-only
WORKER = "worker"  # the addon with mitmllm_worker on: the proxy only frames
RESTAMP = "restamp"  # the addon with a model rule that restamps every answer
REPAIR = "repair"  # the same with mitmllm_repair on
RELAY = "relay"

# Runs mitmdump from this interpreter, whatever the PATH says.
_MITMDUMP = "import sys; from mitmproxy.tools.main import mitmdump; sys.exit(mitmdump())"


def interpreter_code(tree: Path | None = None) -> str:
    """What `python -c` runs to start mitmdump; with `tree`, another revision's ``addons``
    folder (`Baseline`) first on the import path, so that its ``mitmllm`` is the one imported,
    whatever is installed."""
    if tree is None:
        return _MITMDUMP
    return f"import sys; sys.path.insert(0, {str(tree)!r}); " + _MITMDUMP


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
    events: int  # events per run at one event per chunk (more chunks per event: as many more)
    reps: int  # measured repetitions of each run (and the paced one) per setup and row
    ttfb_requests: int  # short requests per setup
    warmup_requests: int
    latency_events: int  # events in the paced stream of the relay's per-event latency
    latency_rate: float  # its deltas per second: light load, every event on its own
    stream_events: int = 1000  # events per stream of a run
    big_bytes: int = 64 * MiB  # bytes per run of the sizes section


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
    #: the answer must carry the model the client asked for (a model rule restamped it)
    restamped: bool = False
    description: str = ""
    #: another revision's ``addons`` folder, imported instead of this one (`Baseline`)
    tree: Path | None = None


def addon_script() -> Path:
    """The entry script users pass to mitmdump with -s."""
    import mitmllm

    script = Path(mitmllm.__file__).resolve().parent.parent / "mitmllm_addon.py"
    if not script.is_file():
        raise BenchError(f"mitmllm's entry script is not next to the package: {script}")
    return script


#: The setups ``--against`` runs again from another revision's code: the addon's own.
BASELINE_SETUPS = (TAP, RESTAMP, REPAIR)


@dataclass(frozen=True, slots=True)
class Baseline:
    """Another revision of mitmllm whose addon setups (`BASELINE_SETUPS`) run beside this
    code's, taking turns with them (``--against``)."""

    rev: str  # the commit, abbreviated as git abbreviates it
    tree: Path | None = None  # its ``addons`` folder, once extracted (`extract_baseline`)

    def name(self, setup: str) -> str:
        """The name of `setup` run from this revision's code."""
        return f"{setup}@{self.rev}"

    def twins(self, names: Collection[str]) -> dict[str, str]:
        """Of the setups `names`, those this revision runs too: by name, the twin's name."""
        return {n: self.name(n) for n in BASELINE_SETUPS if n in names and self.name(n) in names}


def checkout() -> Path:
    """The checkout this code runs from: the folder that holds its ``addons`` folder."""
    return addon_script().parent.parent


def _git(*args: str) -> subprocess.CompletedProcess[bytes]:
    try:
        return subprocess.run(
            ["git", "-C", str(checkout()), *args], capture_output=True, timeout=120, check=False
        )
    except (OSError, subprocess.TimeoutExpired) as e:
        raise BenchError(f"--against needs git, which failed: {e}") from e


def resolve_baseline(rev: str) -> Baseline:
    """The commit `rev` names in the checkout this code runs from. BenchError when it names
    none, or this code is no git checkout (an installed package has no history)."""
    done = _git("rev-parse", "--verify", "--quiet", "--short", f"{rev}^{{commit}}")
    commit = done.stdout.decode("ascii", "replace").strip()
    if done.returncode != 0 or not commit:
        raise BenchError(
            f"--against {rev!r}: no such commit in {checkout()} (it must be a git checkout of "
            "mitmllm, and the revision a commit of it)"
        )
    return Baseline(commit)


def extract_baseline(baseline: Baseline, workdir: Path) -> Baseline:
    """`baseline` with its ``addons`` folder written under `workdir` (``git archive``)."""
    done = _git("archive", "--format=tar", baseline.rev, "addons")
    if done.returncode != 0:
        error = done.stderr.decode("utf-8", "replace").strip()
        raise BenchError(f"git archive of {baseline.rev} failed: {error}")
    dest = workdir / f"against-{baseline.rev}"
    with tarfile.open(fileobj=io.BytesIO(done.stdout)) as tar:
        tar.extractall(dest, filter="data")
    tree = dest / "addons"
    if not (tree / "mitmllm_addon.py").is_file():
        raise BenchError(f"revision {baseline.rev} has no addons/mitmllm_addon.py to run")
    return replace(baseline, tree=tree)


def setups(
    workdir: Path, upstream_port: int, names: Sequence[str], baseline: Baseline | None = None
) -> list[Setup]:
    """The setups named (in the order of `SETUP_ORDER`), their scripts and configs written to
    `workdir`; then the `baseline`'s twins named (it extracted: `extract_baseline`)."""
    plain = workdir / "plain_stream.py"
    plain.write_text(_PLAIN_SCRIPT, encoding="utf-8")
    script = str(addon_script())
    restamp = workdir / "restamp.yaml"
    restamp.write_text(restamp_config(), encoding="utf-8")
    every = {
        DIRECT: Setup(DIRECT, None, description="client to upstream, no proxy"),
        PLAIN: Setup(
            PLAIN, ("-s", str(plain)), description="mitmdump, stream=True for event streams"
        ),
        TAP: Setup(TAP, ("-s", script), tapped=True, description="mitmdump -s mitmllm_addon.py"),
        WORKER: Setup(
            WORKER,
            ("-s", script, "--set", "mitmllm_worker=true"),
            tapped=True,
            description="the same, validating in the worker process",
        ),
        RESTAMP: Setup(
            RESTAMP,
            ("-s", script, "--set", f"mitmllm_config={restamp}"),
            tapped=True,
            restamped=True,
            description="the tap with a model rule: every answer restamped",
        ),
        REPAIR: Setup(
            REPAIR,
            ("-s", script, "--set", f"mitmllm_config={restamp}", "--set", "mitmllm_repair=true"),
            tapped=True,
            restamped=True,
            description="the same with repairs on: every chunk checked before it goes on",
        ),
    }
    if RELAY in names:
        every[RELAY] = relay_setup(workdir, upstream_port)
    out = [every[n] for n in SETUP_ORDER if n in names and n in every]
    if baseline is not None:
        assert baseline.tree is not None, "extract the baseline first"
        theirs = str(baseline.tree / "mitmllm_addon.py")
        for name, twin in baseline.twins(names).items():
            ours = every[name]
            assert ours.args is not None
            out.append(
                replace(
                    ours,
                    name=twin,
                    args=tuple(theirs if a == script else a for a in ours.args),
                    tree=baseline.tree,
                    description=f"{ours.description}; revision {baseline.rev}'s code",
                )
            )
    return out


#: Every setup, in the order a run starts and lists them.
SETUP_ORDER = (DIRECT, PLAIN, TAP, WORKER, RESTAMP, REPAIR, RELAY)
#: The model the restamp setup's rule sends upstream instead of the alias.
RESTAMP_UPSTREAM_MODEL = "bench-upstream-model"


def restamp_config() -> str:
    """A config file with one model rule: the alias goes upstream as another model, and every
    answer is restamped to the alias (the upstream answers with its own model names)."""
    return f"version: 1\nmodels:\n  - match: {RESTAMP_ALIAS}\n    to: {RESTAMP_UPSTREAM_MODEL}\n"


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
            interpreter_code(setup.tree),
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


class EventCounter:
    """Counts the events of a body read in chunks cut anywhere: the blank lines that end them
    (LF LF; CRLF CRLF in a CRLF-framed stream), counted as if the body were one piece."""

    __slots__ = ("sep", "count", "_tail")

    def __init__(self, crlf: bool = False) -> None:
        self.sep = b"\r\n\r\n" if crlf else b"\n\n"
        self.count = 0
        self._tail = b""  # the bytes after the last blank line that may start the next one

    def feed(self, chunk: bytes) -> None:
        sep = self.sep
        data = self._tail + chunk if self._tail else chunk
        n = data.count(sep)
        self.count += n
        end = data.rfind(sep) + len(sep) if n else 0
        self._tail = data[max(end, len(data) - len(sep) + 1) :]


@dataclass(frozen=True, slots=True)
class Stream:
    """One response as the client saw it."""

    ttfb: float  # seconds from sending the request to the first body byte
    seconds: float  # ... to the last body byte
    events: int
    accept_encoding: str  # what the upstream was asked for
    served_by: str | None  # the upstream the relay names, if the relay served it
    model_seen: bool = False  # the model the client asked for came back in the body

    @property
    def rate(self) -> float:
        return self.events / self.seconds


async def fetch(
    client: aiohttp.ClientSession,
    port: int,
    events: int,
    per_chunk: int,
    *,
    fmt: str = ANTHROPIC,
    text_bytes: int | None = None,
    model: str | None = None,
    profile: str | None = None,
    padded: bool = False,
    mixed: bool = False,
) -> Stream:
    """One streaming request in `fmt` (asking for `model`, if given); events are counted as the
    blank lines that end them. With `profile`, a profiling proxy adds the flow to the profile
    of that name."""
    path, headers, body = proxy_request(
        events, per_chunk, fmt=fmt, text_bytes=text_bytes, model=model, padded=padded, mixed=mixed
    )
    if profile:
        headers[PROFILE_HEADER] = profile
    url = f"http://127.0.0.1:{port}{path}"
    counter = EventCounter(crlf=fmt == GEMINI)
    seen_model = Marker(model.encode()) if model else None
    first: float | None = None
    t0 = time.perf_counter()
    async with client.post(url, data=body, headers=headers) as resp:
        if resp.status != 200:
            text = (await resp.read())[:300]
            raise BenchError(f"{url} answered {resp.status}: {text!r}")
        async for chunk in resp.content.iter_any():
            if first is None:
                first = time.perf_counter()
            counter.feed(chunk)
            if seen_model is not None:
                seen_model.feed(chunk)
        end = time.perf_counter()
        seen = resp.headers.get(HEADER_ACCEPT_ENCODING, "")
        served_by = resp.headers.get(UPSTREAM_HEADER)
    if first is None:
        raise BenchError(f"{url} sent an empty body")
    model_seen = seen_model is not None and seen_model.found
    return Stream(first - t0, end - t0, counter.count, seen, served_by, model_seen)


class Marker:
    """Whether `marker` occurs in a body read in pieces: it may straddle two reads, or more."""

    def __init__(self, marker: bytes) -> None:
        self.marker = marker
        self.found = False
        self._tail = b""  # the last len(marker) - 1 bytes read

    def feed(self, chunk: bytes) -> None:
        if self.found:
            return
        keep = len(self.marker) - 1
        self.found = self.marker in self._tail + chunk[:keep] or self.marker in chunk
        self._tail = (self._tail + chunk[-keep:])[-keep:] if keep else b""


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
    if isinstance(stream, Stream) and setup.restamped and not stream.model_seen:
        raise BenchError(
            f"{setup.name}: the answer does not carry the model {RESTAMP_ALIAS!r} the client "
            "asked for: the model rule did not restamp it"
        )
    if isinstance(stream, PacedStream) and stream.stamps != expected - LIFECYCLE_EVENTS:
        raise BenchError(
            f"{setup.name}: {stream.stamps} stamped deltas arrived whole, "
            f"{expected - LIFECYCLE_EVENTS} were sent"
        )


# --- what is measured --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One stream shape of the throughput runs, and the setups that carry it."""

    label: str
    fmt: str
    per_chunk: int  # events per upstream chunk
    text_bytes: int | None  # text per delta; None: 40-84 characters, as Claude streams them
    setups: tuple[str, ...]
    stream_events: int  # events per stream
    streams: int  # streams per run, one after the other on one connection
    padded: bool = False  # each delta padded as OpenAI pads them (`PADDED_FORMATS`)
    mixed: bool = False  # texts of code and other languages (`corpus.delta_text`)


def row_label(fmt: str, per_chunk: int, padded: bool = False, mixed: bool = False) -> str:
    shape = f"{per_chunk} event{'s' if per_chunk > 1 else ''}/chunk"
    return f"{fmt}, {'padded, ' if padded else ''}{'mixed texts, ' if mixed else ''}{shape}"


def size_label(text_bytes: int) -> str:
    return f"{text_bytes // KiB} KiB events"


def plan_rows(
    sizes: ProxySizes,
    sections: Sequence[str],
    formats: Sequence[str],
    *,
    relay: bool,
    baseline: Baseline | None = None,
) -> list[Row]:
    """The rows the selected sections need, each with the union of their setups; the proxy
    section's with the `baseline`'s twins of its addon setups too."""
    wanted: dict[tuple[str, int, int | None, bool, bool], list[str]] = {}

    def want(
        fmt: str,
        per_chunk: int,
        text_bytes: int | None,
        names: Sequence[str],
        padded: bool = False,
        mixed: bool = False,
    ) -> None:
        have = wanted.setdefault((fmt, per_chunk, text_bytes, padded, mixed), [])
        have += [n for n in names if n not in have]

    for per_chunk in (1, REALISTIC_PER_CHUNK):
        if SECTION in sections:
            for fmt in formats:
                extra = [WORKER] if fmt == ANTHROPIC else []
                want(fmt, per_chunk, None, [DIRECT, PLAIN, TAP, RESTAMP, REPAIR, *extra])
            for fmt in formats:  # as OpenAI streams them by default
                if fmt in PADDED_FORMATS:
                    want(fmt, per_chunk, None, [PLAIN, TAP, RESTAMP, REPAIR], padded=True)
            for fmt in formats:  # as a coding agent gets them: code, other languages
                want(fmt, per_chunk, None, [PLAIN, TAP, RESTAMP, REPAIR], mixed=True)
        if relay and RELAY_SECTION in sections:
            want(ANTHROPIC, per_chunk, None, [PLAIN, TAP, RELAY])
    if SIZES_SECTION in sections:
        for big in BIG_EVENTS:
            want(ANTHROPIC, 1, big, [DIRECT, PLAIN, TAP])
    rows = []
    for (fmt, per_chunk, size, padded, mixed), names in wanted.items():
        if size is None:
            total = sizes.events * per_chunk
            per_stream = min(sizes.stream_events, total)
            label = row_label(fmt, per_chunk, padded, mixed)
        else:
            # Big events: a run of about big_bytes, in ten streams or more.
            total = max(10 * (LIFECYCLE_EVENTS + 1), sizes.big_bytes // size)
            per_stream = min(sizes.stream_events, total // 10)
            label = size_label(size)
        per_stream = max(per_stream, lifecycle_events(fmt) + 1)
        ordered = tuple(n for n in SETUP_ORDER if n in names)
        if baseline is not None and size is None and SECTION in sections:
            ordered += tuple(baseline.name(n) for n in BASELINE_SETUPS if n in ordered)
        streams = max(1, total // per_stream)
        rows.append(Row(label, fmt, per_chunk, size, ordered, per_stream, streams, padded, mixed))
    return rows


@dataclass(frozen=True, slots=True)
class Run:
    """Streams of one row through one setup, one after the other."""

    events: int
    seconds: float
    cpu: float | None  # CPU seconds of the proxy (and its children) over the run; None: direct

    @property
    def rate(self) -> float:
        return self.events / self.seconds

    @property
    def cpu_per_event(self) -> float:
        """Microseconds of the proxy's CPU time per event (NaN without a proxy)."""
        return self.cpu / self.events * 1e6 if self.cpu is not None else math.nan

    def __add__(self, other: Run) -> Run:
        """Two runs as one: their events, seconds and CPU time summed."""
        cpu = None if self.cpu is None or other.cpu is None else self.cpu + other.cpu
        return Run(self.events + other.events, self.seconds + other.seconds, cpu)


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


async def start(
    procs: Processes,
    report: Report,
    names: Sequence[str],
    *,
    pin: bool = False,
    baseline: Baseline | None = None,
) -> Running:
    upstream = await procs.upstream()
    all_setups = setups(procs.workdir, upstream.port, names, baseline)
    proxies = {s.name: procs.proxy(s, upstream.port) for s in all_setups if s.args is not None}
    t0 = time.perf_counter()
    await asyncio.gather(*(procs.listening(p) for p in proxies.values()))
    report.print(
        f"  {len(proxies)} mitmdump processes listening after {time.perf_counter() - t0:.1f} s"
    )
    running = Running(upstream, all_setups, proxies)
    if pin:
        place(report, running)
    return running


def place(report: Report, running: Running) -> None:
    """Pin the proxies to a core of their own and the load (this process, the upstream) to the
    others (`mitmllm.bench.cores`); this process gets its cores back from `unplace`."""
    placement = cores.plan()
    if placement is None:
        report.print(
            "  not pinned: fewer than two usable cores, or no CPU affinity here; the proxies "
            "share their cores with the client and the upstream"
        )
        return
    moved = cores.pin(os.getpid(), placement.load, tree=False)
    moved &= cores.pin(running.upstream.popen.pid, placement.load)
    for proc in running.proxies.values():
        moved &= cores.pin(proc.popen.pid, placement.proxy)
    report.print(f"  pinned: {placement.describe()}" + ("" if moved else " (not all of them)"))


def unplace(cpus: frozenset[int] | None) -> None:
    """Give this process its cores back (what `cores.usable` said before `place`)."""
    if cpus is not None:
        cores.pin(os.getpid(), cpus, tree=False)


@dataclass
class Measured:
    """What one run measured, per setup."""

    setups: list[Setup]
    rows: list[Row] = field(default_factory=list)
    #: the runs of each (row label, setup name)
    runs: dict[tuple[str, str], list[Run]] = field(default_factory=dict)
    #: TTFB in seconds per setup
    ttfb: dict[str, list[float]] = field(default_factory=dict)
    #: per-event latency in ms per setup: every delta of the paced streams but their first
    latency: dict[str, list[float]] = field(default_factory=dict)

    def rate(self, label: str, name: str) -> float:
        """Median events/s of the row through the setup (NaN if not measured)."""
        return median([r.rate for r in self.runs.get((label, name), [])])

    def cpu(self, label: str, name: str) -> float:
        """Median CPU time per event (µs) of the row through the setup (NaN if not measured)."""
        runs = self.runs.get((label, name), [])
        return median([r.cpu_per_event for r in runs if r.cpu is not None])

    def cpu_ratios(self, label: str, a: str, b: str) -> list[float]:
        """Each repetition's CPU time per event of `a` / `b` (none where either has no CPU
        figure). Within a repetition the setups take turns stream by stream, so each ratio is
        taken under the same conditions: the machine's drifts cancel, where a ratio of two
        medians would carry them."""
        pairs = self._repetitions(label, a, b)
        return [ratio(x.cpu_per_event, y.cpu_per_event) for x, y in pairs if x.cpu and y.cpu]

    def cpu_ratio(self, label: str, a: str, b: str) -> float:
        """The median of `cpu_ratios` (NaN if not measured)."""
        return median(self.cpu_ratios(label, a, b))

    def rate_ratios(self, label: str, a: str, b: str) -> list[float]:
        """Each repetition's events/s of `a` / `b` (see `cpu_ratios`)."""
        return [ratio(x.rate, y.rate) for x, y in self._repetitions(label, a, b)]

    def _repetitions(self, label: str, a: str, b: str) -> Iterator[tuple[Run, Run]]:
        """The runs of `a` and of `b` in the row, repetition by repetition."""
        return zip(self.runs.get((label, a), []), self.runs.get((label, b), []), strict=False)

    def rate_ratio(self, label: str, a: str, b: str) -> float:
        """The median of `rate_ratios` (NaN if not measured)."""
        return median(self.rate_ratios(label, a, b))

    def row(self, label: str) -> Row | None:
        return next((r for r in self.rows if r.label == label), None)


#: Events of the paced stream that warms a setup up before its latency is measured.
PACED_WARMUP_EVENTS = 16


@functools.cache
def expected_events(
    events: int,
    fmt: str = ANTHROPIC,
    text_bytes: int | None = None,
    padded: bool = False,
    mixed: bool = False,
) -> int:
    return len(proxy_events(events, fmt=fmt, text_bytes=text_bytes, padded=padded, mixed=mixed))


async def run_streams(
    client: aiohttp.ClientSession,
    running: Running,
    setup: Setup,
    row: Row,
    streams: int | None = None,
    *,
    profile: str | None = None,
) -> Run:
    """The row's streams (or `streams` of them) through `setup`, with the proxy's CPU time."""
    pid = running.pid(setup)
    port = running.port(setup)
    expected = expected_events(row.stream_events, row.fmt, row.text_bytes, row.padded, row.mixed)
    model = RESTAMP_ALIAS if setup.restamped else None
    cpu0 = tree_cpu_seconds(pid) if pid is not None else None
    t0 = time.perf_counter()
    events = 0
    for _ in range(row.streams if streams is None else streams):
        got = await fetch(
            client,
            port,
            row.stream_events,
            row.per_chunk,
            fmt=row.fmt,
            text_bytes=row.text_bytes,
            model=model,
            profile=profile,
            padded=row.padded,
            mixed=row.mixed,
        )
        check(setup, got, expected)
        events += got.events
    seconds = time.perf_counter() - t0
    cpu1 = tree_cpu_seconds(pid) if pid is not None else None
    cpu = cpu1 - cpu0 if cpu0 is not None and cpu1 is not None else None
    return Run(events, seconds, cpu)


async def measure(
    client: aiohttp.ClientSession,
    running: Running,
    rows: Sequence[Row],
    sizes: ProxySizes,
    *,
    ttfb: Sequence[str],
    event_latency: bool,
) -> Measured:
    """Every row through its setups; TTFB through the setups named in `ttfb`; with
    `event_latency`, the per-event latency through every setup."""
    m = Measured(running.setups, list(rows))
    short_total = expected_events(SHORT_EVENTS)
    ttfb_setups = [s for s in running.setups if s.name in ttfb]
    # Warm-up: connections, caches, the upstream's framing; and proof of each setup's path.
    for s in running.setups:
        if s.name in ttfb:
            for _ in range(sizes.warmup_requests):
                check(s, await fetch(client, running.port(s), SHORT_EVENTS, 1), short_total)
        if event_latency:
            await paced(client, running, s, PACED_WARMUP_EVENTS, sizes.latency_rate)
    for row in rows:
        row_setups = [s for s in running.setups if s.name in row.setups]
        for s in row_setups:
            await run_streams(client, running, s, row, streams=1)
        for rep in range(sizes.reps):
            # The setups take turns stream by stream (rotating order), so each sees the machine
            # as the others do: on a shared machine its speed moves by half within a minute,
            # which setups run back to back, a run each, carry into their ratio.
            runs: dict[str, Run] = {}
            for s in turns(row_setups, row.streams, rep):
                run = await run_streams(client, running, s, row, streams=1)
                runs[s.name] = runs[s.name] + run if s.name in runs else run
            for s in row_setups:
                m.runs.setdefault((row.label, s.name), []).append(runs[s.name])
    for i in range(sizes.ttfb_requests if ttfb_setups else 0):
        for s in rotated(ttfb_setups, i):
            got = await fetch(client, running.port(s), SHORT_EVENTS, 1)
            check(s, got, short_total)
            m.ttfb.setdefault(s.name, []).append(got.ttfb)
    if event_latency:
        for rep in range(sizes.reps):
            for s in rotated(running.setups, rep):
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


def turns(setups: list[Setup], streams: int, rep: int) -> Iterator[Setup]:
    """Whose stream comes next in the `rep`-th repetition of a row of `streams` streams a
    setup: one each in turn, the order rotating from one round to the next."""
    for i in range(streams):
        yield from rotated(setups, rep + i)


def rotated(items: list[Setup], n: int) -> list[Setup]:
    """`items` starting at position n: no setup always goes first."""
    if not items:
        return []
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
    row: Row | None = None,
) -> dict[str, pstats.Stats]:
    """Run each workload (STREAM: a run of `row`; TTFB: short requests; LOAD: a shorter
    concurrency load) through `setup` with every flow profiled; their stats."""
    out = procs.workdir / f"{setup.name}.prof"
    proc = procs.proxy(setup, upstream.port, profile_to=out)
    await procs.listening(proc)
    alone = Running(upstream, [setup], {setup.name: proc})
    async with http_client() as client:
        await fetch(client, proc.port, SHORT_EVENTS, 1)  # the first connection, not profiled
        for workload in workloads:
            if workload == STREAM and row is not None:
                await run_streams(client, alone, setup, row, profile=workload)
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
    row: Row | None = None,
) -> None:
    """Profile `setup` under each workload (a fresh proxy, so the figures' processes stay as
    they were) and print the hot spots."""
    if not workloads:
        return
    stats = await profiled(procs, setup, running.upstream, workloads, sizes, load, row)
    what = {
        STREAM: f"a run of {row.label}" if row is not None else "a run",
        TTFB: "short requests",
        LOAD: f"{load.streams if load else 0} paced streams",
    }
    title = {
        TAP: "mitmdump + addon",
        RESTAMP: "mitmdump + addon, restamping",
        REPAIR: "mitmdump + addon, restamping with repairs on",
        RELAY: "mitmdump + addon + relay",
    }.get(setup.name, "")
    for workload in workloads:
        report.print()
        if workload in stats:
            hot_spots(report, f"{title or setup.name}, {what[workload]}", stats[workload])
        else:
            report.print(f"  (no profile of {what[workload]}: mitmdump did not write one)")


# --- sections --------------------------------------------------------------------------------

#: Failures that end one part of the run; the other parts still measure.
MEASUREMENT_ERRORS = (BenchError, LatencyError, aiohttp.ClientError, TimeoutError)


def run(
    report: Report,
    sizes: ProxySizes,
    load: ConcurrencySizes,
    sections: Sequence[str],
    formats: Sequence[str] = FORMATS,
    *,
    pin: bool = False,
    baseline: Baseline | None = None,
) -> None:
    """The proxy, sizes, relay and concurrency sections (those selected), the proxy section's
    rows in `formats`; `pin`: each proxy on a core of its own (`mitmllm.bench.cores`);
    `baseline`: another revision's addon setups beside this code's (`Baseline`)."""
    relay_reason = relay_ready()
    wanted = [s for s in SECTIONS if s in sections]
    if wanted == [RELAY_SECTION] and relay_reason is not None:
        relay_unavailable(report, relay_reason)
        return
    allow_open_files(8 * load.streams + 256)
    try:
        asyncio.run(_run(report, sizes, load, wanted, formats, relay_reason, pin, baseline))
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
    formats: Sequence[str],
    relay_reason: str | None,
    pin: bool = False,
    baseline: Baseline | None = None,
) -> None:
    """The selected sections; without the relay (`relay_reason` says why) its rows say so."""
    relay = relay_reason is None
    want_relay = RELAY_SECTION in sections and relay
    rows = plan_rows(sizes, sections, formats, relay=want_relay, baseline=baseline)
    throughput = [s for s in (SECTION, SIZES_SECTION, RELAY_SECTION) if s in sections]
    with processes() as procs, contextlib.ExitStack() as stack:
        if pin:  # this process gets its cores back, whatever happens
            stack.callback(unplace, cores.usable())
        if rows:
            describe_runs(report, rows, sizes)
            ttfb = [n for n in (DIRECT, PLAIN, TAP, WORKER) if SECTION in sections]
            if want_relay:
                ttfb += [n for n in (PLAIN, TAP, RELAY) if n not in ttfb]
            used = {n for r in rows for n in r.setups} | set(ttfb)
            try:
                against = None
                if baseline is not None and SECTION in sections:
                    against = extract_baseline(baseline, procs.workdir)
                    twins = ", ".join(against.twins(used).values())
                    report.print(
                        f"  against revision {against.rev}: {twins} run its code, taking "
                        "turns with this code's setups"
                    )
                running = await start(procs, report, sorted(used), pin=pin, baseline=against)
                await _throughput(report, procs, running, rows, sizes, sections, ttfb, want_relay)
            except MEASUREMENT_ERRORS as e:
                failed(report, [s for s in throughput if s != RELAY_SECTION or relay], e)
            finally:
                # The concurrency run gets processes of its own: its memory figures must not
                # carry what these ones kept of the long streams.
                procs.close()
        if relay_reason is not None and RELAY_SECTION in sections:
            relay_unavailable(report, relay_reason)
        if CONCURRENCY_SECTION in sections:
            concurrency.describe(report, load)
            try:
                names = [DIRECT, PLAIN, TAP, WORKER] + ([RELAY] if relay else [])
                running = await start(procs, report, names, pin=pin)
                await _concurrency(report, procs, running, sizes, load)
            except MEASUREMENT_ERRORS as e:
                failed(report, [CONCURRENCY_SECTION], e)
            if relay_reason is not None:
                concurrency.unavailable(report, RELAY, load, relay_reason)


def describe_runs(report: Report, rows: Sequence[Row], sizes: ProxySizes) -> None:
    report.heading("throughput runs: mitmdump with and without mitmllm, same run")
    report.print(
        "  upstream: in its own process, one event (or several) per HTTP chunk; a run: streams "
        f"of up to {sizes.stream_events:,} events one after the other; {sizes.reps} "
        "repetitions per row, in each the setups of the row taking turns stream by stream "
        "(rotating order); figures: medians over the repetitions, a ratio the median of each "
        "repetition's ratio"
    )
    report.print(
        "  CPU per event: CPU time of the mitmdump process (and its children) from /proc (the "
        "scheduler's runtime of each thread where the kernel keeps it, else /proc/PID/stat's "
        "ticks) over the run / events read"
    )
    report.table(
        ["row", "format", "events/chunk", "streams x events", "setups"],
        [
            [
                r.label,
                r.fmt,
                str(r.per_chunk),
                f"{r.streams} x {r.stream_events:,}",
                ", ".join(r.setups),
            ]
            for r in rows
        ],
    )


async def _throughput(
    report: Report,
    procs: Processes,
    running: Running,
    rows: Sequence[Row],
    sizes: ProxySizes,
    sections: Sequence[str],
    ttfb: Sequence[str],
    want_relay: bool,
) -> None:
    async with http_client() as client:
        m = await measure(client, running, rows, sizes, ttfb=ttfb, event_latency=want_relay)
    if SECTION in sections:
        misses = proxy_figures(report, m)
        for name, (row, missed_ttfb) in misses.items():
            setup = running.setup(name)
            assert setup is not None
            workloads = ([STREAM] if row is not None else []) + ([TTFB] if missed_ttfb else [])
            await print_hot_spots(report, procs, running, setup, workloads, sizes, row=row)
    if SIZES_SECTION in sections:
        worst = sizes_figures(report, m)
        tap = running.setup(TAP)
        if worst is not None and tap is not None:
            await print_hot_spots(report, procs, running, tap, [STREAM], sizes, row=worst)
    if want_relay:
        missed_rate, missed_ttfb = relay_figures(report, m)
        relay = running.setup(RELAY)
        assert relay is not None
        workloads = [w for w, missed in ((STREAM, missed_rate), (TTFB, missed_ttfb)) if missed]
        row = m.row(row_label(ANTHROPIC, 1))
        await print_hot_spots(report, procs, running, relay, workloads, sizes, row=row)


async def _concurrency(
    report: Report, procs: Processes, running: Running, sizes: ProxySizes, load: ConcurrencySizes
) -> None:
    loads: dict[str, list[concurrency.Loaded]] = {s.name: [] for s in running.setups}
    for rep in range(load.reps):
        for s in rotated(list(running.setups), rep):
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
                loads[s.name].append(
                    await concurrency.load(
                        client,
                        endpoint,
                        load,
                        check=functools.partial(check, s, expected=expected_events(load.events)),
                    )
                )
    if load.reps > 1:
        report.print(concurrency.cpu_line(loads))
    loaded = [concurrency.median_load(runs) for runs in loads.values()]
    missed = concurrency.figures(
        report,
        loaded,
        load,
        baseline=DIRECT,
        targeted=RELAY,
        plain=PLAIN,
        paired=concurrency.paired_ratios(loads, PLAIN),
    )
    relay = running.setup(RELAY)
    if missed and relay is not None:
        await print_hot_spots(report, procs, running, relay, [LOAD], sizes, load)


# --- figures ---------------------------------------------------------------------------------


def ratio_name(label: str, a: str, b: str, what: str) -> str:
    """The name of a ratio figure: ``anthropic, 1 event/chunk: tap / plain, CPU per event``."""
    return f"{label}: {a} / {b}, {what}"


CPU = "CPU per event"
RATE = "events/s"


def ratio_figure(
    report: Report,
    m: Measured,
    section: str,
    label: str,
    a: str,
    b: str,
    what: str,
    target: Target | None = None,
) -> Figure:
    """Setup `a` against `b` in row `label`, CPU per event (`CPU`) or events/s (`RATE`): the
    median of the repetitions' ratios, their spread next to it."""
    if what == CPU:
        value, spread = m.cpu_ratio(label, a, b), m.cpu_ratios(label, a, b)
    else:
        value, spread = m.rate_ratio(label, a, b), m.rate_ratios(label, a, b)
    return report.add(section, ratio_name(label, a, b, what), value, "x", target, spread=spread)


def proxy_figures(report: Report, m: Measured) -> dict[str, tuple[Row | None, bool]]:
    """Print and record the proxy section. The setups to profile: by name, the row whose
    target it missed worst (None: none) and whether the TTFB target was missed."""
    report.heading(
        "proxy: the tap, restamping and repairing against plain mitmdump (stream=True), same run"
    )
    rows = [r for r in m.rows if TAP in r.setups and r.text_bytes is None and PLAIN in r.setups]
    rows = [r for r in rows if RESTAMP in r.setups and REPAIR in r.setups]
    table = []
    worst: dict[str, tuple[float, Row]] = {}
    for r in rows:
        label = r.label
        rate = {n: m.rate(label, n) for n in r.setups}
        cpu = {n: m.cpu(label, n) for n in r.setups}
        for n in r.setups:
            report.add(SECTION, f"{label}: {n} {RATE}", rate[n], RATE)
            if n != DIRECT:
                report.add(SECTION, f"{label}: {n} {CPU}", cpu[n], "µs")
        tap_cpu = ratio_figure(
            report, m, SECTION, label, TAP, PLAIN, CPU, at_most(TARGET_CPU_RATIO)
        )
        tap_rate = ratio_figure(
            report, m, SECTION, label, TAP, PLAIN, RATE, at_least(TARGET_EVENTS_RATIO)
        )
        restamp = ratio_figure(
            report, m, SECTION, label, RESTAMP, TAP, CPU, at_most(TARGET_RESTAMP_RATIO)
        )
        repair = ratio_figure(
            report, m, SECTION, label, REPAIR, TAP, CPU, at_most(TARGET_RESTAMP_RATIO)
        )
        headroom = None  # the padded and mixed rows have no direct setup
        if DIRECT in r.setups:
            headroom = ratio_figure(report, m, SECTION, label, DIRECT, PLAIN, RATE, at_least(1.0))
        worker = "-"
        if WORKER in r.setups:
            ratio_figure(report, m, SECTION, label, WORKER, PLAIN, CPU)
            wrate = ratio_figure(
                report,
                m,
                SECTION,
                label,
                WORKER,
                PLAIN,
                RATE,
                at_least(TARGET_EVENTS_RATIO) if r.per_chunk == 1 else None,
            )
            worker = f"{cpu[WORKER]:.1f} / {mark(wrate)}"
        if tap_cpu.missed or tap_rate.missed:
            score = tap_cpu.value or 0.0
            if TAP not in worst or score > worst[TAP][0]:
                worst[TAP] = (score, r)
        for name, figure in ((RESTAMP, restamp), (REPAIR, repair)):
            if figure.missed:
                score = figure.value or 0.0
                if name not in worst or score > worst[name][0]:
                    worst[name] = (score, r)
        table.append(
            [
                label,
                f"{rate[PLAIN]:,.0f}",
                f"{cpu[PLAIN]:.1f}",
                f"{rate[TAP]:,.0f}",
                f"{cpu[TAP]:.1f}",
                mark(tap_cpu),
                mark(tap_rate),
                f"{cpu[RESTAMP]:.1f}",
                mark(restamp),
                f"{cpu[REPAIR]:.1f}",
                mark(repair),
                worker,
                mark(headroom) if headroom is not None else "-",
            ]
        )
    report.table(
        [
            "row",
            "plain ev/s",
            "plain µs/ev",
            "tap ev/s",
            "tap µs/ev",
            "tap/plain CPU",
            "tap/plain ev/s",
            "restamp µs/ev",
            "restamp/tap CPU",
            "repair µs/ev",
            "repair/tap CPU",
            "worker µs/ev / ev/s vs plain",
            "direct/plain",
        ],
        table,
    )
    report.print(
        f"  targets: tap CPU per event <= {TARGET_CPU_RATIO:g}x plain and events/s >= "
        f"{TARGET_EVENTS_RATIO:g}x plain in every row; restamp, and restamp with repairs on, "
        f"<= {TARGET_RESTAMP_RATIO:g}x the tap's CPU per event"
    )
    against_figures(report, m, rows)
    report.print()
    missed_ttfb = ttfb_figures(report, m)
    out: dict[str, tuple[Row | None, bool]] = {n: (r, False) for n, (_s, r) in worst.items()}
    if missed_ttfb:
        out[TAP] = (out.get(TAP, (None, False))[0], True)
    return out


def against_figures(report: Report, m: Measured, rows: Sequence[Row]) -> None:
    """Each addon setup against its twin from another revision (``--against``), row by row:
    this code's CPU per event / the revision's, the median of the repetitions' ratios. No
    target: below 1, this code costs less."""
    table = []
    heads: list[str] = []
    for r in rows:
        line = [r.label]
        for name in BASELINE_SETUPS:
            twin = next((t for t in r.setups if t.startswith(f"{name}@")), None)
            if twin is None:
                continue
            if twin not in heads:
                heads.append(twin)
            line.append(mark(ratio_figure(report, m, SECTION, r.label, name, twin, CPU)))
        if len(line) > 1:
            table.append(line)
    if not table:
        return
    report.print()
    report.print(
        "  this code against another revision's, CPU per event (each setup / its twin run "
        "from that revision's code, taking turns in the same repetitions; below 1: less now)"
    )
    report.table(["row", *(f"{t.partition('@')[0]} / {t}" for t in heads)], table)


def ttfb_figures(report: Report, m: Measured) -> bool:
    """The time to first byte of short streams per setup; True if the target was missed."""
    ttfb_rows = []
    p50: dict[str, float] = {}
    for s in m.setups:
        if s.name not in m.ttfb or s.name == RELAY:
            continue
        xs = [t * 1000 for t in m.ttfb[s.name]]
        p50[s.name] = percentile(xs, 50)
        f50 = report.add(SECTION, f"TTFB p50: {s.name}", p50[s.name], "ms")
        f90 = report.add(SECTION, f"TTFB p90: {s.name}", percentile(xs, 90), "ms")
        ttfb_rows.append([s.name, mark(f50), mark(f90), s.description])
    if TAP not in p50 or PLAIN not in p50:
        return False
    added = report.add(
        SECTION,
        "TTFB p50 added by the tap (tap - plain)",
        p50[TAP] - p50[PLAIN],
        "ms",
        at_most(TARGET_ADDED_TTFB_MS),
    )
    plain_ttfb = [t * 1000 for t in m.ttfb.get(PLAIN, [])]
    tap_ttfb = [t * 1000 for t in m.ttfb.get(TAP, [])]
    added90 = report.add(
        SECTION,
        "TTFB p90 added by the tap (tap - plain)",
        percentile(tap_ttfb, 90) - percentile(plain_ttfb, 90),
        "ms",
    )
    by_plain = report.add(SECTION, "TTFB p50 tap / plain", ratio(p50[TAP], p50[PLAIN]), "x")
    report.table(["TTFB", "p50", "p90", "setup"], ttfb_rows)
    report.print(
        f"  added by the tap: p50 {mark(added)}, p90 {mark(added90)}; "
        f"tap/plain p50 {mark(by_plain)}"
    )
    return added.missed


def sizes_figures(report: Report, m: Measured) -> Row | None:
    """Print and record the sizes section; the row to profile (the worst missed), or None."""
    report.heading("sizes: big events through the tap against plain mitmdump, same run")
    table = []
    worst: tuple[float, Row] | None = None
    for r in m.rows:
        if r.text_bytes is None:
            continue
        label = r.label
        rate = {n: m.rate(label, n) for n in r.setups}
        cpu = {n: m.cpu(label, n) for n in r.setups}
        for n in (PLAIN, TAP):
            report.add(SIZES_SECTION, f"{label}: {n} {RATE}", rate[n], RATE)
            report.add(SIZES_SECTION, f"{label}: {n} {CPU}", cpu[n], "µs")
        target = at_most(TARGET_BIG_CPU_RATIO) if r.text_bytes >= 64 * KiB else None
        by_plain = ratio_figure(report, m, SIZES_SECTION, label, TAP, PLAIN, CPU, target)
        per_kib = report.add(
            SIZES_SECTION,
            f"{label}: tap CPU added per KiB",
            (cpu[TAP] - cpu[PLAIN]) / (r.text_bytes / KiB),
            "µs",
        )
        headroom = ratio_figure(report, m, SIZES_SECTION, label, DIRECT, PLAIN, RATE, at_least(1.0))
        if by_plain.missed and (worst is None or (by_plain.value or 0.0) > worst[0]):
            worst = (by_plain.value or 0.0, r)
        mb = r.text_bytes / 1e6
        table.append(
            [
                label,
                f"{rate[PLAIN] * mb:.0f} MB/s",
                f"{cpu[PLAIN]:.0f}",
                f"{rate[TAP] * mb:.0f} MB/s",
                f"{cpu[TAP]:.0f}",
                mark(by_plain),
                mark(per_kib),
                mark(headroom),
            ]
        )
    report.table(
        [
            "row",
            "plain",
            "plain µs/ev",
            "tap",
            "tap µs/ev",
            "tap/plain CPU",
            "added per KiB",
            "direct/plain",
        ],
        table,
    )
    report.print(
        f"  target: 64 KiB events cost the tap <= {TARGET_BIG_CPU_RATIO:g}x plain's CPU per event"
    )
    return worst[1] if worst else None


RELAY_TTFB = "TTFB p50 added by the relay (relay - plain)"
#: The per-event latency figures, by setup: the direct run's own, the proxies' added to it.
LATENCY_NAMES = {
    DIRECT: "per-event latency p50: direct (baseline)",
    PLAIN: "per-event latency p50 added: plain",
    TAP: "per-event latency p50 added: tap-only",
    WORKER: "per-event latency p50 added: tap-only, validation worker",
    RESTAMP: "per-event latency p50 added: restamp",
    REPAIR: "per-event latency p50 added: restamp with repairs",
    RELAY: "per-event latency p50 added: relay",
}
LATENCY_RATIOS = (
    "per-event latency added: relay / plain",
    "per-event latency added: relay / tap-only",
)
#: The rows of the relay section.
RELAY_ROWS = (row_label(ANTHROPIC, 1), row_label(ANTHROPIC, REALISTIC_PER_CHUNK))


def relay_figures(report: Report, m: Measured) -> tuple[bool, bool]:
    """The relay against tap-only and plain mitmdump, from the same run; (events/s target
    missed, TTFB target missed)."""
    report.heading("relay: tap-only and relay against plain mitmdump, same run")
    report.print(
        "  note: the relay reads the upstream in bulk and writes whole events in batches, so "
        "mitmproxy handles fewer, larger chunks than the upstream wrote"
    )
    rows = []
    missed_rate = False
    for i, label in enumerate(RELAY_ROWS):
        plain, tap, relay = (m.rate(label, n) for n in (PLAIN, TAP, RELAY))
        cpu_relay = m.cpu(label, RELAY)
        fr = report.add(RELAY_SECTION, f"{label}: relay {RATE}", relay, RATE)
        fp = ratio_figure(
            report,
            m,
            RELAY_SECTION,
            label,
            RELAY,
            PLAIN,
            RATE,
            at_least(TARGET_RELAY_EVENTS_RATIO) if i == 0 else None,
        )
        fa = report.add(
            RELAY_SECTION,
            ratio_name(label, RELAY, "tap-only", RATE),
            m.rate_ratio(label, RELAY, TAP),
            "x",
            spread=m.rate_ratios(label, RELAY, TAP),
        )
        fc = report.add(RELAY_SECTION, f"{label}: relay {CPU}", cpu_relay, "µs")
        fcp = ratio_figure(report, m, RELAY_SECTION, label, RELAY, PLAIN, CPU)
        missed_rate |= fp.missed
        rows.append(
            [
                label,
                f"{plain:,.0f}",
                f"{tap:,.0f}",
                mark(fr),
                mark(fp),
                mark(fa),
                mark(fc),
                mark(fcp),
            ]
        )
    report.table(
        [
            "events/s",
            "plain",
            "tap-only",
            "relay",
            "relay/plain",
            "relay/tap-only",
            "relay µs/ev",
            "relay/plain CPU",
        ],
        rows,
    )
    report.print()
    ttfb = {n: percentile([t * 1000 for t in m.ttfb.get(n, [])], 50) for n in (PLAIN, TAP, RELAY)}
    added = report.add(
        RELAY_SECTION,
        RELAY_TTFB,
        ttfb[RELAY] - ttfb[PLAIN],
        "ms",
        at_most(TARGET_RELAY_ADDED_TTFB_MS),
    )
    by_plain = report.add(
        RELAY_SECTION, "TTFB p50 relay / plain", ratio(ttfb[RELAY], ttfb[PLAIN]), "x"
    )
    by_tap = report.add(
        RELAY_SECTION, "TTFB p50 relay / tap-only", ratio(ttfb[RELAY], ttfb[TAP]), "x"
    )
    report.print(
        f"  TTFB p50: plain {ttfb[PLAIN]:.2f} ms, tap-only {ttfb[TAP]:.2f} ms, relay "
        f"{ttfb[RELAY]:.2f} ms; added by the relay {mark(added)}; relay/plain {mark(by_plain)}, "
        f"relay/tap-only {mark(by_tap)}"
    )
    report.print()
    relay_event_latency(report, m)
    return missed_rate, added.missed


def relay_event_latency(report: Report, m: Measured) -> None:
    """The latency each event gets through each setup, and what the proxies add to it."""
    report.print(
        "  per-event latency: paced streams of stamped deltas; per delta after the first, "
        "client receive - upstream send; added = a proxy's percentile - the direct run's"
    )
    measured = [s for s in m.setups if m.latency.get(s.name)]
    p50 = {s.name: percentile(m.latency[s.name], 50) for s in measured}
    p99 = {s.name: percentile(m.latency[s.name], 99) for s in measured}
    rows = []
    added: dict[str, float] = {}
    for s in measured:
        name = s.name
        if name == DIRECT:
            f = report.add(RELAY_SECTION, LATENCY_NAMES[name], p50[name], "ms")
            added50 = added99 = "-"
        else:
            added[name] = p50[name] - p50.get(DIRECT, math.nan)
            f = report.add(RELAY_SECTION, LATENCY_NAMES[name], added[name], "ms")
            added50 = mark(f)
            added99 = f"{p99[name] - p99.get(DIRECT, math.nan):.3f} ms"
        rows.append(
            [
                name,
                f"{len(m.latency[name]):,}",
                f"{p50[name]:.3f} ms",
                f"{percentile(m.latency[name], 90):.3f} ms",
                f"{p99[name]:.3f} ms",
                added50,
                added99,
            ]
        )
    report.table(
        ["per-event latency", "events", "p50", "p90", "p99", "added p50", "added p99"], rows
    )
    nan = math.nan
    ratios = [
        report.add(
            RELAY_SECTION,
            LATENCY_RATIOS[0],
            ratio(added.get(RELAY, nan), added.get(PLAIN, nan)),
            "x",
        ),
        report.add(
            RELAY_SECTION, LATENCY_RATIOS[1], ratio(added.get(RELAY, nan), added.get(TAP, nan)), "x"
        ),
    ]
    report.print("  " + "; ".join(f"{f.name}: {mark(f)}" for f in ratios) + " (of the added p50)")


def relay_unavailable(report: Report, reason: str) -> None:
    """The relay rows while the relay cannot be measured, and why."""
    report.heading("relay: tap-only and relay against plain mitmdump")
    figures = []
    for label in RELAY_ROWS:
        figures += [
            report.add(RELAY_SECTION, f"{label}: relay {RATE}", None, note=reason),
            report.add(RELAY_SECTION, ratio_name(label, RELAY, PLAIN, RATE), None, note=reason),
            report.add(
                RELAY_SECTION, ratio_name(label, RELAY, "tap-only", RATE), None, note=reason
            ),
            report.add(RELAY_SECTION, f"{label}: relay {CPU}", None, note=reason),
            report.add(RELAY_SECTION, ratio_name(label, RELAY, PLAIN, CPU), None, note=reason),
        ]
    figures.append(report.add(RELAY_SECTION, RELAY_TTFB, None, note=reason))
    figures += [
        report.add(RELAY_SECTION, name, None, note=reason)
        for name in (LATENCY_NAMES[RELAY], *LATENCY_RATIOS)
    ]
    for f in figures:
        report.print(f"  {f.name}: {f.shown()}")
