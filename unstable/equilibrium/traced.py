"""An equilibrium system's sampling: each generator's pass as a trace (unstable.traces), with the
live values as tensors, or eagerly while a bend (Python hooks) is on it.

A trace is made per generator, growth stage, fade-in or not, batch of one or more (one image takes
`single_image`, from weights prepared once per update; the batched trace serves every batch of two
or more: the tracer records the batch size as a size read, not a constant), device and convolution
precision. Latent directions are an additive shift of w (`Directions.steer`), handed in as a tensor.
One image samples through `single_image` whether traced or eager (bent, steered, or while its trace
is being made), so a panel draws the same image either way.
"""

from __future__ import annotations

import functools
from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .. import accel
from ..traces import TraceCache, constant, enabled
from .single_image import SingleImageWeights, single_image, single_image_weights

__all__ = ["sample_generators", "sample_traced"]


class _SamplingPass(nn.Module):
    """z [N, z_dim] -> images [N, 3, size, size] in 0..1 (the eager pass of `EquilibriumSystem.sample`)."""

    def __init__(self, generator: nn.Module, stage: int, fading: bool, size: int):
        super().__init__()
        self.generator = generator
        self.stage = stage
        self.fading = fading
        self.size = size
        # The stage's own resolution (a growing piece's early stages are drawn at the full size).
        self.resize = generator.stage_resolutions[stage] != size

    def forward(self, z: torch.Tensor, temperature: torch.Tensor, truncation: torch.Tensor, noise: torch.Tensor,
                alpha: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        g = self.generator
        w = g.mapping(z * temperature)  # [N, w_dim]
        # lerp at weight 1 is exactly w (torch.lerp computes end - (end - start) * (1 - weight) there).
        w = torch.lerp(g.w_avg, w, truncation) + shift
        x = g.synthesis(w, self.stage, alpha if self.fading else 1.0, noise_gain=noise)  # [N, 3, R, R]
        if self.resize:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x * 0.5 + 0.5).clamp_(0.0, 1.0)


