"""torch.compile (inductor) for the equilibrium pieces' training step: `UNSTABLE_COMPILE=1`.

`unstable train` then runs each generator's synthesis pass, the critic and the generators' objective
through inductor: the many thin elementwise passes and their backward are fused into a few loops
(the convolutions stay oneDNN's). The same maths: the losses of a step from the same weights agree
with eager ones to float rounding (tests/test_compile_training.py states the tolerance); training
then follows its own rounding, as another machine's would.

- Only a grown piece (its final stage, faded in) runs compiled; the growth stages run eager.
  Every stage and every fade would be a compile of its own, minutes each on a cold cache, so a run
  compiles once: on its first grown step, which takes the compile time (the log says so).
- The compiled code is kept on disk, in TORCHINDUCTOR_CACHE_DIR, by default `.cache/unstable/inductor`
  (beside the base models' cache): the next run of the same piece on the same machine loads it.
- A compile that fails falls back to eager with one log line: the first compiled step is taken
  from a copy of the state, so a failure there is undone and the step is run eagerly instead; a
  later failure (a recompile, say after a batch change) turns compiling off and is raised to the
  training guard, which undoes that one step.
- In a live show only in its training process (a CPU show's default, unstable.live.train_child):
  compiling holds the GIL for minutes, which the show's own process cannot give its display; a show
  that trains on a thread of its own says so in one line and trains eagerly.

The synthesis pass draws its per-layer noise from a torch.Generator, which dynamo cannot trace: it
is drawn beforehand from the same generator, in the order and shapes the eager pass draws it, and
handed in as tensors, so a compiled step sees the same random numbers as an eager one.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from .errors import UnstableError

DEFAULT_CACHE = Path(".cache") / "unstable" / "inductor"


def requested() -> bool:
    """UNSTABLE_COMPILE, checked: one clear line when it is neither 0 nor 1."""
    value = os.environ.get("UNSTABLE_COMPILE", "0").strip() or "0"
    if value not in ("0", "1"):
        raise UnstableError(f"UNSTABLE_COMPILE={value!r}: expected 0 (eager, the default) or 1 (compile training)")
    return value == "1"


def cache_dir() -> Path:
    """Where inductor keeps compiled code: TORCHINDUCTOR_CACHE_DIR, else `.cache/unstable/inductor`."""
    return Path(os.environ.get("TORCHINDUCTOR_CACHE_DIR") or DEFAULT_CACHE)


def _memory_format(x: torch.Tensor) -> torch.memory_format:
    return torch.channels_last if x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last) \
        else torch.contiguous_format


# Bilinear 2x upsampling as an op the compiler keeps whole. Traced as it is, AOTAutograd splits
# it into index arithmetic and its backward into a scatter-add, which inductor's CPU code runs
# several times slower than ATen's kernels: fused, a generator's training step got no faster.
@torch.library.custom_op("unstable::upsample2x", mutates_args=())
def upsample2x_op(x: torch.Tensor) -> torch.Tensor:
    """F.interpolate(x, scale_factor=2, bilinear, align_corners=False): [N, C, H, W] -> [N, C, 2H, 2W]."""
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False).contiguous(
        memory_format=_memory_format(x))


@upsample2x_op.register_fake
def _(x):
    n, c, h, w = x.shape
    return x.new_empty((n, c, 2 * h, 2 * w)).contiguous(memory_format=_memory_format(x))


@torch.library.custom_op("unstable::upsample2x_backward", mutates_args=())
def _upsample2x_backward(grad: torch.Tensor) -> torch.Tensor:
    n, c, h, w = grad.shape
    out = torch.ops.aten.upsample_bilinear2d_backward(grad, [h, w], [n, c, h // 2, w // 2], False, 2.0, 2.0)
    return out.contiguous(memory_format=_memory_format(grad))


@_upsample2x_backward.register_fake
def _(grad):
    n, c, h, w = grad.shape
    return grad.new_empty((n, c, h // 2, w // 2)).contiguous(memory_format=_memory_format(grad))


upsample2x_op.register_autograd(lambda ctx, grad: _upsample2x_backward(grad))


class _Replay:
    """Stands in for the training noise generator (as unstable.parallel.ShardNoise does): hands
    out noise tensors drawn beforehand, in order."""

    def __init__(self, noises: Sequence[torch.Tensor]):
        self.noises = list(noises)
        self.at = 0

    def randn(self, shape, device, dtype) -> torch.Tensor:
        noise = self.noises[self.at]
        self.at += 1
        return noise


def _draw_noise(gen, stage: int, batch: int, rng, device, dtype) -> list[torch.Tensor]:
    """The per-layer noise [batch, 1, R, R] a training synthesis pass at `stage` draws, in its order."""
    out = []
    for block in gen.blocks[:gen.stage_blocks(stage)]:
        for conv in block.convs:
            if conv.use_noise:
                shape = (batch, 1, conv.resolution, conv.resolution)
                if isinstance(rng, torch.Generator):
                    out.append(torch.randn(shape, generator=rng, device=device, dtype=dtype))
                else:  # unstable.parallel.ShardNoise
                    out.append(rng.randn(shape, device=device, dtype=dtype))
    return out


def _replayed_synthesis(gen, w: torch.Tensor, noises: list[torch.Tensor], stage: int, alpha: float) -> torch.Tensor:
    return gen.synthesis(w, stage, alpha, noise_rng=_Replay(noises))


class CompiledTraining:
    """The compiled training passes of one EquilibriumSystem, and the switch back to eager."""

    def __init__(self, system, echo: Callable[[str], None], backend="inductor"):
        self.system, self.echo = system, echo
        # The system's own passes and step; the step runs through whichever passes are switched in.
        self.eager_synthesis, self.eager_objective = system.train_synthesis, system.train_objective
        self.eager_critic, self.run_step = system.critic.forward, system.step
        self.final = len(system.stage_resolutions) - 1
        self.on, self.compiled_once = True, False
        self.synthesis = torch.compile(_replayed_synthesis, dynamic=False, backend=backend)
        self.critic = torch.compile(self.eager_critic, dynamic=False, backend=backend)
        self.objective = torch.compile(self.eager_objective, dynamic=False, backend=backend)
        system.train_synthesis, system.train_objective = self._synthesis, self._objective
        system.critic.forward = self._critic
        system.step = self._step

    def _grown(self, stage: int, alpha) -> bool:
        return self.on and stage == self.final and float(alpha) >= 1.0

    def _synthesis(self, gen, w, stage, alpha, noise_rng):
        if not self._grown(stage, alpha):
            return self.eager_synthesis(gen, w, stage, alpha, noise_rng)
        noises = _draw_noise(gen, stage, w.shape[0], noise_rng, w.device, w.dtype)
        return self.synthesis(gen, w, noises, stage, alpha)

    def _critic(self, image, stage, alpha):
        return (self.critic if self._grown(stage, alpha) else self.eager_critic)(image, stage, alpha)

    def _objective(self, *args):
        return (self.objective if self._grown(*self.system.growth()) else self.eager_objective)(*args)

    def _step(self, params):
        if not self._grown(*self.system.growth()):
            return self.run_step(params)
        if not self.compiled_once:
            return self._first(params)
        try:
            return self.run_step(params)
        except Exception as e:  # a recompile that failed: eager from now on, the guard undoes this step
            self.off(e)
            raise

    def _first(self, params):
        """The first grown step compiles; taken from a copy of the state, so that a failure is undone."""
        from .guard import clone_state

        system = self.system
        saved, batches, critic_log = clone_state(system.state_dict()), system._batches, list(system.critic_log)
        self.echo(f"compiling the training step (UNSTABLE_COMPILE=1; cache {cache_dir()}) ...")
        start = time.perf_counter()
        try:
            out = self.run_step(params)
        except Exception as e:
            system.load_state_dict(saved)
            system._batches = batches
            system.critic_log.clear()
            system.critic_log.extend(critic_log)
            self.off(e)
            return self.run_step(params)
        self.compiled_once = True
        self.echo(f"compiled the training step in {time.perf_counter() - start:.0f} s")
        return out

    def off(self, error: BaseException) -> None:
        """Back to the eager passes for good, with one line saying why."""
        self.on = False
        self.echo(f"UNSTABLE_COMPILE: compiling the training step failed ({why_compiling_failed(error)}); "
                  "training eagerly")


def why_compiling_failed(error: BaseException) -> str:
    """`Type: first line` of what the compiler raised, under dynamo's wrapping: a log line's reason."""
    cause = error
    while (inner := getattr(cause, "inner_exception", None) or cause.__cause__) is not None:
        cause = inner  # dynamo wraps what the compiler raised
    first = (str(cause).strip().splitlines() or [""])[0]
    return f"{type(cause).__name__}: {first[:200]}"


def compile_training(system, echo: Callable[[str], None] = print, backend="inductor") -> CompiledTraining | None:
    """Compile an equilibrium system's training passes in place (see the module doc; `backend`:
    torch.compile's, for tests); other systems are left as they are, with one line (None)."""
    if not (hasattr(system, "train_synthesis") and hasattr(system, "critic")):
        echo(f"UNSTABLE_COMPILE: only the equilibrium pieces compile; {system.piece.name} trains eagerly")
        return None
    prepare_inductor(one_worker=True)
    if backend == "inductor":
        from . import inductor_masks

        inductor_masks.install()  # its leaky ReLU masks stored at memory speed (see that module)
    return CompiledTraining(system, echo, backend)


def prepare_inductor(one_worker: bool) -> None:
    """Inductor's process-wide settings, for training's compiles and sampling's: compiled code kept
    in `cache_dir()`; with `one_worker`, one compile worker (unless TORCHINDUCTOR_COMPILE_THREADS
    says how many), since a pool of them would take the cores the run or show shares with other work."""
    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(cache_dir().resolve()))
    if one_worker and "TORCHINDUCTOR_COMPILE_THREADS" not in os.environ:
        import torch._inductor.config as inductor_config

        inductor_config.compile_threads = 1
