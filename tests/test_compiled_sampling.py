"""Sampling passes through torch.compile (unstable.compiled_sampling): compiled on the tracer thread
while the trace draws the frames, swapped in drawing the trace's images (faders and weights
followed), never compiling where they are called, and a pass that does not compile whole left
traced with one line. On a GPU the compiled pass is what the pass's CUDA graph replays.

On a CPU the compile is off unless asked for (UNSTABLE_COMPILE_SAMPLING=1): these tests ask.
"""

from __future__ import annotations

import logging
import threading
import time

import pytest
import torch
import torch._dynamo
from torch._dynamo.utils import counters

from unstable import accel, compiled_sampling
from unstable.errors import UnstableError
from unstable.live.mirror import SamplingMirror
from unstable.system import resolve_device

from test_traced_sampling import PARAMS, eager, latents, tiny_system


@pytest.fixture(autouse=True)
def _fresh_dynamo(inductor_cache, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(inductor_cache))
    monkeypatch.setenv("UNSTABLE_COMPILE_SAMPLING", "1")
    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()


def compiled_system(device="cpu"):
    """The 16 px test piece, grown and sampled for long (as a show's mirror's copy), its traces made in
    the caller (as a show's are before its first frame; `sample_until_compiled` then leaves the
    compiles to the tracer thread)."""
    system = tiny_system(10 ** 6, device)
    system.sampled_for_long()
    return system


def sample_until_compiled(system, z, timeout: float = 900.0) -> list[dict]:
    """Sample z as a show's frames do, until the tracer thread has compiled (or given up on) every
    panel's pass at z's batch size: the frames drawn meanwhile."""
    cache, n = system._traced, z[system.names[0]].shape[0]
    system.sample(z, PARAMS)  # its traces, made in the caller
    cache.background = True
    frames, end = [], time.monotonic() + timeout
    while time.monotonic() < end:
        frames.append(system.sample(z, PARAMS))
        done = [k for k in list(cache._compiled) if k[1][0][0][0] == n]
        if len(done) == len(system.names) and (cache._tracer is None or not cache._tracer.is_alive()):
            return frames
        time.sleep(0.02)
    raise AssertionError(f"not compiled in {timeout} s")


def close(a: dict, b: dict, tolerance: float = compiled_sampling.TOLERANCE) -> bool:
    return a.keys() == b.keys() and all((a[k] - b[k]).abs().max().item() <= tolerance for k in a)


@pytest.mark.slow
def test_a_pass_is_compiled_beside_the_frames_and_swapped_in_drawing_the_traces_images(monkeypatch):
    system = compiled_system()
    z = latents(system, 4)
    system._traced.background = False
    traced = system.sample(z, PARAMS)
    frames = sample_until_compiled(system, z)
    # The frames went on while it compiled (a cold compile takes tens of seconds), each panel from
    # its trace until its compiled pass was swapped in.
    assert len(frames) > 3
    assert all(close(frame, traced) for frame in frames)
    cache = system._traced
    assert cache.compiled() == len(system.names)
    calls = []
    for compiled in cache._compiled.values():
        run = compiled.run
        compiled.run = lambda *inputs, run=run: calls.append(1) or run(*inputs)
    compiled_frame = system.sample(z, PARAMS)
    assert len(calls) == len(system.names)  # each panel through its compiled pass
    assert all(p.misses == 0 for p in cache._compiled.values())  # its compiled code, not the trace
    assert close(compiled_frame, traced)
    # Weights moved in place (as the mirror copies them in) and a fader's move reach the compiled
    # passes, without compiling again.
    unique = counters["stats"]["unique_graphs"]
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for p in system.generators[1].parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.2)
    moved_weights = system.sample(z, PARAMS)
    panel = system.names[1]
    assert (moved_weights[panel] - traced[panel]).abs().max() > 0.05  # the weights did move the images
    assert close(moved_weights, eager(system, z, PARAMS, monkeypatch))
    moved = {"temperature": 1.3, "truncation": 0.5, "noise": 0.2}
    after = system.sample(z, moved)
    assert len(calls) == 3 * len(system.names)
    assert counters["stats"]["unique_graphs"] == unique
    assert all(p.misses == 0 for p in cache._compiled.values())
    assert close(after, eager(system, z, moved, monkeypatch))
    assert not close(after, moved_weights, 1e-2)  # the faders did move them


