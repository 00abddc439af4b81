"""The show's pieces while it runs: their systems and walks, sampling mirrors and panel sources, the
training thread that steps them, and their checkpoints (periodic, on a still, at the end)."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Callable, Mapping

import torch

from ..frame.sources import PanelSource, load_run_into, make_walk
from ..guard import TrainingGuard
from ..schema import SHOW
from ..show import Show, display_name
from ..show_systems import build_systems, piece_actions, show_groups
from .keeping import LiveKeeper
from .mirror import SamplingMirror
from .pieces import live_state, prepare_pieces, restore_live_states
from .train_process import TrainingProcess
from .training import LivePiece, Trainer

__all__ = ["PieceSet"]


class PieceSet:
    """Builds the show's systems (everything that can fail on a setting fails here, before the slow
    preparation), then prepares and resumes them (`prepare`), trains them (`start_training`) and
    writes their checkpoints. `by_name`: {piece: LivePiece}."""

    # Seconds the opening waits for the first directions and clusters (under a second on a quiet
    # CPU, a few on a busy one); past it the show starts and they come in when they are ready.
    FIRST_COMPUTATIONS_TIMEOUT = 60.0

    def __init__(self, show: Show, device: torch.device, echo: Callable[[str], None]):
        self.show = show
        self.device = device
        self.echo = echo
        self.systems = build_systems(show, device)
        self.groups = show_groups(show, self.systems)
        show.check_systems({n: sy.panels() for n, sy in self.systems.items()},
                           {n: g for n, g in self.groups.items() if n != SHOW})
        self.walks = {name: make_walk(name, sy, show.settings.walk, device, show.show_file)
                      for name, sy in self.systems.items()}
        available = [display_name(n, q) for n, sy in self.systems.items() for q in sy.panels()]
        # The pieces each scene shows (the OSCQuery tree follows the scene).
        self.scene_pieces = [sorted({c.split("/")[0] for c in sc.layout.panel_names(available) if c})
                             for sc in show.resolved_scenes()]
        self.piece_actions = piece_actions(self.systems)
        self.by_name: dict[str, LivePiece] = {}
        self.trainer: Trainer | None = None
        self.checkpoints: list[str] = []   # the final checkpoints written
        self._train_stream = None
        self._saver: threading.Thread | None = None   # a still's checkpoint when nothing trains

    def prepare(self, run_dir: Path, timeline, params, *, fresh: bool, resume: bool, reset_params: bool,
                progress: Callable) -> None:
        """Prepare each system (base models), resume it from `run_dir` unless `fresh` (with the live
        state saved beside its weights: walk clock, and unless `reset_params` its values in the
        store `params`), give it its mirror, panel source and the walk clock of `timeline`, and
        wait for its first directions and clusters."""
        saved = prepare_pieces(self.show, self.systems, run_dir, self.device, fresh=fresh, resume=resume,
                               progress=progress, echo=self.echo)
        if self.device.type == "cuda":
            self._train_stream = torch.cuda.Stream(self.device)
        s = self.show.settings
        for name, system in self.systems.items():
            mirror = SamplingMirror(system, self._train_stream, name=name, echo=self.echo,
                                    refresh_interval=s.actions.refresh_min_interval)
            panels = {display_name(name, p): p for p in system.panels()}
            piece = LivePiece(name=name, path=self.show.piece_paths[name], system=system, mirror=mirror,
                              source=PanelSource(name, system, mirror, self.walks[name], panels),
                              clock=timeline.clocks[name], share=s.pieces[name].share, run_dir=run_dir / name,
                              guard=TrainingGuard(system, s.guard, name))
            piece.live_state = (lambda p=piece: live_state(p, params, timeline))
            keeper = self.show.keeper(name)
            if keeper is not None:
                piece.keeper = LiveKeeper(name, system, keeper, params, perturb=piece.guard.perturb)
                piece.keeper.load_state_dict((saved.get(name) or {}).get("keeper"))  # its last probe, if saved
            self.by_name[name] = piece
        restore_live_states(saved, timeline.clocks, params, timeline, reset_params=reset_params, echo=self.echo)
        self.wait_computed()

    def wait_computed(self) -> None:
        """Wait for the first directions and clusters (asked for when each mirror was made), so that
        a show starting bent is bent from frame 0, as its render is. Later requests never hold a frame."""
        for p in self.by_name.values():
            if not p.mirror.wait_computed(self.FIRST_COMPUTATIONS_TIMEOUT):
                self.echo(f"live: {p.name}: its directions or clusters are still computing after "
                          f"{self.FIRST_COMPUTATIONS_TIMEOUT:g} s; the show starts without them")

    @property
    def sources(self) -> dict[str, PanelSource]:
        """{piece: its panel source}, what the frame pipeline samples."""
        return {n: p.source for n, p in self.by_name.items()}

    def start_training(self, snapshot: Callable[[], Mapping[str, Mapping[str, float]]], params=None) -> None:
        """Start training: in a process of its own on a CPU (`[training] process`, the default), else
        the training thread; it reads the newest parameter snapshot through `snapshot()`, and a
        process's keepers write into the store `params`."""
        s = self.show.settings
        pieces = list(self.by_name.values())
        if s.training.process and self.device.type == "cpu" and params is not None:
            self.trainer = TrainingProcess(pieces, s.training, s.guard, params, snapshot, self.device).start()
        else:
            from .. import compiled
            if compiled.requested():  # a compile would hold the show's own process up for minutes
                self.echo("live: UNSTABLE_COMPILE=1 compiles in a CPU show's training process; this show trains "
                          "on a thread of its own (a GPU, or [training] process = false), eagerly")
            self.trainer = Trainer(pieces, s.training, snapshot, self.device, self._train_stream, s.guard).start()

    @property
    def in_process(self) -> bool:
        """Whether the pieces train in a process of their own."""
        return isinstance(self.trainer, TrainingProcess)

    def checkpoint_soon(self) -> None:
        """Write every piece's checkpoint without holding a frame: the training thread does it when it
        runs (it owns the weights); otherwise a thread of its own (a checkpoint write can take
        longer than a frame)."""
        if self.in_process and self.trainer.alive:
            self.trainer.request_checkpoint()
        elif self.trainer is not None and self.trainer.alive:
            for p in self.by_name.values():
                p.checkpoint_requested = True
        elif self.in_process:
            return  # the process is gone: its last checkpoint stands (the show's copies are the opening's)
        elif self._saver is None or not self._saver.is_alive():
            self._saver = threading.Thread(target=self._save_all, name="unstable-still-checkpoint", daemon=True)
            self._saver.start()

    def _take_back(self, paths: list[str], problems: list[str]) -> None:
        """Load the training process's final checkpoints into the show's copies of the pieces, so
        that what the show holds when it ends is what was trained (as with the thread)."""
        for p in self.by_name.values():
            path = p.run_dir / "checkpoint.pt" if p.run_dir is not None else None
            if path is None or str(path) not in paths:
                continue
            try:
                load_run_into(p.system, path, self.device)
            except Exception as e:
                problems.append(f"{p.name}: its final checkpoint could not be read back: {e}")

    def _save_all(self) -> None:
        for p in self.by_name.values():
            try:
                p.save()
            except Exception as e:
                self.echo(f"live: checkpoint of {p.name} failed: {e}")

    def telemetry(self, t: float) -> dict:
        """The pieces' part of a second's telemetry line (`t`: perf_counter now)."""
        def rate(p):  # a training process counts its steps' times itself
            return p.remote.get("steps_per_s", 0.0) if p.remote is not None else round(p.steps_per_second(t, 1.0), 2)
        return {"steps": {n: p.steps for n, p in self.by_name.items()},
                "steps_per_s": {n: rate(p) for n, p in self.by_name.items()},
                "step_count": {n: p.system.step_count for n, p in self.by_name.items()}}

    def guards(self) -> dict:
        """{piece: its training guard's telemetry}."""
        if self.in_process:
            return {n: p.remote["guard"] for n, p in self.by_name.items() if (p.remote or {}).get("guard")}
        return {n: p.guard.telemetry() for n, p in self.by_name.items() if p.guard is not None}

    def keepers(self) -> dict:
        """{piece: its keeper's telemetry} for the pieces the show keeps."""
        if self.in_process:
            return {n: p.remote["keeper"] for n, p in self.by_name.items() if (p.remote or {}).get("keeper")}
        return {n: p.keeper.telemetry() for n, p in self.by_name.items() if p.keeper is not None}

    def errors(self) -> dict[str, str]:
        """{piece: why its training stopped} (the display holds its last good weights)."""
        return {n: p.error for n, p in self.by_name.items() if p.error}

    def losses(self) -> dict:
        """{piece: its last training step's scalars}, finite ones only (JSON has no NaN)."""
        out = {}
        for n, p in self.by_name.items():
            vals = {k: float(v) for k, v in dict(p.last_scalars).items() if isinstance(v, (int, float))}
            out[n] = {k: v for k, v in vals.items() if v == v and abs(v) != float("inf")}
        return out

    def close(self, final_checkpoint: bool, problems: list[str]) -> None:
        """Stop training and the mirrors' workers, then write the final checkpoints (problems: one
        line each)."""
        if self.in_process:
            # The process writes the final checkpoints itself (it has the weights); the show's
            # copies are the opening's and must not overwrite them.
            if not self.trainer.stop(final_checkpoint=final_checkpoint):
                problems.append("the training process did not stop; it was killed")
            if final_checkpoint:
                paths, why = self.trainer.final_checkpoints()
                self.checkpoints.extend(paths)
                problems.extend(why)
                self._take_back(paths, problems)
            final_checkpoint = False
        elif self.trainer is not None and not self.trainer.stop():
            problems.append("the training thread did not stop; no final checkpoint")
            final_checkpoint = False
        for p in self.by_name.values():
            if p.keeper is not None:
                p.keeper.close()
        for p in self.by_name.values():
            if not p.mirror.close():
                problems.append(f"{p.name}: its directions/clusters worker did not stop")
        if self._saver is not None:
            self._saver.join()  # one writer of each checkpoint file at a time
        if final_checkpoint:
            for p in self.by_name.values():
                try:
                    self.checkpoints.append(str(p.save()))
                except Exception as e:
                    problems.append(f"final checkpoint of {p.name} failed: {e}")
