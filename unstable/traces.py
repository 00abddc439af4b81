"""Sampling passes as TorchScript traces: one call per panel that runs with the GIL released.

Why: a live show samples on its render thread while the training thread, the web server and the
refresh worker run Python beside it. An eager pass takes the GIL back after each of its operations
(some hundreds for a pair of generators), and whenever another thread holds it the render thread
waits (up to the interpreter's switch interval) and then waits again for a core: beside one busy
Python thread an eager pass takes tens of times as long as alone, a traced one a few times
(`tests/bench/bench_traced.py`; figures in docs/figures.md). A trace runs its whole graph in C++
with the GIL released, and saves the per-operation Python besides.

`TraceCache` holds a system's traces by key (what fixes the graph: network, growth stage, batch of
one or more, device, precision); the system's own pass modules (`equilibrium/traced.py`,
`divergence/traced_decoder.py`) take the live values (temperature, truncation, noise, the latent
directions' shift) as tensor inputs, so moving a fader never retraces, and hold the networks'
parameter and buffer tensors, so the mirror's in-place weight copies reach them. Results equal the
eager pass bit for bit (tests/test_traced_sampling.py).

A graph seen for the first time is traced, and run twice (when TorchScript optimises it), on a
thread of its own while the caller samples it eagerly: tracing and those first calls take tens to
hundreds of milliseconds, which the render thread would otherwise wait for. A show makes its traces
before the first frame (`System.prepare_sampling`), and a growing piece its next growth step's ahead
of time (`TraceCache.ahead`). A graph the tracer cannot record (or a torch without
`torch.jit.trace`) stays eager, with one log line. Bends are Python hooks on the activations: a bent
panel samples eagerly. `UNSTABLE_TRACED_SAMPLING=0` turns traces off.

On a GPU a trace is replayed as a CUDA graph, one per input shapes, captured on the tracer thread
as well (unstable.cuda_graphs); there each pass is also compiled by torch.compile for its input
shapes once its trace is in use, on the tracer thread, and swapped in, graph and all
(unstable.compiled_sampling).
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import logging
import os
import threading
import time
import warnings
from collections import OrderedDict
from typing import Callable, ContextManager, Hashable

import torch
from torch import nn

from . import compiled as compiled_training, compiled_sampling, cuda_graphs

__all__ = ["TraceCache", "TracedSampling", "constant", "enabled"]

log = logging.getLogger("unstable.traced")

# The tracer warns of every Python branch on a shape in the traced passes (a generator's batch-1
# fold): each is fixed by a trace's key. Filtered once here: `warnings.catch_warnings` around a
# trace would not be thread-safe, and traces are made on a thread of their own.
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"unstable\.")
# torch 2.13 marks torch.jit.trace deprecated in favour of torch.compile/torch.export, whose compile
# times (minutes here) a live show cannot wait for; a torch without it leaves sampling eager.
warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=DeprecationWarning)


# The tracer threads, so that the exit can join them. A daemon tracer thread that the interpreter's
# finalisation stops inside torch.jit.trace's C++, or while the thread itself is still ending (its
# trace made, its thread state being torn down), aborts the whole process ("terminate called
# without an active exception", SIGABRT): a show's training process stopped while it traced did,
# under load, and so did a test run whose last system had just made a trace. Threads, not their
# caches, are kept, and kept until joined. Bounded: a trace takes well under a second, seconds on a
# busy machine.
_tracers: set[threading.Thread] = set()
_tracers_lock = threading.Lock()


# Set at exit: no new job starts on a tracer thread.
_exiting = False


@atexit.register
def _wait_for_tracers(timeout: float = 60.0) -> None:
    global _exiting
    _exiting = True
    end = time.monotonic() + timeout
    with _tracers_lock:
        tracers = list(_tracers)
    for tracer in tracers:
        tracer.join(max(0.0, end - time.monotonic()))


def enabled() -> bool:
    """Whether sampling goes through traces (UNSTABLE_TRACED_SAMPLING, on unless "0")."""
    return os.environ.get("UNSTABLE_TRACED_SAMPLING", "1").strip() != "0"


_MISSING = object()

# Seconds before a capture that found the process's captures busy is tried again.
CAPTURE_RETRY_SECONDS = 1.0

# A new trace runs this many times where it is made, before it is used: TorchScript's profiling
# executor specialises and optimises a graph over its first calls (each several times as long as a
# later one: docs/figures.md, ninth round), which would otherwise be the render thread's frames.
WARM_UP_CALLS = 2


@functools.lru_cache(maxsize=256)
def constant(value: float, shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A tensor full of `value`, made once, for a pass's live inputs (a fader's value, a zero shift):
    the passes only read their inputs, and a frame's scalars would otherwise be an allocation each,
    on a GPU a copy from the host each."""
    return torch.full(shape, float(value), dtype=dtype, device=device)


