"""A BAD decoder's sampling pass as a trace (unstable.traces): `DivergenceSystem.decode`'s Bernoulli
means, grey to RGB, with the temperature and the latent directions' shift as tensors.

The pass reads the decoder's BatchNorm in evaluation form (its running statistics) without switching
the module's mode: a trace may be made on its own thread while the same decoder trains (`unstable
train` draws its grids from the training copy), and `eval()` there would change how training
normalises. Keyed by decoder, batch of one or more, device and convolution precision.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import accel
from ..traces import TraceCache
from .vae import Decoder

__all__ = ["decode_traced"]


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
    inputs = (z, torch.tensor(float(temperature), dtype=z.dtype, device=device),
              torch.zeros((1, hidden), dtype=z.dtype, device=device) if shift is None else shift)
    return cache.run(key, lambda: _DecodingPass(decoder), inputs)
