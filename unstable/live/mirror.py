"""The sampling copy a live show draws from while the original trains (the System protocol's
`sampling_copy()`, refreshed with `accumulate`, as rosinality's g_ema)."""

from __future__ import annotations

import threading
import time
from typing import Any, Mapping

import torch

__all__ = ["SamplingMirror"]


class SamplingMirror:
    """A system's sampling copy (`System.sampling_copy()`), which the display samples while the
    original trains.

    `sync()` (training thread, between steps) refreshes the copy with `copy.accumulate(system)`
    (decay 0: the trainable weights the copy samples with, their buffers and the step count, which
    growth depends on); `sample()` (render thread) samples the copy. Both hold `lock`, so a sample
    sees one whole set of weights. A copy whose modules no longer pair up with the system's (a
    module replaced by another shape) is built again.
    """

    def __init__(self, system: Any, train_stream: "torch.cuda.Stream | None" = None):
        self.source = system
        self.lock = threading.Lock()
        self.syncs = 0
        self.sync_seconds = 0.0
        self._cuda = system.device.type == "cuda"
        self._train_stream = train_stream
        if self._cuda:
            self._copied = torch.cuda.Event()
            self._sampled = torch.cuda.Event()
        self.system = system.sampling_copy()

    def sync(self) -> None:
        """Copy the system's current weights into the mirror (call between training steps)."""
        t0 = time.perf_counter()
        with self.lock, torch.no_grad():
            if self._cuda:
                # Do not overwrite weights that a queued sample on the render stream still reads.
                torch.cuda.current_stream().wait_event(self._sampled)
            try:
                self.system.accumulate(self.source, 0.0)
            except ValueError:  # the modules changed shape: copy the system again
                self.system = self.source.sampling_copy()
            if self._cuda:
                self._copied.record()
        self.syncs += 1
        self.sync_seconds += time.perf_counter() - t0

    def refresh(self, what: str) -> None:
        """Ask the copy to recompute its latent directions or channel clusters ('directions' or
        'clusters') with its current weights at its next sample; a system without them ignores it."""
        with self.lock:
            refresh = getattr(self.system, "refresh", None)
            if refresh is not None:
                refresh(what)

    def sample(self, latents: Mapping[str, torch.Tensor], params: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """`System.sample` on the mirror: {panel: [N, 3, H, W] in 0..1}."""
        with self.lock:
            if self._cuda:
                torch.cuda.current_stream().wait_event(self._copied)
            out = self.system.sample(latents, params)
            if self._cuda:
                self._sampled.record()
        return out
