"""Issue 27: the faster generator, critic and decoder compute what they computed before.

Each rewritten forward is checked against a plain reference of the maths (StyleGAN2's per-sample
modulated conv as a grouped conv, lrelu then gain, the decoder's nn.Sequential), from the same
weights, in float32: images, logits and gradients equal to float rounding. The training losses
of five steps of a small growing piece are compared with the figures the code before the change
(commit 9aee2c2) printed for the same seed.
"""

from __future__ import annotations

import math
import tomllib
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from unstable import accel
from unstable.divergence.vae import Decoder
from unstable.equilibrium.critic import Critic
from unstable.equilibrium.generator import Generator
from unstable.schema import defaults
from unstable.system import build_system, piece_from_dict

ROOT = Path(__file__).resolve().parents[1]
GAIN = math.sqrt(2.0)


@pytest.fixture(autouse=True)
def float32():
    with accel.precision(torch.float32):
        yield


def _old_lrelu(x):
    return F.leaky_relu(x, 0.2) * GAIN


def _ref_styled(conv, x, w, noise):
    """StyleGAN2's modulated conv, per-sample weights as a grouped conv: the maths before the change."""
    styles = F.linear(w, conv.affine.weight * conv.affine.scale, conv.affine.bias * conv.affine.lr_mul)  # [N, in]
    if conv.up:
        x = F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
    n, c, h, wd = x.shape
    weight = conv.weight[None] * conv.scale * styles[:, None, :, None, None]  # [N, out, in, 3, 3]
    weight = weight * torch.rsqrt(weight.square().sum(dim=(2, 3, 4), keepdim=True) + 1e-8)
    y = F.conv2d(x.reshape(1, n * c, h, wd), weight.reshape(-1, c, 3, 3), padding=1, groups=n)
    y = y.reshape(n, -1, h, wd)
    if conv.use_noise:
        y = y + conv.noise_strength * noise
    return _old_lrelu(y + conv.bias[None, :, None, None])


def _ref_generator(gen, z, stage, noises):
    x = z
    for layer in gen.mapping.layers:
        x = _old_lrelu(layer(x))
    w, feats, rgb = x, None, None
    noises = iter(noises)
    for block in gen.blocks[:gen.stage_blocks(stage)]:
        if block.first:
            feats = block.const.expand(w.shape[0], -1, -1, -1)
        for conv in block.convs:
            feats = _ref_styled(conv, feats, w, next(noises))
        block_rgb = block.to_rgb(feats, w)
        rgb = block_rgb if rgb is None else F.interpolate(rgb, scale_factor=2.0, mode="bilinear",
                                                          align_corners=False) + block_rgb
    return torch.tanh(rgb)


