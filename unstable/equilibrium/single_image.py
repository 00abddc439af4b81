"""A generator's sampling pass for one image (the live path), from weights prepared once per update.

Why: at one image and 64 px, a pass is some 300 small operations besides its convolutions, and about
half of them only rescale weights (the equalised learning rate's scales, the activation gain, the
noise strength): the same results frame after frame until the weights change. `SingleImageWeights`
keeps those results, recomputed only when one of the generator's tensors was written to (the
mirror's in-place copies, an optimiser's step, a loaded state: each moves the tensor's version
counter), and `single_image` draws from them with about a third of the operations:

- every layer's style from one matrix product (the affines of all layers side by side);
- demodulation from the style and the precomputed sums of squared weights (sum_k (W s)^2 =
  s^2 . sum_k W^2), a run of layers' at once from one block-diagonal matrix, folded into the
  weights with the style as one outer product;
- the noise strength and the activation gain folded into the fixed noise and the biases; all the
  noises times the live noise gain in one product, all the toRGB weights times their styles in
  another;
- the toRGB weights doubled, so that sigmoid(2 rgb) = (tanh(rgb) + 1) / 2, the image in 0..1, is one
  sigmoid (a float's doubling is exact; the sum of the skips is linear), the toRGB biases entering
  once at the first block and each skip added inside its block's toRGB product;
- sizes handed to the operations as numbers, never read from a tensor: a trace keeps them as
  constants instead of recording a dozen operations per read;
- on a CPU, the 8-32 px layers' weights packed once for oneDNN (`accel.pack_conv_weight`): there
  the style scales the input and the demodulation the output, since a weight folded anew each
  frame would be reordered by oneDNN on every call, which costs as much as those layers' convolutions.

The same maths as `Generator.forward` on one image with fixed noise, within float rounding
(tests/test_single_image.py); traced (`unstable.equilibrium.traced`) or eager (bends, steering),
the pass is this one function, so the two draw the same image bit for bit.
"""

from __future__ import annotations

import operator
import threading
import weakref

import torch
import torch.nn.functional as F
from torch import nn

from .. import accel
from .generator import Generator
from .layers import LRELU_GAIN, LRELU_SLOPE

__all__ = ["SingleImageWeights", "single_image", "single_image_weights"]

G = LRELU_GAIN

# The layers whose weights are packed for oneDNN on a CPU (from 8x8 to 32x32): there the per-call
# reorder of a folded weight costs more than scaling the activations (docs/figures.md, eighth round).
PACKED_RESOLUTIONS = (8, 32)


class _Prepared(nn.Module):
    """Buffers computed from a source module's weights: `derive(source)` says how; `take` stores them
    (registered the first time, copied in place after, so that a trace holding them sees the update)."""

    def derive(self, source: nn.Module) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def take(self, source: nn.Module, first: bool) -> None:
        for name, value in self.derive(source).items():
            if first:  # (a packed weight is made afresh, and has no plain layout to clone)
                self.register_buffer(name, value if value.is_mkldnn else value.detach().clone(), persistent=False)
            else:
                getattr(self, name).copy_(value)


class _Linear(_Prepared):
    """A mapping layer with the activation's gain folded in: lrelu(layer(x)) = leaky_relu(addmm(...))."""

    def derive(self, layer):
        return {"weight_t": (layer.weight * (layer.scale * G)).t(), "bias": layer.bias * (layer.lr_mul * G)}


class _Conv(_Prepared):
    """A styled conv's scaled weight [out, in, 3, 3] and bias (times the activation's gain). (Its
    demodulation's sums of squares are in a `_Demodulation`, its noise in `_Styles`.)"""

    def __init__(self, conv):
        super().__init__()
        self.up = conv.up
        self.resolution = conv.resolution
        self.use_noise = conv.use_noise
        # 8-32 px on a CPU: the weight also packed for oneDNN (see `single_image`).
        self.input_shape = (1, conv.weight.shape[1], conv.resolution, conv.resolution)
        self.packs = PACKED_RESOLUTIONS[0] <= conv.resolution <= PACKED_RESOLUTIONS[1] and accel.packs(conv.weight.device)

    def derive(self, conv):
        weight = conv.weight * conv.scale
        out = {"weight": weight, "bias": conv.bias * G}
        if self.packs:
            out["packed"] = accel.pack_conv_weight(weight, self.input_shape, padding=1)
        return out


