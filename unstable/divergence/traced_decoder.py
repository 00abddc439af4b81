"""A BAD system's sampling: each decoder's pass as a trace (unstable.traces), its Bernoulli means
grey to RGB with the temperature and the latent directions' shift as tensors, or eagerly
(`DivergenceSystem.decode`) while a bend (Python hooks) is on it.

The pass reads the decoder's BatchNorm in evaluation form (its running statistics) without switching
the module's mode: a trace may be made on its own thread while the same decoder trains (`unstable
train` draws its grids from the training copy), and `eval()` there would change how training
normalises. Keyed by decoder, batch of one or more, device and convolution precision.
"""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import nn

from .. import accel
from ..traces import TraceCache, constant, enabled
from .vae import Decoder

__all__ = ["decode_traced", "sample_decoders"]


class _DecodingPass(nn.Module):
    """z [N, latent] -> Bernoulli means as [N, 3, 28, 28] in 0..1 (grey in three channels)."""

    def __init__(self, decoder: Decoder):
        super().__init__()
        self.decoder = decoder

    def forward(self, z: torch.Tensor, temperature: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        linear, bn, elu, out = self.decoder.mlp
        h = F.batch_norm(linear(z * temperature), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                         False, 0.0, bn.eps)  # [N, hidden], as in eval()
        h = elu(h) + shift
        logits = self.decoder.upsample(out(h).view(-1, 16, 2, 2))  # [N, 1, 28, 28]
        return torch.sigmoid(logits).expand(-1, 3, -1, -1).contiguous()


def decode_traced(cache: TraceCache, which: str, decoder: Decoder, z: torch.Tensor, temperature: float,
                  shift: torch.Tensor | None) -> torch.Tensor | None:
    """Decoder `which` ('decoder' or 'base') on z [N, latent] (on its device) -> [N, 3, 28, 28] in 0..1;
    `shift` [1, hidden] or None: the latent directions' offset of the first hidden layer. None while
    the graph's trace is being made: decode it eagerly this time."""
    device = z.device
    key = (which, z.shape[0] == 1, device, accel.conv_dtype(device))
    hidden = decoder.mlp[0].out_features
    inputs = (z, constant(float(temperature), (), z.dtype, device),
              constant(0.0, (1, hidden), z.dtype, device) if shift is None else shift)
    return cache.run(key, lambda: _DecodingPass(decoder), inputs)


@torch.no_grad()
def sample_decoders(system, latents: Mapping[str, torch.Tensor], params: Mapping[str, float]) -> dict[str, torch.Tensor]:
    """`DivergenceSystem.sample`: {panel: z [N, latent]} -> {panel: [N, 3, 28, 28] in 0..1} at the live
    temperature, with the live bends and latent directions."""
    t = system._params(params)["temperature"]
    out = {}
    for name, z in latents.items():
        if name not in ("decoder", "base"):
            raise KeyError(f"unknown panel {name!r}, expected 'decoder' or 'base'")
        bend, steer = system._hooks(name, params)
        if bend is None and enabled():
            net = system.decoder if name == "decoder" else system.base_decoder
            # Directions move the first hidden layer by a shift (Directions.steer): steer(0).
            shift = None if steer is None else steer(torch.zeros((1, net.mlp[0].out_features), device=system.device))
            x = decode_traced(system._traced, name, net, z.to(system.device), t, shift)
            if x is not None:  # None: its trace is being made, this once eagerly
                out[name] = x  # [N, 3, 28, 28]
                continue
        out[name] = system.decode(name, z, t, bend, steer).expand(-1, 3, -1, -1).contiguous()  # [N, 3, 28, 28]
    return out
