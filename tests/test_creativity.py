"""The creativity loss (CAN / DeSIGN): cross-entropy of the class posterior against the uniform,
as a BAD divergence option: its value at the extremes and its gradient raising class entropy."""

from __future__ import annotations

import math

import pytest
import torch

from unstable.divergence.losses import creativity_loss
from unstable.system import build_system, piece_from_dict


def entropy(logits):
    p = logits.detach().softmax(1)
    return float(-(p * p.clamp_min(1e-12).log()).sum(1).mean())


def test_creativity_loss_is_log_k_at_the_uniform_and_grows_with_confidence():
    assert creativity_loss(torch.zeros(5, 10)).item() == pytest.approx(math.log(10))
    sure = torch.nn.functional.one_hot(torch.arange(5), 10).float() * 8
    assert creativity_loss(sure).item() > math.log(10) + 2
    # Against the uniform: the mean over the batch of -(1/K) sum_k log p_k.
    x = torch.randn(7, 10)
    expected = -(x.log_softmax(1)).mean()
    assert creativity_loss(x).item() == pytest.approx(expected.item(), rel=1e-6)


def test_its_gradient_raises_the_class_entropy_of_the_batch():
    g = torch.Generator().manual_seed(0)
    torch.manual_seed(0)  # the bias's initialisation: otherwise whatever the tests before left in the global RNG
    classifier = torch.nn.Linear(20, 10)
    with torch.no_grad():
        classifier.weight.copy_(torch.randn(10, 20, generator=g) * 3)
    x = torch.randn(64, 20, generator=g).requires_grad_(True)  # the "generated" batch
    before = entropy(classifier(x))
    opt = torch.optim.SGD([x], lr=0.05)
    for _ in range(5):
        opt.zero_grad()
        creativity_loss(classifier(x)).backward()  # lowering it = alpha < 0 in BAD's objective
        opt.step()
    assert entropy(classifier(x)) > before + 0.05


def test_a_creativity_step_of_bad_raises_the_class_entropy(tmp_path):
    class Silent:
        def __init__(self, *a, **k): pass
        def update(self, n=1): pass
        def set_postfix(self, *a, **k): pass
        def close(self): pass

    d = {"name": "tiny", "kind": "divergence", "seed": 1, "cache": str(tmp_path),
         "vae": {"steps": 3, "batch": 16, "hidden": 64},
         "classifier": {"steps": 40, "batch": 32, "width": 8},
         "features": {"layer": "embedding"},
         "loss": {"couple": "creativity"},
         "bad": {"batch": 64, "real_pool": 300, "lr": 1e-3, "alpha": -1.0, "beta": 0.0}}
    s = build_system(piece_from_dict(d, "tiny.toml"), torch.device("cpu"))
    s.prepare(Silent)
    first = s.step({})
    assert {"creativity", "global_mmd", "class_entropy"} <= set(first)
    assert first["creativity"] >= math.log(10) - 1e-5
    for _ in range(5):
        last = s.step({})
    assert last["class_entropy"] > first["class_entropy"]
    assert last["creativity"] < first["creativity"]


def test_the_creativity_piece_loads():
    from pathlib import Path

    from unstable.system import load_piece
    piece = load_piece(Path(__file__).resolve().parents[1] / "pieces" / "bad-custom-creativity.toml")
    assert piece.loss.couple == "creativity" and piece.bad.alpha < 0