def _small_generator(seed=3):
    return Generator(resolution=32, start_resolution=8, z_dim=16, w_dim=16, mapping_layers=2, mapping_lr_mul=0.01,
                     channel_base=128, min_channels=4, max_channels=8, noise=True, noise_init=0.3,
                     rng=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("training_noise", [False, True])
def test_generator_images_and_gradients_equal_the_reference(batch, training_noise):
    gen = _small_generator().to(memory_format=torch.channels_last)
    stage = len(gen.stage_resolutions) - 1
    z = torch.randn(batch, 16, generator=torch.Generator().manual_seed(7))
    if training_noise:
        image = gen(z, stage, 1.0, noise_rng=torch.Generator().manual_seed(11))
        draw = torch.Generator().manual_seed(11)  # the same draws, in the same order
        noises = [torch.randn((batch, 1, c.resolution, c.resolution), generator=draw)
                  for b in gen.blocks for c in b.convs]
    else:
        image = gen(z, stage, 1.0)
        noises = [c.fixed_noise for b in gen.blocks for c in b.convs]
    ref = _ref_generator(gen, z, stage, noises)
    assert image.shape == ref.shape == (batch, 3, 32, 32)
    assert torch.allclose(image, ref, atol=2e-6), (image - ref).abs().max()
    probe = torch.randn(ref.shape, generator=torch.Generator().manual_seed(5))
    got = torch.autograd.grad((image * probe).sum(), list(gen.parameters()), allow_unused=True)
    want = torch.autograd.grad((ref * probe).sum(), list(gen.parameters()), allow_unused=True)
    for (name, _), g, r in zip(gen.named_parameters(), got, want):
        if r is None:
            assert g is None or not g.any(), name
            continue
        assert torch.allclose(g, r, rtol=1e-3, atol=1e-5 * r.abs().max().item() + 1e-7), name


def test_the_styles_in_one_product_are_each_layers_affine_and_training_draws_what_sampling_draws():
    gen = _small_generator()
    w = gen.mapping(torch.randn(3, 16, generator=torch.Generator().manual_seed(2)))
    count = gen.stage_blocks(len(gen.stage_resolutions) - 1)
    styles = gen.styles(w, count)
    layers = [[conv.affine for conv in block.convs] + [block.to_rgb.affine] for block in gen.blocks[:count]]
    assert [len(block) for block in styles] == [len(block) for block in layers]
    for block_styles, block_layers in zip(styles, layers):
        for got, affine in zip(block_styles, block_layers):
            assert got.shape == (3, affine.weight.shape[0])
            assert torch.allclose(got, affine(w), atol=1e-6), (got - affine(w)).abs().max()
    stage = len(gen.stage_resolutions) - 1
    z = torch.randn(2, 16, generator=torch.Generator().manual_seed(4))
    trained = gen(z, stage, 1.0)  # gradients on: the styles in one product
    with torch.no_grad():
        sampled = gen(z, stage, 1.0)  # each layer's own affine
    assert torch.allclose(trained, sampled, atol=1e-6), (trained - sampled).abs().max()


def test_critic_logits_and_gradients_equal_the_reference():
    critic = Critic(resolution=32, start_resolution=8, generators=2, embedding_dim=8, channel_base=128,
                    min_channels=4, max_channels=8, rng=torch.Generator().manual_seed(2))
    critic.to(memory_format=torch.channels_last)
    image = torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)).requires_grad_(True)
    stage, alpha = 2, 0.4  # the 32 px block fading in: both fromRGB paths run

    def reference(x):
        down = lambda t: F.avg_pool2d(t, 2)  # noqa: E731
        block = critic.blocks["32"]
        y = _old_lrelu(block.conv1(down(_old_lrelu(block.conv0(_old_lrelu(critic.from_rgb["32"](x)))))))
        y = torch.lerp(_old_lrelu(critic.from_rgb["16"](down(x))), y, alpha)
        for r in ("16", "8"):
            b = critic.blocks[r]
            y = _old_lrelu(b.conv1(down(_old_lrelu(b.conv0(y)))))
        emb = critic.embed(_old_lrelu(critic.final_conv(y)).flatten(1))
        return critic.classify(_old_lrelu(emb)), emb

    logits, emb = critic(image, stage, alpha)
    ref_logits, ref_emb = reference(image)
    assert torch.allclose(logits, ref_logits, atol=1e-5) and torch.allclose(emb, ref_emb, atol=1e-5)
    params = [image, *critic.parameters()]
    got = torch.autograd.grad(logits.square().sum() + emb.sum(), params, allow_unused=True)
    want = torch.autograd.grad(ref_logits.square().sum() + ref_emb.sum(), params, allow_unused=True)
    assert sum(r is not None for r in want) > 10
    for g, r in zip(got, want):
        assert (g is None) == (r is None)
        if r is not None:
            assert torch.allclose(g, r, rtol=1e-3, atol=1e-5 * r.abs().max().item() + 1e-7)


def test_decoder_equals_its_sequential_layers():
    torch.manual_seed(0)
    decoder = Decoder(16, 64)
    z = torch.randn(6, 16, generator=torch.Generator().manual_seed(4))
    got = decoder(z)
    ref = decoder.convs(decoder.mlp(z).view(-1, 16, 2, 2))  # the layers as declared, one after the other
    assert got.shape == ref.shape == (6, 1, 28, 28)
    assert torch.allclose(got, ref, atol=1e-5)
    got_g = torch.autograd.grad(got.square().sum(), list(decoder.parameters()))
    ref_g = torch.autograd.grad(ref.square().sum(), list(decoder.parameters()))
    for g, r in zip(got_g, ref_g):
        assert torch.allclose(g, r, rtol=1e-3, atol=1e-5 * r.abs().max().item() + 1e-7)


# Five steps of a 16 px piece growing from 8 px (stage 0, the fade, the stable 16 px stage), as
# printed by the code before the change (commit 9aee2c2, float32):
# critic_loss, g0_impersonate, g0_embedding, g0_variety, g1_loss per step.
BEFORE = [[0.8254045, 0.7901111, 0.2897972, 0.8286107, 0.942835],
          [0.6936998, 0.859997, 0.3049413, 0.7830549, 0.9012863],
          [0.7643445, 0.7522787, 0.2855437, 0.8359299, 1.022365],
          [0.5671068, 0.5228457, 0.3213468, 0.7675843, 0.929965],
          [0.771257, 0.6201925, 0.287416, 0.7775215, 1.0213892]]


