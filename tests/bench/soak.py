"""Soak benchmark: a headless show for many minutes under an OSC fuzzer and injected faults.

    .venv/bin/python tests/bench/soak.py --minutes 10 --rate 600 --out /tmp/soak
    .venv/bin/python tests/bench/soak.py --show shows/demo.toml --attack --stderr /tmp/soak/stderr.txt

Two tiny equilibrium pieces train and play on a 192x64 frame (headless EGL) while:

- a fuzzer (its own process, as an attacker on the network is) sends `--rate` OSC datagrams per
  second to the show's port from loopback: valid values,
  out-of-range values, wrong types (strings, blobs, booleans, none), unknown addresses, overlong
  strings and addresses, and malformed bytes;
- every `--fault-every` seconds a fault is injected, in turn: NaN in a piece's weights, a training
  step that raises, the OSC receive thread shut down (the engine must restart it). The training
  faults go through `TrainingGuard.before_step`, a hook list only Python code can fill: this script
  installs it; no OSC message or show file reaches it.

At the end it prints (and writes to OUT/soak.json): frames, frame-time p50/p99 (over the whole run
after warm-up, from the telemetry's per-second figures and the engine's report), resident memory
after warm-up and at the end, faults injected and recovered, OSC messages handled and restarts.
Pass/fail lines follow the issue: no crash, RSS growth < 5 % after warm-up, p99 <= 2 x p50, every
fault recovered, and no stall: no frame interval after the warm-up over two frame times (frame
start to frame start, the engine's intervals, as the telemetry and every frame-interval figure
count them). The same is also counted from frame end to frame end (`stalls_after_warmup`: when
a viewer sees them; a frame that ends late after one that ended early counts there), and each
such interval is listed with its frame, phase times and sampler calls, the garbage collections
that ended during it (every collection of 5 ms or more is timed) and the seconds since the last
injected fault: what to look at when one appears.

`--attack` adds issue 13's attack mix to the fuzz (about half the datagrams; `--attack-only`: the
attack mix alone, as the issue's soak asks): floods of
`/unstable/record` 1/0, `/unstable/still`, `/unstable/subscribe` from fresh ports, `/unstable/sync`,
and bundles of 2,040 empty elements (each makes python-osc warn). A configured subscriber (the
show's `osc.subscribe`) must still get feedback at the end; the log must stay under 1 MB; the run
folder must end within its retention bound (checkpoints, `--stills-keep` stills, `--recordings-mb`
of recordings) and within `--disk-budget-mb`; bytes written per hour are reported (the folder's
growth, and this process's own writes from /proc/self/io).
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import os
import random
import socket
import struct
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

from test_show import TINY_EQ  # noqa: E402
from unstable.live import Engine  # noqa: E402
from unstable.show import load_show  # noqa: E402

SHOW = """\
name = "soak"
size = [192, 64]
fps = {fps}
[pieces.eq]
piece = "pieces/eq.toml"
[pieces.eq2]
piece = "pieces/eq2.toml"
[layout]
panels = ["eq/g0", "eq/g1", "eq2/g0"]
[training]
duty = {duty}
max_steps_per_second = {steps}
checkpoint_every = 30
[guard]
stasis_every = 5
good_every = 10
[[scenes]]
duration = 20
[[scenes]]
duration = 20
crossfade = 2
layout = {{panels = ["eq2/g1", "eq/g0"]}}
"""


# ------------------------------------------------------------------------------------ the fuzzer

def attack_messages(rng: random.Random) -> list:
    """Issue 13's attack mix: floods of actions, subscriptions, syncs and empty-element bundles."""
    def build(addr, *args):
        b = OscMessageBuilder(address=addr)
        for a in args:
            b.add_arg(a)
        return b.build().dgram

    def record():
        return build("/unstable/record", rng.choice([0, 1]))

    def still():
        return build("/unstable/still")

    def subscribe():
        return build("/unstable/subscribe", rng.randrange(20000, 60000))

    def sync():
        return build("/unstable/sync")

    def empty_bundle():
        return b"#bundle\x00" + struct.pack(">Q", 1) + b"\x00\x00\x00\x00" * 2040

    kinds = [(record, 10), (still, 10), (subscribe, 10), (sync, 10), (empty_bundle, 2)]
    return [k for k, w in kinds for _ in range(w)]


