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
- Captured on the tracer thread (unstable.traces), one capture at a time in the process, on a
  stream kept for captures, in thread-local capture mode so that the render thread goes on
  launching its own work meanwhile; until its graph is captured a pass runs as its trace.
- A capture that fails (a host sync inside a pass, say) turns graphs off for the process, with one
  log line: every pass then runs as its trace.

On a CPU nothing changes. `UNSTABLE_CUDA_GRAPHS=0` turns graphs off.
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Callable

import torch

__all__ = ["MAX_GRAPHS", "CaptureBusy", "GraphedPass", "capture", "enabled", "no_captures", "signature", "wanted"]

# Calls of the pass on a side stream before capture: cuBLAS and cuDNN choose their kernels and
# workspaces, and TorchScript's executor specialises its graph, on first calls; none of that may
# happen during capture.
WARM_UP_CALLS = 3

# Graphs one cache (one system) keeps, the least recently replayed let go beyond it: a grown pair of
# generators sampled at one image and a look-ahead group holds 4, a piece growing through seven
# stages and their fades some 50 over its growth. Each keeps its activations and its own cuBLAS
# workspace (tens of MB on recent GPUs) in its pool, so a gallery card's memory bounds the number.
MAX_GRAPHS = 12


# Set, to why, when a capture failed: graphs are then off for the whole process (a failed capture
# can leave CUDA or the caching allocator in a state no second capture should meet).
_failed: str | None = None
# CUDA allows one capture at a time in a process; each system's tracer thread may want one.
_capture_lock = threading.Lock()
_capture_streams: dict[int, torch.cuda.Stream] = {}


def enabled() -> bool:
    """Whether sampling on a GPU replays CUDA graphs: UNSTABLE_CUDA_GRAPHS is not "0", and no
    capture has failed in this process."""
    return _failed is None and os.environ.get("UNSTABLE_CUDA_GRAPHS", "1").strip() != "0"


@contextlib.contextmanager
def no_captures():
    """No capture starts in this process inside the block: for work that may synchronise the whole
    device (a compile's first calls), which would break a capture under way on another thread."""
    with _capture_lock:
        yield


def wanted(inputs: tuple) -> bool:
    """Whether a pass on `inputs` should be graphed: on a CUDA device, with graphs enabled."""
    return bool(inputs) and inputs[0].is_cuda and enabled()


def signature(inputs: tuple) -> tuple:
    """What fixes a graph's inputs beside the pass: each tensor's shape, dtype and device."""
    return tuple((tuple(t.shape), t.dtype, t.device) for t in inputs)


class GraphedPass:
    """A pass captured as one CUDA graph: call it with tensors of the captured shapes."""

    def __init__(self, graph: "torch.cuda.CUDAGraph", static_inputs: tuple, static_output: torch.Tensor,
                 home: torch.cuda.Stream):
        self.graph = graph
        self.static_inputs = static_inputs
        self.static_output = static_output
        self._home = home  # the stream the static inputs were allocated on
        self._lock = threading.Lock()  # one replay's copy-in, replay and clone at a time
        self._done = torch.cuda.Event()  # recorded after each replay's clone (waiting on it before
        # its first record waits for nothing)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        with self._lock:
            stream = torch.cuda.current_stream(self.static_output.device)
            stream.wait_event(self._done)  # the last replay (maybe on another stream) is done with these
            if stream != self._home:
                # Used on this stream too: when the pass is let go (evicted, or its system copied
                # afresh) mid-replay, the allocator waits for this stream before reusing them.
                for static in self.static_inputs:
                    static.record_stream(stream)
            for static, value in zip(self.static_inputs, inputs, strict=True):
                static.copy_(value, non_blocking=True)
            self.graph.replay()
            out = self.static_output.clone()
            self._done.record(stream)
        return out


def _capture_stream(index: int) -> torch.cuda.Stream:
    """The stream every capture on CUDA device `index` (and its warm-up) runs on, and nothing else.

    torch.cuda.Stream() hands out streams from a pool of 32 per device, round robin, to every
    caller: a fresh one per capture would, sooner or later, be the stream the training thread
    launches its steps on, and its kernels would be captured. So one, made once, from the pool of
    high-priority streams, which nothing else in the engine draws on. (Where torch instantiates
    graphs with their nodes' priorities, a replay's kernels then go ahead of the training's: the
    show's frames first.)"""
    stream = _capture_streams.get(index)
    if stream is None:
        stream = _capture_streams[index] = torch.cuda.Stream(torch.device("cuda", index), priority=-1)
    return stream


