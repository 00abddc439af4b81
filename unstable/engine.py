"""The live engine (`unstable live SHOW`): train a show's pieces, walk their latent spaces in step,
compose the frames and put them on a screen while performers play the parameters over OSC.

    engine = Engine(load_show("shows/demo.toml"), device=torch.device("cpu"), headless=True, seconds=10,
                    record="out.mp4")
    report = engine.run()     # blocks; SIGINT/SIGTERM stop it cleanly

Threads, and who owns what:

- The render loop (the caller's thread, which owns the GL context) does every frame: one
  `Params.snapshot(now)`, the show events (scene, record, snapshot), one walk time per piece, a
  sample from each visible piece's *sampling mirror*, compose, present, record, telemetry; then it
  sleeps until the next frame's deadline. A late frame moves the schedule forward instead of
  hurrying the next ones (never accumulates lag).
- One training thread steps the pieces, the one with the least training time (weighted by
  `share`) first, under the show's budget (duty cycle, steps/s cap). It runs at a lower CPU
  priority (`training.nice`, Linux niceness of that thread alone), so the display takes the CPU
  first and training what is left: on the 2-core CPU box this took the demo from ~90 late frames in
  10 s to a handful per minute. Each thread uses `training.threads` / `render_threads` torch
  threads (1 by default: two spinning OpenMP teams on two cores starve each other and the GL
  rasteriser; `unstable live` also sets OMP_WAIT_POLICY=PASSIVE before torch loads).
  The optimiser updates the system's modules in place, so the display never samples them: each
  piece has a mirror (a deep
  copy made once), and the training thread copies the trained parameters and buffers into it every
  `sync_every` seconds under a short lock (`SamplingMirror.sync`: 0.2-1 ms for the equilibrium
  pair; `load_state_dict(state_dict())` costs 5-10 ms because it also copies the optimiser). The
  render loop samples the mirror under the same lock, so it always sees one whole set of weights
  and the newest one wins. On CUDA, training runs in its own stream and CUDA events order the copy
  against the samples.
- The OSC thread (unstable.control.osc) only writes into Params; feedback goes out from its own
  thread. Writing checkpoints happens in the training thread (it owns the weights), PNG stills in a
  short-lived thread.

Time: one frame clock (the scheduled time of each frame, seconds since the start) drives every
piece's WalkClock, the parameter smoothing and the scenes, so generators of all pieces move in
sync; a piece's `walk_speed` scales how fast its own clock integrates that time. A change sent
over OSC lands in Params at once and is read by the next frame's snapshot: visible in the next
frame (smoothed parameters start moving there).

Run folder (`runs/live/<show>/` by default): `<piece>/checkpoint.pt` (periodic and at exit,
atomic; a restart resumes from it unless `fresh`), `<piece>/piece.toml`, `snapshots/*.png`,
`record-*.mp4` for recordings started over OSC.

Running for weeks (unstable.guard, issue 7):

- Every training step goes through the piece's `TrainingGuard`: a non-finite loss, weight or
  gradient, an exploding gradient or weight norm, or a raising step is undone (the last good state
  is loaded back, the learning rate backs off, bounded) and logged; the mirror is only synced after
  good steps, so the display keeps the last good frames. After `guard.max_failures` failures in a
  row the piece stops training (`LivePiece.error`), the others carry on. Stasis checks run in the
  training thread every `guard.stasis_every` seconds; telemetry reports each piece's guard. A
  stopped piece tries again after `guard.retry_after` seconds.
- Persistence: a checkpoint holds the weights, optimisers, step, RNG and the live state (walk phase,
  the piece's parameter values, the show's scene and master fade), written atomically, so a SIGKILL
  leaves the old or the new file; temporaries a killed save left are removed at the next start.
  A piece resumes when its run folder has a checkpoint (`fresh` starts over; `resume` makes a
  missing checkpoint an error). A checkpoint of another kind, architecture or piece is refused.
- Isolation: a piece whose sampling raises holds its panels' last frame (black before its first),
  the others carry on and it is sampled again next frame; the training loop survives any failure;
  a dead OSC thread is restarted on the same port (`watch`, once a second); SIGINT/SIGTERM stop
  after the frame in progress with final checkpoints and a finished recording.
- No growth per frame: frame statistics live in fixed ring buffers, finished still-writer threads
  are dropped, the guard copies the last good state into buffers it allocated once.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import functools
import json
import logging
import math
import os
import shutil
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping

import numpy as np
import torch
from torch import nn

from .checkpoint import load_checkpoint, save_checkpoint
from .control.params import SHOW, Params, show_specs, with_common
from .display.compositor import Colour, Compositor, Layout, PanelStyle, Scene
from .errors import CheckpointError, ConfigError, UnstableError
from .guard import TrainingGuard
from .show import Show, display_name
from .system import build_system
from .trainer import checkpoint_payload, restore
from .walk import Walk, WalkClock

log = logging.getLogger("unstable.engine")

STATS_WINDOW = 120_000  # frame times kept for the report's percentiles (about an hour at 30 fps)

__all__ = ["Engine", "EngineReport", "SamplingMirror", "Composer", "SceneDirector", "show_groups",
           "build_systems"]


# ------------------------------------------------------------------------------------ systems

def build_systems(show: Show, device: torch.device) -> dict[str, Any]:
    """One System per piece of the show, seeded like `unstable train` (no prepare yet)."""
    systems = {}
    for name, piece in show.pieces.items():
        torch.manual_seed(piece.seed)
        systems[name] = build_system(piece, device)
    return systems


def show_groups(show: Show, systems: Mapping[str, Any]) -> dict[str, list]:
    """The Params groups of a show: each piece's specs plus the common ones, then the show group."""
    groups: dict[str, list] = {name: with_common(s.param_specs()) for name, s in systems.items()}
    groups[SHOW] = show_specs(len(show.scene_list()))
    return groups


