"""Offline training of any piece: steps, a JSON log, image grids and atomic checkpoints.

`unstable train PIECE` is this module. It is system-agnostic: everything it knows about an
artwork goes through the `System` protocol (unstable/system.py).

Run folder layout (default `runs/<piece file name>/`):

    checkpoint.pt        latest checkpoint (atomic; `--resume` continues from it)
    log.jsonl            one JSON line per step: step, seconds, the system's scalars; appended
                         to, rotated past `log_max_mb` (log.1.jsonl, ...), cut back to the
                         checkpoint's step on --resume (no replayed step twice)
    grid.png             latest grid: fixed latents, one column per panel (generator), scaled up
                         (nearest, whole factor) until its shorter side is at least 512 px
    progress.gif         the grids over the whole run, at most 60 frames thinned evenly (train_progress.py)
    checkpoints/step_NNNNNN.pt  kept every `keep_every` steps (atomic; for timelapse renders),
                         thinned: the newest `keep_recent`, log-spaced older ones, a byte budget
    grids/step_NNNNNN.png  grids, to watch the dynamics unfold (thinned the same way)
    piece.toml           a copy of the piece file the run was started from
    .lock                held while a `train` process writes the folder (a second one is refused)

Disk stays bounded for a run of weeks (unstable.disk): see the README's "Weeks on the wall".

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
import functools
import json
import os
import re
import shutil
import signal
import threading
import time
from pathlib import Path
from typing import Callable

import torch
from tqdm import tqdm

from .checkpoint import checkpoint_payload, load_checkpoint, restore, save_checkpoint
from .disk import MB, RotatingLines, exclusive_lock, free_bytes, is_no_space, no_space_line, thin
from .errors import UnstableError
from .images import panel_grid, write_png
from .progress import progress_bar
from .schema import defaults
from . import compiled
from .system import build_system, load_piece
from .train_progress import ProgressGif, TrainBar, end_line, upscale_nearest


def fixed_latents(panels: dict[str, int], count: int, seed: int, device: torch.device) -> dict[str, torch.Tensor]:
    """The grid's latents: the same for a seed on every machine and across resumes."""
    g = torch.Generator().manual_seed((seed * 7919 + 17) % (1 << 63))  # any seed < 2^63 fits
    # One shared draw per row, cut to each panel's dimension, so row i is "the same place" in
    # every generator's latent space — what makes side-by-side comparison meaningful.
    dim = max(panels.values())
    z = torch.randn(count, dim, generator=g)  # [N, D]
    return {name: z[:, :d].to(device) for name, d in panels.items()}


def _numbered(folder: Path, suffix: str) -> list[tuple[int, Path]]:
    """(step, path) of `folder/step_NNNNNN<suffix>`."""
    out = []
    for f in folder.glob(f"step_*{suffix}"):
        m = re.fullmatch(r"step_(\d+)" + re.escape(suffix), f.name)
        if m:
            out.append((int(m[1]), f))
    return out


def lock_run(out: Path):
    """Hold `out/.lock` while this process trains there: two `train` processes on one folder would
    overwrite each other's checkpoints. Returns the open file (closing it unlocks)."""
    out.mkdir(parents=True, exist_ok=True)
    return exclusive_lock(out / ".lock", f"{out}: another `unstable train` is writing this run folder right now "
                                         "(it holds .lock); wait for it or choose another --out")


def truncate_log(path: Path, step: int) -> int:
    """Drop the lines of `path` (and of its rotated files, newest first) logged after `step`: a
    resumed run replays those steps and logs them again. Returns the number of lines dropped."""
    dropped = 0
    files = [path] + [path.with_name(f"{path.stem}.{i}{path.suffix}") for i in range(1, 101)]
    for f in files:
        if not f.exists():
            if f is path:
                continue
            break
        lines = f.read_text().splitlines(keepends=True)
        keep = []
        for line in lines:
            try:
                n = json.loads(line).get("step", 0)
            except (ValueError, AttributeError):
                if line.endswith("\n"):  # not ours to judge: keep it
                    keep.append(line)
                    continue
                n = step + 1  # the last line, cut short by a kill: after the checkpoint too
            if isinstance(n, int) and n > step:
                dropped += 1
            else:
                keep.append(line)
        if len(keep) != len(lines):
            tmp = f.with_name(f".{f.name}.tmp")
            tmp.write_text("".join(keep))
            tmp.replace(f)
        if keep:  # older files end before this one begins
            break
    return dropped


def _check_piece(payload: dict, piece, source: str) -> None:
    """Refuse a run folder of another piece (its piece.toml would be overwritten)."""
    saved = payload.get("piece", {}).get("name") if isinstance(payload.get("piece"), dict) else None
    if saved is not None and saved != piece.name:
        raise UnstableError(f"{source}: this run folder holds piece {saved!r}, not {piece.name!r}; refusing "
                            "to continue it (choose another --out)")


