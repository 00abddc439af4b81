"""Panel textures: each panel image graded on its own device and written into a GL texture that
is made once and reused every frame (with the host buffers its pixels pass through).

    textures = PanelTextures(ctx, made=count)      # `made` sees every GL object made
    pt = textures.upload((slot, "eq/g0"), image, matrix)   # image [3, H, W] or [H, W, 3]
    pt.texture.use(0)

Why the grading happens here and not in a shader, and why with numpy on a CPU: see the
compositor's module notes and `PanelTextures.grade_cpu`.
"""

from __future__ import annotations

from typing import Callable

import moderngl
import numpy as np
import torch
import torch.nn.functional as F

from ..upload import to_device

__all__ = ["PanelTexture", "PanelTextures", "hwc", "upscaled"]


class PanelTexture:
    """A panel's texture and the host buffers its pixels pass through (all reused every frame)."""

    def __init__(self, texture: moderngl.Texture, host: torch.Tensor):
        self.texture = texture
        self.host = host  # [H, W, C] uint8, CPU (pinned when the images live on CUDA: faster copies)
        self.work: np.ndarray | None = None   # [C, H, W] float32, CPU grading
        self.plane: np.ndarray | None = None  # [H, W] float32, CPU grading

    def cpu_buffers(self) -> tuple[np.ndarray, np.ndarray]:
        if self.work is None:
            h, w, c = self.host.shape
            self.work = np.empty((c, h, w), dtype=np.float32)
            self.plane = np.empty((h, w), dtype=np.float32)
        return self.work, self.plane


def hwc(image: torch.Tensor, name: str) -> torch.Tensor:
    """Any accepted panel image as an [H, W, C] view (C 1 or 3), same dtype and device."""
    x = image.detach()
    if x.ndim == 4:
        if x.shape[0] != 1:
            raise ValueError(f"panel {name!r}: expected one image, got a batch of {x.shape[0]}")
        x = x[0]
    if x.ndim == 2:
        return x.unsqueeze(-1)  # [H, W] grey -> [H, W, 1]
    if x.ndim != 3:
        raise ValueError(f"panel {name!r}: expected [3, H, W] or [H, W, 3], got {list(image.shape)}")
    if x.shape[0] in (1, 3):
        # Channels first is torch's convention, so it wins the (rare) tie with a 1- or 3-row HWC image.
        x = x.permute(1, 2, 0)  # [C, H, W] -> [H, W, C]
    if x.shape[-1] not in (1, 3):
        raise ValueError(f"panel {name!r}: expected 1 or 3 channels, got {list(image.shape)}")
    return x


