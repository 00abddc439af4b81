"""The pieces' Adam runs torch's fused kernel (unstable/adam.py): the same training as the foreach
kernel it replaced, to float rounding, and a checkpoint written with the old kernel resumes on the
new one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from unstable.adam import kernel_for, load_adam, make_adam
from unstable.guard import clone_state
from unstable.schema import defaults
from unstable.system import build_system, load_piece

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _grown_pair():
    system = build_system(load_piece(ROOT / "pieces" / "equilibrium-1-1.toml"), "cpu")
    state = torch.load(ROOT / "shows" / "demo.states" / "eq.pt", weights_only=True)
    system.load_state_dict(state["system"])
    return system


def _as_foreach(system) -> None:
    """The optimisers as they were built before: the foreach kernel, moments and all kept."""
    for opt in (system.opt_g, system.opt_c):
        for group in opt.param_groups:
            group["fused"], group["foreach"] = None, True


def test_the_pieces_adam_is_fused_on_the_cpu():
    system = _grown_pair()
    assert all(g["fused"] for opt in (system.opt_g, system.opt_c) for g in opt.param_groups)
    assert kernel_for([torch.zeros(2, dtype=torch.int64)]) == {"foreach": True}  # not a float: no fused kernel


def test_fused_and_foreach_adam_train_the_same_to_float_rounding():
    fused, foreach = _grown_pair(), _grown_pair()
    _as_foreach(foreach)
    params = defaults(fused.param_specs())
    for step in range(3):
        a, b = fused.step(params), foreach.step(params)
        worst = max(abs(a[k] - b[k]) for k in a)
        assert worst < 1e-6, (step, worst)  # measured: at most 1.2e-7
    # The kernels round differently, and the next step's gradients follow: where a gradient is near
    # zero, Adam's g / sqrt(v) turns that last bit into a visible part of a step. So a handful of
    # weights may part by more than float rounding, never by a sizeable part of one step (lr).
    lr = fused.piece.generator.optim.lr
    for ga, gb in zip(fused.generators, foreach.generators):
        for (name, pa), pb in zip(ga.state_dict().items(), gb.state_dict().values()):
            apart = (pa - pb).abs()
            beyond_rounding = apart > 1e-4 * pb.abs() + 1e-6
            # measured: at most 5 of a tensor's 36,864 beyond, 2.8e-5 = 0.014 lr apart
            assert beyond_rounding.float().mean() < 1e-3 and apart.max() < 0.05 * lr, (name, apart.max())


def test_an_old_foreach_checkpoint_resumes_on_the_fused_kernel_and_trains_alike():
    old = _grown_pair()
    _as_foreach(old)
    params = defaults(old.param_specs())
    old.step(params)
    state = clone_state(old.state_dict())  # as from a file: Adam's load would share the live moments
    assert state["opt_g"]["param_groups"][0]["foreach"] is True  # what an older checkpoint carries
    resumed = _grown_pair()
    resumed.load_state_dict(state)
    assert all(g["fused"] and not g["foreach"] for g in resumed.opt_g.param_groups + resumed.opt_c.param_groups)
    a, b = old.step(params), resumed.step(params)
    assert max(abs(a[k] - b[k]) for k in a) < 1e-6


def test_load_adam_moves_the_step_counts_to_float32_for_the_fused_kernel():
    p = torch.nn.Parameter(torch.randn(4))
    before = torch.optim.Adam([p], lr=0.1, foreach=True)
    p.grad = torch.ones(4)
    before.step()
    state = before.state_dict()
    state["state"][0]["step"] = state["state"][0]["step"].double()  # a count kept in another dtype
    after = make_adam([p], lr=0.1)
    load_adam(after, state)
    assert after.state[p]["step"].dtype == torch.float32 and after.param_groups[0]["fused"]
    after.step()
    assert after.state[p]["step"].item() == 2.0


def test_a_fused_step_moves_the_version_counters_of_what_it_wrote():
    """torch's fused kernel writes the parameters in place without moving their version counters;
    `make_adam`'s optimisers do, so a cache of a function of the weights sees the step (the training
    system's own one-image samples, equilibrium/single_image.py)."""
    system = _grown_pair()
    z = {name: torch.randn((1, system.piece.generator.z_dim), generator=torch.Generator().manual_seed(2))
         for name in system.names}
    before = system.sample(z, {})
    params = [p for m in system.modules().values() for p in m.parameters()]
    versions = [p._version for p in params]
    system.step(defaults(system.param_specs()))
    moved = [p._version > v for p, v in zip(params, versions)]
    assert all(moved) and len(moved) > 100
    after = system.sample(z, {})
    with torch.no_grad():  # the generators' own forward, from the stepped weights
        stage, alpha = system.growth()
        for i, name in enumerate(system.names):
            want = (system.generators[i](z[name], stage, alpha) * 0.5 + 0.5).clamp(0.0, 1.0)
            assert (after[name] - want).abs().max() <= 1e-5  # float rounding (uint8 levels are 4e-3)
            assert (after[name] - before[name]).abs().max() > 1e-4  # a step's change, seen
