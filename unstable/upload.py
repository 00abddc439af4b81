"""Small host values (a frame's walk weights, a fader's offsets, a bend's matrix) onto the device
without the host waiting.

Why: a plain copy from ordinary (pageable) host memory to a GPU makes the host wait until the copy
is done, and the copy waits for everything queued before it on the stream: on the render thread,
every frame, a whole synchronisation that the pipeline exists to avoid. Through pinned memory the
copy is queued like any other operation. On the CPU nothing is copied at all.
"""

from __future__ import annotations

import torch

__all__ = ["to_device"]


def to_device(values, device: torch.device | str, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`values` (a list, a numpy array or a CPU tensor) as a tensor on `device`: on the CPU what
    `torch.as_tensor(values, dtype=dtype)` gives, on a GPU a copy queued from pinned memory (torch's
    pinned-memory cache keeps the host block until the copy is done)."""
    device = torch.device(device)
    if device.type != "cuda":
        return torch.as_tensor(values, dtype=dtype, device=device)
    return torch.as_tensor(values, dtype=dtype).pin_memory().to(device, non_blocking=True)
