"""A style-based, progressively growing generator in pure PyTorch (StyleGAN-1/2 lineage).

    z [N, z_dim] --mapping MLP--> w [N, w_dim] --(truncation)--> styles of every layer
    const 4x4 -> [styled conv] -> toRGB ---------------------------------------------+ skip
              -> up, [styled conv] x2 -> toRGB (8x8) ---------------------- upsample + skip
              -> ...                                                             ...
              -> up, [styled conv] x2 -> toRGB (R x R) -> tanh -> image [N, 3, R, R] in -1..1

- Styled conv = modulated 3x3 conv with demodulation (StyleGAN2), written as "scale the input,
  shared conv, scale the output": the same maths as the grouped-conv form, and faster for small
  batches on a CPU because it is one ordinary conv. A single image (the live path) folds its style
  into the weights instead, which saves two passes over the activations.
- Per-layer noise: drawn from the caller's `torch.Generator` while training; a fixed buffer per
  layer (drawn once from the piece's seed) when rendering, so a latent walk does not flicker.
- Progressive growing with the skip architecture: every layer up to the target resolution exists
  from the start, a stage only runs the blocks up to its resolution. While block k fades in, the
  output is lerp(upsample2x(image of stage k-1), image of stage k, alpha), in image space, so
  alpha = 0 is exactly the previous stage's output upsampled.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from .. import accel
from .layers import LRELU_GAIN, EqualLinear, channels_at, linear_lrelu, lrelu_, randn, resolutions_between, upsample2x


class MappingNetwork(nn.Module):
    """z -> w: `layers` equalised linear layers with lrelu (lr_mul 0.01 as in StyleGAN).

    Unlike StyleGAN, z is not normalised onto the sphere first: the live `temperature` scales z, and
    a normalisation would undo exactly that.
    """

    def __init__(self, z_dim: int, w_dim: int, layers: int, lr_mul: float, rng: torch.Generator):
        super().__init__()
        dims = [z_dim] + [w_dim] * layers
        self.layers = nn.ModuleList(EqualLinear(a, b, rng, lr_mul=lr_mul) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z  # [N, z_dim]
        for layer in self.layers:
            x = linear_lrelu(layer, x)
        return x  # [N, w_dim]


class StyledConv(nn.Module):
    """Modulated/demodulated 3x3 conv (optionally after 2x upsampling), noise, bias, lrelu."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, rng: torch.Generator, *,
                 up: bool, noise: bool, noise_init: float):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, rng, bias_init=1.0)
        self.weight = nn.Parameter(randn((out_ch, in_ch, 3, 3), rng))
        self.bias = nn.Parameter(torch.zeros(out_ch))
        self.scale = 1.0 / math.sqrt(in_ch * 9)
        self.up = up
        self.resolution = resolution
        self.use_noise = noise
        if noise:
            self.noise_strength = nn.Parameter(torch.tensor(float(noise_init)))
            # The rendering noise: fixed per layer, part of the weights (and of the checkpoint).
            self.register_buffer("fixed_noise", randn((1, 1, resolution, resolution), rng))

    def forward(self, x: torch.Tensor, w: torch.Tensor, noise_rng: torch.Generator | None,
                noise_gain: float, styles: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, in, H, W] -> [N, out, H', W']; `styles` [N, in]: this layer's affine(w), when the
        caller computed every layer's at once (`Generator.styles`)."""
        if styles is None:
            styles = self.affine(w)  # [N, in]
        weight = self.weight * self.scale  # [out, in, 3, 3]
        if self.up:
            x = upsample2x(x)
        # The activation's gain goes into the demodulation, the bias and the noise strength (all
        # small), so that after the conv only one fused multiply-add, one add and one in-place
        # lrelu pass over the activations: these layers are thin (16 channels at 64 px and up), so
        # the passes over the activations, not the conv, are most of a training step.
        if x.shape[0] == 1:
            # One image (live rendering): fold style, demodulation and gain into the weights, one conv.
            weight = weight * styles[0][None, :, None, None]
            weight = weight * (torch.rsqrt(weight.square().sum(dim=(1, 2, 3)) + 1e-8) * LRELU_GAIN)[:, None, None, None]
            x = accel.conv2d_single(x, weight, self.bias * LRELU_GAIN, padding=1)  # [1, out, H, W]
            noise = self._noise(x, noise_rng, noise_gain)
            return lrelu_(x if noise is None else x.add_(noise))
        x = accel.conv2d(x * styles[:, :, None, None], weight, padding=1)  # [N, out, H, W]
        # Demodulation: 1 / ||w'||, with w' = weight * style, per sample and output channel.
        demod = torch.rsqrt(styles.square() @ weight.square().sum(dim=(2, 3)).t() + 1e-8) * LRELU_GAIN  # [N, out]
        noise = self._noise(x, noise_rng, noise_gain)  # [N or 1, 1, H, W] or None
        x = x * demod[:, :, None, None] if noise is None else torch.addcmul(noise, x, demod[:, :, None, None])
        return lrelu_(x.add_((self.bias * LRELU_GAIN)[None, :, None, None]))

    def _noise(self, x: torch.Tensor, noise_rng, noise_gain: float) -> torch.Tensor | None:
        """The per-pixel noise term, strength and activation gain applied: [N or 1, 1, H, W], or None."""
        if not self.use_noise:
            return None
        if noise_rng is None:
            noise = self.fixed_noise * noise_gain
        else:
            n, _, h, wd = x.shape
            if isinstance(noise_rng, torch.Generator):
                noise = torch.randn((n, 1, h, wd), generator=noise_rng, device=x.device, dtype=x.dtype)
            else:  # unstable.parallel.ShardNoise: this rank's rows of the global batch's noise
                noise = noise_rng.randn((n, 1, h, wd), device=x.device, dtype=x.dtype)
        return (self.noise_strength * LRELU_GAIN) * noise


