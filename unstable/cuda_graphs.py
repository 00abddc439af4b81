"""Sampling passes replayed as CUDA graphs on a GPU: one graph per traced pass and input shapes.

Why: a sampling pass of a live-sized generator is some hundreds of small kernels. On a GPU each
launch costs the host microseconds that the kernel itself hardly needs, so at batch 1-4 the
launches, not the maths, bound a frame, and a busy Python thread beside the render thread (the
training loop, the web server) stretches them further. A CUDA graph launches the whole pass at once.

Shapes are static per graph: a trace (unstable.traces) serves every batch of two or more, a graph
one batch size, so each (trace, input shapes) gets its own. A show samples in a few fixed groups
(one image per panel on screen, its look-ahead group), so it holds a handful of graphs.

- Inputs are copied into the graph's own tensors before each replay, and the output is cloned
  after it: the next replay writes the same memory.
- Weights are the networks' own tensors (and a generator's prepared one-image weights), which the
  mirror and the one-image refresh write in place: a replay reads the current weights, as the
  trace does. A mirror that copies the system afresh (its modules changed shape) has a new cache
  and new graphs.
- Replays are ordered on the GPU: each waits for the last one's clone to be queued on whatever
  stream it ran on, so two threads on two streams cannot overwrite each other's inputs.
- Captured on the tracer thread (unstable.traces), in thread-local capture mode so that the render
  thread goes on launching its own work meanwhile; until its graph is captured a pass runs as its
  trace. A pass that cannot be captured (a host sync inside it, say) stays a trace, with one log line.

On a CPU nothing changes. `UNSTABLE_CUDA_GRAPHS=0` turns graphs off.
"""

from __future__ import annotations

import os
import threading
from typing import Callable

import torch

__all__ = ["MAX_GRAPHS", "GraphedPass", "capture", "enabled", "signature", "wanted"]

# Calls of the pass on a side stream before capture: cuBLAS and cuDNN choose their kernels and
# workspaces, and TorchScript's executor specialises its graph, on first calls; none of that may
# happen during capture.
WARM_UP_CALLS = 3

# Graphs one cache (one system) keeps, the least recently replayed let go beyond it: a grown pair of
# generators sampled at one image and a look-ahead group holds 4, a piece growing through seven
# stages and their fades some 50 over its growth.
MAX_GRAPHS = 24


def enabled() -> bool:
    """Whether sampling on a GPU replays CUDA graphs (UNSTABLE_CUDA_GRAPHS, on unless "0")."""
    return os.environ.get("UNSTABLE_CUDA_GRAPHS", "1").strip() != "0"


def wanted(inputs: tuple) -> bool:
    """Whether a pass on `inputs` should be graphed: on a CUDA device, with graphs enabled."""
    return bool(inputs) and inputs[0].is_cuda and enabled()


def signature(inputs: tuple) -> tuple:
    """What fixes a graph's inputs beside the pass: each tensor's shape, dtype and device."""
    return tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)


class GraphedPass:
    """A pass captured as one CUDA graph: call it with tensors of the captured shapes."""

    def __init__(self, graph: "torch.cuda.CUDAGraph", static_inputs: tuple, static_output: torch.Tensor):
        self.graph = graph
        self.static_inputs = static_inputs
        self.static_output = static_output
        self._lock = threading.Lock()  # one replay's copy-in, replay and clone at a time
        self._done = torch.cuda.Event()  # recorded after each replay's clone (waiting on it before
        # its first record waits for nothing)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        with self._lock:
            stream = torch.cuda.current_stream(self.static_output.device)
            stream.wait_event(self._done)  # the last replay (maybe on another stream) is done with these
            for static, value in zip(self.static_inputs, inputs, strict=True):
                static.copy_(value, non_blocking=True)
            self.graph.replay()
            out = self.static_output.clone()
            self._done.record(stream)
        return out


def capture(module: Callable[..., torch.Tensor], inputs: tuple) -> GraphedPass:
    """`module` (a pass: tensors in, one tensor out) on tensors shaped as `inputs`, as a CUDA graph.

    Runs the pass WARM_UP_CALLS times on a side stream, then captures one call. Raises what the
    capture raised (the caller keeps the pass as it is)."""
    device = inputs[0].device
    static_inputs = tuple(t.detach().clone() for t in inputs)
    caller = torch.cuda.current_stream(device)
    side = torch.cuda.Stream(device)
    side.wait_stream(caller)
    with torch.inference_mode():
        with torch.cuda.stream(side):
            for _ in range(WARM_UP_CALLS):
                module(*static_inputs)
        caller.wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        # Thread-local: another thread's CUDA calls (the render thread's frames) during the capture
        # neither break it nor are captured into it. Its own stream, not torch's shared default
        # capture stream: each system's tracer thread may capture while another's does.
        with torch.cuda.graph(graph, stream=side, capture_error_mode="thread_local"):
            static_output = module(*static_inputs)
    assert isinstance(static_output, torch.Tensor), f"a graphed pass returns one tensor, got {type(static_output)}"
    return GraphedPass(graph, static_inputs, static_output)
