"""The sources of a render job: trained runs (or untrained pieces) opened on a device, checked
against the job before any frame (one ConfigError naming the job file and key)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..config import to_dict
from ..errors import ConfigError, UnstableError
from ..frame.sources import open_run
from ..renderjob import RenderJob
from ..show import display_name
from ..system import build_system, load_piece

__all__ = ["JobSource", "list_checkpoints", "open_sources", "file_identity"]


@dataclass
class JobSource:
    """One open source: its system (weights loaded) and which of its panels the frame shows."""

    name: str
    system: object
    panels: dict[str, str]          # display name -> the system's panel name
    params: dict[str, float]        # live parameters for System.sample
    identity: dict                  # what decides its pixels (for the resume manifest)
    run: Path | None = None         # the run folder (timelapse)
    checkpoints: list[tuple[int, Path]] = field(default_factory=list)  # timelapse: (step, file)


def list_checkpoints(run: Path, latest_step: int) -> list[tuple[int, Path]]:
    """A run's checkpoints in step order: checkpoints/step_NNNNNN.pt, then checkpoint.pt if newer."""
    found = []
    for f in (run / "checkpoints").glob("step_*.pt"):
        m = re.fullmatch(r"step_(\d+)\.pt", f.name)
        if m:
            found.append((int(m[1]), f))
    found.sort()
    if not found or found[-1][0] < latest_step:
        found.append((latest_step, run / "checkpoint.pt"))
    return found


def file_identity(path: Path) -> dict:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def open_sources(job: RenderJob, job_path: str, device: torch.device,
                 progress: Callable | None = None, echo: Callable[[str], None] = print) -> list[JobSource]:
    """Load every source of `job` on `device`; a missing run, a foreign checkpoint, an unknown panel
    or parameter is one ConfigError naming the job file and key. Optional sources whose run is
    missing are left out (with a note through `echo`)."""
    from tqdm import tqdm
    progress = progress or (lambda desc, total=None, **kw: tqdm(total=total, disable=True))
    opened: list[JobSource] = []
    for name, s in job.sources.items():
        key = f"sources.{name}"
        if s.piece:
            if not Path(s.piece).is_file():
                raise ConfigError(job_path, f"{key}.piece", f"{s.piece!r}: no such piece file")
            piece = load_piece(s.piece)
            system = build_system(piece, device)
            system.prepare(progress)
            identity = {"piece": to_dict(piece)}
            run = None
        else:
            path = Path(s.run)
            ckpt = path / "checkpoint.pt" if path.is_dir() else path
            if not ckpt.is_file():
                if s.optional:
                    echo(f"note: {job_path}: {key}.run {s.run!r} does not exist yet; rendering without it")
                    continue
                what = ("no checkpoint.pt in that run folder" if path.is_dir()
                        else "no such run folder or checkpoint file")
                raise ConfigError(job_path, f"{key}.run", f"{s.run!r}: {what} (train it first: `unstable train`, "
                                  "or a show with `unstable live`)")
            try:
                system, payload = open_run(ckpt, device)
            except ConfigError:
                raise
            except UnstableError as e:
                raise ConfigError(job_path, f"{key}.run", str(e)) from None
            identity = {**file_identity(ckpt), "step": int(payload.get("step", 0)),
                        "fingerprint": payload.get("fingerprint")}
            run = ckpt.parent
        available = system.panels()
        chosen = list(s.panels) or list(available)
        for p in chosen:
            if p not in available:
                raise ConfigError(job_path, f"{key}.panels", f"no panel {p!r} in {name}'s system, expected one of "
                                  f"{', '.join(repr(a) for a in available)}")
        specs = {spec.name: spec for spec in system.param_specs()}
        params = {k: v for k, v in job.params.items() if k in specs}
        for k, v in s.params.items():
            if k not in specs:
                raise ConfigError(job_path, f"{key}.params.{k}", f"not a parameter of {name}'s system, expected one of "
                                  f"{', '.join(sorted(specs))}")
            params[k] = v
        for k, v in params.items():
            spec = specs[k]
            if not spec.lo <= v <= spec.hi:
                where = f"{key}.params.{k}" if k in s.params else f"params.{k}"
                raise ConfigError(job_path, where, f"{v!r} is out of range, expected {spec.lo} to {spec.hi}")
        # As in a live show: the walk's temperature (here the job's curve) scales the latents and a
        # system's own `temperature` parameter, if it has one, keeps its default unless set here.
        panels = {display_name(name, p): p for p in chosen}
        opened.append(JobSource(name, system, panels, params, identity, run))
    if not opened:
        raise ConfigError(job_path, "sources", "none of the sources exists yet (all optional runs are missing)")
    for k in job.params:
        if not any(k in {sp.name for sp in src.system.param_specs()} for src in opened):
            raise ConfigError(job_path, f"params.{k}", "not a parameter of any source's system")
    if job.timelapse.on:
        src = opened[0]
        tl = job.timelapse
        if not Path(job.sources[src.name].run).is_dir():
            raise ConfigError(job_path, f"sources.{src.name}.run", f"{job.sources[src.name].run!r}: a timelapse "
                              "needs a run folder (its checkpoints/ are the timelapse), not a checkpoint file")
        ckpts = list_checkpoints(src.run, src.identity["step"])
        ckpts = [c for c in ckpts if c[0] >= tl.first_step and (tl.last_step is None or c[0] <= tl.last_step)]
        ckpts = ckpts[::tl.every]
        if not ckpts:
            raise ConfigError(job_path, "timelapse", f"no checkpoints of {src.run} between steps {tl.first_step} "
                              f"and {tl.last_step if tl.last_step is not None else 'the last'}")
        src.checkpoints = ckpts
        src.identity["timelapse"] = [{"step": st, **file_identity(f)} for st, f in ckpts]
    return opened
