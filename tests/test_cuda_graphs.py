"""Sampling passes replayed as CUDA graphs (unstable.cuda_graphs through unstable.traces): the trace's
images, following the weights and the faders, one graph per input shapes captured on the
tracer thread, replays that neither overwrite an earlier output nor mix two streams' inputs, and a
failed capture that leaves the passes to their traces.
Marked `cuda`: skipped without a GPU; `scripts/gpu-check.sh` runs them."""

from __future__ import annotations

import threading

import pytest
import torch

from test_traced_sampling import PARAMS, latents, moved_twin, tiny_system
from unstable import cuda_graphs

pytestmark = pytest.mark.cuda
CUDA = torch.device("cuda")


def on_gpu(steps: int = 10 ** 6):
    return tiny_system(steps, device=CUDA)


def same(a: torch.Tensor, b: torch.Tensor) -> bool:
    """Equal images, to float rounding: cuBLAS and cuDNN choose their kernels per call (by stream,
    workspace and heuristics), so the ones a graph captured and the ones its trace runs now may
    round differently."""
    return a.shape == b.shape and torch.allclose(a, b, rtol=0.0, atol=1e-5)


def gpu_latents(system, n: int, seed: int = 3) -> dict[str, torch.Tensor]:
    return {name: z.to(CUDA) for name, z in latents(system, n, seed).items()}


def as_traces(system, z, params, monkeypatch) -> dict[str, torch.Tensor]:
    """The same passes through their traces, graphs off."""
    monkeypatch.setenv("UNSTABLE_CUDA_GRAPHS", "0")
    try:
        return system.sample(z, params)
    finally:
        monkeypatch.delenv("UNSTABLE_CUDA_GRAPHS")


@pytest.mark.parametrize("n", [1, 3])
def test_a_pass_on_the_gpu_replays_its_graph_and_draws_the_traces_images(n, monkeypatch):
    system = on_gpu()
    z = gpu_latents(system, n)
    graphed = system.sample(z, PARAMS)
    assert system._traced.graphs() == len(system.names)  # one per generator at this batch size
    traced = as_traces(system, z, PARAMS, monkeypatch)
    for name in system.names:
        assert graphed[name].shape == (n, 3, 16, 16) and graphed[name].device.type == "cuda"
        assert same(graphed[name], traced[name]), name


def test_a_graph_follows_the_weights_the_mirror_copies_in_and_the_faders(monkeypatch):
    source = on_gpu()
    z = gpu_latents(source, 1)
    moved = {"temperature": 1.3, "truncation": 0.5, "noise": 0.2}
    twin, before, after = moved_twin(source, z, PARAMS, moved)
    assert twin._traced.graphs() == len(twin.names)  # the same graphs: nothing recaptured
    reference = as_traces(twin, z, moved, monkeypatch)
    for name in twin.names:
        assert not same(before[name], after[name])
        assert same(after[name], reference[name]), name


def test_a_replays_output_is_its_own_and_is_not_overwritten_by_the_next_replay():
    system = on_gpu()
    first = system.sample(gpu_latents(system, 2, seed=1), PARAMS)
    kept = {k: v.clone() for k, v in first.items()}
    second = system.sample(gpu_latents(system, 2, seed=2), PARAMS)
    torch.cuda.synchronize()
    for name in system.names:
        assert torch.equal(first[name], kept[name])
        assert not same(first[name], second[name])


def test_a_new_batch_size_is_captured_on_the_tracer_thread_while_its_trace_draws(monkeypatch):
    system = on_gpu()
    system.prepare_sampling()  # what a show does before its first frame: batches of 1 and 2
    made = system._traced.graphs()
    assert made == 2 * len(system.names)
    system._traced.background = True  # as a live show does
    z = gpu_latents(system, 4)  # a look-ahead group
    reference = as_traces(system, z, PARAMS, monkeypatch)
    for _ in range(len(system.names) + 1):  # one capture at a time: each call may start the next
        out = system.sample(z, PARAMS)  # the trace or the graph: the same images
        assert all(same(out[k], reference[k]) for k in out)
        system._traced.wait(60)
    assert system._traced.graphs() == made + len(system.names)


def test_two_threads_on_two_streams_replaying_one_graph_keep_their_own_inputs(monkeypatch):
    system = on_gpu()
    zs = [gpu_latents(system, 1, seed=s) for s in (1, 2)]
    references = [as_traces(system, z, PARAMS, monkeypatch) for z in zs]
    system.sample(zs[0], PARAMS)  # the graphs captured
    wrong: list[str] = []

    def draw(i: int) -> None:
        with torch.cuda.stream(torch.cuda.Stream(CUDA)):
            for _ in range(50):
                out = system.sample(zs[i], PARAMS)
                torch.cuda.current_stream().synchronize()
                wrong.extend(name for name in out if not same(out[name], references[i][name]))

    threads = [threading.Thread(target=draw, args=(i,)) for i in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert wrong == []


class _Syncing(torch.nn.Module):
    """A pass with a host sync inside: no graph can hold it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * float(x.abs().sum().item() >= 0.0)


def test_a_failed_capture_turns_graphs_off_and_the_passes_run_as_their_traces(monkeypatch):
    monkeypatch.setattr(cuda_graphs, "_failed", None)  # restored after: the other tests' graphs stay on
    pools = []
    handle = torch.cuda.graph_pool_handle
    monkeypatch.setattr(torch.cuda, "graph_pool_handle", lambda: pools.append(handle()) or pools[-1])
    with pytest.raises(Exception):
        cuda_graphs.capture(_Syncing(), (torch.randn(4, device=CUDA),))
    assert not cuda_graphs.enabled()
    assert torch.cuda.current_stream() == torch.cuda.default_stream()  # the capture stream let go
    # The allocator no longer routes allocations into the failed graph's pool: ending it again fails.
    with pytest.raises(RuntimeError):
        torch._C._cuda_endAllocateToPool(torch.cuda.current_device(), pools[-1])
    # The GPU and its allocator go on as before: a system samples through its traces.
    system = on_gpu()
    z = gpu_latents(system, 2)
    out = system.sample(z, PARAMS)
    assert system._traced.graphs() == 0 and len(system._traced) == len(system.names)
    again = system.sample(z, PARAMS)
    torch.cuda.synchronize()
    assert all(torch.equal(out[k], again[k]) for k in out)
    big = torch.randn(1024, 1024, device=CUDA)
    assert torch.isfinite(big @ big).all()
