"""The equilibrium generators' traced sampling pass (unstable.equilibrium.traced): the same images
as the eager pass bit for bit, following the weights, one trace per graph and not per fader move,
and bends left to the eager pass."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from unstable.config import to_dict

from unstable.equilibrium.system import EquilibriumSystem
from unstable.system import load_piece, piece_from_dict

from pathlib import Path

PIECES = Path(__file__).resolve().parents[1] / "pieces"

PARAMS = {"temperature": 0.8, "truncation": 0.7, "noise": 1.3}


def tiny_system(steps: int = 0, device: torch.device | str = "cpu") -> EquilibriumSystem:
    piece = load_piece(PIECES / "equilibrium-1-1.toml")
    g = dataclasses.replace(piece.generator, resolution=16, start_resolution=4)
    system = EquilibriumSystem(dataclasses.replace(piece, generator=g), device)
    system.step_count = steps
    system._traced.background = False  # traced in the caller: these tests compare traced passes
    return system


def eager(system, latents, params, monkeypatch):
    monkeypatch.setenv("UNSTABLE_TRACED_SAMPLING", "0")
    try:
        return system.sample(latents, params)
    finally:
        monkeypatch.delenv("UNSTABLE_TRACED_SAMPLING")


def latents(system, n: int, seed: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn((n, system.piece.generator.z_dim), generator=g) for name in system.names}


@pytest.mark.parametrize("n", [1, 2, 5])
@pytest.mark.parametrize("grown", [True, False])
def test_the_traced_pass_draws_the_eager_pass_bit_for_bit(n, grown, monkeypatch):
    system = tiny_system()
    growth = system.piece.growth
    # Grown: the last stage; otherwise half way through a fade-in (alpha 0.5, a resize to 16 px).
    system.step_count = 10 ** 6 if grown else growth.stable_steps + growth.fade_steps // 2
    stage, alpha = system.growth()
    assert (alpha == 1.0) == grown and stage > 0
    z = latents(system, n)
    traced = system.sample(z, PARAMS)
    assert len(system._traced) == len(system.names)  # it did go through the traces
    reference = eager(system, z, PARAMS, monkeypatch)
    for name in system.names:
        assert traced[name].shape == (n, 3, 16, 16)
        assert torch.equal(traced[name], reference[name]), name


def test_the_batched_trace_serves_every_batch_of_two_or_more_and_faders_never_retrace(monkeypatch):
    system = tiny_system(10 ** 6)
    system.sample(latents(system, 2), PARAMS)
    made = len(system._traced)
    for n, params in ((3, PARAMS), (7, {"temperature": 1.4, "truncation": 1.0, "noise": 0.0}), (4, {})):
        z = latents(system, n, seed=n)
        out = system.sample(z, params)
        assert len(system._traced) == made
        reference = eager(system, z, params, monkeypatch)
        assert all(torch.equal(out[k], reference[k]) for k in out)


def moved_twin(source: EquilibriumSystem, z, params: dict, moved_params: dict):
    """A sampling copy of `source` sampled at z with `params`, then again with `moved_params` after
    the source's weights moved and the copy took them in as the mirror does: (copy, before, after)."""
    twin = source.sampling_copy()
    twin._traced.background = False
    before = twin.sample(z, params)
    with torch.no_grad():
        for p in source.generators.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    twin.accumulate(source)  # the mirror's in-place copy
    return twin, before, twin.sample(z, moved_params)


def test_a_trace_follows_the_weights_the_mirror_copies_in(monkeypatch):
    source = tiny_system(10 ** 6)
    z = latents(source, 1)
    twin, before, after = moved_twin(source, z, PARAMS, PARAMS)
    reference = eager(twin, z, PARAMS, monkeypatch)
    for name in source.names:
        assert not torch.equal(before[name], after[name])
        assert torch.equal(after[name], reference[name])
    assert len(source._traced) == 0  # the twin has traces of its own, not the source's


def test_latent_directions_reach_the_traced_pass(monkeypatch):
    piece = load_piece(PIECES / "equilibrium-1-1.toml")
    g = dataclasses.replace(piece.generator, resolution=16, start_resolution=4)
    table = {**to_dict(dataclasses.replace(piece, generator=g)), "directions": {"count": 4, "samples": 200}}
    system = EquilibriumSystem(piece_from_dict(table, "directions.toml"))
    system.step_count = 10 ** 6
    system._traced.background = False
    params = {**PARAMS, "dir0": 2.0, "dir1": -1.5}
    z = latents(system, 3)
    plain = system.sample(z, PARAMS)
    steered = system.sample(z, params)
    reference = eager(system, z, params, monkeypatch)
    for name in system.names:
        assert not torch.equal(plain[name], steered[name])
        assert torch.equal(steered[name], reference[name])


