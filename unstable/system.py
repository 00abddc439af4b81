"""The small protocol every artwork speaks, and the registry that builds one from a piece file.

The engine, the renderer and the trainer talk to an artwork only through `System`. A new kind of
artwork is a new System (and its piece dataclass) registered in `KINDS`; nothing else changes.

Contract, in one place:

- `System(piece, device)` builds the networks on `device`, seeded from `piece.seed`.
- `prepare(progress)` does slow one-off work that must precede training (e.g. pre-training a base
  model); it may be a no-op. `progress(desc, total)` returns a tqdm-like object.
- `step(params)` runs one optimisation step and returns float scalars for the log. `params` maps
  live parameter names (see `param_specs`) to floats; a missing name means default. A step that
  goes wrong is not hidden: its non-finite scalars come back as they are and the state is left as
  the step left it, for `unstable.guard.TrainingGuard` (which every training path steps through)
  to judge and undo. Systems keep no bad-step handling of their own.
- `panels()` maps panel name -> latent dimension, e.g. {"g0": 512, "g1": 512}.
- `sample(latents, params)` maps {panel: z [N, D]} to {panel: images [N, 3, H, W] in 0..1} on the
  device; no gradient; fixed noise so a walk does not flicker.
- `state_dict()` / `load_state_dict()` hold everything needed for exact resume (weights, optimiser
  states, step, RNG states) as plain tensors and containers, loadable with weights_only=True.
- `param_specs()` lists the live parameters (unstable.schema.ParamSpec) for OSC and controllers.
  `learning_rate`, when a system has one, means the same everywhere: a log-scaled multiplier of the
  piece's own configured rates (1 = the piece file's rates; `learning_rate_spec`).
- `modules()` names the trainable modules: their parameters and buffers are the weights training
  changes, the guard checks and perturbs, and the sampling copy follows. Frozen parts (base models,
  feature extractors) are not in it.
- `optimizers()` names the optimisers (their state is in `state_dict()`).
- `sampling_copy()` builds, once, a copy that can only sample: the frozen piece and frozen modules
  shared, its own copies of the modules `sample` reads, no optimiser state.
  `copy.accumulate(source, decay)` then moves the copy's weights towards the source's, as
  rosinality's `accumulate(g_ema, generator, decay)` (decay 0: a plain copy; buffers are always
  copied) and brings over the plain-number state sampling depends on (`step_count`: growth).
- `prepare_sampling()`: make now whatever `sample` would otherwise build on first use (the
  networks' sampling traces, unstable.traces); a show's sampling mirror calls it before the first
  frame.
- `sampled_for_long(weights_lock)`: this copy is sampled for a whole live show (a mirror; never a
  training run's own grids, nor a render, whose frames must not depend on when a background job
  ends), so its sampling may invest in the long run (on a GPU, compiled passes:
  unstable.compiled_sampling); work that must see one whole set of weights holds `weights_lock`,
  the lock whoever writes them holds.
- `step_count` is the number of optimisation steps done.
- `shard` (unstable.parallel.Shard, the single process by default): the trainer sets it to train
  across torchrun processes; `step` then draws the global batch's randomness, computes this rank's
  rows, gathers its losses' inputs (`shard.gather`) and sums gradients over ranks
  (`shard.sum_grads`) so that every rank takes the one-process step.
- `fingerprint()` hashes the architecture-defining config (unstable.checkpoint.fingerprint); a
  checkpoint with another fingerprint is refused.
- `training_bytes(piece)` (a static method, called before anything is built): about how much memory
  training the piece's networks takes, or None where the system has no estimate.
- The sampling-time instruments (network bends, latent directions), shared by a system and its
  sampling copy and played only in `sample` (unstable.instruments.Instrumented gives them all):
  `actions()` names the piece's OSC actions ('directions/refresh', 'clusters/refresh');
  `refresh(what)` recomputes 'directions' or 'clusters' with the weights of the next sample;
  `defer_computations(ask)` (a live show) keeps every such computation off `sample`, asking
  `ask(what)` instead; `recompute(what, params)` computes on this system's weights (a snapshot, off
  the render thread) and returns the call that installs the result.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol

import torch
from torch import nn

from .config import load_dataclass, read_toml
from .errors import ConfigError, UnstableError
from .parallel import Shard
from .schema import TRAINING, ParamSpec

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
    shard: Shard

    def prepare(self, progress: Callable[..., Any]) -> None: ...
    def step(self, params: Mapping[str, float]) -> dict[str, float]: ...
    def panels(self) -> dict[str, int]: ...
    def sample(self, latents: Mapping[str, torch.Tensor], params: Mapping[str, float]) -> dict[str, torch.Tensor]: ...
    def state_dict(self) -> dict: ...
    def load_state_dict(self, state: dict) -> None: ...
    def param_specs(self) -> list: ...
    def fingerprint(self) -> str: ...

    def modules(self) -> dict[str, nn.Module]:
        """The trainable modules by name; their parameters and buffers are the system's weights."""
        ...

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The optimisers by name (empty on a sampling copy)."""
        ...

    def sampling_copy(self) -> "System":
        """A copy that can only sample (shares the frozen config and frozen modules, no optimiser
        state); build it once, refresh it with `accumulate`."""
        ...

    def sampled_modules(self) -> dict[str, nn.Module]:
        """The modules a sampling copy samples with, which `accumulate` refreshes (their parameters
        and buffers, in `module_tensors` order, are what a training process shares with the show)."""
        ...

    def accumulate(self, source: "System", decay: float = 0.0) -> None:
        """On a sampling copy: weights <- decay * weights + (1 - decay) * source's, buffers and
        `step_count` copied. Decay 0 is a plain copy."""
        ...

    def prepare_sampling(self) -> None:
        """Make now what `sample` would build on first use (see the module doc)."""
        ...

    def sampled_for_long(self, weights_lock: Any = None) -> None:
        """Say that this copy is sampled for a whole live show (not a training run's grids, not a
        render): its sampling may then invest in the long run (a GPU's compiled passes), and
        background work that must see one whole set of weights holds `weights_lock`, the lock
        whoever writes them holds (the show's mirror)."""
        ...

    @staticmethod
    def training_bytes(piece: Any) -> int | None:
        """About how much memory training `piece`'s networks takes (None: no estimate)."""
        ...

    def actions(self) -> list[str]:
        """The piece's OSC actions, e.g. ['directions/refresh', 'clusters/refresh']."""
        ...

    def refresh(self, what: str) -> None:
        """Recompute 'directions' or 'clusters' with the weights of the next sample."""
        ...

    def defer_computations(self, ask: Callable[[str], None]) -> None:
        """From now on, ask `ask(what)` for every directions or clusters computation instead of
        computing it in `sample` (a live show's render thread)."""
        ...

    def recompute(self, what: str, params: Mapping[str, float]) -> Callable[[], None]:
        """`refresh(what)`'s computation on this system's weights; returns the call installing it."""
        ...


# The one meaning of `learning_rate` across systems: a multiplier of the piece's configured rates.
LEARNING_RATE_RANGE = (0.01, 10.0)


def learning_rate_spec(doc: str) -> ParamSpec:
    """The live `learning_rate` of every system: x the piece's own rate(s), log-scaled, default 1."""
    return ParamSpec("learning_rate", *LEARNING_RATE_RANGE, 1.0, log=True, smoothing=0.5, doc=doc, reads=TRAINING)


def module_tensors(modules: Mapping[str, nn.Module]) -> list[torch.Tensor]:
    """Every parameter, then every buffer, of `modules` in their order: the order `accumulate_modules`
    pairs two systems' weights in, so two copies of one architecture line up tensor by tensor."""
    return ([p for m in modules.values() for p in m.parameters()]
            + [b for m in modules.values() for b in m.buffers()])


def accumulate_modules(dst: Mapping[str, nn.Module], src: Mapping[str, nn.Module], decay: float = 0.0) -> None:
    """rosinality's `accumulate` over named modules: dst parameters <- decay * dst + (1 - decay) * src
    (decay 0: copied), buffers copied (a running mean style, BatchNorm statistics: not averaged).
    Raises ValueError when the two do not pair up (other names, counts, shapes or dtypes)."""
    if dst.keys() != src.keys():
        raise ValueError(f"modules differ: {sorted(dst)} vs {sorted(src)}")
    dp = [p for k in dst for p in dst[k].parameters()]
    sp = [p for k in dst for p in src[k].parameters()]
    db = [b for k in dst for b in dst[k].buffers()]
    sb = [b for k in dst for b in src[k].buffers()]
    if len(dp) != len(sp) or len(db) != len(sb) or any(
            a.shape != b.shape or a.dtype != b.dtype for a, b in zip(dp + db, sp + sb)):
        raise ValueError("module weights differ in count, shape or dtype")
    with torch.no_grad():
        if decay == 0.0:
            dp, sp, db, sb = [], [], dp + db, sp + sb
        if dp:
            torch._foreach_lerp_(dp, sp, 1.0 - decay)
        if db:
            torch._foreach_copy_(db, sb)


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


def available_bytes(device: torch.device) -> int | None:
    """Memory a new system could take on `device`: free GPU memory, or the kernel's MemAvailable
    (None where neither can be read)."""
    device = torch.device(device)
    try:
        if device.type == "cuda":
            return int(torch.cuda.mem_get_info(device)[0])
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, RuntimeError, ValueError, IndexError):
        pass
    return None


def build_system(piece: Any, device: torch.device, source: str | None = None) -> System:
    """Instantiate the System for a validated piece on `device`.

    A piece whose networks could not fit (a system's `training_bytes` estimate above the memory
    available) is refused with one line naming `source` (its file) before anything is allocated.
    """
    _, system_cls = _kind_entry(piece.kind)
    need = system_cls.training_bytes(piece)
    if need is not None:
        have = available_bytes(device)
        if have is not None and need > have:
            where = source or f"piece {getattr(piece, 'name', piece.kind)!r}"
            raise UnstableError(f"{where}: its networks need about {need / 2**30:.1f} GiB to train and "
                                f"{device} has {have / 2**30:.1f} GiB available; refusing to build them "
                                "(a smaller resolution or fewer channels fit)")
    return system_cls(piece, device)


def resolve_device(name: str) -> torch.device:
    """`auto` picks CUDA when present, else CPU; asking for CUDA without one is a clear error."""
    from . import compiled_sampling
    from .errors import UnstableError
    if name == "auto":
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    elif name.startswith("cuda") and not torch.cuda.is_available():
        raise UnstableError(f"--device {name}: CUDA is not available on this machine (try --device cpu)")
    else:
        device = torch.device(name)
    # How sampling on the device runs is set in the environment: a bad value is one line here, where
    # every command chooses its device (rather than a log line from a tracer thread later), and the
    # process's compile settings are made here, on the main thread.
    compiled_sampling.prepare(device)
    return device