_joined_before_inductor = False


def _join_before_inductor_exits() -> None:
    """Have the exit wait for the tracer threads before inductor's own exit hook stops its compile
    workers under a compile still running there (exit hooks run last registered first; inductor
    registers its own when it is first imported, after this module)."""
    global _joined_before_inductor
    if not _joined_before_inductor:
        import torch._inductor.async_compile  # noqa: F401  (its exit hook, registered on import)

        atexit.register(_wait_for_tracers)
        _joined_before_inductor = True


def _touch(recent: OrderedDict, key: Hashable) -> None:
    """`key` used now: the last of `recent` to be let go."""
    try:
        recent.move_to_end(key)
    except KeyError:  # let go by the tracer thread meanwhile: the caller still has its value
        pass


def _keep(recent: OrderedDict, key: Hashable, value) -> None:
    """`recent[key] = value`, the newest, the least recently used let go beyond MAX_GRAPHS."""
    recent[key] = value
    recent.move_to_end(key)
    while len(recent) > cuda_graphs.MAX_GRAPHS:
        recent.popitem(last=False)


def _where(pass_key: tuple) -> str:
    """`<name> at [shapes]` of a (trace key, input signature) key: what a log line names."""
    key, shapes = pass_key
    return f"{key[0]} at {[shape for shape, _, _ in shapes]}"


def _as_caller(threads: int, job: Callable, *args) -> None:
    """`job(*args)` with its caller's number of intra-op threads (a thread's own setting, which a new
    thread does not inherit): what a trace is warmed with and a compiled pass guards on."""
    torch.set_num_threads(threads)
    job(*args)


