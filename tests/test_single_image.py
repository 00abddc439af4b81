"""The one-image sampling pass (unstable.equilibrium.single_image): the generator's own image within
float rounding at every growth stage and live value, and always from the generator's current
weights, however they were written."""

from __future__ import annotations

import copy
import gc
import weakref

import pytest
import torch
import torch.nn.functional as F

from unstable import accel
from unstable.adam import make_adam
from unstable.equilibrium import single_image as si
from unstable.equilibrium.generator import Generator
from unstable.system import accumulate_modules

TOL = 1e-5  # images in 0..1: float rounding (a uint8 level is 4e-3)


@pytest.fixture(autouse=True)
def float32():
    with accel.precision(torch.float32):
        yield


def generator(seed: int = 3) -> Generator:
    """A small growing generator (8 -> 32 px, noise on) whose every weight matters: biases, noise
    strengths and the new blocks' toRGB moved off their zero starts."""
    gen = Generator(resolution=32, start_resolution=8, z_dim=16, w_dim=16, mapping_layers=2, mapping_lr_mul=0.01,
                    channel_base=128, min_channels=4, max_channels=8, noise=True, noise_init=0.3, new_rgb_gain=0.0,
                    rng=torch.Generator().manual_seed(seed))
    move(gen, seed)
    return gen


def move(gen: Generator, seed: int) -> None:
    """Every weight and buffer nudged, in place (as a training step or the mirror would)."""
    draw = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for t in [*gen.parameters(), *gen.buffers()]:
            t.add_(torch.randn(t.shape, generator=draw) * 0.1)


def reference(gen: Generator, z, *, stage, alpha, size, temperature=1.0, truncation=1.0, noise=1.0, shift=None,
              bend=None) -> torch.Tensor:
    """What the eager sampling pass computes with the generator's own forward: [1, 3, size, size] in 0..1."""
    steer = None if shift is None else (lambda w: w + shift)
    x = gen(z * temperature, stage, alpha, noise_gain=noise, truncation=truncation, bend=bend, steer=steer)
    if x.shape[-1] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    return (x * 0.5 + 0.5).clamp(0.0, 1.0)


def single(gen: Generator, z, *, stage, alpha, size, temperature=1.0, truncation=1.0, noise=1.0, shift=None,
           bend=None) -> torch.Tensor:
    t = lambda v: torch.tensor(float(v), device=z.device)  # noqa: E731
    shift = torch.zeros((1, 16), device=z.device) if shift is None else shift
    return si.single_image(si.single_image_weights(gen), z, t(temperature), t(truncation), t(noise), t(alpha), shift,
                           stage=stage, fading=stage > 0 and alpha < 1.0, size=size, bend=bend)


@pytest.mark.parametrize("stage, alpha", [(2, 1.0), (2, 0.3), (1, 1.0), (1, 0.0), (0, 1.0)])
@pytest.mark.parametrize("live", [{}, {"temperature": 0.7, "truncation": 0.6, "noise": 1.8},
                                  {"truncation": 1.3, "noise": 0.0, "shift": True}])
def test_one_image_is_the_generators_own_image(stage, alpha, live):
    """Every stage (grown, fading in, an early one drawn at the full 32 px), every live value."""
    gen = generator()
    z = torch.randn((1, 16), generator=torch.Generator().manual_seed(5))
    if live.get("shift"):
        live = {**live, "shift": torch.randn((1, 16), generator=torch.Generator().manual_seed(6)) * 0.5}
    with torch.inference_mode():
        want = reference(gen, z, stage=stage, alpha=alpha, size=32, **live)
        got = single(gen, z, stage=stage, alpha=alpha, size=32, **live)
    assert got.shape == want.shape == (1, 3, 32, 32)
    assert (got - want).abs().max() <= TOL, (got - want).abs().max()
    assert want.std() > 0.05  # a picture, not a flat field that any pass would match