def test_a_shows_mirror_compiles_its_passes_while_training_moves_the_weights_under_them(monkeypatch):
    # In a show the mirror copies training's weights into the sampling copy, in place, between any
    # two frames, while the tracer thread compiles: a check against a trace drawn at another moment
    # than the compiled pass would refuse every pass.
    monkeypatch.setattr(compiled_sampling, "BACKEND", "eager")
    trained = tiny_system(10 ** 6)
    mirror = SamplingMirror(trained)
    system = mirror.system
    system._traced.background = True
    z = latents(system, 4)
    stop = threading.Event()

    def training():  # a new set of weights every few milliseconds, synced as a training thread does
        g = torch.Generator().manual_seed(7)
        while not stop.is_set():
            with torch.no_grad():
                for p in trained.generators[0].parameters():
                    p.add_(torch.randn(p.shape, generator=g) * 0.01)
            mirror.sync()
            time.sleep(0.002)

    trainer = threading.Thread(target=training, daemon=True)
    trainer.start()
    try:
        end = time.monotonic() + 600
        while len(system._traced._compiled) < len(system.names) and time.monotonic() < end:
            mirror.sample(z, PARAMS)
            time.sleep(0.01)
    finally:
        stop.set()
        trainer.join()
        mirror.close()
    assert system._traced.compiled() == len(system.names), system._traced._compiled
    compiled = mirror.sample(z, PARAMS)
    assert all(p.misses == 0 for p in system._traced._compiled.values())
    system._traced.background = False  # (traces are never compiled in the caller)
    assert close(compiled, mirror.sample(z, PARAMS))
    system._traced.wait()


@pytest.mark.skipif(not accel.packs("cpu"), reason="the one-image pass calls oneDNN's packed convolutions only where oneDNN is")
def test_a_pass_that_does_not_compile_whole_stays_traced_with_one_line(monkeypatch, caplog):
    # On a CPU the one-image pass calls oneDNN's packed convolutions through a TorchScript function,
    # which dynamo does not trace into: no whole graph.
    monkeypatch.setattr(compiled_sampling, "BACKEND", "eager")
    system = compiled_system()
    z = latents(system, 1)
    system._traced.background = False
    traced = system.sample(z, PARAMS)
    with caplog.at_level(logging.WARNING, logger="unstable.traced"):
        frames = sample_until_compiled(system, z)
    cache = system._traced
    assert cache.compiled() == 0 and len(cache._compiled) == len(system.names)
    lines = [r.getMessage() for r in caplog.records if "compiling the sampling pass" in r.getMessage()]
    assert len(lines) == len(system.names) and all("stays traced" in line and "\n" not in line for line in lines)
    assert all(close(frame, traced, 0.0) for frame in frames)
    assert close(system.sample(z, PARAMS), traced, 0.0)


def counting_backend(calls: list):
    """A torch.compile backend that runs dynamo's graph as captured, counting the calls of compiled code."""
    def backend(gm, example_inputs):
        def run(*args):
            calls.append(1)
            return gm.forward(*args)
        return run
    return backend


def test_a_compiled_pass_runs_its_compiled_code_for_frames_and_captures_and_never_compiles_where_called(
        monkeypatch, caplog):
    calls, fallbacks = [], []
    monkeypatch.setattr(compiled_sampling, "BACKEND", counting_backend(calls))
    layer = torch.nn.Linear(8, 3)
    module = lambda x, t, u: torch.tanh(layer(x) * t + u)  # noqa: E731

    def trace(*inputs):  # stands for the pass's trace, what a call the compiled code cannot take runs
        fallbacks.append(1)
        return module(*inputs)

    with torch.inference_mode():  # a show's frames hand in inference tensors
        x, one = torch.randn(4, 8), torch.ones(())
        reference = module(x, one, one)  # one cached tensor for two equal live values
    compiled = compiled_sampling.compile_pass(module, (x, one, one), trace)
    frames, ran, checked = counters["frames"]["total"], len(calls), len(fallbacks)
    with torch.inference_mode():
        assert torch.allclose(compiled(x, one, one), reference)
    with torch.inference_mode(False):  # a CUDA graph's capture: ordinary tensors, each its own
        ordinary = (x.clone(), one.clone(), one.clone())
    assert torch.allclose(compiled(*ordinary), reference)
    assert torch.allclose(compiled(ordinary[0], ordinary[1], ordinary[1]), reference)  # (a decoder's cached constants)
    assert len(calls) == ran + 3 and len(fallbacks) == checked and compiled.misses == 0
    # What it was not compiled for (other shapes, another thread count) runs the trace, here,
    # without compiling, and says so once.
    other = torch.randn(6, 8)
    with torch.inference_mode():
        expected = module(other, one, one)
    with caplog.at_level(logging.WARNING, logger="unstable.traced"):
        assert torch.allclose(compiled(other, one, one), expected)
        threads = torch.get_num_threads()
        torch.set_num_threads(threads + 1)
        try:
            assert torch.allclose(compiled(*ordinary), reference)
        finally:
            torch.set_num_threads(threads)
    assert len(calls) == ran + 3 and len(fallbacks) == checked + 2 and compiled.misses == 2
    assert counters["frames"]["total"] == frames
    assert sum("was called as it was not compiled for" in r.getMessage() for r in caplog.records) == 1
    out = compiled(*ordinary)  # outside inference mode, an ordinary tensor (a decoder samples under no_grad)
    assert not out.is_inference()
    out.add_(1.0)