class _Demodulation(_Prepared):
    """The demodulation of a run of consecutive convs from one matrix-vector product: their sums of
    squared weights over the kernel, each conv's [out, in] on the diagonal of `sq` [sum of outs, sum
    of ins] (the zeros add nothing), times the squares of their styles (`style_start:style_end` of
    the convs' styles side by side) -> their demodulations [sum of outs], split by `widths`."""

    def __init__(self, convs, style_start: int):
        super().__init__()
        self.widths = [conv.weight.shape[0] for conv in convs]
        self.style_start = style_start
        self.style_end = style_start + sum(conv.weight.shape[1] for conv in convs)

    def derive(self, convs):
        # rsqrt(v + eps) * G = rsqrt(v / G^2 + eps / G^2), G^2 = 2: the gain folded into the sums.
        sq = torch.block_diag(*[(c.weight * c.scale).square().sum(dim=(2, 3)) for c in convs]) / G ** 2
        return {"sq": sq, "eps": sq.new_full((sq.shape[0],), 1e-8 / G ** 2)}


# A run of convs shares one block-diagonal matrix while it holds at most this many numbers (256 KB):
# a 64 px generator's nine convs take two, a wide 512 px one about one per conv, not a matrix of
# hundreds of MB.
DEMODULATION_RUN_SIZE = 65536


def _demodulation_runs(convs) -> list[list]:
    """The convs cut into consecutive runs whose block-diagonal matrix stays within DEMODULATION_RUN_SIZE."""
    runs, outs, ins = [], 0, 0
    for conv in convs:
        out, in_ = conv.weight.shape[:2]
        if runs and (outs + out) * (ins + in_) <= DEMODULATION_RUN_SIZE:
            runs[-1].append(conv)
            outs, ins = outs + out, ins + in_
        else:
            runs.append([conv])
            outs, ins = out, in_
    return runs


class _Styles(_Prepared):
    """What every layer reads at once:

    - the style affines side by side: w [1, w_dim] @ weight_t -> [1, sum of widths], a toRGB's own
      scale folded into its columns;
    - the toRGB weights side by side, doubled (see the module doc), `rgb_weights` [3, sum of ins]:
      every block's modulated toRGB weight from one product with the styles;
    - every conv's fixed noise times its strength and the gain, flattened side by side, `noises`:
      one product with the live noise gain a frame;
    - the toRGB biases (doubled) summed up to each block, `rgb_biases` [blocks, 3, 1]: the skips'
      upsampling keeps a constant (its weights sum to 1), so the biases of all the blocks drawn can
      enter once, at the first.
    """

    def derive(self, gen):
        convs = [conv for block in gen.blocks for conv in block.convs]
        rgbs = [block.to_rgb for block in gen.blocks]
        affines = [(c.affine, 1.0) for c in convs] + [(r.affine, r.scale) for r in rgbs]
        weight = torch.cat([a.weight * (a.scale * extra) for a, extra in affines])  # [sum, w_dim]
        bias = torch.cat([a.bias * (a.lr_mul * extra) for a, extra in affines])  # [sum]
        rgb_biases = torch.stack([r.bias * 2.0 for r in rgbs]).cumsum(0)[:, :, None]  # [blocks, 3, 1]
        out = {"weight_t": weight.t(), "bias": bias, "const": gen.blocks[0].const, "w_avg": gen.w_avg,
               "rgb_weights": torch.cat([r.weight.flatten(1) * 2.0 for r in rgbs], dim=1), "rgb_biases": rgb_biases}
        noisy = [c for c in convs if c.use_noise]
        if noisy:
            out["noises"] = torch.cat([(c.fixed_noise * (c.noise_strength * G)).flatten() for c in noisy])
        return out


