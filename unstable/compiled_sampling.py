"""Sampling passes through torch.compile (inductor) on a GPU, compiled in the background and swapped in.

Why: under a CUDA graph (unstable.cuda_graphs) a pass pays no launches, but each of its hundreds
of kernels still reads and writes whole activations: the modulations, noise, biases and activations
around every convolution are thin elementwise passes that inductor fuses into a few kernels. On a
CPU a compiled pass drew hardly more images than its trace, after a compile of tens of seconds per
pass and batch size (docs/figures.md, eleventh round), so there it is off unless asked for.

- Each pass (a generator's or decoder's, one image or a batch, as unstable.traces keys them) is
  compiled per input shapes (`dynamic=False`), whole (`fullgraph=True`: a pass that does not
  compile as one graph stays traced, with one log line), on the tracer thread, after its trace is
  made and in use: compile time never delays a frame, and the trace draws until the swap.
- Before the swap the compiled pass is checked against the trace on the same inputs: it must draw
  the same images within TOLERANCE, or it is dropped with one log line.
- On a GPU the compiled pass is what the pass's CUDA graph is captured from: the graph of the trace
  is replaced by the graph of the compiled pass in one assignment.
- A compiled pass never compiles again where it is called: each is a function of its own (dynamo
  keeps compiled code per code object) run in dynamo's run-only mode, so a call it was not compiled
  for runs eagerly rather than compiling on the render thread.
- Compiled code is kept on disk in TORCHINDUCTOR_CACHE_DIR (by default `.cache/unstable/inductor`, as
  compiled training's), so a show's second run compiles in seconds.

    UNSTABLE_COMPILE_SAMPLING=auto  (default) compile where the passes run on a CUDA device with Triton
    UNSTABLE_COMPILE_SAMPLING=1     compile on any device (a CPU's inductor needs a C++ compiler)
    UNSTABLE_COMPILE_SAMPLING=0     never: the passes stay TorchScript traces
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from typing import Callable

import torch

from .errors import UnstableError

__all__ = ["CompiledPass", "compile_pass", "setting", "wanted", "TOLERANCE"]

_CHOICES = ("auto", "0", "1")

# The largest difference in a pixel (images in 0..1) the compiled pass may draw from its trace: half a
# level of 255. Inductor reorders sums (float rounding, about 1e-6 here); anything larger is a defect.
TOLERANCE = 0.5 / 255

# torch.compile's backend (tests may use a lighter one to check the swapping without inductor).
BACKEND = "inductor"

# The calls that compile a pass and then warm it: inductor's code on a GPU autotunes and loads its
# kernels on the first calls.
WARM_UP_CALLS = 2

_ids = itertools.count()
# One compile at a time in a process: each system's tracer thread may want one, and two would share
# the interpreter lock and the cores for no gain.
_compile_lock = threading.Lock()


def setting() -> str:
    """UNSTABLE_COMPILE_SAMPLING, checked: one clear line when it is not auto, 0 or 1."""
    value = os.environ.get("UNSTABLE_COMPILE_SAMPLING", "auto").strip().lower() or "auto"
    if value not in _CHOICES:
        raise UnstableError(f"UNSTABLE_COMPILE_SAMPLING={value!r}: expected auto (compile on a GPU, the "
                            "default), 1 (compile on any device) or 0 (never)")
    return value


def _has_triton() -> bool:
    try:
        from torch.utils._triton import has_triton
    except ImportError:
        return False
    return has_triton()


def wanted(inputs: tuple) -> bool:
    """Whether a pass on `inputs` should be compiled (see the module doc)."""
    value = setting()
    if value == "0" or not inputs:
        return False
    return value == "1" or (inputs[0].is_cuda and _has_triton())


class CompiledPass:
    """A pass compiled for one set of input shapes: call it as the pass, with tensors of those shapes."""

    def __init__(self, run: Callable[..., torch.Tensor], compile_seconds: float):
        self.run = run
        self.compile_seconds = compile_seconds

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        # Called as it was compiled, or dynamo's guards send the call down the eager path: with
        # ordinary tensors (a show's frames hand in inference tensors, a graph's capture ordinary
        # ones), in inference mode. The output leaves as an ordinary tensor where the caller is
        # outside inference mode (a decoder samples under no_grad).
        inputs = _ordinary(inputs)
        with torch.inference_mode():
            out = self.run(*inputs)
        return out if torch.is_inference_mode_enabled() else out.clone()


def _ordinary(inputs: tuple) -> tuple:
    """`inputs` with each inference tensor copied to an ordinary one (a pass's inputs are small: its
    latents and live values)."""
    if not any(t.is_inference() for t in inputs):
        return inputs
    with torch.inference_mode(False):
        return tuple(t.clone() if t.is_inference() else t for t in inputs)


def _own_function(module: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """`module` called through a function whose code object is its own: dynamo keeps compiled code,
    and its limit of 8 recompiles, per code object, which every pass would otherwise share."""

    def sampling_pass(*inputs):
        return module(*inputs)

    sampling_pass.__code__ = sampling_pass.__code__.replace(co_name=f"sampling_pass_{next(_ids)}")
    return sampling_pass


def _cache_dir() -> None:
    from . import compiled

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", str(compiled.cache_dir().resolve()))


def compile_pass(module: Callable[..., torch.Tensor], inputs: tuple, reference: torch.Tensor) -> CompiledPass:
    """`module` (a pass: tensors in, one tensor out) compiled for tensors shaped as `inputs` and
    checked against `reference`, the trace's output on `inputs`. Raises where it does not compile
    as one graph or draws other images (the caller keeps the trace)."""
    _cache_dir()
    if not inputs[0].is_cuda and "TORCHINDUCTOR_COMPILE_THREADS" not in os.environ:
        import torch._inductor.config as inductor_config

        # One compile worker on a CPU: a pool of them would take the cores the show is drawing on.
        inductor_config.compile_threads = 1
    function = _own_function(module)
    compiled = torch.compile(function, dynamic=False, fullgraph=True, backend=BACKEND)
    inputs = _ordinary(inputs)  # as CompiledPass calls it
    start = time.perf_counter()
    with _compile_lock, torch.inference_mode():
        for _ in range(WARM_UP_CALLS):
            out = compiled(*inputs)
    seconds = time.perf_counter() - start
    assert out.shape == reference.shape, f"compiled pass gave {tuple(out.shape)}, its trace {tuple(reference.shape)}"
    difference = (out.float() - reference.float()).abs().max().item()
    if not difference <= TOLERANCE:  # (a NaN fails too)
        raise ValueError(f"the compiled pass draws {difference:.2g} away from its trace (allowed {TOLERANCE:.2g})")
    return CompiledPass(torch._dynamo.run(function), seconds)