def _clear_cublas_workspaces() -> None:
    """Drop cuBLAS's cached workspaces (one per handle and stream), as inductor's CUDA graph trees do
    around a capture: every graph is captured on the one capture stream, so without this all of them
    would record the same workspace, which the warm-up of the next capture (or a graph's teardown)
    then reuses or frees under them. Cleared, each capture allocates its own in its pool."""
    clear = getattr(torch._C, "_cuda_clearCublasWorkspaces", None)
    if clear is not None:
        clear()


def _end_failed_capture(graph: "torch.cuda.CUDAGraph", index: int, pool: tuple) -> None:
    """End a capture that went wrong, so that the caching allocator does not go on as if one were
    under way: torch stops routing allocations into the graph's pool only when CUDA ended the
    capture cleanly, and until then the allocator neither recycles memory used across streams nor
    frees its cache before reporting out of memory."""
    try:
        graph.capture_end()
        return  # ended cleanly after all: the graph's own teardown releases its pool
    except Exception:
        pass
    try:  # a torch whose teardown ends an abandoned capture's routing does it here, where it can raise
        graph.reset()
    except Exception:
        pass
    try:
        torch._C._cuda_endAllocateToPool(index, pool)
    except Exception:  # ended already (by the reset), or a torch without it: the pool stays (graphs are off)
        return
    try:
        torch._C._cuda_releasePool(index, pool)
    except Exception:
        pass


class CaptureBusy(RuntimeError):
    """Another capture, or a compile's first calls, hold the process's captures: try later."""


def capture(module: Callable[..., torch.Tensor], inputs: tuple) -> GraphedPass:
    """`module` (a pass: tensors in, one tensor out) on tensors shaped as `inputs`, as a CUDA graph.

    Runs the pass WARM_UP_CALLS times on the capture stream, then captures one call there. Raises
    what the capture raised, after turning graphs off for the process (the caller keeps the pass as
    it is); raises CaptureBusy, without waiting, where another capture or a compile (`no_captures`)
    is under way: neither a show preparing its first frame nor a tracer thread waits for a compile
    of minutes."""
    global _failed
    device = inputs[0].device
    index = device.index if device.index is not None else torch.cuda.current_device()
    home = torch.cuda.current_stream(device)
    with torch.inference_mode(False):  # ordinary tensors: a replay copies into them in or out of inference mode
        static_inputs = tuple(t.detach().clone() for t in inputs)
    if not _capture_lock.acquire(blocking=False):
        raise CaptureBusy("another capture or a compile is under way")
    try:
        if _failed is not None:
            raise RuntimeError(f"CUDA graphs are off in this process: {_failed}")
        stream = _capture_stream(index)
        stream.wait_stream(home)
        graph = torch.cuda.CUDAGraph()
        pool = torch.cuda.graph_pool_handle()
        # Not `torch.cuda.graph`: it synchronises the whole device and empties the allocator's
        # cache, which would stall the render and training threads at every capture.
        with torch.inference_mode(), torch.cuda.stream(stream):
            _clear_cublas_workspaces()
            for _ in range(WARM_UP_CALLS):
                module(*static_inputs)
            stream.synchronize()
            _clear_cublas_workspaces()
            # Thread-local: another thread's CUDA calls (the render thread's frames) during the
            # capture neither break it nor are captured into it.
            try:
                graph.capture_begin(pool=pool, capture_error_mode="thread_local")
                static_output = module(*static_inputs)
                graph.capture_end()
            except BaseException as error:
                _end_failed_capture(graph, index, pool)
                _failed = f"{type(error).__name__}: {error}"
                raise
            finally:
                _clear_cublas_workspaces()
        home.wait_stream(stream)
    finally:
        _capture_lock.release()
    assert isinstance(static_output, torch.Tensor), f"a graphed pass returns one tensor, got {type(static_output)}"
    return GraphedPass(graph, static_inputs, static_output, home)
