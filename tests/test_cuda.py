"""The device-dependent paths on a CUDA device: a training step, the sampling copy and its stream
ordering, the compositor's upload from a CUDA tensor, a render, and the live engine. Marked `cuda`:
skipped without a GPU; `scripts/gpu-check.sh` runs them (with the benchmarks) on a CUDA machine."""

import numpy as np
import pytest
import torch
from tqdm import tqdm

from test_show import write_show
from unstable.live import Engine, SamplingMirror
from unstable.show import load_show
from unstable.system import build_system, load_piece

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


def silent(desc, total=None, **kw):
    return tqdm(total=total, disable=True)


def test_a_training_step_keeps_everything_on_the_gpu(tmp_path):
    write_show(tmp_path)
    system = build_system(load_piece(tmp_path / "pieces" / "eq.toml"), CUDA)
    scalars = system.step({})
    assert all(np.isfinite(v) for v in scalars.values())
    assert all(p.device.type == "cuda" for m in system.modules().values() for p in m.parameters())


def test_the_sampling_copy_is_ordered_against_training_on_its_own_stream(tmp_path):
    write_show(tmp_path)
    system = build_system(load_piece(tmp_path / "pieces" / "eq.toml"), CUDA)
    stream = torch.cuda.Stream(CUDA)
    mirror = SamplingMirror(system, stream)
    z = {"g0": torch.randn(1, 8, device=CUDA), "g1": torch.randn(1, 8, device=CUDA)}
    before = mirror.sample(z, {})["g0"].clone()
    with torch.cuda.stream(stream):
        for _ in range(3):
            system.step({})
        mirror.sync()
    after = mirror.sample(z, {})["g0"]
    torch.cuda.synchronize()
    assert after.device.type == "cuda" and not torch.equal(before, after)
    # The mirror's pass (its CUDA graph) against the system's own (its first call, eager): the same
    # weights, to float rounding (cuBLAS and cuDNN may pick other kernels per stream).
    assert torch.allclose(after, system.sample(z, {})["g0"], rtol=0.0, atol=1e-5)


def test_the_compositor_uploads_from_a_cuda_tensor(gl_ctx):
    from unstable.display.compositor import Compositor
    from unstable.display.layout import Colour, Layout, Scene
    comp = Compositor(gl_ctx, (32, 16))
    red = torch.zeros(3, 8, 8, device=CUDA)
    red[0] = 1.0
    comp.render(Scene({"a": red}, Layout(panels=("a",), filter="nearest"), Colour()))
    frame = comp.read()
    assert frame[8, 8].tolist() == [255, 0, 0]
    comp.release()


def test_a_show_renders_and_plays_live_on_the_gpu(tmp_path, gl_ctx):
    from unstable.render import render_show
    show = write_show(tmp_path)
    with Engine(load_show(show), device=CUDA, headless=True, osc_port=0, web_port=0, run_dir=tmp_path / "run", train=True,
                echo=lambda s: None, progress=silent) as eng:
        for n in range(5):
            eng.frame(number=n)
    (result,) = render_show(show, seconds=0.5, out=str(tmp_path / "gpu.mov"), preset="ffv1", run=tmp_path / "run",
                            device=CUDA, ctx=gl_ctx, echo=lambda s: None, show_progress=False)
    assert result.frames == 5


def test_a_cluster_bend_and_latent_directions_draw_on_the_gpu_what_they_draw_on_the_cpu():
    from unstable.equilibrium.system import EquilibriumSystem
    from unstable.system import piece_from_dict
    table = {"name": "tiny", "kind": "equilibrium", "seed": 3,
             "generator": {"resolution": 16, "start_resolution": 16, "z_dim": 8, "w_dim": 8, "mapping_layers": 2,
                           "channel_base": 64, "min_channels": 4, "max_channels": 8},
             "critic": {"embedding_dim": 8, "channel_base": 64, "min_channels": 4, "max_channels": 8},
             "bend": [{"layer": "b8.0", "op": "rotate", "channels": "cluster", "clusters": 2, "cluster": 0},
                      {"layer": "b16.0", "op": "translate", "panels": ["g1"]}],
             "directions": {"count": 3, "samples": 100}}
    piece = piece_from_dict(table, "tiny.toml")
    cpu, gpu = EquilibriumSystem(piece, "cpu"), EquilibriumSystem(piece, CUDA)
    params = {"bend0_rotate": 30.0, "bend1_translate": 0.2, "dir0": 1.5, "dir2": -1.0}
    z = {name: torch.randn(2, 8, generator=torch.Generator().manual_seed(4)) for name in cpu.names}
    want = cpu.sample(z, params)
    got = gpu.sample({k: v.to(CUDA) for k, v in z.items()}, params)
    plain = cpu.sample(z, {})
    for name in cpu.names:
        assert got[name].device.type == "cuda"
        assert not torch.equal(want[name], plain[name])  # the bends and directions did move it
        assert (got[name].cpu() - want[name]).abs().max() <= 2e-3, name


def test_small_host_values_reach_the_gpu_queued_and_intact():
    from unstable.upload import to_device
    values = [[0.5, -1.25, 3.0], [2.0, 0.0, 1e-3]]
    on_gpu = to_device(values, CUDA, torch.float32)
    assert on_gpu.device.type == "cuda" and on_gpu.cpu().tolist() == torch.tensor(values).tolist()
    assert to_device(values, "cpu", torch.float64).dtype == torch.float64
