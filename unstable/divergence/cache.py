"""The cache of base models (VAE, digit classifier): train once, reuse across pieces and runs.

A base model's file name carries a hash of everything that decides its weights (data settings,
its own settings, an architecture version), so two pieces with the same base settings share one
file and a changed setting trains a new one. Files are ordinary checkpoints (atomic writes,
weights_only loads) under the piece's `cache` folder, `.cache/unstable/` by default.
"""

from __future__ import annotations

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


def base_key(kind: str, **settings: Any) -> str:
    """The hash that names a base model's cache file."""
    return fingerprint({"kind": kind, "version": BASE_VERSION, **{k: to_dict(v) for k, v in settings.items()}})


def cached_model(folder: str | Path, kind: str, key: str, model: nn.Module,
                 train: Callable[[], tuple[nn.Module, dict[str, float]]],
                 device: torch.device) -> tuple[dict[str, float], Path, bool]:
    """Fill `model` from `folder/<kind>-<key>.pt`, or train it with `train()` and write that file.

    Returns (held-out metrics, cache path, whether it was trained now). A cache file that cannot
    be read is retrained over rather than trusted. Before training, a base model shipped with the
    package under the same name (unstable/shipped/, its hash checked) is used instead.
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
    trained, metrics = train()
    model.load_state_dict(trained.state_dict())
    save_checkpoint(path, {"format": FORMAT, "kind": kind, "key": key, "model": trained.state_dict(),
                           "metrics": {k: float(v) for k, v in metrics.items()}})
    return metrics, path, True
