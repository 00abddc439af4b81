"""Small building blocks shared by the generator and the critic (pure PyTorch, no custom ops).

Every weighted layer uses the equalised learning rate of ProGAN/StyleGAN: weights are stored as
N(0, 1) / lr_mul and scaled by 1/sqrt(fan_in) * lr_mul at run time, so Adam sees every layer at the
same scale whatever its width. Weights are drawn from an explicit `torch.Generator` so that a
piece's seed alone fixes them (nothing reads torch's global RNG).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .. import accel
from ..compiled import upsample2x_op

# Leaky ReLU with the gain that keeps unit variance through it (StyleGAN's "lrelu" def_gain).
LRELU_SLOPE = 0.2
LRELU_GAIN = math.sqrt(2.0)


def lrelu(x: torch.Tensor) -> torch.Tensor:
    """Leaky ReLU with StyleGAN's gain."""
    return F.leaky_relu(x, LRELU_SLOPE) * LRELU_GAIN


def lrelu_(x: torch.Tensor) -> torch.Tensor:
    """`lrelu` of a tensor whose producer already applied LRELU_GAIN, in place.

    lrelu(y) = leaky_relu(g * y) for g > 0, so a layer scales its (tiny) weights and bias by the
    gain and the activation costs one in-place pass instead of three over the whole tensor; the
    caller must own x (no other reader, and an autograd producer that does not keep its output).
    """
    return F.leaky_relu_(x, LRELU_SLOPE)


def upsample2x(x: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x upsampling (align_corners=False): StyleGAN2's [1, 3, 3, 1] filter, edge-clamped.

    The one upsampling used for feature maps, the toRGB skips, the fade-in and the tests.
    """
    if torch.compiler.is_dynamo_compiling():  # the same kernels, kept whole by the compiler (unstable.compiled)
        return upsample2x_op(x)
    return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)


def downsample2x(x: torch.Tensor) -> torch.Tensor:
    """2x2 box downsampling, the critic's counterpart of `upsample2x`."""
    return F.avg_pool2d(x, 2)


def randn(shape, rng: torch.Generator) -> torch.Tensor:
    """N(0, 1) on the CPU from `rng`: every weight init goes through here."""
    return torch.randn(shape, generator=rng)


class EqualLinear(nn.Module):
    """Linear layer with equalised learning rate; `bias_init` 1 suits style affines."""

    def __init__(self, in_dim: int, out_dim: int, rng: torch.Generator, *, lr_mul: float = 1.0,
                 bias_init: float = 0.0):
        super().__init__()
        self.weight = nn.Parameter(randn((out_dim, in_dim), rng) / lr_mul)
        self.bias = nn.Parameter(torch.full((out_dim,), float(bias_init) / lr_mul))
        self.scale = lr_mul / math.sqrt(in_dim)
        self.lr_mul = lr_mul

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """x [N, in] -> [N, out], times `gain` (folded into the weights: see `lrelu_`)."""
        return torch.addmm(self.bias * (self.lr_mul * gain), x, (self.weight * (self.scale * gain)).t())


class EqualConv2d(nn.Module):
    """Plain conv with equalised learning rate (the critic's layers)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, rng: torch.Generator):
        super().__init__()
        self.weight = nn.Parameter(randn((out_ch, in_ch, kernel, kernel), rng))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.scale = 1.0 / math.sqrt(in_ch * kernel * kernel)
        self.padding = kernel // 2

    def forward(self, x: torch.Tensor, gain: float = 1.0) -> torch.Tensor:
        """x [N, in, H, W] -> [N, out, H, W], times `gain` (folded into the weights: see `lrelu_`)."""
        bias = self.bias if gain == 1.0 else self.bias * gain
        return accel.conv2d(x, self.weight * (self.scale * gain), bias, padding=self.padding)


def linear_lrelu(layer: EqualLinear, x: torch.Tensor) -> torch.Tensor:
    """lrelu(layer(x)) with the activation's gain folded into the layer (same maths, fewer passes)."""
    return lrelu_(layer(x, LRELU_GAIN))


def conv_lrelu(conv: EqualConv2d, x: torch.Tensor) -> torch.Tensor:
    """lrelu(conv(x)) with the activation's gain folded into the conv (same maths, fewer passes)."""
    return lrelu_(conv(x, LRELU_GAIN))


def channels_at(resolution: int, channel_base: int, min_channels: int, max_channels: int) -> int:
    """Feature width at a resolution: channel_base / resolution, clamped (StyleGAN's schedule)."""
    return int(min(max(channel_base // resolution, min_channels), max_channels))


def resolutions_between(start: int, end: int) -> list[int]:
    """[start, 2*start, ..., end] for powers of two."""
    out = [start]
    while out[-1] < end:
        out.append(out[-1] * 2)
    return out