class SingleImageWeights(nn.Module):
    """A generator's weights as `single_image` reads them; `refresh(generator)` recomputes them when
    any of the generator's tensors changed (see the module doc)."""

    def __init__(self, generator: Generator):
        super().__init__()
        self.resolutions = list(generator.resolutions)
        self.stage_resolutions = list(generator.stage_resolutions)
        self.block_convs = [len(block.convs) for block in generator.blocks]
        convs = [conv for block in generator.blocks for conv in block.convs]
        # The styles side by side: each conv's, then all the toRGBs' as one piece.
        self.rgb_widths = [block.to_rgb.weight.shape[1] for block in generator.blocks]  # each block's toRGB input
        self.conv_style_width = sum(conv.affine.weight.shape[0] for conv in convs)
        self.style_widths = [conv.affine.weight.shape[0] for conv in convs] + [sum(self.rgb_widths)]
        self.noise_sizes = [conv.resolution ** 2 for conv in convs if conv.use_noise]  # in `_Styles.noises`
        runs = _demodulation_runs(convs)
        self._run_lengths = [len(run) for run in runs]
        self.demodulations = nn.ModuleList()
        for run in runs:  # each run's styles start where the one before it ended
            start = self.demodulations[-1].style_end if len(self.demodulations) else 0
            self.demodulations.append(_Demodulation(run, start))
        self.device = generator.w_avg.device
        self.mapping = nn.ModuleList(_Linear() for _ in generator.mapping.layers)
        self.convs = nn.ModuleList(_Conv(conv) for conv in convs)
        self.styles = _Styles()
        # Every tensor of the generator, whose version counters say when one was written to. (Kept
        # as a list: walking the module tree for them would cost a tenth of a pass each time.)
        self._sources = [*generator.parameters(), *generator.buffers()]
        self._versions: tuple[int, ...] = ()
        self._take(generator, first=True)

    def _pairs(self, generator: Generator):
        yield from zip(self.mapping, generator.mapping.layers)
        convs = [conv for block in generator.blocks for conv in block.convs]
        yield from zip(self.convs, convs)
        yield from zip(self.demodulations, _runs_of(convs, self._run_lengths))
        yield self.styles, generator

    def _take(self, generator: Generator, first: bool) -> None:
        # Ordinary tensors even when made inside the sampling's inference mode, so that a later
        # refresh outside it may still copy into them.
        with torch.inference_mode(False), torch.no_grad():
            for prepared, source in self._pairs(generator):
                prepared.take(source, first)
        self._versions = tuple(map(_version, self._sources))

    def refresh(self, generator: Generator) -> None:
        """Recompute from `generator` (the one these were made from) if its weights changed since:
        an in-place write to any of its tensors (a copy, an optimiser's step, a loaded state) moves
        that tensor's version counter."""
        if tuple(map(_version, self._sources)) != self._versions:
            self._take(generator, first=False)


_version = operator.attrgetter("_version")


def _runs_of(items: list, lengths: list[int]) -> list[list]:
    """`items` cut into consecutive runs of `lengths`."""
    out, start = [], 0
    for n in lengths:
        out.append(items[start:start + n])
        start += n
    return out


_forms: weakref.WeakKeyDictionary[Generator, SingleImageWeights] = weakref.WeakKeyDictionary()
_forms_lock = threading.Lock()


def single_image_weights(generator: Generator) -> SingleImageWeights:
    """The generator's `SingleImageWeights`, made on first use and kept while the generator lives
    (a copy of the generator gets its own), refreshed to its current weights."""
    with _forms_lock:
        form = _forms.get(generator)
        if form is None or form.device != form._sources[0].device:  # (a generator moved to another device)
            form = _forms[generator] = SingleImageWeights(generator)
    form.refresh(generator)
    return form


def _up(x: torch.Tensor, r: int) -> torch.Tensor:
    """`upsample2x` of x [1, C, r, r] -> [1, C, 2r, 2r], the same kernel and values, with the output
    size a constant: F.interpolate reads x's size, which a trace records as a dozen operations."""
    return torch.ops.aten.upsample_bilinear2d(x, [2 * r, 2 * r], False, 2.0, 2.0)


def _to_rgb(weight: torch.Tensor, c: int, r: int, x: torch.Tensor, onto: torch.Tensor) -> torch.Tensor:
    """`onto` [3, R*R] (or [3, 1]) plus the 1x1 conv of x [1, C, R, R] by the modulated (doubled) toRGB
    weight [3, C] -> [1, 3, R, R], as one matrix product over x's own layout (a channels_last x read
    as [C, R*R] with strides: no copy). Sizes as numbers, not read from tensors: a trace keeps them
    as constants."""
    assert x.shape == (1, c, r, r), f"toRGB at {r} px expects [1, {c}, {r}, {r}], got {tuple(x.shape)}"
    if x.is_contiguous():
        pixels = x.view(c, r * r)  # [C, R*R]
    elif x.is_contiguous(memory_format=torch.channels_last):  # (one operation where permute-reshape-t are three)
        pixels = x.as_strided((c, r * r), (1, c))
    else:  # a bend's odd layout
        pixels = x.permute(0, 2, 3, 1).reshape(r * r, c).t()
    return torch.addmm(onto, weight, pixels).view(1, 3, r, r)