class _ModulatedPixelsToRGB(torch.autograd.Function):
    """pixels [N, P, C], per-sample weights [N, 3, C], bias [3] -> rgb [N, 3, P] (= weight @ pixels^T + bias).

    Autograd's own bmm backward would take the weights' gradient as pixels^T @ grad, a GEMM 3
    columns wide (several times slower than grad @ pixels), and the pixels' gradient as the
    transpose of what the NHWC memory wants; here each is taken the fast way round, in the layout
    its tensor has.
    """

    @staticmethod
    def forward(ctx, pixels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(pixels, weight)
        return torch.baddbmm(bias[None, :, None], weight, pixels.transpose(1, 2))  # [N, 3, P]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        pixels, weight = ctx.saved_tensors
        grad_pixels = torch.bmm(grad.transpose(1, 2), weight) if ctx.needs_input_grad[0] else None  # [N, P, C]
        grad_weight = torch.bmm(grad, pixels) if ctx.needs_input_grad[1] else None  # [N, 3, C]
        grad_bias = grad.sum(dim=(0, 2)) if ctx.needs_input_grad[2] else None  # [3]
        return grad_pixels, grad_weight, grad_bias


class ToRGB(nn.Module):
    """Modulated 1x1 conv to RGB, without demodulation (StyleGAN2)."""

    def __init__(self, in_ch: int, w_dim: int, rng: torch.Generator, gain: float = 1.0):
        super().__init__()
        self.affine = EqualLinear(w_dim, in_ch, rng, bias_init=1.0)
        self.weight = nn.Parameter(randn((3, in_ch, 1, 1), rng) * gain)
        self.bias = nn.Parameter(torch.zeros(3))
        self.scale = 1.0 / math.sqrt(in_ch)

    def forward(self, x: torch.Tensor, w: torch.Tensor, styles: torch.Tensor | None = None) -> torch.Tensor:
        """x [N, in, H, W] -> rgb [N, 3, H, W]; `styles` [N, in]: affine(w), as for `StyledConv`."""
        styles = (self.affine(w) if styles is None else styles) * self.scale  # [N, in]
        # A modulated 1x1 conv is a batched matmul: [N, 3, in] @ [N, in, H*W]. (A 1x1 conv with
        # three outputs takes PyTorch's slow CPU path.)
        weight = self.weight.flatten(1)[None] * styles[:, None, :]  # [N, 3, in]
        n, c, h, wd = x.shape
        if (x.requires_grad and c > 1 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)
                and not torch.compiler.is_dynamo_compiling()):
            # Training: x's pixels as rows of its NHWC memory (a view), so that x's gradient comes
            # back channels_last: reshaping x to [N, C, H*W] copies it to NCHW, and its gradient,
            # handed back NCHW, meets the next conv's channels_last one and the activation's
            # backward in mixed layouts, which ATen's elementwise kernels run many times slower.
            # (Sampling has no gradient and keeps the copy, faster there; the compiler picks its
            # own layouts.)
            pixels = x.permute(0, 2, 3, 1).reshape(n, h * wd, c)  # [N, H*W, in], a view
            return _ModulatedPixelsToRGB.apply(pixels, weight, self.bias).view(n, 3, h, wd)
        rgb = torch.baddbmm(self.bias[None, :, None], weight, x.reshape(n, c, h * wd))  # [N, 3, H*W]
        return rgb.view(n, 3, h, wd)