def test_training_losses_equal_those_before_the_change():
    d = tomllib.loads((ROOT / "pieces" / "equilibrium-1-1.toml").read_text())
    d["generator"].update(resolution=16, start_resolution=8, min_channels=4, max_channels=8, noise_init=0.1,
                          new_rgb_gain=0.5)
    d["generator"]["optim"]["batch"] = 4
    d["critic"].update(min_channels=4, max_channels=8)
    d["critic"]["optim"]["batch"] = 4
    d["growth"] = {"stable_steps": 1, "fade_steps": 2}
    system = build_system(piece_from_dict(d, "tiny"), "cpu")
    params = defaults(system.param_specs())
    keys = ["critic_loss", "g0_impersonate", "g0_embedding", "g0_variety", "g1_loss"]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the figures above were printed with one thread
    try:
        scalars = [system.step(params) for _ in range(5)]
    finally:
        torch.set_num_threads(threads)
    for step, (out, before) in enumerate(zip(scalars, BEFORE)):
        assert [out[k] for k in keys] == pytest.approx(before, rel=2e-5, abs=1e-6), f"step {step}"


@pytest.mark.parametrize("size", [4, 8, 16, 32, 64])
def test_a_single_image_conv_equals_conv2d_and_takes_onednn_from_16_px(size):
    """`accel.conv2d_single` (the generators' batch-1 path): F.conv2d's values and gradients at
    every size, by oneDNN on a channels_last image from 16x16 up (ATen's im2col path below)."""
    g = torch.Generator().manual_seed(size)
    x = torch.randn((1, 16, size, size), generator=g).requires_grad_()
    weight = torch.randn((32, 16, 3, 3), generator=g).requires_grad_()
    bias = torch.randn(32, generator=g).requires_grad_()
    got = accel.conv2d_single(x, weight, bias, padding=1)  # [1, 32, size, size]
    want = F.conv2d(x, weight, bias, padding=1)
    assert got.shape == want.shape and torch.allclose(got, want, atol=2e-5), (got - want).abs().max()
    onednn = size >= 16
    if onednn:
        assert got.is_contiguous(memory_format=torch.channels_last)
    assert (type(got.grad_fn).__name__ == "MkldnnConvolutionBackward0") == onednn, got.grad_fn
    probe = torch.randn(want.shape, generator=g)
    for a, b in zip(torch.autograd.grad((got * probe).sum(), (x, weight, bias)),
                    torch.autograd.grad((want * probe).sum(), (x, weight, bias))):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-4 * b.abs().max().item()), (a - b).abs().max()
    with torch.no_grad(), accel.precision(torch.bfloat16):  # another precision: `conv2d`'s own path
        assert torch.equal(accel.conv2d_single(x, weight, bias, padding=1), accel.conv2d(x, weight, bias, padding=1))
    with pytest.raises(AssertionError, match="one image"):
        accel.conv2d_single(x.expand(2, -1, -1, -1), weight, bias, padding=1)


@pytest.mark.parametrize("size", [8, 16, 32])
def test_a_packed_conv_equals_conv2d_and_takes_a_repacked_weight_copied_in(size):
    """`accel.conv2d_packed` (the one-image pass's 8-32 px layers): F.conv2d's values from a weight
    packed once, channels_last out; a weight packed again and copied in place is the one used, in a
    trace as well (the trace holds the packed tensor, as the pass's does)."""
    assert accel.packs("cpu")
    g = torch.Generator().manual_seed(size)
    x = torch.randn((1, 32, size, size), generator=g)
    weight, other = torch.randn((16, 32, 3, 3), generator=g), torch.randn((16, 32, 3, 3), generator=g)
    bias = torch.randn(16, generator=g)
    packed = accel.pack_conv_weight(weight, x.shape, padding=1)

    class Holder(torch.nn.Module):  # as the pass's prepared weights hold it: a buffer
        def __init__(self):
            super().__init__()
            self.register_buffer("packed", packed, persistent=False)

        def forward(self, x, b):
            return accel.conv2d_packed(x, self.packed, b, padding=1)

    traced = torch.jit.trace(Holder(), (x, bias))
    for w in (weight, other):
        if w is other:
            packed.copy_(accel.pack_conv_weight(other, x.shape, padding=1))
        want = F.conv2d(x, w, bias, padding=1)  # [1, 16, size, size]
        for got in (accel.conv2d_packed(x, packed, bias, padding=1), traced(x, bias)):
            assert got.is_contiguous(memory_format=torch.channels_last)
            assert torch.allclose(got, want, rtol=1e-5, atol=1e-4), (got - want).abs().max()
    with accel.precision(torch.bfloat16):  # another precision: not this path
        assert not accel.packs("cpu")
    assert not accel.packs("meta")
