"""Opening a live show's pieces: resuming each one's run folder (the Systems and parameter groups
themselves come from unstable/show_systems.py, shared with `unstable render SHOW`).

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
from ..frame.sources import load_run_into
from ..shipped import shipped_file
from ..show import Show
from ..show_systems import build_systems, piece_actions, show_groups

__all__ = ["build_systems", "show_groups", "piece_actions", "resume_piece", "prepare_pieces"]


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
    states = {}
    for name, system in systems.items():
        system.prepare(progress)
        piece_dir = run_dir / name
        ckpt = piece_dir / "checkpoint.pt"
        _remove_stale_temporaries(piece_dir)
        start = show.settings.pieces[name].start
        if ckpt.exists() and not fresh:
            states[name] = resume_piece(system, ckpt, device)
            echo(f"live: {name} resumes {ckpt} at step {system.step_count} (its run folder; --fresh to start over)")
        elif start and not fresh:
            path = show.resolve(start)
            if shipped_file(path.name, path.parent) is None:
                raise UnstableError(f"{show.source}: pieces.{name}.start {start!r} is not listed in "
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
    return states