def train(piece_path: str | Path, *, steps: int | None = None, out: str | Path | None = None,
          device: torch.device = torch.device("cpu"), seed: int | None = None, resume: bool = False,
          minutes: float | None = None, echo: Callable[[str], None] = print, show_progress: bool = True,
          keeper: Callable | None = None) -> Path:
    """Train a piece to `steps` total steps (or for `minutes`), writing grids, a log and checkpoints.

    Returns the run folder. With `resume`, continues the checkpoint in the run folder exactly
    (same weights as an uninterrupted run on the same device and seed). Started by torchrun, it
    trains as one rank of several (see the module doc). `keeper`: what keeps a piece with a
    `[keeper]` table (unstable.explore.keeper.TrainKeeper, which `unstable train` passes; None: the
    table is not acted on). Passed in, not imported: the explorer's measures use this module's
    fixed latents, and the floors allow no import cycle.
    """
    from . import parallel
    compiled.requested()  # a bad UNSTABLE_COMPILE is one line before any work
    piece = load_piece(piece_path)
    if seed is not None:
        piece = dataclasses.replace(piece, seed=seed)
    out_given = out is not None
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
    settings = piece.train
    free = free_bytes(out)
    if free < settings.min_free_mb * MB:
        raise UnstableError(f"{out}: only {free / MB:.0f} MB free on its disk, below [train] min_free_mb = "
                            f"{settings.min_free_mb:g}; free some space or choose another --out")
    target = steps if steps is not None else piece.train.steps
    shard.barrier()  # every rank has looked at the run folder before rank 0 writes into it
    lock = None
    if lead:  # the one writer holds the run folder's lock
        try:
            lock = lock_run(out)
        except OSError as e:
            raise UnstableError(f"{out}: cannot write the run folder ({e.strerror or e})") from None
    # The closing line's command repeats what decided this run (its folder, target and seed).
    ending = functools.partial(end_line, piece_path=str(piece_path), steps=steps, seed=seed,
                               out=str(out) if out_given else None)
    try:
        return _train(piece, piece_path, shard=shard, lead=lead, system_target=target, out=out, ckpt_path=ckpt_path,
                      device=device, resume=resume, minutes=minutes, echo=echo, show_progress=show_progress,
                      ending=ending, make_keeper=keeper)
    finally:
        if lock is not None:
            lock.close()


