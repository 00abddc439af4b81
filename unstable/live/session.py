"""What every live show has around its frames: options, the window and compositor, OSC, the
recorder, telemetry, the paced loop with its signals, and closing in the right order."""

from __future__ import annotations

import abc
import contextlib
import gc
import logging
import math
import os
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from ..disk import MB, free_bytes
from ..errors import UnstableError
from ..frame.pipeline import FramePipeline
from ..frame.sinks import Sink, WindowSink
from ..frame.timers import WallTimer
from ..show import Show
from .recorder import Recorder
from .telemetry import FrameStats, LiveReport

log = logging.getLogger("unstable.live")

__all__ = ["Session", "freeze_startup_objects"]


def freeze_startup_objects() -> None:
    """Move every object alive when the show starts out of the garbage collector's sight.

    A live show holds ~300,000 long-lived objects (torch, numpy, aiohttp, the pieces); a full
    (generation 2) collection walks all of them, about 150 ms on the 2-core CPU box with the GIL
    held: four or five dropped frames whenever OSC traffic or a training fault had made enough
    objects survive to trigger one. Frozen (`gc.freeze`), they are never walked again, and a full
    collection costs what the show allocated since it started. The price: a reference cycle among
    these startup objects that later becomes garbage is not collected until the show closes
    (`Session.close` unfreezes them), a bounded one-off amount.
    """
    gc.collect()
    gc.freeze()