def _styled_conv(conv: _Conv, style: torch.Tensor, demod: torch.Tensor, x: torch.Tensor,
                 noise: torch.Tensor | None) -> torch.Tensor:
    """One styled conv of x [1, in, r, r] (r = R / 2 when it upsamples) with its style [in], its
    demodulation [out] (the gain in) and its noise [1, 1, R, R] (times the live gain; None without):
    modulation, demodulation, noise, bias and lrelu -> [1, out, R, R]."""
    if conv.packs and accel.packs(x.device):
        # The packed weight stays fixed: the style scales the input (before the upsampling, which is
        # linear per channel: a quarter of the pixels), the demodulation the output, the bias divided
        # by it first. Two small passes over the activations instead of oneDNN reordering the weight
        # on every call.
        style = style.view(1, -1, 1, 1)
        x = _up(x * style, conv.resolution // 2) if conv.up else x * style
        x = accel.conv2d_packed(x, conv.packed, conv.bias / demod, padding=1)  # [1, out, R, R]
        x = x.mul_(demod.view(1, -1, 1, 1))
    else:  # style and demodulation folded into the weight: one conv
        weight = conv.weight * torch.outer(demod, style).unsqueeze(-1).unsqueeze(-1)  # [out, in, 3, 3]
        if conv.up:
            x = _up(x, conv.resolution // 2)
        x = accel.conv2d_single(x, weight, conv.bias, padding=1)  # [1, out, R, R]
    if noise is not None:
        x = x.add_(noise)
    return F.leaky_relu_(x, LRELU_SLOPE)


def single_image(form: SingleImageWeights, z: torch.Tensor, temperature: torch.Tensor, truncation: torch.Tensor,
                 noise: torch.Tensor, alpha: torch.Tensor, shift: torch.Tensor, *, stage: int, fading: bool, size: int,
                 bend=None) -> torch.Tensor:
    """z [1, z_dim] -> image [1, 3, size, size] in 0..1 at a growth stage: `EquilibriumSystem.sample`'s
    pass for one image (fixed noise x `noise`, truncation towards w_avg, w moved by `shift` [1, w_dim],
    the stage's last block faded in by `alpha` if `fading`, `bend(layer, x)` at every hook point)."""
    assert z.dim() == 2 and z.shape[0] == 1, f"one latent [1, z_dim] expected, got {tuple(z.shape)}"
    x = z * temperature  # [1, z_dim]
    for layer in form.mapping:
        x = F.leaky_relu_(torch.addmm(layer.bias, x, layer.weight_t), LRELU_SLOPE)
    # lerp at weight 1 is exactly w (torch.lerp computes end - (end - start) * (1 - weight) there).
    w = torch.lerp(form.styles.w_avg, x, truncation) + shift  # [1, w_dim]
    all_styles = torch.addmm(form.styles.bias, w, form.styles.weight_t)[0]  # [sum of widths]
    *styles, rgb_styles = all_styles.split(form.style_widths)  # each conv's [in]; the toRGBs' side by side
    rgb_weights = (form.styles.rgb_weights * rgb_styles).split(form.rgb_widths, dim=1)  # [3, in] each
    # Each conv's noise times the live gain, [R*R] each. (An in-place addcmul of the fixed noise into a
    # channels_last x, broadcasting, is 5x slower than this product and an add_.)
    noises = iter((form.styles.noises * noise).split(form.noise_sizes)) if form.noise_sizes else None
    squares = all_styles[:form.conv_style_width].square()  # the convs' styles, squared
    demods = []  # [out] per conv, the gain in
    for run in form.demodulations:
        demods.extend(torch.addmv(run.eps, run.sq, squares[run.style_start:run.style_end]).rsqrt_().split(run.widths))
    count = form.resolutions.index(form.stage_resolutions[stage]) + 1
    # The toRGB biases of the blocks drawn enter at the first (see `_Styles`); fading in, the last
    # block's own at its block, so that `previous` is the image without that block.
    biases = form.styles.rgb_biases  # [blocks, 3, 1], summed up to each block
    x, rgb, previous = form.styles.const, biases[count - 2 if fading else count - 1], None  # const [1, C, 4, 4]
    k = 0
    for i in range(count):
        for j in range(form.block_convs[i]):
            conv = form.convs[k]
            r = conv.resolution
            conv_noise = next(noises).view(1, 1, r, r) if conv.use_noise else None
            x = _styled_conv(conv, styles[k], demods[k], x, conv_noise)  # [1, out, R, R]
            if bend is not None:
                x = bend(f"b{r}.{j}", x)
            k += 1
        if i > 0:
            if fading and i == count - 1:
                previous = rgb
                rgb = _up(rgb, form.resolutions[i - 1]) + (biases[i] - biases[i - 1])[None, :, :, None]
            else:
                rgb = _up(rgb, form.resolutions[i - 1])
        onto = rgb.view(3, -1)  # [3, R*R] (or [3, 1], the biases, at the first block)
        rgb = _to_rgb(rgb_weights[i], form.rgb_widths[i], form.resolutions[i], x, onto)  # [1, 3, R, R], doubled
    image = torch.sigmoid(rgb)  # rgb is doubled: sigmoid(2 r) = (tanh(r) + 1) / 2, the image in 0..1
    if previous is not None:
        image = torch.lerp(_up(torch.sigmoid(previous), form.resolutions[count - 2]), image, alpha)
    if form.stage_resolutions[stage] != size:  # a growing piece's early stages are drawn at the full size
        image = F.interpolate(image, size=(size, size), mode="bilinear", align_corners=False)
    return image.clamp_(0.0, 1.0)