class TraceCache:
    """One system's traces by key (see the module doc). `background = False` traces at once, in the caller."""

    def __init__(self, background: bool = True):
        self.background = background
        self._traces: dict[Hashable, nn.Module] = {}
        # (key, input signature) -> its CUDA graph, or None where capture failed (GPU only); least
        # recently replayed first.
        self._graphs: OrderedDict[tuple, cuda_graphs.GraphedPass | None] = OrderedDict()
        # Each trace's module, what a compile starts from; (key, input signature) -> its compiled
        # pass, or None where it did not compile (unstable.compiled_sampling; a GPU's by default).
        self._modules: dict[Hashable, nn.Module] = {}
        self._compiled: OrderedDict[tuple, compiled_sampling.CompiledPass | None] = OrderedDict()
        # Set by `TracedSampling.sampled_for_long`: whether settled passes compile (a live show's
        # copy, never the training copy's grids and probes nor a render), and the lock held by
        # whoever writes the passes' weights (the show's mirror).
        self.compiles = False
        self.weights_lock: ContextManager = contextlib.nullcontext()
        # When a capture found the process's captures busy (another capture, a compile under way):
        # none is tried again before this (time.monotonic()).
        self._capture_again_at = 0.0
        self._lock = threading.Lock()
        self._tracer: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._traces)

    def run(self, key: Hashable, make: Callable[[], nn.Module], inputs: tuple,
            settled: bool = True) -> torch.Tensor | None:
        """The trace of `key` (made from `make()` on first use) on `inputs`, or its compiled pass for
        these input shapes once compiled (unstable.compiled_sampling; only a `settled` pass, one
        that will be drawn for long, of a cache that `compiles`: a growing piece's stages and the
        training copy's grids are not), on a GPU replayed as its CUDA
        graph for these input shapes once captured (unstable.cuda_graphs); None while the trace is
        being made on its own thread: run the pass eagerly this time."""
        trace = self._traces.get(key)
        if trace is None:
            if self.background:
                self._start(self._trace, key, make, inputs)
                return None
            self._trace(key, make(), inputs)
            trace = self._traces[key]
        # Compiles only ever run in the background: never where a show waits for its first frame.
        compiling = settled and self.compiles and self.background and compiled_sampling.wanted(inputs)
        graphing = cuda_graphs.wanted(inputs)
        if not (compiling or graphing):
            return trace(*inputs)
        shapes = cuda_graphs.signature(inputs)  # what a compiled pass and a graph are made for
        pass_ = self._compiled_or(key, shapes, trace, inputs) if compiling else trace
        return self._graphed(key, shapes, pass_, inputs) if graphing else pass_(*inputs)

    def _compiled_or(self, key: Hashable, shapes: tuple, trace: nn.Module, inputs: tuple):
        """The pass's compiled form for these input shapes, or its trace while that is being compiled
        on the tracer thread (started here on first use) or where it did not compile."""
        compile_key = (key, shapes)
        compiled = self._compiled.get(compile_key, _MISSING)
        if compiled is _MISSING:
            self._start(self._compile, compile_key, lambda: self._modules.get(key), inputs)
            return trace
        _touch(self._compiled, compile_key)
        return trace if compiled is None else compiled

    def compiled(self) -> int:
        """How many passes this cache runs compiled (one per trace and input shapes)."""
        return sum(p is not None for p in list(self._compiled.values()))

    def _graphed(self, key: Hashable, shapes: tuple, trace: nn.Module, inputs: tuple) -> torch.Tensor:
        """The pass on a GPU: its graph for these input shapes, captured on the tracer thread on
        first use (the pass, its trace or compiled form, runs meanwhile), or the pass where capture
        failed."""
        graph_key = (key, shapes)
        graph = self._graphs.get(graph_key, _MISSING)
        if graph is _MISSING and time.monotonic() >= self._capture_again_at:
            if self.background:
                self._start(self._capture, graph_key, lambda: trace, inputs)
                return trace(*inputs)
            self._capture(graph_key, trace, inputs)
            graph = self._graphs.get(graph_key)
        elif graph is not _MISSING:
            _touch(self._graphs, graph_key)
        return (trace if graph is None or graph is _MISSING else graph)(*inputs)

    def graphs(self) -> int:
        """How many passes this cache replays as CUDA graphs (one per trace and input shapes)."""
        return sum(graph is not None for graph in list(self._graphs.values()))

    def __contains__(self, key: Hashable) -> bool:
        return key in self._traces

    def ahead(self, key: Hashable, make: Callable[[], nn.Module], inputs: tuple) -> None:
        """Trace `key` on the tracer thread now, if it is not traced and the tracer is idle: a graph
        the caller will need soon (a growing piece's next stage), so that it is made and warmed
        before the first frame that needs it."""
        if self.background and key not in self._traces:
            self._start(self._trace, key, make, inputs)

    def _start(self, job: Callable[[Hashable, nn.Module, tuple], None], key: Hashable,
               make: Callable[[], nn.Module], inputs: tuple) -> None:
        """`job(key, make(), inputs)` (a trace or a capture) on the tracer thread, if it is idle."""
        with self._lock:  # one tracer at a time; a graph it is not tracing waits for a later call
            if not _exiting and (self._tracer is None or not self._tracer.is_alive()):
                example = tuple(t.clone() for t in inputs)  # the caller may reuse its tensors
                self._tracer = threading.Thread(target=_as_caller, args=(torch.get_num_threads(), job, key, make(),
                                                                         example),
                                                name="unstable-trace", daemon=True)
                with _tracers_lock:  # the finished ones dropped (joined at exit, not before)
                    _tracers.difference_update([t for t in _tracers if not t.is_alive()])
                    _tracers.add(self._tracer)
                self._tracer.start()

    def wait(self, timeout: float | None = None) -> None:
        """Until the trace being made (if any) is ready."""
        tracer = self._tracer
        if tracer is not None:
            tracer.join(timeout)

    def _trace(self, key: Hashable, module: nn.Module, inputs: tuple) -> None:
        if key in self._traces:
            return
        try:
            with torch.inference_mode():
                trace = torch.jit.trace(module, inputs, check_trace=False)
                for _ in range(WARM_UP_CALLS):
                    trace(*inputs)
        except Exception:  # a torch without the tracer, an operation it cannot record: stay eager
            log.warning("sampling trace of %s failed; that graph samples eagerly", key[0], exc_info=True)
            trace = module
        self._modules[key] = module
        self._traces[key] = trace  # in use at once; its graph follows
        if cuda_graphs.wanted(inputs):  # on a GPU, the graph for these shapes too
            self._capture((key, cuda_graphs.signature(inputs)), trace, inputs)

    def _capture(self, graph_key: tuple, pass_: nn.Module, inputs: tuple) -> None:
        if graph_key not in self._graphs:
            graph = self._graph_of(graph_key, pass_, inputs)
            if graph is not _MISSING:
                self._keep_graph(graph_key, graph)

    def _graph_of(self, graph_key: tuple, pass_, inputs: tuple):
        """`pass_` captured as a CUDA graph for `inputs`' shapes, or None (one log line) where capture
        failed; _MISSING where another capture or a compile is under way: neither a show preparing its
        first frame nor a tracer thread, which other pieces' traces queue behind, waits for a compile
        of minutes; a call a second later tries again."""
        try:
            return cuda_graphs.capture(pass_, inputs)
        except cuda_graphs.CaptureBusy:
            self._capture_again_at = time.monotonic() + CAPTURE_RETRY_SECONDS
            return _MISSING
        except Exception:  # a host sync or another operation a graph cannot hold: the pass runs as it is
            log.warning("CUDA graph of %s failed; %s", _where(graph_key),
                        "that pass runs without one" if cuda_graphs.enabled()
                        else "CUDA graphs are off in this process, the passes run without them", exc_info=True)
            return None

    def _keep_graph(self, graph_key: tuple, graph: cuda_graphs.GraphedPass | None) -> None:
        # Each graph keeps its own GPU memory for its activations: a piece that grows through many
        # stages, or a show that samples in many batch sizes, lets the longest unused ones go (one
        # used again is captured again).
        _keep(self._graphs, graph_key, graph)

    def _compile(self, compile_key: tuple, module: nn.Module | None, inputs: tuple) -> None:
        """Compile a traced pass for `inputs`' shapes and swap it in (with its CUDA graph on a GPU),
        or keep the trace, with one log line, where it does not compile or draws other images."""
        key = compile_key[0]
        trace = self._traces.get(key)
        if compile_key in self._compiled or module is None or trace is None:
            return
        where = _where(compile_key)
        _join_before_inductor_exits()
        try:
            compiled = compiled_sampling.compile_pass(module, inputs, trace, self.weights_lock, where)
        except Exception as error:
            log.warning("compiling the sampling pass of %s failed (%s); it stays traced", where,
                        compiled_training.why_compiling_failed(error))
            compiled = None
        else:
            log.info("sampling pass of %s compiled in %.1f s, %.1g from its trace", where, compiled.compile_seconds,
                     compiled.difference)
            if cuda_graphs.wanted(inputs):  # its graph replaces the trace's
                graph = self._graph_of(compile_key, compiled, inputs)
                if graph is None:  # its capture failed (graphs may be off for the process now): a
                    compiled = None  # pass that could not be captured runs as its trace, checked and known
                elif graph is _MISSING:  # captures busy: the trace's graph let go, a later call captures
                    self._graphs.pop(compile_key, None)
                else:
                    self._keep_graph(compile_key, graph)
        # As many as graphs (a compiled pass on a GPU is what its graph replays); one let go and
        # used again is compiled again, from the on-disk cache.
        _keep(self._compiled, compile_key, compiled)


class TracedSampling:
    """Mixin of a System whose `sample` goes through `self._traced` (a TraceCache): its
    `prepare_sampling`, which makes every panel's traces now, for one image and for batches, so
    that a show does not trace beside its first frames (the render thread would sample eagerly
    meanwhile, racing the tracer for the GIL). Traces are of the growth stage the system is at."""

    _traced: TraceCache

    def sampled_for_long(self, weights_lock: ContextManager | None = None) -> None:
        """This copy is sampled for a whole live show: its settled passes may be compiled
        (unstable.compiled_sampling), each checked against its trace holding `weights_lock`, the
        lock whoever writes the weights holds, so that both draw from one set of weights."""
        self._traced.compiles = True
        self._traced.weights_lock = weights_lock if weights_lock is not None else contextlib.nullcontext()

    def prepare_sampling(self) -> None:
        """Make the sampling traces of every panel now (see the class doc)."""
        if not enabled():
            return
        background, self._traced.background = self._traced.background, False
        try:
            for n in (1, 2):
                self.sample({name: torch.zeros((n, dim)) for name, dim in self.panels().items()}, {})
        finally:
            self._traced.background = background
