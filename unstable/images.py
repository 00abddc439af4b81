"""Image grids and PNG files for watching training (no GL needed)."""

from __future__ import annotations

from pathlib import Path
from typing import Mapping

import imageio.v3 as iio
import numpy as np
import torch
import torch.nn.functional as F


def panel_grid(images: Mapping[str, torch.Tensor], pad: int = 2) -> torch.Tensor:
    """Lay out {panel: [N, 3, H, W]} as rows of samples, panels side by side, on one canvas.

    Panels of different sizes are scaled (nearest) to the tallest one so pixels stay crisp.
    Returns [3, rows*H + pad, cols*W + pad] in 0..1 on the panels' device.
    """
    names = list(images)
    size = max(int(images[n].shape[-1]) for n in names)
    rows = max(int(images[n].shape[0]) for n in names)
    first = images[names[0]]
    canvas = torch.ones(3, rows * (size + pad) + pad, len(names) * (size + pad) + pad,
                        device=first.device, dtype=torch.float32) * 0.12
    for col, name in enumerate(names):
        x = images[name].detach().float()  # [N, C, H, W]
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="nearest")
        for row in range(x.shape[0]):
            top, left = pad + row * (size + pad), pad + col * (size + pad)
            canvas[:, top:top + size, left:left + size] = x[row].clamp(0, 1)
    return canvas


def to_uint8(image: torch.Tensor) -> np.ndarray:
    """[3, H, W] in 0..1 -> HxWx3 uint8 on the host (the one place a frame leaves the device)."""
    return (image.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()


def write_png(path: str | Path, image: torch.Tensor) -> None:
    """Write a [3, H, W] 0..1 tensor as a PNG, atomically (a viewer never sees half a file)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    iio.imwrite(tmp, to_uint8(image), extension=".png")
    tmp.replace(path)