def _train(piece, piece_path, *, shard, lead: bool, system_target: int, out: Path, ckpt_path: Path, device,
           resume: bool, minutes, echo, show_progress: bool, ending=None, make_keeper=None) -> Path:
    target = system_target
    settings = piece.train
    torch.manual_seed(piece.seed)
    system = build_system(piece, device)
    if shard.active:
        system.shard = shard
    quiet = lambda desc, total=None, **kw: tqdm(total=total, disable=True)  # noqa: E731
    payload = load_checkpoint(ckpt_path, map_location=device) if resume else None
    if payload is not None:
        _check_piece(payload, piece, str(ckpt_path))  # before any slow work, before piece.toml is touched
    # Slow one-off work (BAD's base models) fills a shared cache: rank 0 first, the others load it.
    if lead:
        system.prepare(progress_bar if show_progress else quiet)
    shard.barrier()
    if not lead:
        system.prepare(quiet)
    keeper_state = None
    if payload is not None:
        restore(system, payload, str(ckpt_path))
        keeper_state = payload.get("keeper")  # absent in a checkpoint written without a keeper
        del payload
        echo(f"resumed {ckpt_path} at step {system.step_count}")
        dropped = truncate_log(out / "log.jsonl", system.step_count) if lead else 0
        if dropped:
            echo(f"log.jsonl: dropped {dropped} lines logged after step {system.step_count} (they are replayed)")
    if lead:
        out.mkdir(parents=True, exist_ok=True)
        if Path(piece_path).resolve() != (out / "piece.toml").resolve():
            shutil.copyfile(piece_path, out / "piece.toml")
    if shard.active:
        echo(f"training across {shard.world} processes ({'nccl' if device.type == 'cuda' else 'gloo'})")

    if compiled.requested():  # opt-in: the grown piece's step through inductor (unstable/compiled.py)
        compiled.compile_training(system, echo)
    params = defaults(system.param_specs())
    from .guard import TrainingGuard  # undoes non-finite or exploding steps, backs the learning rate off
    guard = TrainingGuard(system, name=piece.name)
    keeper, said = None, []  # said: the keeper's lines, for log.jsonl once it is open
    if make_keeper is not None and getattr(piece, "keeper", None) is not None:
        def say(line: str) -> None:
            echo(line)
            said.append(line)
        keeper = make_keeper(system, piece.keeper, params, name=piece.name, perturb=guard.perturb, say=say)
        keeper.load_state_dict(keeper_state)
        levers = keeper.state_dict()["params"]
        echo(f"keeper {piece.name}: on, a look every {piece.keeper.every} steps "
             f"({', '.join(f'{k} {v:.4g}' for k, v in levers.items())})")
    latents = fixed_latents(system.panels(), piece.train.grid_samples, piece.seed, device)
    sheet = ProgressGif(out / "progress.gif").load(system.step_count) if lead else None

    def write(path: Path, payload: dict) -> None:
        try:
            save_checkpoint(path, payload)
        except Exception as e:
            if is_no_space(e):
                raise UnstableError(f"checkpoint {path} not written: {no_space_line(path)}") from None
            if isinstance(e, OSError):
                raise UnstableError(f"checkpoint {path} not written: {e.strerror or e}") from None
            raise

    def save():
        if not lead:
            return
        payload = checkpoint_payload(system, str(piece_path), extra=kept())
        write(ckpt_path, payload)
        if settings.keep_every and system.step_count % settings.keep_every == 0:
            keep(payload)

    def kept() -> dict | None:
        # The keeper's probe, count and levers go with the weights: a resume looks on from them.
        return None if keeper is None else {"keeper": keeper.state_dict()}

    def keep(payload=None):
        if not lead:
            return
        # Kept checkpoints are what `unstable render` walks through for a training timelapse.
        write(out / "checkpoints" / f"step_{system.step_count:06d}.pt",
              payload or checkpoint_payload(system, str(piece_path), extra=kept()))
        thin(_numbered(out / "checkpoints", ".pt"), unit=settings.keep_every, recent=settings.keep_recent,
             per_octave=settings.keep_per_octave, budget_bytes=int(settings.keep_budget_mb * MB))

    def grid(final: bool = False):
        if not lead:
            return
        images = system.sample(latents, params)
        canvas = panel_grid(images)  # [3, H, W]
        big = upscale_nearest(canvas)  # [3, kH, kW]: small panels made visible, pixels kept crisp
        try:
            write_png(out / "grids" / f"step_{system.step_count:06d}.png", big)
            write_png(out / "grid.png", big)
            sheet.add(system.step_count, canvas)
            sheet.write(force=final)
        except OSError as e:
            raise UnstableError(f"grid of step {system.step_count} not written: "
                                f"{no_space_line(out / 'grid.png') if is_no_space(e) else e}") from None
        thin(_numbered(out / "grids", ".png"), unit=settings.grid_every, recent=settings.grids_recent,
             per_octave=settings.grids_per_octave, budget_bytes=int(settings.grids_budget_mb * MB))

    if system.step_count == 0:
        grid()
        if settings.keep_every:
            keep()
    started = time.monotonic()
    bar = TrainBar(target, system.step_count, minutes, started, desc=f"train {piece.name}", disable=not show_progress)
    # Ctrl-C and SIGTERM (timeout, systemd, Slurm, torchrun) stop between steps, not inside one: a
    # step cut in half (the generators updated, the critic not; the step counted or not) is not a
    # state to save. A second signal interrupts at once.
    stop = threading.Event()
    handlers = {}

    def on_signal(*_):
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            handlers[sig] = signal.signal(sig, on_signal)
    try:
        with (RotatingLines(out / "log.jsonl", max_bytes=int(settings.log_max_mb * MB), keep=settings.log_keep)
              if lead else open(os.devnull, "w")) as log:
            while system.step_count < target:
                # Ranks stop together: rank 0's clock decides, and any rank's signal.
                timed_out = lead and minutes is not None and time.monotonic() - started > minutes * 60
                if shard.any(stop.is_set() or timed_out):
                    if stop.is_set():
                        echo(f"interrupted at step {system.step_count}: writing a final checkpoint")
                    break
                scalars = guard.step(params)
                if keeper is not None:
                    keeper.after_step(scalars is None)
                    for line in said:  # what the keeper did, where a reader of the run looks
                        log.write(json.dumps({"step": system.step_count, "keeper": line,
                                              **{k: params[k] for k in keeper.state_dict()["params"]}}) + "\n")
                    said.clear()
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
        echo(f"interrupted at step {system.step_count}: writing a final checkpoint")
    except OSError as e:  # the log itself (a full disk): one line, after the final checkpoint below
        echo(f"log.jsonl not written: {no_space_line(out / 'log.jsonl') if is_no_space(e) else e}")
    finally:
        bar.close()
        for sig, h in handlers.items():
            signal.signal(sig, h)
    save()
    grid(final=True)
    shard.close()
    if ending is not None:
        echo(ending(system.step_count, target))
    return out
