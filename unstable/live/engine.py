"""The live engine (`unstable live SHOW`): a thin driver of the frame pipeline on the wall clock.

    engine = Engine(load_show("shows/demo.toml"), device=torch.device("cpu"), headless=True, seconds=10,
                    record="out.mp4")
    report = engine.run()     # blocks; SIGINT/SIGTERM stop it cleanly

The engine owns the loop and the frame call; the rest is split by responsibility:
the pieces (unstable.live.pieceset: systems, mirrors, panel sources, training, checkpoints), the
control surfaces (unstable.live.controls: OSC, OSCQuery and the page, writing only into the
parameter store), what their events do (unstable.live.actions: recording, stills, refreshes) and
the outputs (unstable.live.outputs: window, compositor and the frame sinks).

Threads, and who owns what:

- The render loop (the caller's thread, which owns the GL context) draws every frame: the show's
  timeline advances (one parameter snapshot, scene jumps, walk clocks; unstable.frame.timeline),
  the pipeline samples each shown piece's *sampling mirror* and composes (unstable.frame), then
  the frame goes to the sinks. Frames sit on the grid n / fps: a late frame drops the slots it ran
  into instead of hurrying the next ones (unstable.frame.timers); the timeline still advances
  through them (unstable.live.slots) and a recording repeats its last frame in them
  (unstable.live.recorder), so the recording stays on the show clock.
- One training thread steps the pieces under the show's budget (unstable.live.training), at a
  lower CPU priority, each step through the piece's guard; it copies trained weights into the
  mirrors (unstable.live.mirror) and writes the checkpoints. Each thread uses its own torch
  thread count (`training.threads` / `render_threads`; `unstable live` also sets
  OMP_WAIT_POLICY=PASSIVE before torch loads: spinning OpenMP teams starve the GL rasteriser).
- The OSC thread only writes into the parameter store; feedback goes out from its own thread
  (unstable.live.osc_link keeps it alive). PNG stills are written in short-lived threads.

Persistence: each piece's checkpoint holds its weights, optimisers, step, RNG and the live state
(walk phase, its parameter values, the show's scene and master fade); a restart resumes from it
unless `fresh` (unstable.live.pieces). Isolation: a piece whose sampling raises holds its last
frame while the others carry on; a training failure stops that piece alone; a dead OSC thread is
restarted on its port.
"""

from __future__ import annotations

import contextlib
import gc
import signal
import threading
import time
from typing import Callable

import numpy as np
import torch

from ..control.store import ParameterStore
from ..disk import MB
from ..frame.pipeline import FramePipeline, FrameResult
from ..frame.timeline import ShowTimeline
from ..frame.timers import WallTimer
from ..show import Show
from .actions import Actions
from .controls import Controls
from .options import LiveOptions
from .outputs import Outputs
from .pieceset import PieceSet
from .reporter import Reporter
from .slots import SlotClock
from .telemetry import FrameStats, LiveReport

__all__ = ["Engine", "freeze_startup_objects"]


def freeze_startup_objects() -> None:
    """Move every object alive when the show starts out of the garbage collector's sight.

    A live show holds some 300,000 long-lived objects (torch, numpy, aiohttp, the pieces); a full
    (generation 2) collection walks all of them with the GIL held, several frames' time, whenever
    OSC traffic or a training fault made enough objects survive to trigger one. Frozen
    (`gc.freeze`), they are never walked again, and a full collection costs what the show allocated
    since it started. The price: a reference cycle among these startup objects that later becomes
    garbage is not collected until the show closes (`Engine.close` unfreezes them), a bounded
    one-off amount.
    """
    gc.collect()
    gc.freeze()