class _SingleImagePass(nn.Module):
    """z [1, z_dim] -> image [1, 3, size, size] in 0..1: `single_image` at a growth stage, as a module to trace."""

    def __init__(self, form: SingleImageWeights, stage: int, fading: bool, size: int):
        super().__init__()
        self.form = form
        self.stage = stage
        self.fading = fading
        self.size = size

    def forward(self, z: torch.Tensor, temperature: torch.Tensor, truncation: torch.Tensor, noise: torch.Tensor,
                alpha: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        return single_image(self.form, z, temperature, truncation, noise, alpha, shift, stage=self.stage,
                            fading=self.fading, size=self.size)


@functools.lru_cache(maxsize=256)
def _scalars(temperature: float, truncation: float, noise: float, alpha: float, w_dim: int, dtype: torch.dtype,
             device: torch.device) -> tuple:
    """A frame's four scalars and the zero shift [1, w_dim] as tensors: one lookup while the live
    values hold, and, when one moves, the others still from `constant`."""
    scalar = lambda v: constant(v, (), dtype, device)  # noqa: E731
    return (scalar(temperature), scalar(truncation), scalar(noise), scalar(alpha),
            constant(0.0, (1, w_dim), dtype, device))


def _live_inputs(generator: nn.Module, z: torch.Tensor, temperature: float, truncation: float, noise: float,
                 alpha: float, shift: torch.Tensor | None) -> tuple:
    """The passes' tensor inputs: (z, temperature, truncation, noise, alpha, shift [1, w_dim])."""
    *scalars, zeros = _scalars(float(temperature), float(truncation), float(noise), float(alpha),
                               generator.w_avg.shape[0], z.dtype, z.device)
    return (z, *scalars, zeros if shift is None else shift)


def sample_traced(cache: TraceCache, index: int, generator: nn.Module, z: torch.Tensor, *, stage: int, alpha: float,
                  size: int, temperature: float, truncation: float, noise: float,
                  shift: torch.Tensor | None) -> torch.Tensor | None:
    """Generator `index` on z [N, z_dim] (on the generator's device) -> [N, 3, size, size] in 0..1;
    `shift` [1, w_dim] or None: the latent directions' offset of w. None while the graph's trace is
    being made: sample it eagerly this time."""
    fading = stage > 0 and alpha < 1.0
    single = z.shape[0] == 1
    key = _key(index, stage, fading, single, z.device)
    inputs = _live_inputs(generator, z, temperature, truncation, noise, alpha, shift)
    # Only the grown pass is compiled: each growth stage and fade is drawn for seconds to minutes,
    # less than a compile of it would take.
    settled = stage == len(generator.stage_resolutions) - 1 and not fading
    return cache.run(key, _pass(generator, stage, fading, size, single), inputs, settled)


def _key(index: int, stage: int, fading: bool, single: bool, device: torch.device) -> tuple:
    """What fixes a sampling graph (see unstable.traces)."""
    return (f"generator {index}", stage, fading, single, device, accel.conv_dtype(device))


def _pass(generator: nn.Module, stage: int, fading: bool, size: int, single: bool):
    """The maker of the pass module to trace: one image through `single_image`, a batch through the
    generator's own synthesis."""
    if single:
        form = single_image_weights(generator)  # refreshed to the generator's current weights
        return lambda: _SingleImagePass(form, stage, fading, size)
    return lambda: _SamplingPass(generator, stage, fading, size)


def _trace_ahead(system, stage: int, fading: bool, size: int, latents: Mapping[str, torch.Tensor]) -> None:
    """While a piece grows, its next growth step's graphs (the fade into the next stage, or the stage
    after its fade), for the batch kinds sampled now, traced on the tracer thread ahead of time, one
    a call: the step then finds them made and warmed, instead of sampling eagerly beside a tracer
    (and paying TorchScript's first, optimising calls) on the frames after it."""
    last = len(system.stage_resolutions) - 1
    if stage == last and not fading:
        return  # grown: nothing ahead
    if fading:
        upcoming = [(stage, False)]
    else:
        upcoming = ([(stage + 1, True)] if system.piece.growth.fade_steps > 0 else []) + [(stage + 1, False)]
    singles = sorted({z.shape[0] == 1 for z in latents.values()})
    for index, gen in enumerate(system.generators):
        for next_stage, next_fading in upcoming:
            for single in singles:
                key = _key(index, next_stage, next_fading, single, system.device)
                if key in system._traced:
                    continue
                z = torch.zeros((1 if single else 2, system.piece.generator.z_dim), device=system.device)
                inputs = _live_inputs(gen, z, 1.0, 1.0, 1.0, 0.5 if next_fading else 1.0, None)
                # The pass made only if the tracer takes it: `_pass` refreshes a one-image form from the
                # generator's weights, which frames spent waiting for a busy tracer need not pay for.
                make = lambda g=gen, s=next_stage, f=next_fading, o=single: _pass(g, s, f, size, o)()  # noqa: E731
                system._traced.ahead(key, make, inputs)
                return


def sample_generators(system, latents: Mapping[str, torch.Tensor], params: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """`EquilibriumSystem.sample`: {panel: z [N, z_dim]} -> {panel: [N, 3, size, size] in 0..1} at the
    piece's resolution, fixed noise, the live bends and directions."""
    stage, alpha = system.growth()
    temperature = float(params.get("temperature", 1.0))
    truncation = float(params.get("truncation", 1.0))
    noise = float(params.get("noise", 1.0))
    size = system.piece.generator.resolution
    out = {}
    fading = stage > 0 and alpha < 1.0
    # {panel: (index, generator)} (a ModuleList's indexing is slow)
    generators = {name: (i, gen) for i, (name, gen) in enumerate(zip(system.names, system.generators))}
    with torch.inference_mode():
        for name, z in latents.items():
            index, gen = generators[name]
            z = z.to(system.device)
            bend, steer = system._hooks(name, params)
            # Directions move w by a shift (Directions.steer): what steer does to zeros.
            shift = None if steer is None else steer(gen.w_avg.new_zeros((1, gen.w_avg.shape[0])))
            if bend is None and enabled():
                x = sample_traced(system._traced, index, gen, z, stage=stage, alpha=alpha, size=size,
                                  temperature=temperature, truncation=truncation, noise=noise, shift=shift)
                if x is not None:  # None: its trace is being made, this once eagerly
                    out[name] = x  # [N, 3, size, size]
                    continue
            if z.shape[0] == 1:  # the same pass as the trace's, eagerly, with the bend's hooks
                inputs = _live_inputs(gen, z, temperature, truncation, noise, alpha, shift)
                out[name] = single_image(single_image_weights(gen), *inputs, stage=stage,
                                         fading=fading, size=size, bend=bend)  # [1, 3, size, size]
                continue
            x = gen(z * temperature, stage, alpha, noise_gain=noise, truncation=truncation, bend=bend, steer=steer)
            if x.shape[-1] != size:
                x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
            out[name] = (x * 0.5 + 0.5).clamp_(0.0, 1.0)  # [N, 3, size, size]
        if enabled():
            _trace_ahead(system, stage, fading, size, latents)
    return out