class Block(nn.Module):
    """One resolution: (upsampling conv +) conv + toRGB. The 4x4 block starts from a learnt constant."""

    def __init__(self, in_ch: int, out_ch: int, w_dim: int, resolution: int, rng: torch.Generator, *,
                 noise: bool, noise_init: float, rgb_gain: float = 1.0):
        super().__init__()
        self.first = resolution == 4
        if self.first:
            self.const = nn.Parameter(randn((1, out_ch, 4, 4), rng))
            self.convs = nn.ModuleList([StyledConv(out_ch, out_ch, w_dim, 4, rng, up=False, noise=noise,
                                                   noise_init=noise_init)])
        else:
            self.convs = nn.ModuleList([
                StyledConv(in_ch, out_ch, w_dim, resolution, rng, up=True, noise=noise, noise_init=noise_init),
                StyledConv(out_ch, out_ch, w_dim, resolution, rng, up=False, noise=noise, noise_init=noise_init),
            ])
        self.to_rgb = ToRGB(out_ch, w_dim, rng, rgb_gain)

    def forward(self, x: torch.Tensor | None, w: torch.Tensor, noise_rng, noise_gain: float, bend=None,
                styles: list[torch.Tensor] | None = None):
        """`styles`: the affines' outputs of the convs and then the toRGB (`Generator.styles`), or None."""
        if self.first:
            x = self.const.expand(w.shape[0], -1, -1, -1)
        for j, conv in enumerate(self.convs):
            x = conv(x, w, noise_rng, noise_gain, None if styles is None else styles[j])
            if bend is not None:  # a hook point for network bending: `b<resolution>.<conv>`
                x = bend(f"b{conv.resolution}.{j}", x)
        return x, self.to_rgb(x, w, None if styles is None else styles[-1])


