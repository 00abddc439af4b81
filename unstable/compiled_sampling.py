"""Sampling passes through torch.compile (inductor) on a GPU, compiled in the background and swapped in.

Why: under a CUDA graph (unstable.cuda_graphs) a pass pays no launches, but each of its hundreds
of kernels still reads and writes whole activations: the modulations, noise, biases and activations
around every convolution are thin elementwise passes that inductor fuses into a few kernels. On a
CPU a compiled pass drew hardly more images than its trace, after a compile of tens of seconds per
pass and batch size, and a show lost frames meanwhile (docs/figures.md, twelfth round), so there
it is off unless asked for.

- Only a copy sampled for a whole show compiles (`System.sampled_for_long`: a live show's mirror),
  and only its grown passes (`TraceCache.run(settled=...)`): a growing piece's stages and a training
  run's grids are drawn for less time than a compile takes. Renders do not compile: a pass swapped
  in part way through would draw the frames after it a little differently (within TOLERANCE), and a
  render gives the same frames every time, split into parts or whole.
- Each pass (a generator's or decoder's, one image or a batch, as unstable.traces keys them) is
  compiled per input shapes (`dynamic=False`), whole (`fullgraph=True`: a pass that does not
  compile as one graph stays traced, with one log line), on the tracer thread, after its trace is
  made and in use: compile time never delays a frame, and the trace draws until the swap.
- Before the swap the compiled pass is checked against the trace on the same inputs and weights
  (holding the lock the weights' writer holds): it must draw the same images within TOLERANCE and
  run its compiled code, or it is dropped with one log line.
- On a GPU the compiled pass is what the pass's CUDA graph is captured from: the graph of the trace
  is replaced by the graph of the compiled pass in one assignment.
- A compiled pass never compiles again where it is called: each is a function of its own (dynamo
  keeps compiled code per code object) run in dynamo's run-only mode, so a call it was not compiled
  for runs the trace (and says so once) rather than compiling on the render thread.
- Compiled code is kept on disk in TORCHINDUCTOR_CACHE_DIR (by default `.cache/unstable/inductor`, as
  compiled training's), so a show's second run compiles in seconds.

    UNSTABLE_COMPILE_SAMPLING=auto  (default) compile where the passes run on a CUDA device with Triton
    UNSTABLE_COMPILE_SAMPLING=1     compile on any device (a CPU's inductor needs a C++ compiler)
    UNSTABLE_COMPILE_SAMPLING=0     never: the passes stay TorchScript traces
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
import threading
import time
from typing import Callable, ContextManager

import torch

from . import cuda_graphs
from .errors import UnstableError

__all__ = ["CompiledPass", "compile_pass", "prepare", "setting", "wanted", "TOLERANCE"]

_CHOICES = ("auto", "0", "1")

# The largest difference in a pixel (images in 0..1) the compiled pass may draw from its trace: two
# levels of 255. Inductor reorders sums and on a GPU may pick other convolution algorithms (TF32
# where the trace's are); a compile that reads the wrong weights or does other maths moves images
# by tenths. The difference measured is logged with each swap.
TOLERANCE = 2 / 255

# torch.compile's backend (tests may use a lighter one to check the swapping without inductor).
BACKEND = "inductor"

# The calls that compile a pass and then warm it: inductor's code on a GPU autotunes and loads its
# kernels on the first calls.
WARM_UP_CALLS = 2

# Checks of a compiled pass against its trace, each on weights that did not move while it ran.
CHECK_TRIES = 5

_ids = itertools.count()
# One compile at a time in a process: each system's tracer thread may want one, and two would share
# the interpreter lock and the cores for no gain.
_compile_lock = threading.Lock()

log = logging.getLogger("unstable.traced")


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


def _wanted_on(device: torch.device) -> bool:
    value = setting()
    return value == "1" or (value == "auto" and device.type == "cuda" and _has_triton())


def wanted(inputs: tuple) -> bool:
    """Whether a pass on `inputs` should be compiled (see the module doc)."""
    return bool(inputs) and _wanted_on(inputs[0].device)


def prepare(device: torch.device) -> None:
    """Check the setting (one clear line) and, where passes on `device` will compile, set up the
    process for it: called on the main thread where a command chooses its device, since these are
    process-wide settings a tracer thread should not write."""
    if not _wanted_on(torch.device(device)):
        return
    from . import compiled

    # On a CPU one compile worker: a pool of them would take the cores the show is drawing on.
    compiled.prepare_inductor(one_worker=torch.device(device).type == "cpu")


class CompiledPass:
    """A pass compiled for one set of input shapes: call it as the pass, with tensors of those shapes.

    A call that dynamo's guards do not admit (another thread count, say) runs `fallback` (the trace),
    never the eager pass nor a compile; the first such call says so in one log line."""

    def __init__(self, function: Callable[..., torch.Tensor], name: str, compile_seconds: float):
        self.run = torch._dynamo.run(function)  # run-only: cached compiled code, never a compile
        self.name = name
        self.compile_seconds = compile_seconds
        self.difference = float("nan")  # from its trace, where checked
        self.misses = 0

    def missed(self) -> None:
        """Count a call that ran the fallback (see the class doc)."""
        self.misses += 1
        if self.misses == 1:
            log.warning("the compiled sampling pass of %s was called as it was not compiled for; "
                        "such calls run its trace", self.name)

    def __call__(self, *inputs: torch.Tensor) -> torch.Tensor:
        # Called as it was compiled: distinct ordinary tensors (a show's frames hand in inference
        # tensors, one cached tensor for several equal live values; a graph's capture ordinary
        # ones), in inference mode. The output leaves as an ordinary tensor where the caller is
        # outside inference mode (a decoder samples under no_grad).
        inputs = _ordinary(inputs)
        with torch.inference_mode():
            out = self.run(*inputs)
        return out if torch.is_inference_mode_enabled() else out.clone()


def _ordinary(inputs: tuple) -> tuple:
    """Each input copied to an ordinary tensor of its own: dynamo guards on both (inference or not,
    and no two inputs one tensor). A pass's inputs are small: its latents and live values."""
    with torch.inference_mode(False):
        return tuple(t.clone() for t in inputs)


