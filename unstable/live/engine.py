"""The live engine (`unstable live SHOW`): a thin driver of the frame pipeline on the wall clock.

    engine = Engine(load_show("shows/demo.toml"), device=torch.device("cpu"), headless=True, seconds=10,
                    record="out.mp4")
    report = engine.run()     # blocks; SIGINT/SIGTERM stop it cleanly

Threads, and who owns what:

- The render loop (the caller's thread, which owns the GL context) draws every frame: the show's
  timeline advances (one parameter snapshot, scene jumps, walk clocks; unstable.frame.timeline),
  the pipeline samples each shown piece's *sampling mirror* and composes (unstable.frame), then
  the frame goes to the window, the recording and stills. Frames sit on the grid n / fps: a late
  frame drops the slots it ran into instead of hurrying the next ones (unstable.frame.timers);
  the timeline still advances through them (unstable.live.slots) and a recording repeats its last
  frame in them (unstable.live.recorder), so the recording stays on the show clock.
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

import functools
import threading
import time
from typing import Mapping

import torch

from ..control.store import ParameterStore
from ..schema import PIECE_ACTIONS, SHOW
from ..frame.sources import PanelSource, make_walk
from ..frame.timeline import ShowTimeline
from ..guard import TrainingGuard
from ..show import display_name
from ..show_systems import build_systems, piece_actions, show_groups
from .mirror import SamplingMirror
from .pieces import prepare_pieces
from .session import Session
from .slots import SlotClock
from .telemetry import LiveReport, rss_bytes
from .training import LivePiece, Trainer

__all__ = ["Engine"]


class Engine(Session):
    """A live show: open it, draw frames, close it. `run()` does all three with pacing and signals.

    `seconds`: stop after round(seconds x fps) frames (a headless run records exactly that many).
    `record`: an .mp4 recorded from the first frame (preset h264_live), its automation beside it.
    `automation`: write the automation to this file (without recording video).
    `telemetry`: a JSON-lines file, one line per second. `osc_port` overrides the show's port.
    `web_port` overrides the show's `[web] port`; `web=False` serves no control page or OSCQuery.
    `train`: False shows the pieces as they are (the show's `training.on` also decides).
    `time_source`: the wall clock's seconds (injectable for tests).
    """

    # Seconds the opening waits for the first directions and clusters (0.4 s on a quiet CPU, a few
    # seconds on a busy one); past it the show starts and they come in when they are ready.
    FIRST_COMPUTATIONS_TIMEOUT = 60.0

    # -- opening --------------------------------------------------------------------------------

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
        walks = {name: make_walk(name, sy, s.walk, self.device, self.show.source) for name, sy in systems.items()}
        self.params = ParameterStore(groups)
        available = [display_name(n, q) for n, sy in systems.items() for q in sy.panels()]
        self.scene_pieces = [sorted({c.split("/")[0] for c in sc.layout.panel_names(available) if c})
                             for sc in self.show.resolved_scenes()]
        self.piece_actions = piece_actions(systems)
        from ..audio.mapping import open_show_audio
        self.audio = open_show_audio(self.show, self.params, self.audio_file, echo=self.echo)
        self.timeline = ShowTimeline(self.show.resolved_scenes(), self.params, list(systems), s.fps,
                                     loop=s.loop_scenes, start_values={n: e.params for n, e in s.pieces.items()},
                                     audio=self.audio)
        self.slots = SlotClock(self.timeline)
        self.open_outputs()
        from ..progress import progress_bar
        states = prepare_pieces(self.show, systems, self.run_dir, self.device, fresh=self.fresh,
                                resume=self.resume, progress=self.progress or progress_bar, echo=self.echo)
        if self.device.type == "cuda":
            self._train_stream = torch.cuda.Stream(self.device)
        sources = {}
        for name, system in systems.items():
            mirror = SamplingMirror(system, self._train_stream, name=name, echo=self.echo)
            panels = {display_name(name, p): p for p in system.panels()}
            sources[name] = PanelSource(name, system, mirror, walks[name], panels)
            self.pieces[name] = LivePiece(
                name=name, path=self.show.piece_paths[name], system=system, mirror=mirror,
                source=sources[name], clock=self.timeline.clocks[name], share=s.pieces[name].share,
                run_dir=self.run_dir / name, guard=TrainingGuard(system, s.guard, name))
            self.pieces[name].state_extra = functools.partial(self._live_state, self.pieces[name])
        self._restore_live_states(states)
        # The first directions and clusters (requested when each mirror was made) are computed by
        # the mirrors' workers; before the first frame they are waited for, so that a show starting
        # bent is bent from frame 0, as its render is. Later requests never hold a frame.
        for p in self.pieces.values():
            if not p.mirror.wait_computed(self.FIRST_COMPUTATIONS_TIMEOUT):
                self.echo(f"live: {p.name}: its directions or clusters are still computing after "
                          f"{self.FIRST_COMPUTATIONS_TIMEOUT:g} s; the show starts without them")
        self.start_pipeline(sources)
        if self.train:
            self.trainer = Trainer(list(self.pieces.values()), s.training, lambda: self._snapshot or
                                   self.params.state(), self.device, self._train_stream, s.guard).start()
        where = f", OSC on {self.osc.host}:{self.osc.port}" if self.osc else ""
        for url in self.web_link.urls() if self.web_link is not None else ():
            self.echo(f"live: control page and OSCQuery at {url}")
        cap = s.disk.automation_max_mb
        self.echo(f"live: {self.show.name} {s.size[0]}x{s.size[1]} at {self.fps:g} fps on {self.device}"
                  f"{where}, {'training' if self.train else 'not training'}; "
                  f"{f'automation files up to {cap:g} MB' if cap else 'automation files uncapped'}; "
                  f"run folder {self.run_dir}")

    # -- live state (saved with each piece's weights) -------------------------------------------

    def _live_state(self, p: LivePiece) -> dict:
        """What a restart needs besides the weights: the piece's walk phase and live parameter
        values, and the show's (scene, master fade). Plain floats: loads with weights_only."""
        state = self.params.state()
        # The phase as of the last frame, read without advancing: the render thread owns the clock.
        return {"walk": {"phase": float(p.clock.phase), "speed": float(p.clock.speed)},
                "params": {k: float(v) for k, v in state.get(p.name, {}).items()},
                "learning_rate_is_scale": True,
                "show": {k: float(v) for k, v in state.get(SHOW, {}).items() if k != "record"},
                "frame_time": float(self.timeline.now)}

    def _restore_live_states(self, states: Mapping[str, dict]) -> None:
        show_state = None
        for name, live in states.items():
            if not isinstance(live, dict):
                continue
            p = self.pieces[name]
            try:
                p.clock.load_state_dict(live["walk"])
            except (KeyError, TypeError, ValueError):
                pass
            if isinstance(live.get("params"), dict) and not self.reset_params:
                values = dict(live["params"])
                if not live.get("learning_rate_is_scale") and values.pop("learning_rate", None) is not None:
                    # Saved before learning_rate became a multiplier of the piece's rate everywhere:
                    # an absolute Adam rate would be clamped to 0.01x. Start from the piece's own rate.
                    self.echo(f"live: {name}: the saved learning_rate was an absolute rate (older format); "
                              "it starts at 1 x the piece's rate")
                self.params.update({name: values})  # unknown names and bad values are skipped
            if not self.reset_params:
                show_state = live.get("show") if isinstance(live.get("show"), dict) else show_state
        if show_state:
            scene = show_state.get("scene")
            if scene is not None and int(scene) != self.timeline.director.current:
                self.timeline.director.go(int(scene), 0.0)
            self.params.update({SHOW: {k: v for k, v in show_state.items() if k not in ("scene", "record")}})
        if states:
            self.params.settle()  # resumed values hold from the first frame, no glide from the defaults

    # -- actions --------------------------------------------------------------------------------

    def _act(self, events, frame: int) -> None:
        """Actions of this frame: recording on/off, stills (scenes are the timeline's), and refreshing
        a piece's latent directions or channel clusters.

        Bounded (`[actions]`): within `record_min_interval` of the last start or stop, and within
        `still_min_interval` of the last still, requests only update what is wanted; the newest
        wish is applied once the interval is over, so a burst of requests is one action. A still
        writes checkpoints at most every `still_checkpoint_every` seconds."""
        for ev in events:
            if ev.kind == "record":
                self._want_record = ev.value is not None and ev.value >= 0.5
            elif ev.kind == "still":
                self._still_asked = True
            elif ev.kind in PIECE_ACTIONS and ev.piece in self.pieces:
                # Only asked for here: the mirror's worker recomputes from a snapshot of the sampling
                # copy (the trained weights as of the last sync), coalesced and rate-limited, and a
                # later sample swaps the result in between frames (unstable.live.mirror).
                self.pieces[ev.piece].mirror.refresh(ev.kind.split("/")[0])
        a = self.settings.actions
        now = time.monotonic()
        if self._want_record is not None:
            if self._want_record == self.recorder.recording:
                self._want_record = None
            elif now - self._record_changed >= a.record_min_interval:
                if self._want_record:
                    self.recorder.record()
                else:
                    self.recorder.stop()
                self._record_changed = now
                self._want_record = None
        if self._still_asked and now - self._last_still >= a.still_min_interval:
            self._still_asked = False
            self._last_still = now
            self._want_still = True

    def _show_recording(self) -> None:
        """Keep the show's `record` value (and so the controllers' toggles) true to the recorder,
        which may have stopped by itself (a full disk)."""
        if self._want_record is not None:
            return
        on = 1 if self.recorder.recording else 0
        if self.params.get(SHOW, "record") != on:
            self.params.set(SHOW, "record", on)

    def _still(self, frame: int) -> None:
        self.recorder.still(self.compositor.read(), frame)
        now = time.monotonic()
        if now - self._last_still_checkpoint < self.settings.actions.still_checkpoint_every:
            return
        self._last_still_checkpoint = now
        if self.trainer is not None and self.trainer.alive:
            for p in self.pieces.values():
                p.checkpoint_requested = True  # the training thread owns the weights: it saves
        elif self._still_saver is None or not self._still_saver.is_alive():
            # Nothing trains, so the weights hold still: written beside the frames, not in one
            # (a checkpoint is tens of ms; a frame is 33). The final checkpoint waits for it.
            self._still_saver = threading.Thread(target=self._save_pieces, name="unstable-still-checkpoint",
                                                 daemon=True)
            self._still_saver.start()

    def _save_pieces(self) -> None:
        for p in self.pieces.values():
            try:
                p.save()
            except Exception as e:
                self.echo(f"live: checkpoint of {p.name} failed: {e}")

    # -- frames ---------------------------------------------------------------------------------

    def frame(self, now: float | None = None, number: int | None = None) -> None:
        """Draw one frame at frame-clock time `now` (default: frame `number` of the grid, or the
        wall clock's current slot). On the grid, the slots skipped since the last frame are
        advanced first, without pixels; an explicit `now` is a jump in time."""
        if not self._opened:
            self.open()
        if number is None:
            number = round(now * self.fps) if now is not None else int(self.timer.elapsed() * self.fps)
        self.frames_drawn = number
        held = self.slots.catch_up(number) if now is None else []
        self.recorder.begin_frame(number)
        state = self.slots.advance(number, now)
        self._snapshot = state.snapshot  # the training thread reads the newest one
        self._act(held + state.actions, number)
        if self.web_link is not None:
            self.web_link.follow(self.timeline.director.current)
        t_sample = time.perf_counter()
        images = self.pipeline.images(state)
        t_compose = time.perf_counter()
        self.pipeline.compose(state, images)
        t_output = time.perf_counter()
        if self._want_still:  # read before the window's swap (the sinks end with it)
            self._want_still = False
            self._still(number)
        for sink in self.sinks:
            sink.put(number, self.compositor)
        self._show_recording()
        t_end = time.perf_counter()
        self.stats.phase("sample", t_compose - t_sample)
        self.stats.phase("compose", t_output - t_compose)
        self.stats.phase("output", t_end - t_output)
        self.frames += 1
        for hook in self.frame_hooks:
            hook(self)

    def _telemetry_line(self, now: float) -> dict:
        t = time.perf_counter()
        line = {
            "t": round(now, 3), "frame": self.frames, "late_frames": self.timer.late,
            "dropped_slots": self.timer.dropped, "repeated_frames": self.recorder.repeated,
            "steps": {n: p.steps for n, p in self.pieces.items()},
            "steps_per_s": {n: round(p.steps_per_second(t, 1.0), 2) for n, p in self.pieces.items()},
            "step_count": {n: p.system.step_count for n, p in self.pieces.items()},
            "scene": self.timeline.director.current, "recording": self.recorder.writer is not None,
            "params": {g: {k: float(f"{v:.6g}") for k, v in vals.items()} for g, vals in self._snapshot.items()},
            "rss_mb": round(rss_bytes() / 2**20, 1),
            "guard": {n: p.guard.telemetry() for n, p in self.pieces.items() if p.guard is not None},
        }
        if self.osc is not None:
            line["osc"] = {"messages": self.osc.stats()["messages"], "restarts": self.osc.restarts}
        errors = {n: p.error for n, p in self.pieces.items() if p.error}
        errors.update({f"{n} (display)": p.source.error for n, p in self.pieces.items()
                       if p.source.error and p.source.failures})
        if errors:
            line["errors"] = errors
        return line

    def _losses(self) -> dict:
        out = {}
        for n, p in self.pieces.items():
            vals = {k: float(v) for k, v in dict(p.last_scalars).items() if isinstance(v, (int, float))}
            out[n] = {k: v for k, v in vals.items() if v == v and abs(v) != float("inf")}  # JSON has no NaN
        return out

    def report(self) -> LiveReport:
        """What the run did so far."""
        summary = self.stats.summary()
        elapsed = summary["seconds"]
        return LiveReport(
            frames=self.frames, late_frames=self.timer.late if self.timer else 0, **summary,
            dropped_slots=self.timer.dropped if self.timer else 0,
            repeated_frames=self.recorder.repeated if self.recorder else 0,
            steps={n: p.steps for n, p in self.pieces.items()},
            steps_per_second={n: round(p.steps / elapsed, 2) if elapsed > 0 else 0.0 for n, p in self.pieces.items()},
            recordings=list(self.recorder.recordings) if self.recorder else [],
            checkpoints=list(self._checkpoints),
            stills=list(self.recorder.stills) if self.recorder else [],
            errors={n: p.error for n, p in self.pieces.items() if p.error})

    def _close_pieces(self, final_checkpoint: bool, problems: list[str]) -> None:
        if self.trainer is not None and not self.trainer.stop():
            problems.append("the training thread did not stop; no final checkpoint")
            final_checkpoint = False
        for p in self.pieces.values():
            if not p.mirror.close():
                problems.append(f"{p.name}: its directions/clusters worker did not stop")
        if self._still_saver is not None:
            self._still_saver.join()  # one writer of each checkpoint file at a time
        if final_checkpoint:
            for p in self.pieces.values():
                try:
                    self._checkpoints.append(str(p.save()))
                except Exception as e:
                    problems.append(f"final checkpoint of {p.name} failed: {e}")