class PanelTextures:
    """The panel textures of one compositor, by (slot, panel name); `made` is called with every GL
    object made (the compositor counts them: none may be made per frame)."""

    def __init__(self, ctx: moderngl.Context, made: Callable):
        self.ctx = ctx
        self._made = made
        self._textures: dict[tuple[int, str], PanelTexture] = {}

    def items(self):
        """((slot, panel name), PanelTexture) pairs: what is held now."""
        return self._textures.items()

    def release(self) -> None:
        """Free every texture."""
        for pt in self._textures.values():
            pt.texture.release()
        self._textures.clear()

    def _texture_for(self, key: tuple[int, str], h: int, w: int, c: int, pin: bool) -> PanelTexture:
        pt = self._textures.get(key)
        if pt is not None and pt.host.shape == (h, w, c):
            return pt
        if pt is not None:
            pt.texture.release()
        tex = self._made(self.ctx.texture((w, h), c, alignment=1))
        if c == 1:
            tex.swizzle = "RRR1"  # grey panels sample as grey RGB
        host = torch.empty((h, w, c), dtype=torch.uint8, pin_memory=pin)
        pt = self._textures[key] = PanelTexture(tex, host)
        return pt

    def upload(self, key: tuple[int, str], image: torch.Tensor, matrix: np.ndarray | None) -> PanelTexture:
        """Grade `image` on its device, write it into the texture for `key`; returns that texture."""
        x = hwc(image, key[1])  # [H, W, C]
        if not (x.dtype == torch.uint8 or x.dtype.is_floating_point):
            raise ValueError(f"panel {key[1]!r}: expected uint8 or float pixels, got {x.dtype}")
        h, w, c = x.shape
        on_cpu = x.device.type == "cpu"
        pt = self._texture_for(key, h, w, c, pin=x.device.type == "cuda")
        if on_cpu and x.dtype == torch.uint8 and matrix is None:
            if x.is_contiguous():
                pt.texture.write(memoryview(x.numpy()))  # already what GL wants: no copy at all
                return pt
            np.copyto(pt.host.numpy(), x.numpy())
        elif on_cpu:
            self.grade_cpu(pt, x, matrix)
        else:
            with torch.no_grad():
                # On the accelerator: grade, narrow to uint8, then one copy of a quarter of the bytes.
                y = x.float() if x.dtype.is_floating_point else x.float() / 255.0
                if matrix is not None:
                    m = to_device(np.ascontiguousarray(matrix.T), y.device, torch.float32)
                    y = y * float(matrix[0].sum()) if c == 1 else y @ m  # [H, W, C]
                pt.host.copy_(y.mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.uint8).contiguous())
        pt.texture.write(memoryview(pt.host.numpy()))
        return pt

    @staticmethod
    def grade_cpu(pt: PanelTexture, x: torch.Tensor, matrix: np.ndarray | None) -> None:
        """[H, W, C] CPU image -> graded uint8 in pt.host, with numpy into reused buffers.

        Why numpy and not torch here: torch's CPU ops run on OpenMP threads that keep spinning
        after each op, and on a machine with few cores they starve llvmpipe's render threads, so
        a panel upload through torch can take a whole frame's budget; numpy stays on this thread
        (docs/figures.md, "Figures moved out of docstrings").
        """
        if x.dtype not in (torch.uint8, torch.float16, torch.float32, torch.float64):
            x = x.float()  # bfloat16 and friends have no numpy dtype
        src = x.numpy().transpose(2, 0, 1)  # [C, H, W] view: planes, contiguous for CHW tensors
        work, plane = pt.cpu_buffers()
        scale = 255.0 if x.dtype.is_floating_point else 1.0
        if matrix is None:
            np.multiply(src, scale, out=work)
        elif src.shape[0] == 1:
            # Grey stays grey under hue rotation and saturation: only the gain (a row sum) is left.
            np.multiply(src, scale * float(matrix[0].sum()), out=work)
        else:
            for i in range(3):
                np.multiply(src[0], scale * matrix[i, 0], out=work[i])
                for j in (1, 2):
                    np.multiply(src[j], scale * matrix[i, j], out=plane)
                    work[i] += plane
        work += 0.5  # round to nearest when the cast below truncates
        np.clip(work, 0.0, 255.0, out=work)
        np.copyto(pt.host.numpy(), work.transpose(1, 2, 0), casting="unsafe")  # [C, H, W] -> [H, W, C] uint8


def upscaled(image: torch.Tensor, k: int, sharpen: bool) -> torch.Tensor:
    """[C, H, W] (or [H, W, C] uint8 is left alone) upscaled k times, bicubic, optionally with an
    unsharp mask, clamped to 0..1; on the image's own device."""
    if image.dim() != 3 or image.dtype == torch.uint8 or image.shape[0] not in (1, 3):
        return image
    with torch.no_grad():
        y = F.interpolate(image[None].float(), scale_factor=k, mode="bicubic", align_corners=False)
        if sharpen:  # unsharp mask: add back what a 3x3 blur takes away
            c = y.shape[1]
            blur = torch.full((c, 1, 3, 3), 1.0 / 9.0, device=y.device)
            y = y + 0.8 * (y - F.conv2d(F.pad(y, (1, 1, 1, 1), mode="replicate"), blur, groups=c))
        return y[0].clamp_(0.0, 1.0)  # [C, kH, kW]