def fuzz_keys(engine: Engine) -> list[tuple[str, str, float, float]]:
    """(piece, name, lo, hi) of every parameter the fuzzer plays with."""
    # Recording on/off would start and stop ffmpeg (and a file) at fuzzer speed: not what this soak
    # measures (a True boolean counts as 1 on a toggle), so the fuzzer leaves that address alone.
    return [(piece, name, engine.params.spec(piece, name).lo, engine.params.spec(piece, name).hi)
            for piece, name in engine.params.keys() if (piece, name) != ("show", "record")]


def fuzz_messages(specs: list[tuple[str, str, float, float]], rng: random.Random) -> list:
    """Generators of one datagram each: valid, out of range, wrong type, unknown, oversize, malformed."""
    keys = [(piece, name) for piece, name, _, _ in specs]
    ranges = {(piece, name): (lo, hi) for piece, name, lo, hi in specs}

    def build(addr, *args):
        b = OscMessageBuilder(address=addr)
        for a in args:
            b.add_arg(a)
        return b.build().dgram

    def valid():
        piece, name = rng.choice(keys)
        lo, hi = ranges[piece, name]
        return build(f"/unstable/{piece}/{name}/raw", float(rng.uniform(lo, hi)))

    def unit():
        piece, name = rng.choice(keys)
        return build(f"/unstable/{piece}/{name}", float(rng.random()))

    def out_of_range():
        piece, name = rng.choice(keys)
        return build(f"/unstable/{piece}/{name}", rng.choice([1e30, -1e30, 7.0, -3.0, float("nan"), float("inf")]))

    def wrong_type():
        piece, name = rng.choice(keys)
        arg = rng.choice(["hello", b"\x00\x01blob", True, False, None, "x" * 40])
        return build(f"/unstable/{piece}/{name}", arg)

    def unknown():
        return build(f"/unstable/{rng.randrange(10**6)}/nope", 1.0)

    def long_string():
        piece, name = rng.choice(keys)
        return build(f"/unstable/{piece}/{name}", "z" * rng.choice([300, 1000, 4000]))

    def long_address():
        return build("/" + "a" * rng.choice([300, 2000]), 1.0)

    def wildcards():
        return build("/unstable/*/*/[a-z]*/{a,b}/*?", 0.5)

    def malformed():
        n = rng.choice([1, 3, 8, 17, 64, 500])
        data = bytes(rng.getrandbits(8) for _ in range(n))
        if rng.random() < 0.5:  # a plausible start and garbage after it
            data = b"/unstable/eq/hue\x00\x00\x00\x00,f\x00\x00" + data[:3]
        return data

    def bundle():
        # An OSC bundle of a few valid messages.
        msgs = [valid() for _ in range(3)]
        body = b"".join(struct.pack(">i", len(m)) + m for m in msgs)
        return b"#bundle\x00" + struct.pack(">Q", 1) + body

    def oversize():
        return b"/x\x00\x00,b\x00\x00" + struct.pack(">i", 20000) + b"\x00" * 20000

    kinds = [(valid, 30), (unit, 15), (out_of_range, 15), (wrong_type, 12), (unknown, 6), (long_string, 5),
             (long_address, 3), (wildcards, 2), (malformed, 8), (bundle, 3), (oversize, 1)]
    return [k for k, w in kinds for _ in range(w)]


