"""The critic over generators: a progressively growing conv net -> (logits over N generators, embedding).

    image [B, 3, R, R] -> fromRGB(R) -> [conv, downsample, conv] (R -> R/2) -> ... -> 4x4
                       -> conv -> flatten -> linear -> embedding [B, E] -> lrelu -> linear -> logits [B, N]

It mirrors the generator's growth (ProGAN): the stage decides which fromRGB layer the image
enters through; while the newest block fades in, its input is
lerp(fromRGB(R/2)(downsample(image)), block(fromRGB(R)(image)), alpha).
The embedding is the pre-activation output of the penultimate layer: the feature space in which
the generators' `embedding` objective measures distances.
"""

from __future__ import annotations

import torch
from torch import nn

from .layers import EqualConv2d, EqualLinear, channels_at, conv_lrelu, downsample2x, lrelu, resolutions_between


class CriticBlock(nn.Module):
    """Resolution R -> R/2: a 3x3 conv at R, a 2x2 box downsample, a widening 3x3 conv at R/2.

    Widening after the downsample (as StyleGAN2's strided conv does) costs a quarter of widening at R.
    """

    def __init__(self, in_ch: int, out_ch: int, rng: torch.Generator):
        super().__init__()
        self.conv0 = EqualConv2d(in_ch, in_ch, 3, rng)
        self.conv1 = EqualConv2d(in_ch, out_ch, 3, rng)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return conv_lrelu(self.conv1, downsample2x(conv_lrelu(self.conv0, x)))


class Critic(nn.Module):
    def __init__(self, *, resolution: int, start_resolution: int, generators: int, embedding_dim: int,
                 channel_base: int, min_channels: int, max_channels: int, rng: torch.Generator):
        super().__init__()
        self.resolutions = resolutions_between(4, resolution)
        self.stage_resolutions = resolutions_between(start_resolution, resolution)
        ch = lambda r: channels_at(r, channel_base, min_channels, max_channels)  # noqa: E731
        # Keyed by resolution as strings (ModuleDict keys must be strings).
        self.from_rgb = nn.ModuleDict({str(r): EqualConv2d(3, ch(r), 1, rng) for r in self.resolutions})
        self.blocks = nn.ModuleDict({str(r): CriticBlock(ch(r), ch(r // 2), rng) for r in self.resolutions[1:]})
        c4 = ch(4)
        self.final_conv = EqualConv2d(c4, c4, 3, rng)
        self.embed = EqualLinear(c4 * 16, embedding_dim, rng)
        self.classify = EqualLinear(embedding_dim, generators, rng)

    def forward(self, image: torch.Tensor, stage: int, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
        """image [B, 3, R, R] at the stage's resolution -> (logits [B, N], embedding [B, E])."""
        r = self.stage_resolutions[stage]
        assert image.shape[-1] == r and image.shape[-2] == r, f"critic at {r}px got {tuple(image.shape)}"
        x = conv_lrelu(self.from_rgb[str(r)], image)
        if r > 4:
            x = self.blocks[str(r)](x)
            if stage > 0 and alpha < 1.0:
                skip = conv_lrelu(self.from_rgb[str(r // 2)], downsample2x(image))
                x = torch.lerp(skip, x, float(alpha))
            r //= 2
        while r > 4:
            x = self.blocks[str(r)](x)
            r //= 2
        x = conv_lrelu(self.final_conv, x)  # [B, C, 4, 4]
        embedding = self.embed(x.flatten(1))  # [B, E]
        logits = self.classify(lrelu(embedding))  # [B, N]
        return logits, embedding