def test_the_demodulations_come_in_bounded_runs_and_draw_the_same_image(monkeypatch):
    """Each run of convs shares one block-diagonal matrix of its sums of squares: cut small, the same
    image; a wide generator's matrices stay within the bound (or one conv's own block), not one
    matrix of every conv."""
    gen = generator()
    z = torch.randn((1, 16), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        want = reference(gen, z, stage=2, alpha=0.4, size=32, truncation=0.7)
    monkeypatch.setattr(si, "DEMODULATION_RUN_SIZE", 130)  # two 8x8 blocks at most
    form = si.SingleImageWeights(gen)
    assert len(form.demodulations) > 2
    one = lambda v: torch.tensor(float(v))  # noqa: E731
    with torch.inference_mode():
        got = si.single_image(form, z, one(1.0), one(0.7), one(1.0), one(0.4), torch.zeros((1, 16)), stage=2,
                              fading=True, size=32)
    assert (got - want).abs().max() <= TOL
    monkeypatch.undo()
    wide = Generator(resolution=128, start_resolution=8, z_dim=16, w_dim=16, mapping_layers=1, mapping_lr_mul=0.01,
                     channel_base=8192, min_channels=64, max_channels=256, noise=True, noise_init=0.0,
                     rng=torch.Generator().manual_seed(1))
    convs = [conv for block in wide.blocks for conv in block.convs]
    everything = sum(c.weight.shape[0] for c in convs) * sum(c.weight.shape[1] for c in convs)
    form = si.SingleImageWeights(wide)
    sizes = [run.sq.numel() for run in form.demodulations]
    assert max(sizes) <= max(si.DEMODULATION_RUN_SIZE, max(c.weight.shape[0] * c.weight.shape[1] for c in convs))
    assert sum(sizes) < everything / 4, (sizes, everything)
    assert sum(len(run.widths) for run in form.demodulations) == len(convs)


def test_a_bend_sees_the_same_hook_points_and_bends_the_same_way():
    gen = generator()
    z = torch.randn((1, 16), generator=torch.Generator().manual_seed(5))
    seen = {"reference": [], "single": []}

    def bend_into(log):
        def bend(layer, x):
            log.append((layer, tuple(x.shape)))
            return x.flip(3) if layer == "b16.1" else x * 1.5 if layer == "b8.0" else x
        return bend

    with torch.inference_mode():
        want = reference(gen, z, stage=2, alpha=1.0, size=32, bend=bend_into(seen["reference"]))
        got = single(gen, z, stage=2, alpha=1.0, size=32, bend=bend_into(seen["single"]))
        plain = single(gen, z, stage=2, alpha=1.0, size=32)
    assert seen["single"] == seen["reference"] and len(seen["single"]) == len(gen.layer_names())
    assert (got - want).abs().max() <= TOL
    assert (got - plain).abs().max() > 0.01  # the bends did something


@pytest.mark.parametrize("write", ["accumulate", "foreach_copy", "load_state_dict", "optimiser", "fused_adam", "w_avg"])
def test_the_prepared_weights_follow_every_write_to_the_generator(write):
    gen, source = generator(3), generator(4)
    z = torch.randn((1, 16), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():  # made inside the sampling's inference mode, as in a show
        before = single(gen, z, stage=2, alpha=1.0, size=32, truncation=0.5)
    if write == "accumulate":  # the mirror's copy
        accumulate_modules({"g": gen}, {"g": source}, 0.0)
    elif write == "foreach_copy":  # a training process's weights (LiveSampler.sync_from)
        with torch.no_grad():
            mine = [*gen.parameters(), *gen.buffers()]
            torch._foreach_copy_(mine, [*source.parameters(), *source.buffers()])
    elif write == "load_state_dict":  # a checkpoint
        gen.load_state_dict(source.state_dict())
    elif write in ("optimiser", "fused_adam"):  # sampling the training system itself
        params = list(gen.parameters())
        opt = torch.optim.Adam(params, lr=0.05) if write == "optimiser" else make_adam(params, lr=0.05)
        gen(z, 2, 1.0).square().mean().backward()
        opt.step()  # the pieces' fused kernel moves no version counter by itself (unstable/adam.py)
    else:  # the trainer's running mean of w, a buffer
        with torch.no_grad():
            gen.w_avg.add_(1.0)
    got = single(gen, z, stage=2, alpha=1.0, size=32, truncation=0.5)
    want = reference(gen, z, stage=2, alpha=1.0, size=32, truncation=0.5)
    assert (got - want).abs().max() <= TOL
    assert (got - before).abs().max() > 1e-3


def test_the_weights_are_prepared_once_per_update_and_each_copy_has_its_own(monkeypatch):
    gen = generator()
    z = torch.randn((1, 16))
    takes = []
    original = si.SingleImageWeights._take
    monkeypatch.setattr(si.SingleImageWeights, "_take", lambda self, g, first: (takes.append(first), original(self, g, first)))
    for _ in range(3):
        single(gen, z, stage=2, alpha=1.0, size=32)
    assert takes == [True]  # made once, then nothing written, nothing recomputed
    move(gen, 9)
    single(gen, z, stage=2, alpha=1.0, size=32)
    single(gen, z, stage=2, alpha=1.0, size=32)
    assert takes == [True, False]
    twin = copy.deepcopy(gen)  # e.g. a refresh worker's snapshot
    assert si.single_image_weights(twin) is not si.single_image_weights(gen)
    # Kept only while the generator lives (a show's sampling copies come and go).
    form = weakref.ref(si.single_image_weights(twin))
    del twin
    gc.collect()
    assert form() is None


@pytest.mark.cuda
def test_on_a_gpu_the_prepared_weights_stay_there_and_follow_its_writes():
    """Skipped without CUDA (scripts/gpu-check.sh runs it). cuDNN may convolve in TF32: a looser bound."""
    cpu = generator()
    gen = copy.deepcopy(cpu).cuda()
    z = torch.randn((1, 16), generator=torch.Generator().manual_seed(5))
    with torch.inference_mode():
        got = single(gen, z.cuda(), stage=2, alpha=0.5, size=32)
    form = si.single_image_weights(gen)
    assert all(t.device.type == "cuda" for t in form.buffers())
    want = single(cpu, z, stage=2, alpha=0.5, size=32)
    assert got.device.type == "cuda" and (got.cpu() - want).abs().max() <= 2e-3
    move(cpu, 9)
    accumulate_modules({"g": gen}, {"g": copy.deepcopy(cpu).cuda()}, 0.0)  # the mirror's copy, on the GPU
    moved = single(gen, z.cuda(), stage=2, alpha=0.5, size=32)
    assert (moved.cpu() - single(cpu, z, stage=2, alpha=0.5, size=32)).abs().max() <= 2e-3
