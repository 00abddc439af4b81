"""The generators' sampling pass as TorchScript traces: one call that runs without the GIL.

Why: a live show samples on its render thread while the training thread, the web server and the
refresh worker run Python beside it. An eager pass takes the GIL back after each of its ~200
operations, and whenever another thread holds it the render thread waits (up to the interpreter's
switch interval) and then waits again for a core. Measured on the 2-core development machine
(`tests/bench/bench_traced.py`): a 64 px batch-1 pass that takes ~3 ms alone took over 100 ms
beside one busy Python thread eagerly, ~12 ms traced. A trace runs its whole graph in C++ with the
GIL released, and saves the per-operation Python besides.

A trace is made per generator, growth stage, fade-in or not, batch of one or more (the batch-1 path
folds the style into the weights, a different graph; the batched trace serves every batch of two
or more: the tracer records the batch size as a size read, not a constant), device and convolution
precision. It holds the generator's own parameter and buffer tensors, so the mirror's in-place
weight copies reach it. The live values (temperature, truncation, noise, fade-in alpha, the latent
directions' shift) are tensor inputs, so moving a fader never retraces. The result equals the
eager pass bit for bit (tests/test_traced_sampling.py).

Bends (Python hooks on the activations) are not traceable: a bent panel samples eagerly, as before.
Latent directions are an additive shift of w (`Directions.steer`), handed to the trace as a tensor.
`UNSTABLE_TRACED_SAMPLING=0` turns traces off (every panel samples eagerly).
"""

from __future__ import annotations

import logging
import os
import threading
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from .. import accel

__all__ = ["TracedSampling", "enabled"]

log = logging.getLogger("unstable.traced")

# The tracer warns of every Python branch on a shape in these modules (the batch-1 fold, the
# resize): each is fixed by a trace's key. Filtered once here: `warnings.catch_warnings` around a
# trace would not be thread-safe, and traces are made on a thread of their own.
warnings.filterwarnings("ignore", category=torch.jit.TracerWarning, module=r"unstable\.equilibrium\.")
# torch 2.13 marks torch.jit.trace deprecated in favour of torch.compile/torch.export, whose compile
# times (minutes here) a live show cannot wait for; a torch without it leaves sampling eager (`_trace`).
warnings.filterwarnings("ignore", message=r"`torch\.jit\.trace", category=DeprecationWarning)


def enabled() -> bool:
    """Whether sampling goes through traces (UNSTABLE_TRACED_SAMPLING, on unless "0")."""
    return os.environ.get("UNSTABLE_TRACED_SAMPLING", "1").strip() != "0"


class _SamplingPass(nn.Module):
    """z [N, z_dim] -> images [N, 3, size, size] in 0..1: `EquilibriumSystem.sample`'s eager pass
    for one generator at one growth stage, with the live values as tensors."""

    def __init__(self, generator: nn.Module, stage: int, fading: bool, size: int):
        super().__init__()
        self.generator = generator
        self.stage = stage
        self.fading = fading
        self.size = size
        # The stage's own resolution (a growing piece's early stages are drawn at the full size).
        self.resize = generator.stage_resolutions[stage] != size

    def forward(self, z: torch.Tensor, temperature: torch.Tensor, truncation: torch.Tensor, noise: torch.Tensor,
                alpha: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
        g = self.generator
        w = g.mapping(z * temperature)  # [N, w_dim]
        # lerp at weight 1 is exactly w (torch.lerp computes end - (end - start) * (1 - weight) there).
        w = torch.lerp(g.w_avg, w, truncation) + shift
        x = g.synthesis(w, self.stage, alpha if self.fading else 1.0, noise_gain=noise)  # [N, 3, R, R]
        if self.resize:
            x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        return (x * 0.5 + 0.5).clamp_(0.0, 1.0)


class TracedSampling:
    """The traces of one system's generators (see the module doc).

    A graph seen for the first time is traced on a thread of its own (a few hundred milliseconds of
    Python for a 64 px pair, which would stall the render thread if it waited) while the caller samples
    it eagerly; from then on its trace draws it. `background = False` traces at once, in the caller.
    """

    def __init__(self, background: bool = True):
        self.background = background
        self._traces: dict[tuple, torch.jit.ScriptModule] = {}
        self._lock = threading.Lock()
        self._tracer: threading.Thread | None = None

    def __len__(self) -> int:
        return len(self._traces)

    def sample(self, index: int, generator: nn.Module, z: torch.Tensor, *, stage: int, alpha: float, size: int,
               temperature: float, truncation: float, noise: float,
               shift: torch.Tensor | None) -> torch.Tensor | None:
        """Generator `index` on z [N, z_dim] (on the generator's device) -> [N, 3, size, size] in 0..1;
        `shift` [1, w_dim] or None: the latent directions' offset of w. None while the graph's
        trace is still being made: sample it eagerly this time."""
        fading = stage > 0 and alpha < 1.0
        device = z.device
        key = (index, stage, fading, z.shape[0] == 1, device, accel.conv_dtype(device))
        as_tensor = lambda v: torch.tensor(float(v), dtype=z.dtype, device=device)  # noqa: E731
        w_dim = generator.w_avg.shape[0]
        inputs = (z, as_tensor(temperature), as_tensor(truncation), as_tensor(noise), as_tensor(alpha),
                  torch.zeros((1, w_dim), dtype=z.dtype, device=device) if shift is None else shift)
        trace = self._traces.get(key)
        if trace is None:
            module = _SamplingPass(generator, stage, fading, size)
            if not self.background:
                self._trace(key, module, inputs)
                return self._traces[key](*inputs)
            with self._lock:  # one tracer at a time; a graph it is not tracing waits for the next call
                if self._tracer is None or not self._tracer.is_alive():
                    example = tuple(t.clone() for t in inputs)  # the caller may reuse its tensors
                    self._tracer = threading.Thread(target=self._trace, args=(key, module, example),
                                                    name="unstable-trace", daemon=True)
                    self._tracer.start()
            return None
        return trace(*inputs)

    def wait(self, timeout: float | None = None) -> None:
        """Until the trace being made (if any) is ready."""
        tracer = self._tracer
        if tracer is not None:
            tracer.join(timeout)

    def _trace(self, key: tuple, module: nn.Module, inputs: tuple) -> None:
        if key in self._traces:
            return
        try:
            with torch.inference_mode():
                trace = torch.jit.trace(module, inputs, check_trace=False)
        except Exception:  # a torch without the tracer, an operation it cannot record: stay eager
            log.warning("sampling trace of generator %d failed; that graph samples eagerly", key[0], exc_info=True)
            trace = module
        self._traces[key] = trace
