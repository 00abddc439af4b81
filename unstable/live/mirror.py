"""The sampling copy a live show draws from while the original trains."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any, Mapping

import torch
from torch import nn

__all__ = ["SamplingMirror"]


def _modules(obj: Any) -> list[tuple[str, nn.Module]]:
    return [(k, v) for k, v in vars(obj).items() if isinstance(v, nn.Module)]


class SamplingMirror:
    """A copy of a system that the display samples while the original trains.

    `sync()` (training thread, between steps) copies every parameter and buffer of the system's
    modules into the copy, plus its plain number attributes (`step_count`, growth depends on it);
    `sample()` (render thread) samples the copy. Both hold `lock`, so a sample sees one whole set of
    weights. A system whose modules changed is copied whole again; one without module attributes
    goes through `load_state_dict(state_dict())`.
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
        self._make()

    def _make(self) -> None:
        # The piece config is frozen (and holds mapping proxies deepcopy cannot copy): share it.
        # Optimisers are left out when the weights can be copied module by module: a mirror only
        # samples, and Adam's moments would double the memory.
        memo: dict = {id(self.source.piece): self.source.piece}
        if _modules(self.source):
            for v in vars(self.source).values():
                if isinstance(v, torch.optim.Optimizer):
                    memo[id(v)] = None
        self.system = copy.deepcopy(self.source, memo=memo)
        src, dst = [], []
        for name, module in _modules(self.source):
            twin = getattr(self.system, name)
            src += list(module.parameters()) + list(module.buffers())
            dst += list(twin.parameters()) + list(twin.buffers())
        self._src, self._dst = src, dst

    def _structure_ok(self) -> bool:
        if not self._src:
            return False
        now = [t for _, m in _modules(self.source) for t in list(m.parameters()) + list(m.buffers())]
        return len(now) == len(self._src) and all(a is b for a, b in zip(now, self._src))

    def sync(self) -> None:
        """Copy the system's current weights into the mirror (call between training steps)."""
        t0 = time.perf_counter()
        with self.lock, torch.no_grad():
            if self._cuda:
                # Do not overwrite weights that a queued sample on the render stream still reads.
                torch.cuda.current_stream().wait_event(self._sampled)
            if self._structure_ok():
                torch._foreach_copy_(self._dst, self._src)
                for k, v in vars(self.source).items():
                    if type(v) in (int, float, bool):
                        setattr(self.system, k, v)
            elif _modules(self.source):  # modules were added or replaced: copy the whole system again
                self._make()
            else:  # no module attributes to pair up: the protocol's own way
                self.system.load_state_dict(self.source.state_dict())
            if self._cuda:
                self._copied.record()
        self.syncs += 1
        self.sync_seconds += time.perf_counter() - t0

    def sample(self, latents: Mapping[str, torch.Tensor], params: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """`System.sample` on the mirror: {panel: [N, 3, H, W] in 0..1}."""
        with self.lock:
            if self._cuda:
                torch.cuda.current_stream().wait_event(self._copied)
            out = self.system.sample(latents, params)
            if self._cuda:
                self._sampled.record()
        return out