def test_a_compiled_pass_that_draws_other_images_is_refused_and_one_is_checked_on_unmoved_weights(monkeypatch):
    monkeypatch.setattr(compiled_sampling, "BACKEND", "eager")
    module = lambda x: x * 2.0  # noqa: E731
    x = torch.rand(2, 3, 4, 4)
    with pytest.raises(ValueError, match="away from its trace"):
        compiled_sampling.compile_pass(module, (x,), lambda x: x * 2.0 + 0.01)
    with pytest.raises(ValueError, match="away from its trace"):
        compiled_sampling.compile_pass(module, (x,), lambda x: torch.full_like(x, float("nan")))
    # In a show the mirror moves the weights between any two calls: the trace's images before and
    # after the compiled pass must agree for a check to count.
    moving = iter(range(100))
    with pytest.raises(RuntimeError, match="weights moved during each of"):
        compiled_sampling.compile_pass(module, (x,), lambda x: x * 2.0 + next(moving))
    settling = iter([x * 3.0, x * 2.0, x * 2.0, x * 2.0])  # moved once, then still: checked on the second try
    assert compiled_sampling.compile_pass(module, (x,), lambda x: next(settling)).difference == 0.0


def test_the_setting_is_checked_where_the_device_is_chosen_and_auto_leaves_a_cpu_traced(monkeypatch):
    x = (torch.zeros(1, 4),)
    monkeypatch.setenv("UNSTABLE_COMPILE_SAMPLING", "auto")
    assert not compiled_sampling.wanted(x)
    monkeypatch.setenv("UNSTABLE_COMPILE_SAMPLING", "0")
    assert not compiled_sampling.wanted(x)
    monkeypatch.setenv("UNSTABLE_COMPILE_SAMPLING", "1")
    assert compiled_sampling.wanted(x)
    monkeypatch.setenv("UNSTABLE_COMPILE_SAMPLING", "yes")
    with pytest.raises(UnstableError, match=r"UNSTABLE_COMPILE_SAMPLING='yes': expected auto"):
        resolve_device("cpu")


def test_the_training_copys_grids_and_probes_never_compile():
    # Only a copy sampled for a whole live show compiles: a training run's own system draws its
    # grids and the guard's probes now and then, from weights that change every step.
    system = tiny_system(10 ** 6)
    z = latents(system, 4)
    system.sample(z, PARAMS)
    system._traced.background = True
    for _ in range(5):
        system.sample(z, PARAMS)
        system._traced.wait()
    assert not system._traced._compiled


def test_a_shows_first_frame_never_waits_for_a_compile():
    # prepare_sampling makes the traces in the caller before the first frame; compiles only ever
    # start on the tracer thread, after.
    system = compiled_system()
    system._traced.background = True
    system.prepare_sampling()
    assert len(system._traced) == 2 * len(system.names) and not system._traced._compiled
    assert system._traced._tracer is None  # and nothing started on the tracer thread either


@pytest.mark.cuda
def test_on_a_gpu_the_compiled_pass_is_what_its_cuda_graph_replays(monkeypatch):
    monkeypatch.setenv("UNSTABLE_COMPILE_SAMPLING", "auto")
    system = compiled_system("cuda")
    z = {k: v.cuda() for k, v in latents(system, 4).items()}
    system._traced.background = False
    traced = system.sample(z, PARAMS)
    cache = system._traced
    traces_graphs = {k: id(g) for k, g in cache._graphs.items()}  # captured from the traces, inline
    assert len(traces_graphs) == len(system.names)
    sample_until_compiled(system, z)
    assert cache.compiled() == len(system.names)
    assert all(p.misses == 0 for p in cache._compiled.values())
    # Each compiled pass's own graph replaced its trace's.
    assert all(k in cache._graphs and id(cache._graphs[k]) != old for k, old in traces_graphs.items())
    assert close(system.sample(z, PARAMS), traced)