def test_a_bent_panel_samples_eagerly_and_an_unbent_one_through_its_trace(monkeypatch):
    table = {"name": "tiny", "kind": "equilibrium", "seed": 3,
             "generator": {"resolution": 16, "start_resolution": 16, "z_dim": 8, "w_dim": 8, "mapping_layers": 2,
                           "channel_base": 64, "min_channels": 4, "max_channels": 8},
             "critic": {"embedding_dim": 8, "channel_base": 64, "min_channels": 4, "max_channels": 8},
             "bend": [{"layer": "b8.0", "op": "rotate", "panels": ["g0"]}]}
    system = EquilibriumSystem(piece_from_dict(table, "tiny.toml"))
    system._traced.background = False
    z = latents(system, 2)
    params = {"bend0_rotate": 30.0}
    out = system.sample(z, params)
    assert len(system._traced) == 1  # g1's: g0 is bent
    reference = eager(system, z, params, monkeypatch)
    assert all(torch.equal(out[k], reference[k]) for k in out)
    unbent = system.sample(z, {})  # the bend at 0: g0 through a trace too
    assert len(system._traced) == 2
    assert not torch.equal(unbent["g0"], out["g0"]) and torch.equal(unbent["g1"], out["g1"])


def test_a_new_graph_is_traced_on_a_thread_of_its_own_while_the_caller_samples_eagerly(monkeypatch):
    system = tiny_system(10 ** 6)
    system._traced.background = True  # as a live show does
    z = latents(system, 1)
    reference = eager(system, z, PARAMS, monkeypatch)
    first = system.sample(z, PARAMS)  # the traces are being made: this call was eager
    assert all(torch.equal(first[k], reference[k]) for k in first)
    for _ in range(len(system.names) + 1):  # one graph at a time: each call may start the next
        system._traced.wait(60)
        system.sample(z, PARAMS)
    system._traced.wait(60)
    assert len(system._traced) == len(system.names)
    calls = []
    monkeypatch.setattr(type(system.generators[0]), "synthesis",
                        lambda *a, **k: calls.append(1) or pytest.fail("eager synthesis after the traces were made"))
    again = system.sample(z, PARAMS)
    assert not calls and all(torch.equal(again[k], reference[k]) for k in again)


def test_a_growing_piece_traces_its_next_growth_step_ahead_and_meets_it_traced(monkeypatch):
    """Sampling a growing piece makes the next growth step's graphs on the tracer thread, one a call
    (run twice there: TorchScript's optimising first calls), for the batch kinds it samples: the
    step then draws through its traces from its first frame, the same images as eagerly."""
    system = tiny_system()
    system._traced.background = True  # as a live show does
    growth = system.piece.growth
    assert growth.fade_steps > 0
    runs = []
    original = torch.jit.ScriptModule.__call__
    monkeypatch.setattr(torch.jit.ScriptModule, "__call__",
                        lambda self, *a, **k: (runs.append(threading.current_thread().name), original(self, *a, **k))[1])
    system.step_count = growth.stable_steps - 1  # stage 0, stable: next the fade into stage 1
    one, two = latents(system, 1), latents(system, 2)
    for _ in range(40):  # every call may start one trace (the current ones first, then those ahead)
        system.sample(one, PARAMS)
        system.sample(two, PARAMS)
        system._traced.wait(60)
    keys = set(system._traced._traces)
    for index in range(len(system.names)):
        for single in (True, False):
            for fading in (True, False):  # the next stage: its fade, and it grown
                assert (f"generator {index}", 1, fading, single) in {k[:4] for k in keys}
    assert not any(k[1] > 1 for k in keys)  # not the stage after
    # Warmed where they were made: the tracer thread ran each trace before the caller did.
    assert runs.count("unstable-trace") >= 2 * len(keys)
    # The fade arrives: its first frame is traced, no eager synthesis, the eager pass's images.
    system.step_count = growth.stable_steps + growth.fade_steps // 2
    stage, alpha = system.growth()
    assert stage == 1 and 0 < alpha < 1
    reference = eager(system, one, PARAMS, monkeypatch)
    calls = []
    monkeypatch.setattr(type(system.generators[0]), "synthesis",
                        lambda *a, **k: calls.append(1) or pytest.fail("eager synthesis at the new growth step"))
    monkeypatch.setattr("unstable.equilibrium.traced.single_image",
                        lambda *a, **k: pytest.fail("an eager one-image pass at the new growth step"))
    got = system.sample(one, PARAMS)
    assert not calls and all(torch.equal(got[k], reference[k]) for k in got)
    # A grown piece traces nothing ahead.
    monkeypatch.undo()
    grown = tiny_system(10 ** 6)
    grown._traced.background = True
    for _ in range(2 * len(grown.names) + 2):
        grown.sample(one, PARAMS)
        grown._traced.wait(60)
    assert {k[1:3] for k in grown._traced._traces} == {(grown.growth()[0], False)}