class Session(abc.ABC):
    """The frame-independent half of a live show; `Engine` adds the pieces and the frame."""

    def __init__(self, show: Show, *, device: torch.device = torch.device("cpu"), headless: bool = False,
                 fullscreen: bool | None = None, monitor: int | None = None, seconds: float | None = None,
                 record: str | os.PathLike | None = None, automation: str | os.PathLike | None = None,
                 telemetry: str | os.PathLike | None = None, osc_port: int | None = None,
                 web_port: int | None = None, web: bool = True,
                 run_dir: str | os.PathLike | None = None, fresh: bool = False, resume: bool = False,
                 reset_params: bool = False, audio: str | os.PathLike | None = None,
                 train: bool = True, time_source: Callable[[], float] = time.perf_counter,
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
        self.automation_path = Path(automation) if automation is not None else None
        self.telemetry_path = telemetry
        self.osc_port = osc_port
        self.web_port = web_port
        self.web_on = web and self.settings.web.enabled
        self.web_link = None            # the OSCQuery server and control page (web_link.py)
        self._frozen = False            # the startup objects are frozen out of the collector (run)
        self.scene_pieces: list[list[str]] = []  # the pieces each scene shows (the OSCQuery tree follows)
        self.piece_actions: dict[str, list[str]] = {}
        self.run_dir = Path(run_dir) if run_dir is not None else Path("runs") / "live" / show.name
        if fresh and resume:
            raise UnstableError("--fresh and --resume contradict each other: choose one")
        self.fresh = fresh
        self.reset_params = reset_params  # resume the weights, not the live parameter values
        self.resume = resume
        self.train = train and self.settings.training.on
        self._time = time_source
        self.echo = echo
        self.progress = progress
        if self.record_path is not None and self.record_path.suffix.lower() != ".mp4":
            raise UnstableError(f"--record {self.record_path}: recordings are .mp4 files (preset h264_live)")
        self.audio_file = audio  # --audio: play the [[audio.map]] from this file instead
        self.audio = None        # the AudioModulator of a show that maps audio
        self.pieces: dict = {}
        self.params = None
        self.timeline = None
        self.pipeline: FramePipeline | None = None
        self.osc = None
        self.window = None
        self.compositor = None
        self.trainer = None
        self.recorder: Recorder | None = None
        self.sinks: list[Sink] = []
        self.timer: WallTimer | None = None
        self.slots = None               # unstable.live.slots.SlotClock: the timeline through dropped slots
        self.stats = FrameStats()
        self.frames = 0           # frames drawn
        self.frames_drawn = 0     # the number (grid slot) of the last frame
        self._snapshot: dict = {}
        self._want_still = False        # a still is due this frame
        self._still_asked = False       # a still was asked for (applied at most every still_min_interval)
        self._last_still = -math.inf
        self._last_still_checkpoint = -math.inf
        self._still_saver: threading.Thread | None = None   # a still's checkpoint when nothing trains
        self._want_record: bool | None = None  # the newest recording wish not applied yet
        self._record_changed = -math.inf
        self._stop = threading.Event()
        self._opened = False
        self._closed = False
        self._report = None
        self._checkpoints: list[str] = []
        self._threads_before = torch.get_num_threads()
        self._train_stream = None
        self._next_telemetry = 1.0
        self._telemetry_failures: set[str] = set()
        # Called with the engine after every frame, in the render thread (benchmarks, tests).
        self.frame_hooks: list[Callable] = []

    # -- opening --------------------------------------------------------------------------------

    def open(self):
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

    @abc.abstractmethod
    def _open(self) -> None:
        """Build the pieces, then `open_outputs()` and `start_pipeline(sources)`."""

    def open_outputs(self) -> None:
        """OSC, the window (black while the pieces prepare), the compositor, recorder and telemetry."""
        s = self.settings
        if s.osc.enabled:
            from .osc_link import OscLink
            self.osc = OscLink(self.params, s.osc, self.osc_port).start()
        if self.web_on:
            from .web_link import WebLink
            self.web_link = WebLink(self.params, self.show, s.web, port=self.web_port, osc=self.osc,
                                    scene_pieces=self.scene_pieces, piece_actions=self.piece_actions)
        from ..display.compositor import Compositor
        from ..display.layout import Layout, Scene
        from ..display.window import HeadlessWindow, open_window
        if self.headless:
            self.window = HeadlessWindow(s.size, reason="--headless")
        else:
            self.window = open_window(s.size, fullscreen=self.fullscreen, monitor=self.monitor,
                                      title=f"unstable: {self.show.name}", vsync=s.vsync, fallback_headless=True)
            if self.window.headless:
                self.echo(f"live: no window ({self.window.reason}); running headless")
        self.compositor = Compositor(self.window.ctx, s.size)
        self.compositor.draw_into(self.window)  # at the show's own size: no second pass to present it
        if not self.window.headless:  # black while the pieces prepare (base models can take minutes)
            self.compositor.render(Scene({}, Layout(panels=("",))), fade=0.0)
            self.compositor.present(self.window)
            self.window.swap()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        d = s.disk
        heard = getattr(self.audio, "input", None)  # a file the show plays goes into its recordings
        self.recorder = Recorder(self.timeline, show=self.show.name, size=s.size, fps=s.fps, run_dir=self.run_dir,
                                 automation=self.automation_path, min_free=int(d.min_free_mb * MB),
                                 stills_keep=d.stills_keep, recordings_budget=int(d.recordings_budget_mb * MB),
                                 sound=heard.path if getattr(heard, "kind", None) == "file" else None,
                                 automation_max=int(d.automation_max_mb * MB))
        if self.record_path is not None:
            self.recorder.record(self.record_path)
            self.params.set("show", "record", 1)
            self._record_changed = time.monotonic()
        free = free_bytes(self.run_dir)
        if d.min_free_mb and free < d.min_free_mb * MB:
            self.echo(f"live: only {free / MB:.0f} MB free on the disk of {self.run_dir} (below [disk] min_free_mb = "
                      f"{d.min_free_mb:g}): no recordings or stills until there is more")
        self.stats = FrameStats(self.telemetry_path, max_bytes=int(d.telemetry_max_mb * MB))
        # A new output is a new sink. The window goes last: its swap ends the frame, and a frame
        # composed into the window is read back (recording, preview) before it.
        self.sinks = [self.recorder]
        if self.preview is not None:
            self.sinks.append(self.preview)
        self.sinks.append(WindowSink(self.window))
        self.timer = WallTimer(self.settings.fps, self._time, sleep=self._stop.wait)

    @property
    def web(self):
        """The WebServer of the show (None without one)."""
        return self.web_link.server if self.web_link is not None else None

    @property
    def preview(self):
        """The control page's preview sink (None without a web server)."""
        return self.web_link.preview if self.web_link is not None else None

    def start_pipeline(self, sources) -> None:
        """The frame pipeline over the pieces' sources (a failing piece holds its last frame)."""
        self.pipeline = FramePipeline(sources, self.show.resolved_scenes(), self.compositor, hold_failures=True,
                                      look_ahead=self.settings.look_ahead, walk_ahead=self.timeline.walk_times_ahead)
        self.timer.restart()

    # -- frames ---------------------------------------------------------------------------------

    @property
    def snapshot(self) -> dict:
        """The parameter snapshot of the last frame ({group: {name: value}})."""
        return self._snapshot

    def read(self) -> np.ndarray:
        """The last composed frame, [H, W, 3] uint8 (a reused buffer: copy to keep it). In a window
        at the show's size the frame is composed into the window: read it in a sink before the
        window's, or headless (tests and benchmarks read headless shows)."""
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
        if self.osc is not None:
            self.osc.watch()
        self._next_telemetry = math.floor(now) + 1.0
        try:
            line = self._telemetry_line(now)
            timing = self.stats.second(line)
            if self.web_link is not None:
                self.web_link.telemetry({**timing, **line, "losses": self._losses()})
        except Exception as e:  # a report must never end the show it reports on
            kind = f"{type(e).__name__}: {e}"[:200]
            if kind not in self._telemetry_failures:  # once per kind of failure, not once a second
                self._telemetry_failures.add(kind)
                log.warning("telemetry: this second's line failed (%s); the show goes on", kind, exc_info=True)

    def run(self):
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
                end = self._time()
                self.stats.frame_done(end - begin)
                n = self.timer.next_after(n)
                if self.max_frames is not None and n >= self.max_frames:
                    # The last slots were dropped: the file still ends at the show's last slot,
                    # before the telemetry's line (it counts those repeats too).
                    self.recorder.fill(self.max_frames)
                self._telemetry(self.timer.elapsed())
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
        if self.stats is not None and self.stats.pending and self.timer is not None:
            # The last, partial second gets its line too (a show shorter than a second gets one).
            with contextlib.suppress(Exception):
                self.stats.second(self._telemetry_line(self.timer.elapsed()))
        self._close_pieces(final_checkpoint, problems)
        if self.recorder is not None:
            self.recorder.close()  # its problems were logged as they happened, one line each
        if self.osc is not None:
            self.osc.stop()
        if self.web_link is not None:
            self.web_link.stop()
        if self.audio is not None:
            self.audio.close()
        if self.compositor is not None:
            with contextlib.suppress(Exception):
                self.compositor.release()
        if self.window is not None:
            self.window.close()
        self.stats.close()
        if self.device.type == "cpu":
            torch.set_num_threads(self._threads_before)
        if self._frozen:
            gc.unfreeze()  # the process goes on (a test, a notebook): its objects are collectable again
        self._report = self.report()
        for line in problems:
            self.echo(f"live: {line}")
        return self._report

    def _losses(self) -> dict:
        """{piece: its last training step's scalars} for the page's telemetry."""
        return {}

    @abc.abstractmethod
    def _close_pieces(self, final_checkpoint: bool, problems: list[str]) -> None:
        """Stop training and write the final checkpoints (problems: one line each)."""

    @abc.abstractmethod
    def report(self) -> LiveReport:
        """What the run did so far."""

    @abc.abstractmethod
    def _telemetry_line(self, now: float) -> dict:
        """One second's telemetry (the frame timing is added by FrameStats)."""

    def __enter__(self):
        return self.open()

    def __exit__(self, *exc) -> None:
        self.close()
