"""The small protocol every artwork speaks, and the registry that builds one from a piece file.

The engine, the renderer and the trainer talk to an artwork only through `System`. A new kind of
artwork is a new System (and its piece dataclass) registered in `KINDS`; nothing else changes.

Contract, in one place:

- `System(piece, device)` builds the networks on `device`, seeded from `piece.seed`.
- `prepare(progress)` does slow one-off work that must precede training (e.g. pre-training a base
  model); it may be a no-op. `progress(desc, total)` returns a tqdm-like object.
- `step(params)` runs one optimisation step and returns finite float scalars for the log.
  `params` maps live parameter names (see `param_specs`) to floats; a missing name means default.
- `panels()` maps panel name -> latent dimension, e.g. {"g0": 512, "g1": 512}.
- `sample(latents, params)` maps {panel: z [N, D]} to {panel: images [N, 3, H, W] in 0..1} on the
  device; no gradient; fixed noise so a walk does not flicker.
- `state_dict()` / `load_state_dict()` hold everything needed for exact resume (weights, optimiser
  states, step, RNG states) as plain tensors and containers, loadable with weights_only=True.
- `param_specs()` lists the live parameters (unstable.schema.ParamSpec) for OSC and controllers.
- `step_count` is the number of optimisation steps done.
- `fingerprint()` hashes the architecture-defining config (unstable.checkpoint.fingerprint); a
  checkpoint with another fingerprint is refused.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch

from .config import load_dataclass, read_toml
from .errors import ConfigError

# kind -> (module, piece dataclass, system class). Imported lazily so that loading a piece file
# never imports a system it does not use.
KINDS: dict[str, tuple[str, str, str]] = {
    "equilibrium": ("unstable.equilibrium.system", "EquilibriumPiece", "EquilibriumSystem"),
    "divergence": ("unstable.divergence.system", "DivergencePiece", "DivergenceSystem"),
}


class System(Protocol):
    """What the trainer, the live engine and the renderer need from an artwork."""

    piece: Any
    device: torch.device
    step_count: int

    def prepare(self, progress: Callable[..., Any]) -> None: ...
    def step(self, params: Mapping[str, float]) -> dict[str, float]: ...
    def panels(self) -> dict[str, int]: ...
    def sample(self, latents: Mapping[str, torch.Tensor], params: Mapping[str, float]) -> dict[str, torch.Tensor]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def param_specs(self) -> list: ...
    def fingerprint(self) -> str: ...


def _kind_entry(kind: str) -> tuple[Any, Any]:
    module_name, piece_name, system_name = KINDS[kind]
    module = importlib.import_module(module_name)
    return getattr(module, piece_name), getattr(module, system_name)


def piece_from_dict(data: Mapping[str, Any], source: str):
    """Validate a parsed piece table into the piece dataclass its `kind` names."""
    kind = data.get("kind")
    if kind is None:
        raise ConfigError(source, "kind", f"missing, expected one of {', '.join(repr(k) for k in KINDS)}")
    if kind not in KINDS:
        import difflib
        close = difflib.get_close_matches(str(kind), list(KINDS), n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(source, "kind", f"{kind!r} is not a kind of piece, expected one of "
                          f"{', '.join(repr(k) for k in KINDS)}{hint}")
    piece_cls, _ = _kind_entry(kind)
    return load_dataclass(piece_cls, data, source=source)


def load_piece(path: str | Path):
    """Read and validate a piece file (pieces/*.toml) into its frozen dataclass."""
    return piece_from_dict(read_toml(path), str(path))


def build_system(piece: Any, device: torch.device) -> System:
    """Instantiate the System for a validated piece on `device`."""
    _, system_cls = _kind_entry(piece.kind)
    return system_cls(piece, device)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else CPU; asking for CUDA without one is a clear error."""
    from .errors import UnstableError
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise UnstableError(f"--device {name}: CUDA is not available on this machine (try --device cpu)")
    return torch.device(name)