class Engine:
    """A live show: open it, draw frames, close it. `run()` does all three with pacing and signals.

    Options (keywords, unstable.live.options.LiveOptions): `seconds`: stop after
    round(seconds x fps) frames (a headless run records exactly that many). `record`: an .mp4
    recorded from the first frame (preset h264_live), its automation beside it. `automation`: write
    the automation to this file (without recording video). `telemetry`: a JSON-lines file, one line
    per second. `osc_port` overrides the show's port, `web_port` its `[web] port`; `web=False`
    serves no control page or OSCQuery. `train`: False shows the pieces as they are (the show's
    `training.on` also decides). `time_source`: the wall clock's seconds (injectable for tests).
    """

    def __init__(self, show: Show, **options):
        self.show = show
        self.settings = show.settings
        self.options = LiveOptions(**options).resolved(show)
        self.fps = float(self.settings.fps)
        self.max_frames = self.options.max_frames(self.fps)
        self.run_dir = self.options.run_dir
        self.echo = self.options.echo
        self._time = self.options.time_source
        self.piece_set: PieceSet | None = None
        self.params: ParameterStore | None = None   # the parameter store every control writes into
        self.audio = None                   # the AudioModulator of a show that maps audio
        self.timeline: ShowTimeline | None = None
        self.slots: SlotClock | None = None
        self.controls: Controls | None = None
        self.presets = None                 # the show's PresetBank (run folder's presets/)
        self.outputs: Outputs | None = None
        self.actions: Actions | None = None
        self.pipeline: FramePipeline | None = None
        self.timer: WallTimer | None = None
        self.stats = FrameStats()
        self.frames = 0                     # frames drawn
        self.last_frame = 0                 # the number (grid slot) of the last frame drawn
        self.last_result: FrameResult | None = None  # its frame call's images, errors and timings
        self.snapshot: dict = {}            # the last frame's parameters, {group: {name: value}}
        self._stop = threading.Event()
        self._opened = self._closed = self._frozen = False
        self._report: LiveReport | None = None
        self._threads_before = torch.get_num_threads()
        self.reporter = Reporter(self)
        # Called with the engine after every frame, in the render thread (benchmarks, tests).
        self.frame_hooks: list[Callable] = []

    # -- what the parts hold ----------------------------------------------------------------------

    @property
    def pieces(self) -> dict:
        """{piece: LivePiece} (empty before opening)."""
        return self.piece_set.by_name if self.piece_set is not None else {}

    trainer = property(lambda self: self.piece_set.trainer if self.piece_set else None,
                       doc="The training thread (None when not training).")
    osc = property(lambda self: self.controls.osc if self.controls else None, doc="The show's OscLink, if any.")
    web_link = property(lambda self: self.controls.web_link if self.controls else None, doc="The show's WebLink.")
    web = property(lambda self: self.web_link.server if self.web_link else None, doc="The show's WebServer.")
    preview = property(lambda self: self.controls.preview if self.controls else None, doc="The page's preview sink.")
    recorder = property(lambda self: self.outputs.recorder if self.outputs else None, doc="The show's Recorder.")
    compositor = property(lambda self: self.outputs.compositor if self.outputs else None, doc="The compositor.")

    def read(self) -> np.ndarray:
        """The last composed frame, [H, W, 3] uint8 (a reused buffer: copy to keep it). In a window
        at the show's size the frame is composed into the window: read it in a sink before the
        window's, or headless (tests and benchmarks read headless shows)."""
        return self.outputs.read()

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
        s, o = self.settings, self.options
        if o.device.type == "cpu":
            torch.set_num_threads(s.training.render_threads)
        # Everything that can fail on a setting (panels, parameters, walk, OSC port, monitor)
        # fails before the slow preparation of the pieces.
        self.piece_set = piece_set = PieceSet(self.show, o.device, self.echo)
        self.params = ParameterStore(piece_set.groups)
        from ..audio.mapping import open_show_audio
        self.audio = open_show_audio(self.show, self.params, o.audio, echo=self.echo)
        self.timeline = ShowTimeline(self.show.resolved_scenes(), self.params, list(piece_set.systems), s.fps,
                                     loop=s.loop_scenes, start_values={n: e.params for n, e in s.pieces.items()},
                                     audio=self.audio, walk_bpm=self.show.walk_tempo)
        self.slots = SlotClock(self.timeline)
        self.controls = Controls(self.params, self.show, osc_port=o.osc_port, web_port=o.web_port, web=o.web,
                                 scene_pieces=piece_set.scene_pieces, piece_actions=piece_set.piece_actions)
        self.outputs = Outputs(self.show, headless=o.headless, fullscreen=o.fullscreen, monitor=o.monitor,
                               run_dir=self.run_dir, echo=self.echo)
        self.actions = Actions(self.params, s.actions, self.outputs, piece_set)
        from ..control.presets import PresetBank
        self.actions.presets = self.presets = PresetBank(self.params, self.run_dir / "presets")
        if self.web is not None:  # listed in OSCQuery and on the page, as saved now
            self.web.space.add_presets(self.presets.names)
        heard = getattr(self.audio, "input", None)  # a file the show plays goes into its recordings
        self.outputs.open_sinks(self.timeline, automation=o.automation, preview=self.controls.preview,
                                sound=heard.path if getattr(heard, "kind", None) == "file" else None,
                                take_still=self.actions.take_still,
                                panel_images=lambda: self.last_result.images if self.last_result else {})
        if o.record is not None:
            self.actions.record(o.record)
        self.stats = FrameStats(o.telemetry, max_bytes=int(s.disk.telemetry_max_mb * MB))
        self.timer = WallTimer(s.fps, self._time, sleep=self._stop.wait)
        from ..progress import progress_bar
        piece_set.prepare(self.run_dir, self.timeline, self.params, fresh=o.fresh, resume=o.resume,
                          reset_params=o.reset_params, progress=o.progress or progress_bar)
        # A failing piece holds its last frame (hold_failures): the show goes on.
        self.pipeline = FramePipeline(piece_set.sources, self.show.resolved_scenes(), self.outputs.compositor,
                                      hold_failures=True, look_ahead=s.look_ahead,
                                      walk_ahead=self.timeline.walk_times_ahead)
        self.timer.restart()
        if o.train:
            piece_set.start_training(lambda: self.snapshot or self.params.targets(), self.params)
        self.reporter.opened()

    # -- frames ---------------------------------------------------------------------------------

    def frame(self, now: float | None = None, number: int | None = None) -> None:
        """Draw one frame at frame-clock time `now` (default: frame `number` of the grid, or the
        wall clock's current slot). On the grid, the slots skipped since the last frame are
        advanced first, without pixels; an explicit `now` is a jump in time."""
        if not self._opened:
            self.open()
        if number is None:
            number = round(now * self.fps) if now is not None else int(self.timer.elapsed() * self.fps)
        self.last_frame = number
        held = self.slots.catch_up(number) if now is None else []
        self.outputs.recorder.begin_frame(number)
        state = self.slots.advance(number, now)
        self.snapshot = state.snapshot  # the training thread reads the newest one
        self.actions.act(held + state.actions)
        self.controls.follow(self.timeline.director.current)
        drawn = self.last_result = self.pipeline.frame(state)
        t_output = time.perf_counter()
        self.outputs.put(number)
        self.actions.show_recording()
        self.stats.phase("sample", drawn.sample_seconds)
        self.stats.phase("compose", drawn.compose_seconds)
        self.stats.phase("output", time.perf_counter() - t_output)
        self.frames += 1
        for hook in self.frame_hooks:
            hook(self)

    def request_stop(self) -> None:
        """Stop after the frame in progress (signal-safe)."""
        self._stop.set()

    @property
    def should_stop(self) -> bool:
        """Stop asked for, the window closed, or the timed show's frames drawn."""
        return self._stop.is_set() or (self.outputs is not None and self.outputs.should_close) or (
            self.max_frames is not None and self.frames >= self.max_frames)

    def run(self) -> LiveReport:
        """Open, draw frames at the show's rate until stopped, close; returns what happened.

        Stops on SIGINT/SIGTERM, the window closing (ESC), or after `seconds` (at slot
        round(seconds x fps): a recording holds exactly that many frames, however many were
        dropped). Pacing: frame n is due at start + n / fps; a frame that ends past the next slot
        drops the slots it ran into (the recording repeats its last frame in them).
        """
        handlers = {}
        try:
            # Preparing can take minutes (base models): until the show runs, ctrl-C simply aborts.
            self.open()
            if threading.current_thread() is threading.main_thread():
                for sig in (signal.SIGINT, signal.SIGTERM):
                    handlers[sig] = signal.signal(sig, lambda *_: self.request_stop())
            freeze_startup_objects()
            self._frozen = True
            self.timer.restart()
            n = 0
            while not self.should_stop and (self.max_frames is None or n < self.max_frames):
                self.timer.wait(n)
                if self._stop.is_set():
                    break
                begin = self._time()
                self.stats.frame_started(begin)
                self.frame(number=n)
                self.stats.frame_done(self._time() - begin)
                n = self.timer.next_after(n)
                if self.max_frames is not None and n >= self.max_frames:
                    # The last slots were dropped: the file still ends at the show's last slot,
                    # before the telemetry's line (it counts those repeats too).
                    self.recorder.fill(self.max_frames)
                self.reporter.tick(self.timer.elapsed())
            return self.close()
        finally:
            if not self._closed:
                self.close(final_checkpoint=True)
            for sig, h in handlers.items():
                signal.signal(sig, h)

    # -- closing --------------------------------------------------------------------------------

    def close(self, final_checkpoint: bool = True) -> LiveReport:
        """Stop training, write the final checkpoints, finish the recording, stop OSC, close the window."""
        if self._closed:
            return self._report
        self._closed = True
        problems: list[str] = []
        with contextlib.suppress(Exception):
            self.reporter.last()
        if self.piece_set is not None:
            self.piece_set.close(final_checkpoint, problems)
        if self.outputs is not None:
            self.outputs.close_recorder()
        if self.controls is not None:
            self.controls.stop()
        if self.audio is not None:
            self.audio.close()
        if self.outputs is not None:
            self.outputs.close()
        self.stats.close()
        if self.options.device.type == "cpu":
            torch.set_num_threads(self._threads_before)
        if self._frozen:
            gc.unfreeze()  # the process goes on (a test, a notebook): its objects are collectable again
        self._report = self.report()
        for line in problems:
            self.echo(f"live: {line}")
        return self._report

    def report(self) -> LiveReport:
        """What the run did so far."""
        return self.reporter.report()

    def __enter__(self) -> "Engine":
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