def fuzz(port: int, specs: list, rate: float, seed: int, attack, sent, stop, nice: int = 0) -> None:
    """Send `rate` datagrams per second to `port` in 10 ms batches until `stop` is set (the body
    of the fuzzer's process; `sent` is a shared counter; `nice`: see `--attacker-nice`)."""
    os.nice(nice)
    rng = random.Random(seed)
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    makers = fuzz_messages(specs, rng)
    if attack == "only":  # issue 13's attack mix alone
        makers = attack_messages(rng)
    elif attack:  # about half of everything sent
        makers = makers + attack_messages(rng) * (len(makers) // 42)
    start = time.perf_counter()
    n = 0
    while not stop.is_set():
        due = int((time.perf_counter() - start) * rate)
        while n < due:
            try:
                sock.sendto(rng.choice(makers)(), ("127.0.0.1", port))
            except OSError:
                pass  # the show's port closed for a moment (its OSC thread restarting)
            n += 1
        sent.value = n
        stop.wait(0.01)
    sock.close()


class Fuzzer:
    """The attacker: another process (as on the network) sending `rate` datagrams per second to the
    show's OSC port. In the show's own process its Python would compete for the show's GIL, which
    no remote controller does."""

    def __init__(self, engine: Engine, rate: float, seed: int = 1, attack: bool = False, nice: int = 0):
        import multiprocessing
        ctx = multiprocessing.get_context("spawn")  # no copy of the show's threads and GL context
        self._sent = ctx.Value("q", 0)
        self.stop_event = ctx.Event()
        self.process = ctx.Process(target=fuzz, name="soak-fuzzer", daemon=True,
                                   args=(engine.osc.port, fuzz_keys(engine), rate, seed, attack, self._sent,
                                         self.stop_event, nice))

    @property
    def sent(self) -> int:
        return int(self._sent.value)

    def start(self) -> None:
        self.process.start()

    def join(self, timeout: float) -> None:
        self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()


# ------------------------------------------------------------------------------------ faults

class Faults:
    """Injected faults, in turn: NaN weights, a raising step, the OSC thread shut down."""

    def __init__(self, engine: Engine):
        self.engine = engine
        self.pending: dict[str, str] = {}
        self.lock = threading.Lock()
        self.injected: list[dict] = []
        # Pieces training in a process of their own take the faults there (TrainingProcess.inject_fault).
        self.remote = engine.piece_set is not None and engine.piece_set.in_process
        for name, p in engine.pieces.items():
            p.guard.before_step.append(self._hook(name))

    def _hook(self, name: str):
        def hook(system):
            with self.lock:
                kind = self.pending.pop(name, None)
            if kind == "nan":
                with torch.no_grad():  # the first weight of the system's first trainable module
                    next(next(iter(system.modules().values())).parameters()).fill_(float("nan"))
            elif kind == "raise":
                raise RuntimeError("injected fault: a raising step")
        return hook

    def inject(self, i: int) -> None:
        kind = ("nan", "raise", "osc")[i % 3]
        piece = list(self.engine.pieces)[i % len(self.engine.pieces)]
        rec = {"t": round(time.perf_counter(), 3), "kind": kind, "piece": piece if kind != "osc" else None}
        p = self.engine.pieces[piece]
        if kind == "osc":
            rec["before"] = self.engine.osc.restarts
            srv = self.engine.osc.server._server
            if srv is not None:
                srv.shutdown()  # serve_forever returns: the receive thread ends like a crashed one
        else:
            rec["before"] = self._recoveries(p)
            if self.remote:
                self.engine.piece_set.trainer.inject_fault(piece, kind)
            else:
                with self.lock:
                    self.pending[piece] = kind
        self.injected.append(rec)

    def judge(self, rec: dict) -> bool:
        """Whether fault `rec` was recovered by now (call a few seconds after injecting it, while the
        show runs): OSC restarted and running again, or the piece undid the step and trains on."""
        if rec["kind"] == "osc":
            good = self.engine.osc.restarts > rec["before"] and self.engine.osc is not None and self.engine.osc.server.running
        else:
            p = self.engine.pieces[rec["piece"]]
            stopped = None if self.remote else p.guard.stopped  # a process reports a stop as the error
            good = self._recoveries(p) > rec["before"] and p.error is None and stopped is None
        rec["recovered"] = bool(good)
        return rec["recovered"]

    def _recoveries(self, p) -> int:
        return int((p.remote or {}).get("recoveries", 0)) if self.remote else p.guard.recoveries

    def recovered(self) -> tuple[int, list[dict]]:
        """How many faults were recovered, and the ones that were not (judged while the show ran)."""
        judged = [r for r in self.injected if "recovered" in r]
        return sum(r["recovered"] for r in judged), [r for r in judged if not r["recovered"]]


def cpu_by_thread() -> dict[str, float]:
    """CPU seconds so far of each live Python thread of this process, by thread name (Linux)."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for t in threading.enumerate():
        try:
            fields = Path(f"/proc/self/task/{t.native_id}/stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, TypeError):
            continue
        out[t.name] = out.get(t.name, 0.0) + round((int(fields[11]) + int(fields[12])) / tick, 1)
    return out


def cpu_per_minute(marks: dict) -> dict[str, float]:
    """CPU seconds a minute of each thread between the warm-up's reading and the last one ({} when
    the run ended before two readings). A thread restarted in between (the OSC watchdog's) restarts
    its count: never below 0."""
    if "warm" not in marks or "last" not in marks:
        return {}
    (t0, a), (t1, b) = marks["warm"], marks["last"]
    minutes = (t1 - t0) / 60
    if minutes <= 0:
        return {}
    return {k: round(max(0.0, v - a.get(k, 0.0)) / minutes, 2) for k, v in sorted(b.items())}


# ------------------------------------------------------------------------------------ main

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--warmup", type=float, default=120.0, help="seconds before the memory baseline")
    ap.add_argument("--rate", type=float, default=600.0, help="OSC datagrams per second")
    ap.add_argument("--fault-every", type=float, default=15.0, help="seconds between injected faults")
    ap.add_argument("--fps", type=float, default=20.0)
    ap.add_argument("--duty", type=float, default=0.5, help="training duty cycle")
    ap.add_argument("--steps", type=float, default=8.0, help="cap on each piece's steps per second")
    ap.add_argument("--out", type=Path, default=Path("/tmp/unstable-soak"))
    ap.add_argument("--attack", action="store_true", help="add issue 13's attack mix (see above)")
    ap.add_argument("--attack-only", action="store_true",
                    help="send issue 13's attack mix alone, without the parameter fuzz (implies --attack)")
    ap.add_argument("--disk-budget-mb", type=float, default=100.0,
                    help="--attack: MB the run folder may hold at the end, however long the soak")
    ap.add_argument("--show", type=Path, default=None,
                    help="soak this show (e.g. shows/demo.toml, from its shipped states) instead of two tiny pieces; "
                         "--fps, --duty and --steps then come from the show")
    ap.add_argument("--stills-keep", type=int, default=50, help="[disk] stills_keep for the soak (the cap the "
                    "attack's stills must stay within)")
    ap.add_argument("--recordings-mb", type=float, default=20.0, help="[disk] recordings_budget_mb for the soak")
    ap.add_argument("--stderr", type=Path, default=None,
                    help="send this process's stderr (python-osc's warnings, tracebacks) to FILE and report its size")
    ap.add_argument("--network", action="store_true",
                    help="issue 23's network attack too (needs --show and root): the show opened to a LAN in a "
                         "network namespace, connection floods to the fd limit, rebinding attempts, refresh floods, "
                         "64 websocket clients, and legitimate page and websocket clients checked throughout "
                         "(soak_network.py); implies --attack")
    ap.add_argument("--attacker-nice", type=int, default=10,
                    help="nice level of the attacking processes (fuzzer, floods, rebinding): they stand for other "
                         "machines on the LAN, and at the show's priority on this 2-core box they would take the "
                         "cores the show plays on, which no remote attacker can (0: same priority as the show)")
    ap.add_argument("--nofile", type=int, default=1024, help="--network: the show's file descriptor limit")
    ap.add_argument("--ws-rate", type=float, default=1000.0,
                    help="--network: binary OSC messages a second from the 64 websocket clients together")
    args = ap.parse_args()
    args.attack = "only" if args.attack_only else (args.attack or args.network)
    if args.network and args.show is None:
        ap.error("--network needs --show (e.g. shows/demo.toml)")

    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.stderr is not None:  # at the file descriptor: C-level and logging output alike
        fd = os.open(args.stderr, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(fd, 2)
        os.close(fd)
    lan_ctx = network = None
    if args.network:  # before the show opens: its fd limit, its LAN and its token
        import resource
        import secrets

        import soak_network
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(args.nofile, hard), hard))
        lan_ctx = soak_network.lan()
        lan_ = lan_ctx.__enter__()
        token = secrets.token_urlsafe(12)
        args.show = soak_network.network_show(args.show, out, token)
    watcher = None
    if args.attack:  # a configured controller, which no flood may evict
        watcher = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        watcher.bind(("127.0.0.1", 0))
        watcher.settimeout(2.0)
    if args.show is not None:
        show = load_show(args.show)
        s = show.settings
        if watcher is not None:
            osc = dataclasses.replace(s.osc, subscribe=(*s.osc.subscribe, f"127.0.0.1:{watcher.getsockname()[1]}"))
            show = dataclasses.replace(show, settings=dataclasses.replace(s, osc=osc))
        args.fps = float(show.settings.fps)
    else:
        (out / "pieces").mkdir(parents=True, exist_ok=True)
        (out / "pieces" / "eq.toml").write_text(TINY_EQ.format(seed=1))
        (out / "pieces" / "eq2.toml").write_text(TINY_EQ.format(seed=2))
        show_path = out / "soak.toml"
        text = SHOW.format(fps=args.fps, duty=args.duty, steps=args.steps)
        if watcher is not None:
            text = text.replace("[guard]", f"[osc]\nsubscribe = [\"127.0.0.1:{watcher.getsockname()[1]}\"]\n[guard]")
        show_path.write_text(text)
        show = load_show(show_path)
    disk = dataclasses.replace(show.settings.disk, stills_keep=args.stills_keep, recordings_budget_mb=args.recordings_mb)
    show = dataclasses.replace(show, settings=dataclasses.replace(show.settings, disk=disk))
    telemetry = out / "telemetry.jsonl"
    import logging  # every rejected OSC message and undone step is logged (rate-limited): to a file
    logging.basicConfig(filename=out / "soak.log", filemode="w", level=logging.INFO,
                        format="%(asctime)s %(threadName)s %(name)s %(levelname)s %(message)s")

    # A given show starts from its shipped `start` states (fresh=False on an empty run folder).
    engine = Engine(show, headless=True, osc_port=0, web_port=0, run_dir=out / "run", fresh=args.show is None,
                    telemetry=telemetry, seconds=args.minutes * 60, train=True, echo=print)
    engine.open()
    gl_at_warmup = {}

    def count_gl(e):  # GL objects made after warm-up: must stay 0 (no per-frame GL allocation)
        if not gl_at_warmup and e.frames >= args.warmup * args.fps:
            gl_at_warmup["n"] = e.compositor.gl_objects_created

    engine.frame_hooks.append(count_gl)
    gl_end = {}
    engine.frame_hooks.append(lambda e: gl_end.__setitem__("n", e.compositor.gl_objects_created))
    faults = Faults(engine)
    fuzzer = Fuzzer(engine, args.rate, attack=args.attack, nice=args.attacker_nice)

    def disk_bytes():
        return sum(f.stat().st_size for f in out.rglob("*") if f.is_file())

    disk_before = disk_bytes()

    def io_written():  # bytes this process caused to be written (checkpoints, stills, logs; not ffmpeg's)
        for line in Path("/proc/self/io").read_text().splitlines():
            if line.startswith("write_bytes:"):
                return int(line.split()[1])
        return 0

    io_before = io_written()
    heard: list[float] = []

    def listen():  # the configured controller: when did feedback last reach it
        while not stop.is_set():
            try:
                watcher.recv(65536)
                heard.append(time.perf_counter())
                del heard[:-10]
            except OSError:
                pass

    heard_thread = threading.Thread(target=listen, daemon=True)
    if watcher is not None:
        def nudge(e):  # an engine change every 10 s (as a scene's preset would be): feedback to all
            if e.frames % int(10 * args.fps) == 0:
                e.params.set("show", "master_fade", 1.0 if (e.frames // int(10 * args.fps)) % 2 else 0.99)
        engine.frame_hooks.append(nudge)
    # Where stalls come from: every garbage collection of 5 ms or more (a full collection holds
    # the GIL: every thread waits), and every frame interval over two frame times, with its time.
    # The collecting thread's own CPU time beside the wall time: a collection that holds the GIL
    # while its thread waits for a core (a niced training thread) stalls every thread for longer.
    gc_pauses: list[tuple[float, int, float, float, str]] = []  # (end, generation, wall ms, cpu ms, thread)
    gc_started: dict[str, float] = {}

    def gc_watch(phase, info):
        if phase == "start":
            gc_started["t"], gc_started["cpu"] = time.perf_counter(), time.thread_time()
        elif "t" in gc_started:
            t = time.perf_counter()
            ms = 1000 * (t - gc_started.pop("t"))
            cpu = 1000 * (time.thread_time() - gc_started.pop("cpu"))
            if ms >= 5:
                gc_pauses.append((t, info["generation"], ms, cpu, threading.current_thread().name))

    gc.callbacks.append(gc_watch)
    stalls: list[tuple[float, float]] = []           # (perf_counter at a late frame's end, ms since the last)
    last_end: dict[str, float] = {}

    # Each frame, the scheduler's account of the show's busiest threads (/proc/self/task/TID/schedstat:
    # nanoseconds on a core, nanoseconds runnable but waiting for one): for a late frame, whether the
    # render thread waited for a core (other work at its priority), slept (the GIL or a lock held by
    # another thread) or computed, and which of its neighbours ran meanwhile.
    watched = ("MainThread", "unstable-web", "unstable-refresh", "unstable-weights", "osc-server", "osc-feedback")
    sched_paths: dict[str, str] = {}
    last_sched: dict[str, tuple[int, int]] = {}

    def read_sched() -> dict[str, tuple[int, int]]:
        if e_frames["n"] % int(10 * args.fps) == 0:  # threads start late: look again every 10 s
            sched_paths.clear()
            sched_paths.update({th.name: f"/proc/self/task/{th.native_id}/schedstat" for th in threading.enumerate()
                                if th.name in watched and th.native_id is not None})
        now = {}
        for name, path in sched_paths.items():
            try:
                run, wait, _ = Path(path).read_text().split()
                now[name] = (int(run), int(wait))
            except (OSError, ValueError):
                pass
        return now

    e_frames = {"n": 0}

    def watch_stall(e):  # frame end to frame end: the interval a viewer sees
        t = time.perf_counter()
        la = e.pipeline.look_ahead
        calls = la.calls if la is not None else 0
        sched = read_sched()
        e_frames["n"] += 1
        if "t" in last_end and t - last_end["t"] > 2.0 / args.fps:
            phases = {k: round(1000 * float(np.asarray(v)[-1]), 1) for k, v in e.stats.phases.items() if len(v)}
            ran = {n: round((v[0] - last_sched[n][0]) / 1e6, 1) for n, v in sched.items() if n in last_sched}
            waited = round((sched["MainThread"][1] - last_sched["MainThread"][1]) / 1e6, 1) \
                if "MainThread" in sched and "MainThread" in last_sched else None
            stalls.append((t, 1000 * (t - last_end["t"]), {"frame": e.last_frame, "sampler_calls": calls - last_end["calls"],
                                                          **phases, "ran_ms": ran, "render_waited_for_core_ms": waited,
                                                          "load": round(os.getloadavg()[0], 1)}))
        last_end["t"], last_end["calls"] = t, calls
        last_sched.clear()
        last_sched.update(sched)

    engine.frame_hooks.append(watch_stall)
    thread_cpu: dict[str, float] = {}
    # (perf_counter, CPU seconds by thread) at the warm-up's end and at the last reading: what each
    # thread takes per minute under the attack, the figure that says who holds the render's GIL.
    cpu_marks: dict[str, tuple[float, dict[str, float]]] = {}

    def read_cpu(e):  # the show's threads end with it: read while it runs (every 10 s, the last kept)
        if e.frames % int(10 * args.fps) == 0:
            thread_cpu.update(cpu_by_thread())
            now = time.perf_counter()
            if "warm" not in cpu_marks and now - t_start >= args.warmup:
                cpu_marks["warm"] = (now, dict(thread_cpu))
            elif "warm" in cpu_marks:
                cpu_marks["last"] = (now, dict(thread_cpu))

    engine.frame_hooks.append(read_cpu)
    t_start = time.perf_counter()
    stop = threading.Event()

    def schedule():
        i = 0
        end = t_start + args.minutes * 60 - 5  # the last fault is judged before the show ends
        while not stop.wait(args.fault_every) and time.perf_counter() + 4 < end:
            faults.inject(i)
            i += 1
            # Time to recover: a training step of the piece (a BAD step takes a second or two on
            # a CPU, and the pieces take turns), one OSC watchdog second. Judged as soon as it has.
            deadline = time.perf_counter() + 15.0
            while not faults.judge(faults.injected[-1]) and time.perf_counter() < deadline:
                if stop.wait(0.5):
                    break

    scheduler = threading.Thread(target=schedule, name="soak-faults", daemon=True)
    if watcher is not None:
        heard_thread.start()
    if args.network:
        network = soak_network.NetworkAttack(lan_, engine.web_link.server.port, engine.osc.port, token,
                                             args.minutes * 60 - 10, out, args.nofile, args.ws_rate,
                                             nice=args.attacker_nice)
        network.start()
    web_server = engine.web  # its counters outlive the show (read for the summary after it closed)
    fuzzer.start()
    scheduler.start()
    crashed = None
    try:
        report = engine.run()
    except Exception as e:  # the one thing a soak must never see
        crashed = f"{type(e).__name__}: {e}"
        report = None
    t_end = time.perf_counter()
    stop.set()
    fuzzer.stop_event.set()
    fuzzer.join(5)
    if network is not None:
        network.join(60)
        lan_ctx.__exit__(None, None, None)
    elapsed = time.perf_counter() - t_start
    disk_written = disk_bytes() - disk_before
    served = None
    if watcher is not None:  # still served: the engine's changes reached it in the last minute
        heard_thread.join(3)
        served = bool(heard) and heard[-1] > t_end - 60

    # What the show may keep on disk: its checkpoints (one file per piece, rewritten in place, plus
    # the one being written), the newest `stills_keep` stills and `recordings_mb` of recordings
    # (the newest may pass it by one recording: the budget is enforced when the next one starts).
    run = out / "run"
    run_bytes = sum(f.stat().st_size for f in run.rglob("*") if f.is_file())
    ckpt = sum(f.stat().st_size for f in run.rglob("checkpoint.pt"))
    stills = sorted(run.glob("stills/*.png"), key=lambda f: f.stat().st_size)
    biggest_still = stills[-1].stat().st_size if stills else 0
    recs = [f.stat().st_size for f in run.glob("record-*")]
    bound = 2 * ckpt + args.stills_keep * biggest_still + args.recordings_mb * 2**20 + (max(recs) if recs else 0)
    intervals = np.asarray(engine.stats.intervals)
    after_warmup = intervals[int(args.warmup * args.fps):] if report and report.frames == len(intervals) + 1 \
        else intervals[:0]
    lines = [json.loads(x) for x in telemetry.read_text().splitlines() if x.strip()]
    warm = [ln for ln in lines if ln["t"] >= args.warmup]
    # Medians of the first and the last minute after warm-up: RSS swings by 100+ MB within seconds
    # (a BAD step at a fuzzed batch size, a checkpoint being written), so single readings would
    # measure a swing, not a trend.
    first = [ln["rss_mb"] for ln in warm if ln["t"] < args.warmup + 60]
    last = [ln["rss_mb"] for ln in warm if ln["t"] >= warm[-1]["t"] - 60] if warm else []
    rss_warm = float(np.median(first)) if first else None
    rss_end = float(np.median(last)) if last else None
    rss_peak = max(ln["rss_mb"] for ln in warm) if warm else None
    p50s = [ln["frame_ms_p50"] for ln in warm if ln["frame_ms_p50"] > 0]
    p99s = [ln["frame_ms_p99"] for ln in warm if ln["frame_ms_p99"] > 0]
    recovered, unrecovered = faults.recovered()
    summary = {
        "minutes": round(elapsed / 60, 2),
        "crashed": crashed,
        "frames": report.frames if report else None,
        "fps": report.fps if report else None,
        "frame_ms_p50": report.interval_p50_ms if report else None,
        "frame_ms_p99": report.interval_p99_ms if report else None,
        "work_ms_p50": report.work_p50_ms if report else None,
        "work_ms_p99": report.work_p99_ms if report else None,
        "late_frames": report.late_frames if report else None,
        "per_second_p50_median_ms": float(np.median(p50s)) if p50s else None,
        "per_second_p99_median_ms": float(np.median(p99s)) if p99s else None,
        "per_second_p99_max_ms": float(np.max(p99s)) if p99s else None,
        "rss_after_warmup_mb": rss_warm, "rss_end_mb": rss_end, "rss_peak_after_warmup_mb": rss_peak,
        "rss_growth_pct": round(100 * (rss_end - rss_warm) / rss_warm, 2) if rss_warm and rss_end else None,
        "gl_objects_made_after_warmup": (gl_end["n"] - gl_at_warmup["n"]) if gl_at_warmup else None,
        "osc_sent": fuzzer.sent, "osc_rate": round(fuzzer.sent / elapsed, 1),
        "osc_stats": engine.osc.stats(),
        "osc_restarts": engine.osc.restarts,
        "faults_injected": len(faults.injected), "faults_judged": sum("recovered" in r for r in faults.injected),
        "faults_recovered": recovered, "unrecovered": unrecovered,
        "guard": {n: p.guard.telemetry() for n, p in engine.pieces.items()},
        "steps": report.steps if report else None,
        "errors": report.errors if report else None,
        "checkpoints": report.checkpoints if report else None,
        "log_bytes": (out / "soak.log").stat().st_size,
        "stderr_bytes": args.stderr.stat().st_size if args.stderr is not None else None,
        "frame_interval_max_ms": round(1000 * float(np.asarray(engine.stats.intervals).max()), 1)
        if len(engine.stats.intervals) else None,
        "intervals_over_2_frames": int((np.asarray(engine.stats.intervals) > 2.0 / args.fps).sum()),
        # The ring keeps intervals in order: those after the warm-up are its last frames.
        "intervals_over_2_frames_after_warmup": int((after_warmup > 2.0 / args.fps).sum()),
        "frame_interval_max_after_warmup_ms": round(1000 * float(after_warmup.max()), 1) if len(after_warmup) else None,
        "intervals_counted": len(engine.stats.intervals),
        "stalls_after_warmup": sum(1 for t, _, _ in stalls if t - t_start >= args.warmup),
        "disk_written_mb_per_hour": round(disk_written / 2**20 / (elapsed / 3600), 1),
        "run_folder_mb_at_end": round(run_bytes / 2**20, 2),
        "process_written_mb_per_hour": round((io_written() - io_before) / 2**20 / (elapsed / 3600), 1),
        "run_folder_mb_bound": round(bound / 2**20, 2),
        "configured_subscriber_served": served,
        "cpu_seconds_by_thread": thread_cpu,
        "cpu_seconds_per_minute_after_warmup": cpu_per_minute(cpu_marks),
        # The web server's own counters (connections accepted, refused, evicted, boxed; websocket
        # messages applied and dropped): what the attack cost it, and what it turned away.
        "web_stats": dict(web_server.stats) if web_server is not None else None,
    }
    checks = {
        "no crash": crashed is None and not (report and report.errors),
        "rss growth < 5 %": summary["rss_growth_pct"] is not None and summary["rss_growth_pct"] < 5.0,
        "no GL objects made after warm-up": summary["gl_objects_made_after_warmup"] == 0,
        "p99 <= 2 x p50": bool(report) and report.interval_p99_ms <= 2 * report.interval_p50_ms,
        "no stall over 2 frame times after warm-up": bool(report)
        and summary["intervals_over_2_frames_after_warmup"] == 0,
        "every fault recovered": bool(faults.injected) and recovered == len(faults.injected)
        and not unrecovered,
        ">= 500 OSC messages/s": summary["osc_rate"] >= 500,
    }
    if args.stderr is not None:
        checks["stderr under 1 MB"] = summary["stderr_bytes"] < 2**20
    if args.attack:
        checks["log under 1 MB"] = summary["log_bytes"] < 2**20
        checks["run folder within its retention bound"] = run_bytes <= bound
        checks["run folder within the disk budget"] = run_bytes <= args.disk_budget_mb * 2**20
        checks["configured subscriber still served"] = bool(served)
    if network is not None:
        summary["network"] = network.results()
        checks.update(network.checks(summary["network"]))
    summary["gc_pauses_5ms_or_more"] = len(gc_pauses)
    summary["gc_pause_max_ms"] = round(max((p[2] for p in gc_pauses), default=0.0), 1)
    summary["gc_full_collections_5ms_or_more"] = sum(1 for _, g, *_ in gc_pauses if g == 2)
    summary["gc_pauses_over_2_frames"] = [
        {"t": round(t - t_start, 2), "generation": g, "ms": round(ms, 1), "cpu_ms": round(cpu, 1), "thread": name}
        for t, g, ms, cpu, name in gc_pauses if ms > 2000 / args.fps][:50]

    def near(t, events, window=0.5):  # the events that ended within `window` s before a stall's frame ended
        return [ev for ev in events if -0.1 <= t - ev[0] <= window]

    summary["stalls"] = [
        {"t": round(t - t_start, 2), "ms": round(ms, 1), **what,
         "gc_ms": [round(p[2], 1) for p in near(t, gc_pauses, ms / 1000 + 0.1)],
         "fault_s_before": next((round(t - r["t"], 1) for r in reversed(faults.injected) if r["t"] <= t), None)}
        for t, ms, what in stalls[:50]]
    summary["checks"] = checks
    (out / "soak.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))
    for k, v in checks.items():
        print(f"{'PASS' if v else 'FAIL'}  {k}")
    return 0 if all(checks.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