class SamplingMirror:
    """A system's sampling copy (`System.sampling_copy()`), which the display samples while the
    original trains.

    `sync()` (training thread, between steps) refreshes the copy with `copy.accumulate(system)`
    (decay 0: the trainable weights the copy samples with, their buffers and the step count, which
    growth depends on); `sample()` (render thread) samples the copy. Both hold `lock`, so a sample
    sees one whole set of weights. A copy whose modules no longer pair up with the system's (a
    module replaced by another shape) is built again.
    """

    def __init__(self, system: Any, train_stream: "torch.cuda.Stream | None" = None):
        self.source = system
        self.lock = threading.Lock()
        self.syncs = 0
        self.sync_seconds = 0.0
        self._cuda = system.device.type == "cuda"
        self._train_stream = train_stream
        if self._cuda:
            self._copied = torch.cuda.Event()
            self._sampled = torch.cuda.Event()
        self.system = system.sampling_copy()

    def sync(self) -> None:
        """Copy the system's current weights into the mirror (call between training steps)."""
        t0 = time.perf_counter()
        with self.lock, torch.no_grad():
            if self._cuda:
                # Do not overwrite weights that a queued sample on the render stream still reads.
                torch.cuda.current_stream().wait_event(self._sampled)
            try:
                self.system.accumulate(self.source, 0.0)
            except ValueError:  # the modules changed shape: copy the system again
                self.system = self.source.sampling_copy()
            if self._cuda:
                self._copied.record()
        self.syncs += 1
        self.sync_seconds += time.perf_counter() - t0

    def sample(self, latents: Mapping[str, torch.Tensor], params: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """`System.sample` on the mirror: {panel: [N, 3, H, W] in 0..1}."""
        with self.lock:
            if self._cuda:
                torch.cuda.current_stream().wait_event(self._copied)
            out = self.system.sample(latents, params)
            if self._cuda:
                self._sampled.record()
        return out


# ------------------------------------------------------------------------------------ pieces

@dataclass
class LivePiece:
    """One piece while the show runs: its system, mirror, walk and clock, and training counters."""

    name: str
    path: Path
    system: Any
    mirror: SamplingMirror
    walk: Walk
    clock: WalkClock
    panels: dict[str, str]             # display name -> system panel name
    share: float = 1.0
    run_dir: Path | None = None
    steps: int = 0                     # steps taken in this show
    train_seconds: float = 0.0
    step_times: deque = field(default_factory=lambda: deque(maxlen=4096))  # perf_counter of each step
    last_scalars: dict = field(default_factory=dict)
    last_sync: float = -math.inf
    dirty: bool = False                # trained since the last sync
    next_allowed: float = 0.0          # steps/s cap
    last_checkpoint: float = 0.0
    checkpoint_requested: bool = False
    checkpoints: int = 0
    error: str | None = None           # why training stopped (the display holds the last good weights)
    guard: TrainingGuard | None = None
    next_stasis: float = 0.0
    state_extra: Callable[[], dict] | None = None  # the live state saved with the weights (engine)
    last_images: dict = field(default_factory=dict)  # display -> last good [3, H, W], held on failure
    render_error: str | None = None
    render_failures: int = 0

    def steps_per_second(self, now: float, window: float = 2.0) -> float:
        """Steps in the last `window` seconds, per second."""
        n = 0
        for t in reversed(self.step_times):
            if now - t > window:
                break
            n += 1
        return n / window

    def save(self) -> Path:
        """Write this piece's checkpoint atomically (call from the thread that owns the weights)."""
        path = self.run_dir / "checkpoint.pt"
        extra = {"live": self.state_extra()} if self.state_extra is not None else None
        save_checkpoint(path, checkpoint_payload(self.system, str(self.path), extra))
        self.checkpoints += 1
        return path


class Trainer:
    """The training thread: steps the pieces under the show's budget and keeps their mirrors fresh."""

    def __init__(self, pieces: list[LivePiece], budget, params: Callable[[], Mapping[str, Mapping[str, float]]],
                 device: torch.device, train_stream: "torch.cuda.Stream | None" = None, guard=None):
        self.pieces = pieces
        self.guard_settings = guard  # GuardSettings (stasis checks); each piece's TrainingGuard does the rest
        self.budget = budget
        self.params = params
        self.device = device
        self.stream = train_stream
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="unstable-train", daemon=True)
        self.busy_seconds = 0.0

    def start(self) -> "Trainer":
        self._thread.start()
        return self

    def stop(self, timeout: float = 120.0) -> bool:
        """Ask the thread to stop after the step in progress; True if it has."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def _sync(self, p: LivePiece) -> None:
        p.mirror.sync()
        p.last_sync = time.perf_counter()
        p.dirty = False

    def _once(self) -> None:
        """One pass of the training loop: due checkpoints and syncs, then one step of one piece."""
        now = time.perf_counter()
        self._due_checkpoints(now)
        for p in self.pieces:
            if p.error is not None and p.guard is not None and p.guard.retry_due():
                p.guard.retry()
                p.error = None
        for p in self.pieces:
            if p.dirty and now - p.last_sync >= self.budget.sync_every:
                self._sync(p)
        snapshot = self.params()
        ready = [p for p in self.pieces if p.error is None and p.next_allowed <= now
                 and snapshot.get(p.name, {}).get("training", 1.0) >= 0.5]
        if not ready:
            for p in self.pieces:  # idle: show the newest weights at once
                if p.dirty:
                    self._sync(p)
            self._stop.wait(0.02)
            return
        p = min(ready, key=lambda q: q.train_seconds / q.share)
        t0 = time.perf_counter()
        try:
            scalars = self._step(p, dict(snapshot.get(p.name, {})))
        except Exception as e:  # a failure outside the guarded step (a hook, the guard itself)
            p.error = f"{type(e).__name__}: {e}"
            log.exception("training %s failed; it stops training, the show goes on", p.name)
            return
        t1 = time.perf_counter()
        dt = t1 - t0
        p.train_seconds += dt
        self.busy_seconds += dt
        if scalars is None:  # undone by the guard: the mirror keeps the last good weights
            if p.guard is not None and p.guard.stopped:
                p.error = p.guard.stopped
            return
        p.last_scalars = scalars
        p.steps += 1
        p.step_times.append(t1)
        p.dirty = True
        if t1 - p.last_sync >= self.budget.sync_every:
            self._sync(p)
        if self.budget.max_steps_per_second > 0:
            p.next_allowed = t0 + 1.0 / self.budget.max_steps_per_second
        self._stasis(p, snapshot, t1)
        if self.budget.duty < 1.0:
            self._stop.wait(dt * (1.0 - self.budget.duty) / self.budget.duty)

    def _step(self, p: LivePiece, params: dict) -> dict | None:
        """One training step of `p`, through its guard when it has one (None: undone)."""
        if p.guard is None:
            return p.system.step(params)
        return p.guard.step(params)

    def _stasis(self, p: LivePiece, snapshot: Mapping, now: float) -> None:
        g = self.guard_settings
        if p.guard is None or g is None or g.stasis_every <= 0 or now < p.next_stasis:
            return
        p.next_stasis = now + g.stasis_every
        try:
            p.guard.check_stasis(dict(snapshot.get(p.name, {})))
        except Exception:  # a probe that fails must not stop training; the next step's guard judges
            log.warning("stasis check of %s failed", p.name, exc_info=True)

    def _due_checkpoints(self, now: float) -> None:
        every = self.budget.checkpoint_every
        for p in self.pieces:
            if p.run_dir is None:
                continue
            if p.checkpoint_requested or (every > 0 and now - p.last_checkpoint >= every):
                p.checkpoint_requested = False
                p.last_checkpoint = now
                try:
                    p.save()
                except Exception as e:  # a full disk must not end the show; say so and carry on
                    log.error("checkpoint of %s failed: %s", p.name, e)

    def _run(self) -> None:
        if self.device.type == "cpu":
            torch.set_num_threads(self.budget.threads)
        if self.budget.nice > 0 and hasattr(os, "setpriority"):
            # Linux schedules threads individually: a higher niceness on this thread alone lets the
            # display (and the encoder) take the CPU first and training what is left.
            try:
                tid = threading.get_native_id()
                os.setpriority(os.PRIO_PROCESS, tid, os.getpriority(os.PRIO_PROCESS, tid) + self.budget.nice)
            except OSError as e:
                log.warning("could not lower the training thread's priority: %s", e)
        stream_ctx = contextlib.nullcontext()
        if self.stream is not None:
            self.stream.wait_stream(torch.cuda.default_stream(self.device))
            stream_ctx = torch.cuda.stream(self.stream)
        with stream_ctx:
            for p in self.pieces:
                p.last_checkpoint = time.perf_counter()
            while not self._stop.is_set():
                try:
                    self._once()
                except Exception:  # whatever it was, the thread must live on: the show runs for weeks
                    log.exception("the training loop failed; carrying on in a second")
                    self._stop.wait(1.0)
            for p in self.pieces:
                if p.dirty:
                    self._sync(p)
            if self.stream is not None:
                self.stream.synchronize()


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove checkpoint temporaries a killed process left behind (`.checkpoint.pt.*.tmp`)."""
    for tmp in folder.glob(".checkpoint.pt.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def resume_piece(system: Any, path: Path, device: torch.device) -> dict | None:
    """Load a piece's checkpoint into `system`, refusing one of another kind, architecture or piece.

    Returns the live state saved with it (walk phase, parameter values), or None.
    """
    payload = load_checkpoint(path, map_location=device)
    saved = payload.get("piece", {}).get("name") if isinstance(payload.get("piece"), dict) else None
    if saved is not None and saved != system.piece.name:
        raise CheckpointError(f"{path}: checkpoint is of piece {saved!r}, not {system.piece.name!r}; refusing "
                              "to load it (--fresh starts over, --run picks another run folder)")
    restore(system, payload, str(path))
    live = payload.get("live")
    return live if isinstance(live, dict) else None


# ------------------------------------------------------------------------------------ scenes

class SceneDirector:
    """Which scene shows, and the crossfade between two: auto-advance, jumps, presets.

    `update(now)` returns (from_index, to_index or None, mix): draw `from` crossfading into `to` by
    `mix` (0..1). `go(i, now)` starts scene i: its parameter presets are applied, the crossfade runs
    for the new scene's `crossfade` seconds, and its duration counts from then.
    """

    def __init__(self, show: Show, params: Params, now: float = 0.0):
        self.show = show
        self.scenes = show.scene_list()
        self.params = params
        self.current = 0
        self.previous: int | None = None
        self.started = now
        self.fade_len = 0.0
        self.changes = 0
        self._apply(0)

    def _apply(self, i: int) -> None:
        presets = self.scenes[i].params
        if presets:
            self.params.update({p: dict(v) for p, v in presets.items()})
        self.params.set(SHOW, "scene", i)  # origin None: controllers follow, no event queued

    def mix(self, now: float) -> float:
        if self.previous is None or self.fade_len <= 0:
            return 1.0
        return min(max((now - self.started) / self.fade_len, 0.0), 1.0)

    def go(self, i: int, now: float) -> None:
        """Start scene `i` (clamped to the list) at time `now`."""
        i = min(max(int(i), 0), len(self.scenes) - 1)
        if i == self.current and self.previous is None:
            return
        # Interrupting a crossfade: continue from whichever scene dominated the picture.
        if self.previous is not None and self.mix(now) < 0.5:
            frm = self.previous
        else:
            frm = self.current
        self.previous = frm if frm != i else None
        self.current = i
        self.started = now
        self.fade_len = self.scenes[i].crossfade
        self.changes += 1
        self._apply(i)

    def update(self, now: float) -> tuple[int, int | None, float]:
        scene = self.scenes[self.current]
        if scene.duration > 0 and now - self.started >= scene.duration:
            nxt = self.current + 1
            if nxt >= len(self.scenes):
                nxt = 0 if self.show.settings.loop_scenes else self.current
            if nxt != self.current:
                self.go(nxt, now)
            else:
                self.started = now  # the last scene holds: nothing more to count
        m = self.mix(now)
        if self.previous is None or m >= 1.0:
            self.previous = None
            return self.current, None, 0.0
        return self.previous, self.current, m


# ------------------------------------------------------------------------------------ compose

class Composer:
    """Panel images + a parameter snapshot -> one composed frame, through the compositor.

    Each piece's live `hue`, `saturation` and `fade` become the style of its panels (on top of the
    layout's own styles); `fade` is a gain towards black, i.e. the piece's opacity over the
    background. The show's `master_fade` is the compositor's fade.
    """

    def __init__(self, compositor: Compositor, piece_of: Mapping[str, str]):
        self.compositor = compositor
        self.piece_of = dict(piece_of)  # display panel -> piece
        self._styled: dict[tuple, Layout] = {}

    def styled(self, layout: Layout, snapshot: Mapping[str, Mapping[str, float]]) -> Layout:
        """`layout` with every shown panel's piece colour folded into its style (cached)."""
        names = [n for n in layout.panel_names(list(self.piece_of)) if n]
        looks = tuple((n, *(float(snapshot.get(self.piece_of[n], {}).get(k, d))
                            for k, d in (("hue", 0.0), ("saturation", 1.0), ("fade", 1.0)))) for n in names)
        key = (id(layout), looks)
        hit = self._styled.get(key)
        if hit is not None:
            return hit
        styles = dict(layout.styles)
        for name, hue, sat, fade in looks:
            if (hue, sat, fade) == (0.0, 1.0, 1.0):
                continue
            base = layout.style(name)
            styles[name] = PanelStyle(hue=base.hue + hue, saturation=base.saturation * sat,
                                      brightness=base.brightness * fade, filter=base.filter)
        out = layout if styles == dict(layout.styles) else dataclasses.replace(layout, styles=styles)
        if len(self._styled) > 64:  # parameters glide: keep only the recent looks
            self._styled.clear()
        # Layouts come from the show and live as long as the engine, so their ids are stable keys.
        self._styled[key] = out
        return out

    def render(self, images: Mapping[str, torch.Tensor], snapshot: Mapping[str, Mapping[str, float]],
               a: tuple[Layout, Colour], b: tuple[Layout, Colour] | None = None, mix: float = 0.0) -> None:
        """Compose {display panel: [3, H, W]} with scene `a` (crossfading into `b` by `mix`)."""
        fade = float(snapshot.get(SHOW, {}).get("master_fade", 1.0))
        first = Scene(images, self.styled(a[0], snapshot), a[1])
        second = Scene(images, self.styled(b[0], snapshot), b[1]) if b is not None else None
        self.compositor.render(first, fade=fade, next=second, mix=mix if second is not None else 0.0)


# ------------------------------------------------------------------------------------ telemetry

def rss_bytes() -> int:
    """Resident memory of this process in bytes (the peak, where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class _Ring:
    """The last `size` floats, in a buffer allocated once (no growth over a weeks-long show)."""

    def __init__(self, size: int):
        self._buf = np.zeros(size, dtype=np.float64)
        self._n = 0

    def append(self, v: float) -> None:
        self._buf[self._n % len(self._buf)] = v
        self._n += 1

    def __len__(self) -> int:
        return min(self._n, len(self._buf))

    def __array__(self, dtype=None, copy=None):
        return self._buf[:len(self)] if dtype is None else self._buf[:len(self)].astype(dtype)


def _pct(values, q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) * 1e3 if len(values) else 0.0


@dataclass
class EngineReport:
    """What a run did: frames, timing (ms), training, recordings, checkpoints."""

    frames: int
    seconds: float
    fps: float
    interval_p50_ms: float
    interval_p99_ms: float
    work_p50_ms: float
    work_p99_ms: float
    late_frames: int
    steps: dict[str, int]
    steps_per_second: dict[str, float]
    recordings: list[str]
    checkpoints: list[str]
    snapshots: list[str]
    errors: dict[str, str]


# ------------------------------------------------------------------------------------ engine

class Engine:
    """A live show: open it, draw frames, close it. `run()` does all three with pacing and signals.

    `seconds`: stop after round(seconds x fps) frames (a headless run records exactly that many).
    `record`: an .mp4 recorded from the first frame (preset h264_live, one frame per frame).
    `telemetry`: a JSON-lines file, one line per second. `osc_port` overrides the show's port.
    `train`: False shows the pieces as they are (the show's `training.on` also decides).
    `time_source`: the frame clock's source of seconds (injectable for tests).
    """

    def __init__(self, show: Show, *, device: torch.device = torch.device("cpu"), headless: bool = False,
                 fullscreen: bool | None = None, monitor: int | None = None, seconds: float | None = None,
                 record: str | os.PathLike | None = None, telemetry: str | os.PathLike | None = None,
                 osc_port: int | None = None, run_dir: str | os.PathLike | None = None, fresh: bool = False,
                 resume: bool = False, train: bool = True, time_source: Callable[[], float] = time.perf_counter,
                 echo: Callable[[str], None] = print, progress: Callable | None = None):
        self.show = show
        self.settings = show.settings
        self.device = torch.device(device)
        self.headless = headless
        self.fullscreen = self.settings.fullscreen if fullscreen is None else fullscreen
        self.monitor = self.settings.monitor if monitor is None else monitor
        self.fps = float(self.settings.fps)
        self.max_frames = None if seconds is None else max(1, round(seconds * self.fps))
        self.record_path = Path(record) if record is not None else None
        self.telemetry_path = Path(telemetry) if telemetry is not None else None
        self.osc_port = osc_port
        self.run_dir = Path(run_dir) if run_dir is not None else Path("runs") / "live" / show.name
        if fresh and resume:
            raise UnstableError("--fresh and --resume contradict each other: choose one")
        self.fresh = fresh
        self.resume = resume
        self.train = train and self.settings.training.on
        self._time = time_source
        self.echo = echo
        self.progress = progress
        if self.record_path is not None and self.record_path.suffix.lower() != ".mp4":
            raise UnstableError(f"--record {self.record_path}: recordings are .mp4 files (preset h264_live)")

        self.pieces: dict[str, LivePiece] = {}
        self.params: Params | None = None
        self.osc = None
        self.window = None
        self.compositor: Compositor | None = None
        self.composer: Composer | None = None
        self.director: SceneDirector | None = None
        self.trainer: Trainer | None = None
        self.writer = None
        self.frames = 0
        self.late_frames = 0
        self._snapshot: dict = {}
        self._stop = threading.Event()
        self._opened = False
        self._closed = False
        self._t0 = 0.0
        # Bounded: a show runs for weeks. The report's percentiles cover the last hour or so at 30 fps;
        # its fps and frame count cover the whole run.
        self._intervals = _Ring(STATS_WINDOW)
        self._works = _Ring(STATS_WINDOW)
        self._interval_sum = 0.0
        self._interval_count = 0
        self._sec_intervals: list[float] = []
        self._sec_works: list[float] = []
        self._last_frame_start: float | None = None
        self._telemetry_file = None
        self._next_telemetry = 1.0
        self._recordings: list[str] = []
        self._snapshots: list[str] = []
        self._checkpoints: list[str] = []
        self._png_threads: list[threading.Thread] = []
        self._threads_before = torch.get_num_threads()
        self._train_stream = None
        self._frame_now = 0.0  # the frame clock every piece's WalkClock reads
        self._phases: dict[str, list[float]] = {"sample": [], "compose": [], "output": []}
        self._blank: dict[tuple, torch.Tensor] = {}  # black [3, H, W] for a failed panel with nothing to hold
        self.osc_restarts = 0
        self.osc_stats_before: dict[str, int] = {}  # counters of OSC servers replaced by `watch`
        self._next_watch = 0.0
        # Called with the engine after every frame, in the render thread (benchmarks, tests).
        self.frame_hooks: list[Callable[["Engine"], None]] = []

    # -- opening --------------------------------------------------------------------------------

    def open(self) -> "Engine":
        """Build, check, prepare and restore the pieces; start OSC, the window, recording, training."""
        if self._opened:
            return self
        self._opened = True
        try:
            self._open()
        except BaseException:
            self.close(final_checkpoint=False)
            raise
        return self

    def _open(self) -> None:
        s = self.settings
        if self.device.type == "cpu":
            torch.set_num_threads(s.training.render_threads)
        systems = build_systems(self.show, self.device)
        groups = show_groups(self.show, systems)
        self.show.check_systems({n: sy.panels() for n, sy in systems.items()},
                                {n: g for n, g in groups.items() if n != SHOW})
        # Everything that can fail on a setting (panels, parameters, walk, OSC port, monitor)
        # fails here, before the slow preparation.
        walks = {}
        for name, system in systems.items():
            dims = system.panels()
            panels = {display_name(name, p): p for p in dims}
            try:
                walks[name] = panels, Walk(s.walk, {d: dims[p] for d, p in panels.items()}, self.device)
            except (UnstableError, ValueError) as e:
                raise ConfigError(self.show.source, "walk", str(e)) from None
        self.params = Params(groups)
        self.params.update({n: dict(e.params) for n, e in s.pieces.items() if e.params})
        self.director = SceneDirector(self.show, self.params, 0.0)
        self.params.settle()

        if s.osc.enabled:
            from .control.osc import OscServer
            port = s.osc.port if self.osc_port is None else self.osc_port
            self.osc = OscServer(self.params, host=s.osc.host, port=port, allow=list(s.osc.allow) or None,
                                 feedback_interval=s.osc.feedback_interval).start()
            for host, p in s.osc.targets():
                self.osc.subscribe(host, p)

        from .display.window import HeadlessWindow, open_window
        if self.headless:
            self.window = HeadlessWindow(s.size, reason="--headless")
        else:
            self.window = open_window(s.size, fullscreen=self.fullscreen, monitor=self.monitor,
                                      title=f"unstable: {self.show.name}", vsync=s.vsync, fallback_headless=True)
            if self.window.headless:
                self.echo(f"live: no window ({self.window.reason}); running headless")
        self.compositor = Compositor(self.window.ctx, s.size)
        if not self.window.headless:  # black while the pieces prepare (base models can take minutes)
            self.compositor.render(Scene({}, Layout(panels=("",))), fade=0.0)
            self.compositor.present(self.window)
            self.window.swap()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        from .trainer import progress_bar
        progress = self.progress or progress_bar
        if self.resume:  # before the slow preparation: a missing checkpoint is an error at once
            missing = [n for n in systems if not (self.run_dir / n / "checkpoint.pt").is_file()]
            if missing:
                raise UnstableError(f"--resume: no checkpoint for {', '.join(missing)} in {self.run_dir} "
                                    f"(expected {self.run_dir / missing[0] / 'checkpoint.pt'}); run without "
                                    "--resume to start those pieces from their seeds")
        live_states = {}
        for name, system in systems.items():
            system.prepare(progress)
            piece_dir = self.run_dir / name
            ckpt = piece_dir / "checkpoint.pt"
            _remove_stale_temporaries(piece_dir)
            if ckpt.exists() and not self.fresh:
                live_states[name] = resume_piece(system, ckpt, self.device)
                self.echo(f"live: {name} resumes {ckpt} at step {system.step_count} (--fresh to start over)")
            piece_dir.mkdir(parents=True, exist_ok=True)
            src = self.show.piece_paths[name]
            if src.resolve() != (piece_dir / "piece.toml").resolve():
                shutil.copyfile(src, piece_dir / "piece.toml")

        if self.device.type == "cuda":
            self._train_stream = torch.cuda.Stream(self.device)
        for name, system in systems.items():
            panels, walk = walks[name]
            self.pieces[name] = LivePiece(
                name=name, path=self.show.piece_paths[name], system=system,
                mirror=SamplingMirror(system, self._train_stream), walk=walk,
                clock=WalkClock(time_source=lambda: self._frame_now), panels=panels,
                share=s.pieces[name].share, run_dir=self.run_dir / name,
                guard=TrainingGuard(system, s.guard, name))
            self.pieces[name].state_extra = functools.partial(self._live_state, self.pieces[name])
        self._restore_live_states(live_states)

        piece_of = {d: n for n, p in self.pieces.items() for d in p.panels}
        self.composer = Composer(self.compositor, piece_of)

        if self.record_path is not None:
            self._start_recording(self.record_path)
        if self.telemetry_path is not None:
            self.telemetry_path.parent.mkdir(parents=True, exist_ok=True)
            self._telemetry_file = open(self.telemetry_path, "w", buffering=1)

        if self.train:
            self.trainer = Trainer(list(self.pieces.values()), s.training, lambda: self._snapshot or
                                   self.params.state(), self.device, self._train_stream, s.guard).start()
        self._t0 = self._time()
        where = f", OSC on {self.osc.host}:{self.osc.port}" if self.osc else ""
        self.echo(f"live: {self.show.name} {s.size[0]}x{s.size[1]} at {self.fps:g} fps on {self.device}"
                  f"{where}, {'training' if self.train else 'not training'}; run folder {self.run_dir}")

    # -- live state (saved with each piece's weights) -----------------------------------------------

    def _live_state(self, p: LivePiece) -> dict:
        """What a restart needs besides the weights: the piece's walk phase and live parameter
        values, and the show's (scene, master fade). Plain floats: loads with weights_only."""
        state = self.params.state()
        # The phase as of the last frame, read without advancing: the render thread owns the clock.
        return {"walk": {"phase": float(p.clock.phase), "speed": float(p.clock.speed)},
                "params": {k: float(v) for k, v in state.get(p.name, {}).items()},
                "show": {k: float(v) for k, v in state.get(SHOW, {}).items() if k != "record"},
                "frame_time": float(self._frame_now)}

    def _restore_live_states(self, states: Mapping[str, dict]) -> None:
        show_state = None
        for name, live in states.items():
            if not isinstance(live, dict):
                continue
            p = self.pieces[name]
            with contextlib.suppress(KeyError, TypeError, ValueError):
                p.clock.load_state_dict(live["walk"])
            if isinstance(live.get("params"), dict):
                self.params.update({name: live["params"]})  # unknown names and bad values are skipped
            show_state = live.get("show") if isinstance(live.get("show"), dict) else show_state
        if show_state:
            scene = show_state.get("scene")
            if scene is not None and int(scene) != self.director.current:
                self.director.go(int(scene), 0.0)
            self.params.update({SHOW: {k: v for k, v in show_state.items() if k not in ("scene", "record")}})
        if states:
            self.params.settle()  # resumed values hold from the first frame, no glide from the defaults

    # -- recording and stills ---------------------------------------------------------------------

    def _start_recording(self, path: Path) -> None:
        from .encode import VideoWriter
        w, h = self.settings.size
        self.writer = VideoWriter(path, w, h, self.settings.fps, "h264_live")
        self._recordings.append(str(path))
        self.params.set(SHOW, "record", 1)

    def _stop_recording(self) -> None:
        if self.writer is not None:
            writer, self.writer = self.writer, None
            writer.close()
        self.params.set(SHOW, "record", 0)

    def _still(self) -> None:
        frame = self.compositor.read().copy()  # [H, W, 3] uint8
        path = self.run_dir / "snapshots" / f"{self.show.name}-{self.frames:07d}.png"

        def write():
            import imageio.v3 as iio
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f".{path.name}.tmp")
            iio.imwrite(tmp, frame, extension=".png")
            tmp.replace(path)

        t = threading.Thread(target=write, name="unstable-still", daemon=True)
        t.start()
        self._png_threads.append(t)
        self._snapshots.append(str(path))
        for p in self.pieces.values():
            if self.trainer is not None and self.trainer.alive:
                p.checkpoint_requested = True  # the training thread owns the weights: it saves
            else:
                try:
                    p.save()
                except Exception as e:
                    log.error("checkpoint of %s failed: %s", p.name, e)

    def _handle_events(self, now: float) -> None:
        for ev in self.params.drain_events():
            if ev.kind == "scene":
                self.director.go(int(ev.value), now)
            elif ev.kind == "record":
                if ev.value and ev.value >= 0.5 and self.writer is None:
                    stamp = time.strftime("%Y%m%d-%H%M%S")
                    self._start_recording(self.run_dir / f"record-{stamp}-{self.frames:07d}.mp4")
                elif (ev.value is None or ev.value < 0.5) and self.writer is not None:
                    self._stop_recording()
            elif ev.kind == "snapshot":
                self._still()

    # -- frames -----------------------------------------------------------------------------------

    @property
    def snapshot(self) -> dict:
        """The parameter snapshot of the last frame ({piece: {name: value}})."""
        return self._snapshot

    def frame(self, now: float | None = None) -> None:
        """Draw one frame at frame-clock time `now` (seconds since the start; default: the clock)."""
        if not self._opened:
            self.open()
        if now is None:
            now = self._time() - self._t0
        self._frame_now = now
        snap = self.params.snapshot(now)
        self._snapshot = snap  # the training thread reads the newest one
        self._handle_events(now)
        a, b, mix = self.director.update(now)
        scenes = [a] if b is None else [a, b]
        layouts = [self.show.scene_layout(i) for i in scenes]
        shown = {n for lay in layouts for n in lay.panel_names(list(self.composer.piece_of)) if n}
        images: dict[str, torch.Tensor] = {}
        t_sample = time.perf_counter()
        for name, p in self.pieces.items():
            p.clock.speed = snap[name].get("walk_speed", 1.0)
            t = p.clock.tick()
            wanted = {d: q for d, q in p.panels.items() if d in shown}
            if not wanted:
                continue
            try:
                z = p.walk.latents_at(t)  # {display: [1, D]}
                out = p.mirror.sample({q: z[d] for d, q in wanted.items()}, snap[name])
                for d, q in wanted.items():
                    images[d] = out[q][0]  # [3, H, W]
                    p.last_images[d] = images[d]
                p.render_failures = 0
            except Exception as e:
                # One piece failing must not take the show down: its panels hold their last frame.
                p.render_failures += 1
                p.render_error = f"{type(e).__name__}: {str(e)[:200]}"
                if p.render_failures == 1 or p.render_failures % 1000 == 0:
                    log.error("sampling %s failed (%d frames in a row); its panels hold their last frame",
                              name, p.render_failures, exc_info=p.render_failures == 1)
                for d in wanted:
                    images[d] = p.last_images.get(d)
                    if images[d] is None:
                        images[d] = self._blank_for(p)
        t_compose = time.perf_counter()
        first = (layouts[0], self.show.scene_colour(a))
        second = (layouts[1], self.show.scene_colour(b)) if b is not None else None
        self.composer.render(images, snap, first, second, mix)
        if not self.window.headless:
            self.compositor.present(self.window)
            self.window.swap()
        self.window.poll()
        t_output = time.perf_counter()
        if self.writer is not None:
            self.writer.write(self.compositor.read())
        t_end = time.perf_counter()
        for key, dt in (("sample", t_compose - t_sample), ("compose", t_output - t_compose),
                        ("output", t_end - t_output)):
            self._phases[key].append(dt)
        self.frames += 1
        for hook in self.frame_hooks:
            hook(self)

    def _blank_for(self, p: LivePiece) -> torch.Tensor:
        """A black panel for a piece that failed before its first frame ([3, 8, 8], made once)."""
        key = (p.name,)
        if key not in self._blank:
            self._blank[key] = torch.zeros(3, 8, 8, device=self.device)
        return self._blank[key]

    def watch(self) -> None:
        """Once a second: restart the OSC threads if they died (same port, same subscribers)."""
        if self.osc is None or self.osc.running:
            return
        port, subs = self.osc.port, self.osc.subscribers
        for k, v in self.osc.stats.items():  # counters carry over: telemetry shows the whole show's
            self.osc_stats_before[k] = self.osc_stats_before.get(k, 0) + v
        log.error("the OSC threads stopped; restarting them on port %d", port)
        with contextlib.suppress(Exception):
            self.osc.stop()
        from .control.osc import OscServer
        s = self.settings.osc
        try:
            self.osc = OscServer(self.params, host=s.host, port=port, allow=list(s.allow) or None,
                                 feedback_interval=s.feedback_interval).start()
        except UnstableError as e:  # the port is taken meanwhile: try again next second
            log.error("restarting OSC failed: %s", e)
            return
        for host, p in subs:
            self.osc.subscribe(host, p)
        self.osc_restarts += 1

    def osc_stats(self) -> dict[str, int]:
        """The OSC counters (messages, rejected, malformed, ...) over the whole show, restarts included."""
        now = dict(self.osc.stats) if self.osc is not None else {}
        return {k: now.get(k, 0) + self.osc_stats_before.get(k, 0) for k in {*now, *self.osc_stats_before}}

    def read(self) -> np.ndarray:
        """The last composed frame, [H, W, 3] uint8 (a reused buffer: copy to keep it)."""
        return self.compositor.read()

    def request_stop(self) -> None:
        """Stop after the frame in progress (signal-safe)."""
        self._stop.set()

    @property
    def should_stop(self) -> bool:
        return self._stop.is_set() or (self.window is not None and self.window.should_close) or (
            self.max_frames is not None and self.frames >= self.max_frames)

    def _telemetry(self, now: float) -> None:
        if now < self._next_telemetry:
            return
        self.watch()
        self._png_threads = [t for t in self._png_threads if t.is_alive()]
        self._next_telemetry = math.floor(now) + 1.0
        if self._telemetry_file is None:
            self._sec_intervals.clear()
            self._sec_works.clear()
            for v in self._phases.values():
                v.clear()
            return
        t = time.perf_counter()
        line = {
            "t": round(now, 3), "frame": self.frames,
            "fps": round(len(self._sec_intervals) / max(sum(self._sec_intervals), 1e-9), 2) if self._sec_intervals else 0.0,
            "frame_ms_p50": round(_pct(self._sec_intervals, 50), 2),
            "frame_ms_p99": round(_pct(self._sec_intervals, 99), 2),
            "work_ms_p50": round(_pct(self._sec_works, 50), 2),
            "work_ms_p99": round(_pct(self._sec_works, 99), 2),
            "late_frames": self.late_frames,
            **{f"{k}_ms_p50": round(_pct(v, 50), 2) for k, v in self._phases.items()},
            "steps": {n: p.steps for n, p in self.pieces.items()},
            "steps_per_s": {n: round(p.steps_per_second(t, 1.0), 2) for n, p in self.pieces.items()},
            "step_count": {n: p.system.step_count for n, p in self.pieces.items()},
            "scene": self.director.current, "recording": self.writer is not None,
            "params": {g: {k: float(f"{v:.6g}") for k, v in vals.items()} for g, vals in self._snapshot.items()},
            "rss_mb": round(rss_bytes() / 2**20, 1),
        }
        line["guard"] = {n: p.guard.telemetry() for n, p in self.pieces.items() if p.guard is not None}
        if self.osc is not None:
            line["osc"] = {"messages": self.osc_stats()["messages"], "restarts": self.osc_restarts}
        errors = {n: p.error for n, p in self.pieces.items() if p.error}
        errors.update({f"{n} (display)": p.render_error for n, p in self.pieces.items()
                       if p.render_error and p.render_failures})
        if errors:
            line["errors"] = errors
        self._telemetry_file.write(json.dumps(line) + "\n")
        self._sec_intervals.clear()
        self._sec_works.clear()
        for v in self._phases.values():
            v.clear()

    def run(self) -> EngineReport:
        """Open, draw frames at the show's rate until stopped, close; returns what happened.

        Stops on SIGINT/SIGTERM, the window closing (ESC), or after `seconds`. Pacing: frame n is
        due at start + n / fps; a frame that starts late moves the schedule to now, so a hiccup
        costs frames, never a burst of hurried ones.
        """
        handlers = {}
        try:
            # Preparing can take minutes (base models): until the show runs, ctrl-C simply aborts.
            self.open()
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    handlers[sig] = signal.signal(sig, lambda *_: self.request_stop())
            period = 1.0 / self.fps
            start = self._time()
            self._t0 = start
            deadline = start
            while not self.should_stop:
                begin = self._time()
                if self._last_frame_start is not None:
                    iv = begin - self._last_frame_start
                    self._intervals.append(iv)
                    self._interval_sum += iv
                    self._interval_count += 1
                    self._sec_intervals.append(iv)
                self._last_frame_start = begin
                # The frame's time is its scheduled time: even steps while on schedule.
                self.frame(deadline - start)
                end = self._time()
                self._works.append(end - begin)
                self._sec_works.append(end - begin)
                self._telemetry(end - start)
                deadline += period
                if end > deadline:
                    self.late_frames += 1
                    deadline = end  # drop the lag instead of catching up
                else:
                    remaining = deadline - self._time()
                    if remaining > 0:
                        self._stop.wait(remaining)
            return self.close()
        finally:
            if not self._closed:
                self.close(final_checkpoint=True)
            for sig, h in handlers.items():
                signal.signal(sig, h)

    # -- closing ----------------------------------------------------------------------------------

    def close(self, final_checkpoint: bool = True) -> EngineReport:
        """Stop training, write the final checkpoints, finish the recording, stop OSC, close the window."""
        if self._closed:
            return self._report
        self._closed = True
        problems = []
        if self.trainer is not None and not self.trainer.stop():
            problems.append("the training thread did not stop; no final checkpoint")
            final_checkpoint = False
        if final_checkpoint:
            for p in self.pieces.values():
                try:
                    self._checkpoints.append(str(p.save()))
                except Exception as e:
                    problems.append(f"final checkpoint of {p.name} failed: {e}")
        for t in self._png_threads:
            t.join(10)
        try:
            if self.writer is not None:
                self.writer.close()
                self.writer = None
        except UnstableError as e:
            problems.append(str(e))
        if self.osc is not None:
            self.osc.stop()
        if self.compositor is not None:
            with contextlib.suppress(Exception):
                self.compositor.release()
        if self.window is not None:
            self.window.close()
        if self._telemetry_file is not None:
            self._telemetry_file.close()
        if self.device.type == "cpu":
            torch.set_num_threads(self._threads_before)
        elapsed = self._interval_sum
        self._report = EngineReport(
            frames=self.frames, seconds=round(elapsed, 3),
            fps=round(self._interval_count / elapsed, 2) if elapsed > 0 else 0.0,
            interval_p50_ms=round(_pct(self._intervals, 50), 2), interval_p99_ms=round(_pct(self._intervals, 99), 2),
            work_p50_ms=round(_pct(self._works, 50), 2), work_p99_ms=round(_pct(self._works, 99), 2),
            late_frames=self.late_frames,
            steps={n: p.steps for n, p in self.pieces.items()},
            steps_per_second={n: round(p.steps / elapsed, 2) if elapsed > 0 else 0.0 for n, p in self.pieces.items()},
            recordings=list(self._recordings), checkpoints=list(self._checkpoints),
            snapshots=list(self._snapshots), errors={n: p.error for n, p in self.pieces.items() if p.error})
        for line in problems:
            self.echo(f"live: {line}")
        return self._report

    def __enter__(self) -> "Engine":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
