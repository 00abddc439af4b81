"""Offline training of any piece: steps, a JSON log, image grids and atomic checkpoints.

`unstable train PIECE` is this module. It is system-agnostic: everything it knows about an
artwork goes through the `System` protocol (unstable/system.py).

Run folder layout (default `runs/<piece file name>/`):

    checkpoint.pt        latest checkpoint (atomic; `--resume` continues from it)
    log.jsonl            one JSON line per step: step, seconds, the system's scalars
    grid.png             latest grid: fixed latents, one column per panel (generator)
    checkpoints/step_NNNNNN.pt  kept every `keep_every` steps (atomic; for timelapse renders)
    grids/step_NNNNNN.png  every grid, to watch the dynamics unfold
    piece.toml           a copy of the piece file the run was started from

Across processes (`torchrun --nproc_per_node N -m unstable train PIECE`, unstable/parallel.py):
every rank builds the system from the same seed and computes its share of each batch; gradients
are summed over ranks, so every rank takes the same step. Rank 0 alone writes the run folder; the
checkpoint is the one a single process writes, so either kind of run resumes the other. Every
rank reads the checkpoint it resumes from (on several machines: a shared run folder). After a
rank dies, torchrun's elastic restart (`--max-restarts`) starts the group again and it resumes
from the last checkpoint by itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from .checkpoint import FORMAT, check_compatible, load_checkpoint, save_checkpoint
from .config import setting, to_dict
from .errors import UnstableError
from .images import panel_grid, write_png
from .schema import defaults
from .system import build_system, load_piece


@dataclass(frozen=True)
class TrainSettings:
    """The `[train]` table of every piece file."""

    steps: int = setting(2000, ge=1, doc="steps `unstable train` runs to when --steps is not given")
    grid_every: int = setting(25, ge=1, doc="write a PNG grid every this many steps")
    grid_samples: int = setting(4, ge=1, le=32, doc="rows of fixed latents in each grid")
    checkpoint_every: int = setting(100, ge=1, doc="write a checkpoint every this many steps")
    keep_every: int = setting(100, ge=0, doc="also keep checkpoints/step_NNNNNN.pt every this many steps "
                                  "(and at step 0), for timelapse renders; 0 = off")


def fixed_latents(panels: dict[str, int], count: int, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The grid's latents: the same for a seed on every machine and across resumes."""
    g = torch.Generator().manual_seed(seed * 7919 + 17)
    # One shared draw per row, cut to each panel's dimension, so row i is "the same place" in
    # every generator's latent space — what makes side-by-side comparison meaningful.
    dim = max(panels.values())
    z = torch.randn(count, dim, generator=g)  # [N, D]
    return {name: z[:, :d].to(device) for name, d in panels.items()}


def _rng_state() -> dict:
    state = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoint_payload(system, piece_path: str | None = None, extra: dict | None = None) -> dict:
    """The plain dict written for a system: config, fingerprint, step, weights, RNG states."""
    payload = {
        "format": FORMAT,
        "kind": system.piece.kind,
        "piece": to_dict(system.piece),
        "piece_path": piece_path or "",
        "fingerprint": system.fingerprint(),
        "step": system.step_count,
        "system": system.state_dict(),
        "rng": _rng_state(),
    }
    if extra:
        payload.update(extra)
    return payload


def restore(system, payload: dict, source: str) -> None:
    """Load a checkpoint payload into a system after checking it belongs to this architecture."""
    check_compatible(payload, system.piece.kind, system.fingerprint(), source)
    system.load_state_dict(payload["system"])
    _set_rng_state(payload["rng"])


def progress_bar(desc: str, total: int | None = None, **kw):
    """The progress bar every long job uses (tqdm, to stderr)."""
    return tqdm(total=total, desc=desc, dynamic_ncols=True, leave=True, **kw)