class Generator(nn.Module):
    """Mapping network + synthesis network growing from `start_resolution` to `resolution`."""

    def __init__(self, *, resolution: int, start_resolution: int, z_dim: int, w_dim: int, mapping_layers: int,
                 mapping_lr_mul: float, channel_base: int, min_channels: int, max_channels: int, noise: bool,
                 noise_init: float, new_rgb_gain: float = 1.0, rng: torch.Generator):
        super().__init__()
        self.resolution = resolution
        self.z_dim = z_dim
        self.resolutions = resolutions_between(4, resolution)  # every block
        self.stage_resolutions = resolutions_between(start_resolution, resolution)  # what growth visits
        ch = lambda r: channels_at(r, channel_base, min_channels, max_channels)  # noqa: E731
        self.mapping = MappingNetwork(z_dim, w_dim, mapping_layers, mapping_lr_mul, rng)
        self.blocks = nn.ModuleList(
            Block(ch(max(r // 2, 4)), ch(r), w_dim, r, rng, noise=noise, noise_init=noise_init,
                  rgb_gain=1.0 if r <= start_resolution else new_rgb_gain)
            for r in self.resolutions)
        # Running mean of w, for the truncation trick; updated by the trainer, never by sampling.
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def stage_blocks(self, stage: int) -> int:
        """How many blocks a stage runs (the 4x4 block is block 0)."""
        return self.resolutions.index(self.stage_resolutions[stage]) + 1

    def layer_names(self) -> dict[str, bool]:
        """The hook points of network bending, {name: spatial}: `b<resolution>.<conv>` after every
        styled conv (noise, bias and lrelu included), e.g. b4.0, b8.0, b8.1, ... b64.1."""
        return {f"b{block.convs[j].resolution}.{j}": True for block in self.blocks for j in range(len(block.convs))}

    def synthesis(self, w: torch.Tensor, stage: int, alpha: float, *, noise_rng: torch.Generator | None = None,
                  noise_gain: float = 1.0, bend=None) -> torch.Tensor:
        """w [N, w_dim] -> images [N, 3, R, R] in -1..1 at the stage's resolution R.

        `alpha` < 1 fades the stage's last block in (only meaningful for stage > 0; a tensor alpha,
        the traced sampling pass's, always fades). `bend`
        (sampling only) is called as bend(layer, x) -> x at every hook point (`layer_names`).
        """
        count = self.stage_blocks(stage)
        fading = stage > 0 and (torch.is_tensor(alpha) or alpha < 1.0)
        # Training: every layer's style in one product (fewer operations for autograd to record and
        # replay); sampling keeps each layer's own, which its traces and the shipped clusters were made with.
        styles = self.styles(w, count) if torch.is_grad_enabled() else [None] * count
        x, rgb, previous = None, None, None
        for i in range(count):
            x, block_rgb = self.blocks[i](x, w, noise_rng, noise_gain, bend, styles[i])
            if fading and i == count - 1:
                previous = rgb
            rgb = block_rgb if rgb is None else upsample2x(rgb) + block_rgb
        image = torch.tanh(rgb)
        if previous is not None:
            image = torch.lerp(upsample2x(torch.tanh(previous)), image, alpha if torch.is_tensor(alpha) else float(alpha))
        return image

    def styles(self, w: torch.Tensor, count: int) -> list[list[torch.Tensor]]:
        """Every style affine of the first `count` blocks applied to w [N, w_dim], as one matrix
        product: per block, [N, in] for each conv and then its toRGB (what each layer's
        `affine(w)` gives; one product instead of 9-15 small ones, forward and backward)."""
        affines = [[conv.affine for conv in block.convs] + [block.to_rgb.affine] for block in self.blocks[:count]]
        flat = [a for block in affines for a in block]
        scale, lr_mul = flat[0].scale, flat[0].lr_mul
        assert all(a.scale == scale and a.lr_mul == lr_mul for a in flat), "style affines of one width and lr_mul"
        weight = torch.cat([a.weight for a in flat])  # [sum of in, w_dim]
        bias = torch.cat([a.bias for a in flat])  # [sum of in]
        out = torch.addmm(bias * lr_mul, w, (weight * scale).t())  # [N, sum of in]
        parts = iter(out.split([a.weight.shape[0] for a in flat], dim=1))
        return [[next(parts) for _ in block] for block in affines]

    def forward(self, z: torch.Tensor, stage: int, alpha: float, *, noise_rng: torch.Generator | None = None,
                noise_gain: float = 1.0, truncation: float = 1.0, bend=None, steer=None) -> torch.Tensor:
        """z [N, z_dim] -> images [N, 3, R, R]; `steer` (sampling only) moves w after truncation
        (latent directions), `bend` transforms activations (see `synthesis`)."""
        w = self.mapping(z)
        if truncation != 1.0:
            w = torch.lerp(self.w_avg, w, float(truncation))
        if steer is not None:
            w = steer(w)
        return self.synthesis(w, stage, alpha, noise_rng=noise_rng, noise_gain=noise_gain, bend=bend)
