"""The cache of base models (VAE, digit classifier): train once, reuse across pieces and runs.

A base model's file name carries a hash of everything that decides its weights (data settings,
its own settings, an architecture version), so two pieces with the same base settings share one
file and a changed setting trains a new one. Files are ordinary checkpoints (atomic writes,
weights_only loads) under the piece's `cache` folder, `.cache/unstable/` by default.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn as nn

from ..checkpoint import FORMAT, fingerprint, load_checkpoint, save_checkpoint
from ..config import to_dict
from ..errors import CheckpointError
from ..shipped import shipped_file

# Bump when an architecture or a training recipe changes in code, so old files are not reused.
BASE_VERSION = 1

log = logging.getLogger("unstable.cache")

# Seconds per training step with one thread on the 2-core CPU the shipped files were made on;
# only for the announcement's rough duration (a GPU is faster, a busier CPU slower).
SECONDS_PER_STEP = {"vae": 0.25, "density-judge": 0.25, "classifier": 0.2, "judge": 0.045}
# The recipes' default steps, for callers that do not say how many steps they train.
DEFAULT_STEPS = {"vae": 1200, "density-judge": 1200, "classifier": 600, "judge": 600}
# What each kind is and why it is needed, for callers that do not say.
ABOUT = {"vae": "the base VAE (the decoder BAD diverges from)",
         "classifier": "the digit classifier (what BAD's losses measure with)"}


def rough_duration(kind: str, steps: int | None) -> str:
    """'roughly N minutes' (or seconds) for training a base model of `kind` for `steps` steps."""
    steps = steps if steps is not None else DEFAULT_STEPS.get(kind, 1000)
    seconds = steps * SECONDS_PER_STEP.get(kind, 0.25)
    when = f"{seconds / 60:.0f} minutes" if seconds >= 90 else f"{max(10.0, round(seconds, -1)):.0f} seconds"
    return f"roughly {when} for {steps} steps on 2 CPU cores, less on a GPU"


def announce(kind: str, about: str, path: Path, steps: int | None,
             echo: Callable[[str], None] | None = None) -> None:
    """Say before a one-off training what is trained, why, roughly how long and where it is kept."""
    (echo or log.warning)(f"training {about} once: no usable cached or shipped {path.name} for these settings; "
                          f"{rough_duration(kind, steps)}; cached at {path} for every later run")


def base_key(kind: str, **settings: Any) -> str:
    """The hash that names a base model's cache file."""
    return fingerprint({"kind": kind, "version": BASE_VERSION, **{k: to_dict(v) for k, v in settings.items()}})


def cached_model(folder: str | Path, kind: str, key: str, model: nn.Module,
                 train: Callable[[], tuple[nn.Module, dict[str, float]]],
                 device: torch.device, *, about: str = "", steps: int | None = None,
                 echo: Callable[[str], None] | None = None) -> tuple[dict[str, float], Path, bool]:
    """Fill `model` from `folder/<kind>-<key>.pt`, or train it with `train()` and write that file.

    Returns (held-out metrics, cache path, whether it was trained now). A cache file that cannot
    be read is retrained over rather than trusted. Before training, a base model shipped with the
    package under the same name (unstable/shipped/, its hash checked) is used instead. A training
    is announced first (`about`: what and why; `steps` for the rough duration) through `echo`, a
    warning on the "unstable.cache" logger by default, so it shows on the terminal.
    """
    path = Path(folder) / f"{kind}-{key}.pt"
    if path.is_file():
        try:
            payload = load_checkpoint(path, map_location=device)
            if payload.get("kind") == kind and payload.get("key") == key:
                model.load_state_dict(payload["model"])
                return {k: float(v) for k, v in payload.get("metrics", {}).items()}, path, False
        except (CheckpointError, RuntimeError, KeyError):
            pass  # a stale or damaged cache file: train again and replace it
    shipped = shipped_file(path.name)
    if shipped is not None:  # made by scripts/make_shipped.py with these very settings, hash checked
        payload = load_checkpoint(shipped, map_location=device)
        if payload.get("kind") == kind and payload.get("key") == key:
            model.load_state_dict(payload["model"])
            return {k: float(v) for k, v in payload.get("metrics", {}).items()}, shipped, False
    announce(kind, about or ABOUT.get(kind, f"the base model {kind!r}"), path, steps, echo)
    trained, metrics = train()
    model.load_state_dict(trained.state_dict())
    save_checkpoint(path, {"format": FORMAT, "kind": kind, "key": key, "model": trained.state_dict(),
                           "metrics": {k: float(v) for k, v in metrics.items()}})
    return metrics, path, True