def test_a_shows_sampling_mirror_has_its_traces_before_the_first_frame():
    from unstable.live.mirror import SamplingMirror
    system = tiny_system(10 ** 6)
    mirror = SamplingMirror(system, name="eq")
    try:
        assert len(mirror.system._traced) == 2 * len(system.names)  # one image and batches, each generator
        assert len(system._traced) == 0  # the training copy samples nothing
    finally:
        mirror.close()


def test_a_graph_the_tracer_cannot_record_samples_eagerly_and_the_show_goes_on(monkeypatch, caplog):
    system = tiny_system(10 ** 6)
    z = latents(system, 2)
    reference = eager(system, z, PARAMS, monkeypatch)

    def broken(*a, **k):
        raise RuntimeError("no tracer here")

    monkeypatch.setattr(torch.jit, "trace", broken)
    with caplog.at_level("WARNING", logger="unstable.traced"):
        out = system.sample(z, PARAMS)
        again = system.sample(z, PARAMS)
    assert all(torch.equal(out[k], reference[k]) and torch.equal(again[k], reference[k]) for k in out)
    assert sum("samples eagerly" in r.getMessage() for r in caplog.records) == len(system.names)  # once each


# ------------------------------------------------------------------------------ BAD's decoders

def tiny_bad(**over):
    from unstable.system import build_system
    table = {"name": "tiny", "kind": "divergence", "seed": 1, "vae": {"hidden": 64}, "classifier": {"width": 8},
             **over}
    system = build_system(piece_from_dict(table, "tiny.toml"), torch.device("cpu"))
    system._traced.background = False
    with torch.no_grad():  # running statistics a fresh decoder lacks, so evaluation form shows
        for net in (system.decoder, system.base_decoder):
            net.mlp[1].running_mean.normal_(0.0, 0.3)
            net.mlp[1].running_var.uniform_(0.5, 2.0)
    return system


@pytest.mark.parametrize("n", [1, 3])
def test_the_decoders_traced_pass_draws_the_eager_pass_bit_for_bit(n, monkeypatch):
    system = tiny_bad(directions={"count": 4, "samples": 200})
    g = torch.Generator().manual_seed(n)
    z = {"decoder": torch.randn((n, 16), generator=g), "base": torch.randn((n, 16), generator=g)}
    for params in ({"temperature": 0.7}, {"temperature": 1.3, "dir0": 2.0, "dir2": -1.0}):
        traced = system.sample(z, params)
        reference = eager(system, z, params, monkeypatch)
        for name in z:
            assert traced[name].shape == (n, 3, 28, 28)
            assert torch.equal(traced[name], reference[name]), (name, params)
    assert len(system._traced) == 2  # decoder and base, this batch kind; directions did not retrace
    steered = system.sample(z, {"dir0": 2.0})
    assert not torch.equal(steered["decoder"], system.sample(z, {})["decoder"])


def test_tracing_a_training_decoder_leaves_its_mode_alone(monkeypatch):
    system = tiny_bad()
    system._traced.background = True
    assert system.decoder.training
    z = {"decoder": torch.randn((2, 16))}
    system.sample(z, {})
    system._traced.wait(60)
    assert len(system._traced) == 1 and system.decoder.training  # traced without eval()
    out = system.sample(z, {})
    assert torch.equal(out["decoder"], eager(system, z, {}, monkeypatch)["decoder"])


def test_a_bad_shows_mirror_has_its_decoder_traces_before_the_first_frame():
    from unstable.live.mirror import SamplingMirror
    mirror = SamplingMirror(tiny_bad(), name="bad")
    try:
        assert len(mirror.system._traced) == 4  # decoder and base, one image and batches
    finally:
        mirror.close()


def test_a_process_that_ends_while_a_trace_is_being_made_exits_cleanly(tmp_path):
    """A training process stopped while its tracer thread was inside torch.jit.trace aborted at exit
    ("terminate called without an active exception", SIGABRT): the interpreter's finalisation
    stopped the daemon thread inside C++. Exit now waits for the tracer (unstable.traces)."""
    import subprocess
    import sys
    code = f"""
import sys, torch
sys.path.insert(0, {str(Path(__file__).parent)!r})
from test_traced_sampling import tiny_system
from unstable.equilibrium.traced import sample_traced
system = tiny_system()
system._traced.background = True
stage, alpha = system.growth()
z = torch.zeros((1, system.piece.generator.z_dim))
out = sample_traced(system._traced, 0, system.generators[0], z, stage=stage, alpha=alpha, size=16,
                    temperature=1.0, truncation=1.0, noise=1.0, shift=None)
assert out is None  # the trace is being made on its thread; the process ends at once
"""
    for _ in range(3):
        r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0 and "terminate called" not in r.stderr, (r.returncode, r.stderr[-2000:])