def _own_function(module: Callable[..., torch.Tensor], fallback: Callable[..., torch.Tensor],
                  compiled: list) -> Callable[..., torch.Tensor]:
    """`module` called through a function whose code object is its own: dynamo keeps compiled code,
    and its limit of 8 recompiles, per code object, which every pass would otherwise share.

    Run-only, a call its guards do not admit runs this function's Python as it stands: there (and
    never while dynamo traces it, where the branch folds away) it counts a miss on `compiled[0]`
    and runs `fallback`."""

    def sampling_pass(*inputs):
        if not torch.compiler.is_dynamo_compiling():
            compiled[0].missed()
            return fallback(*inputs)
        return module(*inputs)

    sampling_pass.__code__ = sampling_pass.__code__.replace(co_name=f"sampling_pass_{next(_ids)}")
    return sampling_pass


def compile_pass(module: Callable[..., torch.Tensor], inputs: tuple, fallback: Callable[..., torch.Tensor],
                 weights_lock: ContextManager = contextlib.nullcontext(), name: str = "a pass") -> CompiledPass:
    """`module` (a pass: tensors in, one tensor out) compiled for tensors shaped as `inputs` and
    checked against `fallback` (its trace) on `inputs`, holding `weights_lock` (the lock the weights'
    writer holds). Raises where it does not compile as one graph, misses its own guards or draws
    other images (the caller keeps the trace)."""
    holder: list = []
    function = _own_function(module, fallback, holder)
    holder.append(CompiledPass(function, name, 0.0))
    compiled = torch.compile(function, dynamic=False, fullgraph=True, backend=BACKEND)
    ordinary = _ordinary(inputs)  # as CompiledPass calls it
    start = time.perf_counter()
    # A compile's first calls may synchronise the device (inductor autotunes reductions), which
    # would break a capture under way on another thread: none starts meanwhile.
    with _compile_lock, cuda_graphs.no_captures() if ordinary[0].is_cuda else contextlib.nullcontext(), \
            torch.inference_mode():
        for _ in range(WARM_UP_CALLS):
            compiled(*ordinary)
    compiled_pass = holder[0]
    compiled_pass.compile_seconds = time.perf_counter() - start
    compiled_pass.difference = _check(compiled_pass, inputs, fallback, weights_lock)
    return compiled_pass


def _check(compiled: CompiledPass, inputs: tuple, reference: Callable[..., torch.Tensor],
           weights_lock: ContextManager, tries: int = CHECK_TRIES) -> float:
    """The largest difference between `compiled`'s images on `inputs` and `reference`'s; raises where
    it exceeds TOLERANCE or where the compiled call missed its guards. In a show the weights move
    under both (the mirror copies training's in, in place, between any two calls): the check holds
    the lock the writer holds, and, since a writer may queue its copies on a stream of its own (a
    GPU's training stream) or write without a lock, counts only where the reference drew the same
    images just before and just after the compiled pass."""
    for _ in range(tries):
        with weights_lock, torch.inference_mode():
            before = reference(*inputs)
            out = compiled(*inputs)
            after = reference(*inputs)
        if torch.allclose(before, after, rtol=0.0, atol=0.0, equal_nan=True):  # (a NaN image is compared below)
            break
    else:
        raise RuntimeError(f"the weights moved during each of {tries} checks against the trace")
    if compiled.misses:
        raise RuntimeError("dynamo's guards refused the call the pass was compiled for")
    assert out.shape == before.shape, f"compiled pass gave {tuple(out.shape)}, its trace {tuple(before.shape)}"
    difference = (out.float() - before.float()).abs().max().item()
    if not difference <= TOLERANCE:  # (a NaN fails too)
        raise ValueError(f"the compiled pass draws {difference:.2g} away from its trace (allowed {TOLERANCE:.2g})")
    return difference
