"""Opening a live show's pieces: resuming each one's run folder and the live state saved with each
checkpoint (the Systems and parameter groups themselves come from unstable/show_systems.py, shared
with `unstable render SHOW`).

Run folder (`runs/live/<show>/` by default): `<piece>/checkpoint.pt` (periodic and at exit,
atomic; a restart resumes from it unless `fresh`), `<piece>/piece.toml`. A checkpoint of another
kind, architecture or piece is refused; temporaries a killed save left are removed at start.
"""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

import torch

from ..errors import UnstableError
from ..schema import SHOW
from ..frame.sources import load_run_into
from ..shipped import shipped_file
from ..show import Show
from ..show_systems import build_systems, piece_actions, show_groups

__all__ = ["build_systems", "show_groups", "piece_actions", "resume_piece", "prepare_pieces", "live_state",
           "restore_live_states"]


def _remove_stale_temporaries(folder: Path) -> None:
    """Remove checkpoint temporaries a killed process left behind (`.checkpoint.pt.*.tmp`)."""
    for tmp in folder.glob(".checkpoint.pt.*.tmp"):
        with contextlib.suppress(OSError):
            tmp.unlink()


def resume_piece(system: Any, path: Path, device: torch.device) -> dict | None:
    """Load a piece's checkpoint into `system`, refusing one of another kind, architecture or piece.

    Returns the live state saved with it (walk phase, parameter values), or None.
    """
    live = load_run_into(system, path, device).get("live")
    return live if isinstance(live, dict) else None


def _shown(path: Path) -> Path:
    """A path as the artist typed it: relative to the working folder when it lies inside it."""
    try:
        return path.resolve().relative_to(Path.cwd())
    except ValueError:
        return path


def prepare_pieces(show: Show, systems: Mapping[str, Any], run_dir: Path, device: torch.device, *,
                   fresh: bool, resume: bool, progress: Callable, echo: Callable[[str], None]) -> dict[str, dict]:
    """Prepare each system (base models), resume it from its run folder unless `fresh`, and copy its
    piece file there. `resume` makes a missing checkpoint an error, checked before any slow work.
    Each piece says through `echo` where it starts from: its run folder, a grown state, or its seed.
    Returns {piece: live state saved with its checkpoint}."""
    if resume:
        missing = [n for n in systems if not (run_dir / n / "checkpoint.pt").is_file()]
        if missing:
            raise UnstableError(f"--resume: no checkpoint for {', '.join(missing)} in {run_dir} "
                                f"(expected {run_dir / missing[0] / 'checkpoint.pt'}); run without "
                                "--resume to start those pieces from their seeds")
    saved = {}
    for name, system in systems.items():
        system.prepare(progress)
        piece_dir = run_dir / name
        ckpt = piece_dir / "checkpoint.pt"
        _remove_stale_temporaries(piece_dir)
        start = show.settings.pieces[name].start
        if ckpt.exists() and not fresh:
            saved[name] = resume_piece(system, ckpt, device)
            echo(f"live: {name} resumes {ckpt} at step {system.step_count} (its run folder; --fresh to start over)")
        elif start and not fresh:
            path = show.resolve(start)
            if shipped_file(path.name, path.parent) is None:
                raise UnstableError(f"{show.show_file}: pieces.{name}.start {start!r} is not listed in "
                                    f"{path.parent / 'MANIFEST.json'} or its SHA-256 differs; refusing it "
                                    "(scripts/make_shipped.py makes both; --fresh starts from the seed)")
            load_run_into(system, path, device)
            echo(f"live: {name} starts from the grown state {_shown(path)} at step {system.step_count} "
                 "(--fresh starts from its seed)")
        else:
            why = "--fresh" if fresh else f"no checkpoint in {piece_dir} and no pieces.{name}.start in the show"
            echo(f"live: {name} starts from its seed at step {system.step_count} ({why}): "
                 "its first minutes are early training")
        piece_dir.mkdir(parents=True, exist_ok=True)
        src = show.piece_paths[name]
        if src.resolve() != (piece_dir / "piece.toml").resolve():
            shutil.copyfile(src, piece_dir / "piece.toml")
    return saved


def live_state(piece, params, timeline) -> dict:
    """What a restart of `piece` (a LivePiece) needs besides its weights: its walk phase and live
    parameter values, and the show's (scene, master fade). Plain floats: loads with weights_only."""
    values = params.targets()
    # The phase as of the last frame, read without advancing: the render thread owns the clock.
    return {"walk": {"phase": float(piece.clock.phase), "speed": float(piece.clock.speed)},
            "params": {k: float(v) for k, v in values.get(piece.name, {}).items()},
            "learning_rate_is_scale": True,
            "show": {k: float(v) for k, v in values.get(SHOW, {}).items() if k != "record"},
            "frame_time": float(timeline.now)}


def restore_live_states(saved: Mapping[str, dict], clocks: Mapping, params, timeline, *, reset_params: bool,
                        echo: Callable[[str], None]) -> None:
    """Put the live states saved with the checkpoints back: each piece's walk clock (`clocks`), and
    unless `reset_params` its parameter values in the store `params` and the show's scene and values."""
    show_values = None
    for name, live in saved.items():
        if not isinstance(live, dict):
            continue
        try:
            clocks[name].load_state_dict(live["walk"])
        except (KeyError, TypeError, ValueError):
            pass
        if isinstance(live.get("params"), dict) and not reset_params:
            values = dict(live["params"])
            if not live.get("learning_rate_is_scale") and values.pop("learning_rate", None) is not None:
                # A file whose learning_rate is an absolute Adam rate would be clamped to 0.01x of
                # the piece's rate as a multiplier: start from the piece's own rate instead.
                echo(f"live: {name}: the saved learning_rate was an absolute rate (older format); "
                     "it starts at 1 x the piece's rate")
            params.update({name: values})  # unknown names and bad values are skipped
        if not reset_params:
            show_values = live.get("show") if isinstance(live.get("show"), dict) else show_values
    if show_values:
        scene = show_values.get("scene")
        if scene is not None and int(scene) != timeline.director.current:
            timeline.director.go(int(scene), 0.0)
        params.update({SHOW: {k: v for k, v in show_values.items() if k not in ("scene", "record")}})
    if saved:
        params.settle()  # resumed values hold from the first frame, no glide from the defaults
