"""Checkpoints: plain dicts, written atomically, loaded without unpickling code.

A checkpoint is `{"format": 1, "kind", "piece": {...config...}, "fingerprint", "step", "system":
System.state_dict(), ...}`. It is written to a temporary file in the same folder, flushed and
fsync'd, then renamed over the old one (rename is atomic on POSIX), and the folder is fsync'd, so a
crash or power cut leaves either the old checkpoint or the new one, never half of one.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from .config import to_dict
from .errors import CheckpointError

FORMAT = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write `payload` to `path` atomically (tmp + fsync + rename + fsync of the folder)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        from .disk import is_no_space, no_space_line
        if isinstance(e, Exception) and is_no_space(e):  # torch says "unexpected pos ...": say what it is
            raise CheckpointError(f"{path}: not written: {no_space_line(path)}") from None
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint with `weights_only=True`: tensors and containers only, never code."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises several types for truncated or foreign files
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Weights only" in str(e):
            # torch's advice here (weights_only=False) would run whatever code the file holds: never.
            first = "it holds objects other than tensors and plain containers, which are never unpickled"
        raise CheckpointError(f"{path}: not a readable checkpoint ({first[:200]}); remove it, or start over "
                              "with --fresh (live) or another --out (train)") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not an unstable checkpoint (format {FORMAT} expected)")
    return payload


def fingerprint(piece_dict: dict[str, Any], keys: tuple[str, ...] | None = None) -> str:
    """A short hash of the parts of a piece's config that fix its architecture.

    Two pieces with the same fingerprint can exchange weights; a checkpoint whose fingerprint
    differs from the piece loading it is refused.
    """
    data = piece_dict if keys is None else {k: piece_dict.get(k) for k in keys}
    blob = json.dumps(data, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def check_compatible(payload: dict[str, Any], kind: str, arch_fingerprint: str, source: str) -> None:
    """Refuse a checkpoint made by a different kind of piece or a different architecture."""
    if payload.get("kind") != kind:
        raise CheckpointError(f"{source}: checkpoint is for a {payload.get('kind')!r} piece, not {kind!r}")
    if payload.get("fingerprint") != arch_fingerprint:
        raise CheckpointError(
            f"{source}: checkpoint was made with a different architecture "
            f"(fingerprint {payload.get('fingerprint')} != {arch_fingerprint}); refusing to load it")


def check_finite(state: Any, source: str) -> None:
    """Refuse weights with NaN or infinities (they render black): name the file and the tensor."""
    def walk(x, where):
        if isinstance(x, torch.Tensor):
            if x.is_floating_point() and not bool(torch.isfinite(x).all()):
                raise CheckpointError(f"{source}: holds NaN or infinite weights ({where}); refusing it "
                                      "(use an earlier kept checkpoint, or --fresh)")
        elif isinstance(x, dict):
            for k, v in x.items():
                walk(v, f"{where}.{k}" if where else str(k))
        elif isinstance(x, (list, tuple)):
            for i, v in enumerate(x):
                walk(v, f"{where}[{i}]")
    walk(state, "")


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
    if "system" not in payload or "rng" not in payload:
        raise CheckpointError(f"{source}: not a whole checkpoint (no {'system' if 'system' not in payload else 'rng'} "
                              "entry); refusing it")
    check_finite(payload["system"], source)
    try:
        system.load_state_dict(payload["system"])
        _set_rng_state(payload["rng"])
    except (RuntimeError, KeyError, TypeError, ValueError, IndexError, AttributeError) as e:
        # A tampered or damaged checkpoint (a tensor of the wrong shape, a bad RNG state): one line.
        first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
        raise CheckpointError(f"{source}: does not fit this piece ({first}); remove it, or start over with "
                              "--fresh (live) or another --out (train)") from None
