"""What the hardware offers the models: the precision of their convolutions, chosen once per device.

The thin, wide-image convolutions of the generators, the critic and BAD's decoder are most of a
frame and about half of a training step. With `UNSTABLE_PRECISION=bf16`, where the processor
computes bfloat16 natively (AVX-512 BF16 or AMX on a CPU, a bf16-capable GPU), the sampling
convolutions take bf16 inputs and weights — oneDNN accumulates in float32 — and give float32 back,
so every other operation stays float32. It pays at wide images and batches, hardly at small single
images (docs/figures.md, section "Speed"); the images move by about 0.2 uint8 levels on average,
8 at most (tests/test_speed_bf16.py states and checks the tolerance). A batch-1 render and a
batched one then differ by that much, which is why it is not the default.

`UNSTABLE_PRECISION=bf16-train` does the same for the training convolutions, forward and
backward (gradients reach the weights and the other layers as float32; Adam's state stays
float32). Training then follows another, equally valid trajectory: the loss terms of a step from
the same weights move by under 0.005 and the images drift apart step by step, as another seed's
would (tests/test_speed_bf16_train.py states and checks the tolerances). It is an opt-in for a
performer who wants the steps: convolutions are about half of a training step, so it pays less
than in sampling (docs/figures.md, section "Speed").

    UNSTABLE_PRECISION=float32     (default) float32 everywhere: the reference images and losses
    UNSTABLE_PRECISION=bf16        bf16 sampling convolutions where native, float32 elsewhere
    UNSTABLE_PRECISION=bf16-train  bf16 sampling and training convolutions where native
"""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import List, Optional, Union

import torch
import torch.nn.functional as F

_CHOICES = ("float32", "bf16", "bf16-train")
_forced: torch.dtype | None = None


def cpu_has_native_bf16() -> bool:
    """True where the CPU has AVX-512 BF16 or AMX-BF16 instructions (read from /proc/cpuinfo)."""
    return _cpu_flags() & {"avx512_bf16", "amx_bf16"} != set() and torch.ops.mkldnn._is_mkldnn_bf16_supported()


@functools.lru_cache(maxsize=1)
def _cpu_flags() -> frozenset[str]:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                return frozenset(line.split(":", 1)[1].split())
    except OSError:
        pass
    return frozenset()


def setting() -> str:
    """UNSTABLE_PRECISION, checked: one clear line when it is something else."""
    value = os.environ.get("UNSTABLE_PRECISION", "float32").strip().lower() or "float32"
    if value not in _CHOICES:
        raise ValueError(f"UNSTABLE_PRECISION={value!r}: expected one of {', '.join(_CHOICES)}")
    return value


_NATIVE: dict[str, bool] = {}


# Called at trace time as a constant: traced into, its read of /proc/cpuinfo would break a compiled
# training step's graph at every convolution (UNSTABLE_COMPILE=1 with bf16-train).
@torch.compiler.assume_constant_result
def _native(device_type: str) -> bool:
    """True where `device_type` computes bfloat16 natively (cached per type; `_NATIVE.clear()`)."""
    if device_type not in _NATIVE:
        if device_type == "cpu":
            _NATIVE[device_type] = cpu_has_native_bf16()
        elif device_type == "cuda":
            _NATIVE[device_type] = torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        else:
            _NATIVE[device_type] = False
    return _NATIVE[device_type]


def conv_dtype(device: torch.device | str, grad: bool = False) -> torch.dtype:
    """The dtype convolutions on `device` compute in (see the module doc); `grad`: with gradients."""
    if _forced is not None:
        return _forced
    value = setting()
    if value == "float32" or (grad and value != "bf16-train"):
        return torch.float32
    return torch.bfloat16 if _native(torch.device(device).type) else torch.float32


@contextlib.contextmanager
def precision(dtype: torch.dtype):
    """Every convolution in this process computes in `dtype` inside the block (tests, benchmarks)."""
    global _forced
    before, _forced = _forced, dtype
    try:
        yield
    finally:
        _forced = before


def describe(device: torch.device | str = "cpu") -> str:
    """One line for logs and benchmarks: the convolutions' precision on `device`, and why."""
    dtype = conv_dtype(device)
    if dtype == torch.float32:
        return "float32"
    if _forced is not None:
        return "bf16 convolutions (forced)"
    return "bf16 convolutions" + (" (sampling and training)" if setting() == "bf16-train" else " (sampling)")