def train(piece_path: str | Path, *, steps: int | None = None, out: str | Path | None = None,
          device: torch.device = torch.device("cpu"), seed: int | None = None, resume: bool = False,
          minutes: float | None = None, echo: Callable[[str], None] = print, show_progress: bool = True) -> Path:
    """Train a piece to `steps` total steps (or for `minutes`), writing grids, a log and checkpoints.

    Returns the run folder. With `resume`, continues the checkpoint in the run folder exactly
    (same weights as an uninterrupted run on the same device and seed). Started by torchrun, it
    trains as one rank of several (see the module doc).
    """
    from . import parallel
    piece = load_piece(piece_path)
    if seed is not None:
        piece = dataclasses.replace(piece, seed=seed)
    out = Path(out) if out is not None else Path("runs") / Path(piece_path).stem
    ckpt_path = out / "checkpoint.pt"
    if int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0 and ckpt_path.exists():
        resume = True  # torchrun restarted the group after a failure: go on from the last checkpoint
    shard, device = parallel.init(device)
    lead = shard.rank == 0  # the one process that writes
    if not lead:
        show_progress = False
        echo = lambda *_: None  # noqa: E731
    if ckpt_path.exists() and not resume:
        raise UnstableError(f"{out}: already holds a run (checkpoint.pt); pass --resume to continue it "
                            f"or --out to start a new one")
    if resume and not ckpt_path.exists():
        raise UnstableError(f"{out}: nothing to resume (no checkpoint.pt there)")
    target = steps if steps is not None else piece.train.steps
    shard.barrier()  # every rank has looked at the run folder before rank 0 writes into it

    torch.manual_seed(piece.seed)
    system = build_system(piece, device)
    if shard.active:
        if not hasattr(system, "shard"):
            raise UnstableError(f"{piece_path}: a {piece.kind} piece cannot train across processes")
        system.shard = shard
    quiet = lambda desc, total=None, **kw: tqdm(total=total, disable=True)  # noqa: E731
    # Slow one-off work (BAD's base models) fills a shared cache: rank 0 first, the others load it.
    if lead:
        system.prepare(progress_bar if show_progress else quiet)
    shard.barrier()
    if not lead:
        system.prepare(quiet)
    if resume:
        restore(system, load_checkpoint(ckpt_path, map_location=device), str(ckpt_path))
        echo(f"resumed {ckpt_path} at step {system.step_count}")
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        if Path(piece_path).resolve() != (out / "piece.toml").resolve():
            shutil.copyfile(piece_path, out / "piece.toml")
    if shard.active:
        echo(f"training across {shard.world} processes ({'nccl' if device.type == 'cuda' else 'gloo'})")

    params = defaults(system.param_specs())
    from .guard import TrainingGuard  # undoes non-finite or exploding steps, backs the learning rate off
    guard = TrainingGuard(system, name=piece.name)
    latents = fixed_latents(system.panels(), piece.train.grid_samples, piece.seed, device)
    settings = piece.train

    def save():
        if not lead:
            return
        payload = checkpoint_payload(system, str(piece_path))
        save_checkpoint(ckpt_path, payload)
        if settings.keep_every and system.step_count % settings.keep_every == 0:
            keep(payload)

    def keep(payload=None):
        if not lead:
            return
        # Kept checkpoints are what `unstable render` walks through for a training timelapse.
        save_checkpoint(out / "checkpoints" / f"step_{system.step_count:06d}.pt",
                        payload or checkpoint_payload(system, str(piece_path)))

    def grid():
        if not lead:
            return
        images = system.sample(latents, params)
        canvas = panel_grid(images)
        write_png(out / "grids" / f"step_{system.step_count:06d}.png", canvas)
        write_png(out / "grid.png", canvas)

    if system.step_count == 0:
        grid()
        if settings.keep_every:
            keep()
    started = time.monotonic()
    bar = tqdm(total=target, initial=system.step_count, desc=f"train {piece.name}", dynamic_ncols=True,
               disable=not show_progress)
    try:
        with open(out / "log.jsonl", "a") if lead else open(os.devnull, "w") as log:
            while system.step_count < target:
                # Ranks stop together: rank 0's clock decides.
                if shard.any(lead and minutes is not None and time.monotonic() - started > minutes * 60):
                    break
                scalars = guard.step(params)
                if scalars is None:  # undone: back at the last good state, learning rate backed off
                    log.write(json.dumps({"step": system.step_count, "guard": guard.last_reason,
                                          "lr_scale": guard.lr_scale}) + "\n")
                    if guard.stopped:
                        echo(f"training stopped: {guard.stopped}")
                        break
                    continue
                log.write(json.dumps({"step": system.step_count,
                                      "seconds": round(time.monotonic() - started, 4), **scalars}) + "\n")
                bar.update(1)
                bar.set_postfix({k: f"{v:.3g}" for k, v in list(scalars.items())[:4]}, refresh=False)
                if system.step_count % settings.grid_every == 0:
                    log.flush()
                    grid()
                if system.step_count % settings.checkpoint_every == 0:
                    save()
                elif settings.keep_every and system.step_count % settings.keep_every == 0:
                    keep()
    except KeyboardInterrupt:
        echo("interrupted: writing a final checkpoint")
    finally:
        bar.close()
    save()
    grid()
    return out
