"""unstable.inductor_masks: inductor's CPU kernels store a leaky ReLU's bool mask with the fast
store, and a compiled leaky ReLU gives eager's values, mask and gradients exactly."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo
import torch.nn.functional as F
from torch._inductor.utils import run_and_get_code

from unstable import inductor_masks
from unstable.compiled import compile_training


@pytest.fixture
def fresh_inductor(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def _layer(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # As a styled conv's epilogue: scale, leaky ReLU (whose backward needs the sign: a bool mask).
    return F.leaky_relu(x * w, 0.2) * 1.5


# 20 channels, channels_last: a vector of 16 and a tail of 4 in every row (both store paths).
@pytest.mark.parametrize("channels", [16, 20])
def test_a_compiled_leaky_relu_stores_its_mask_fast_and_matches_eager(fresh_inductor, channels):
    inductor_masks.install()
    assert inductor_masks.installed()
    gen = torch.Generator().manual_seed(0)
    x0 = torch.randn((3, channels, 9, 7), generator=gen).contiguous(memory_format=torch.channels_last)
    w = torch.randn((1, channels, 1, 1), generator=gen)
    grad = torch.randn((3, channels, 9, 7), generator=gen)

    def run(fn):
        x = x0.clone().requires_grad_(True)
        out = fn(x, w)
        out.backward(grad)
        return out.detach(), x.grad

    eager_out, eager_grad = run(_layer)
    compiled = torch.compile(_layer, backend="inductor", dynamic=False)
    (out, x_grad), code = run_and_get_code(run, compiled)
    assert any(inductor_masks.FAST_STORE_MARK in c for c in code), "no bool mask stored with the fast store"
    assert torch.allclose(out, eager_out, rtol=0, atol=1e-6)
    # The gradient goes through the stored mask: a wrong byte would put 0.2 where 1 belongs.
    assert torch.allclose(x_grad, eager_grad, rtol=0, atol=1e-6)
    assert ((x_grad / (grad * w * 1.5)).round(decimals=3).unique() == torch.tensor([0.2, 1.0])).all()


def test_compiling_training_installs_the_fix_and_it_keys_inductors_cache(fresh_inductor, tmp_path):
    import torch._inductor.config as inductor_config

    from unstable.system import build_system, load_piece
    from helpers import tiny_eq_piece

    (tmp_path / "piece.toml").write_text(tiny_eq_piece("steps = 2"))
    system = build_system(load_piece(tmp_path / "piece.toml"), "cpu")
    compile_training(system, lambda line: None)
    assert inductor_masks.installed()
    version = inductor_config.post_grad_custom_post_pass
    assert version is not None and version.uuid() == inductor_masks.VERSION