def _low(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return x if x.dtype == dtype else x.to(dtype)


def _in_conv_dtype(op, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, kw: dict) -> torch.Tensor:
    """`op` (a torch.nn.functional convolution) in `conv_dtype(x.device)`, returning x's dtype
    (gradients flow back as float32)."""
    dtype = conv_dtype(x.device, torch.is_grad_enabled())
    if dtype == x.dtype:
        return op(x, weight, bias, **kw)
    out = op(_low(x, dtype), _low(weight, dtype), None if bias is None else _low(bias, dtype), **kw)
    return out.to(x.dtype)


def conv2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, **kw) -> torch.Tensor:
    """F.conv2d in `conv_dtype(x.device)`, returning x's dtype (gradients flow back as float32)."""
    return _in_conv_dtype(F.conv2d, x, weight, bias, kw)


def _onednn_float32(device: torch.device | str, grad: bool = False) -> bool:
    """A CPU with oneDNN whose convolutions (with gradients if `grad`) compute in float32."""
    device = torch.device(device)
    return device.type == "cpu" and torch.backends.mkldnn.is_available() and conv_dtype(device, grad) == torch.float32


def conv2d_single(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """`conv2d` of one image x [1, C, H, W] (stride 1): the generators' live path, whose style is
    folded into the weights.

    ATen sends a single float32 image of up to 20,480 values with a 3x3 kernel to its own im2col
    convolution ("for some case, native is faster"), and a larger one to oneDNN in the plain (NCHW)
    layout; for the generators' thin layers from 16x16 up, oneDNN on a channels_last image is faster
    than either (docs/figures.md, "Seventh round"). Smaller images, other precisions and devices
    take `conv2d`. Same maths; the result is channels_last, which the elementwise passes after it keep.
    """
    assert x.dim() == 4 and x.shape[0] == 1, f"one image [1, C, H, W] expected, got {tuple(x.shape)}"
    if (x.dtype == weight.dtype == torch.float32 and x.shape[-2] * x.shape[-1] >= 256
            and _onednn_float32(x.device, torch.is_grad_enabled())):
        x = _channels_last(x)
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, [padding, padding], [1, 1], [1, 1], 1)
    return conv2d(x, weight, bias, padding=padding)


def packs(device: torch.device | str) -> bool:
    """Whether `pack_conv_weight`/`conv2d_packed` serve `device`: a CPU with oneDNN, float32 convolutions."""
    return _onednn_float32(device)


def pack_conv_weight(weight: torch.Tensor, input_shape: tuple[int, ...], padding: int) -> torch.Tensor:
    """weight [out, in, k, k] reordered once into oneDNN's own layout for inputs of `input_shape` (stride 1):
    what `conv2d_packed` takes. A fixed weight's reorder then costs nothing per call, where
    `mkldnn_convolution` reorders a plain weight on every call: 15-35 µs for a generator's 8-32 px
    layers, as much as the convolution itself (docs/figures.md, eighth round). Refresh it in place
    with `packed.copy_(pack_conv_weight(...))`."""
    return torch._C._nn.mkldnn_reorder_conv2d_weight(weight.contiguous().to_mkldnn(), [padding, padding], [1, 1],
                                                     [1, 1], 1, list(input_shape))


@functools.cache
def _pointwise_conv():
    # Scripted, so that a trace records it as one call: the tracer cannot record the op's empty list
    # of optional scalars (the post-op's arguments) itself.
    @torch.jit.script
    def conv(x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], padding: int) -> torch.Tensor:
        return torch.ops.mkldnn._convolution_pointwise(
            x, weight, bias, [padding, padding], [1, 1], [1, 1], 1, "none",
            torch.jit.annotate(List[Optional[Union[int, float, complex]]], []), "")

    return conv


def conv2d_packed(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None, padding: int) -> torch.Tensor:
    """The convolution of x [N, C, H, W] by a `pack_conv_weight` weight (stride 1), float32, on a CPU;
    x taken channels_last, the result channels_last (its faster layout there)."""
    return _pointwise_conv()(_channels_last(x), packed, bias, padding)


def _channels_last(x: torch.Tensor) -> torch.Tensor:
    # Asked first, so that a trace of an x already in that layout records no operation (each one
    # a dispatch per frame).
    return x if x.is_contiguous(memory_format=torch.channels_last) else x.contiguous(memory_format=torch.channels_last)


def conv_transpose2d(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None, **kw) -> torch.Tensor:
    """F.conv_transpose2d in `conv_dtype(x.device)`, returning x's dtype."""
    return _in_conv_dtype(F.conv_transpose2d, x, weight, bias, kw)
