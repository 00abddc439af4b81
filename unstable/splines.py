"""Path maths for latent walks: segment ends, easing and per-segment polynomial bases.

A path through K keyframes is S segments (S = K on a loop, K - 1 open); on segment s a point is
sum_j basis[s, j] * u^j for u in [0, 1]. `unstable.walk.Walk` precomputes these bases once and
evaluates them per frame. Pure tensor maths: no settings, no devices, no clocks.
"""

from __future__ import annotations

import math

import numpy as np
import torch


def ease(u: np.ndarray, easing: str) -> np.ndarray:
    if easing == "smoothstep":
        return u * u * (3 - 2 * u)
    if easing == "smootherstep":
        return u * u * u * (u * (6 * u - 15) + 10)
    if easing == "sine":
        return (1 - np.cos(np.pi * u)) / 2
    return u


def segment_ends(k: int, loop: bool) -> tuple[np.ndarray, np.ndarray]:
    """Start and end keyframe of every segment."""
    if loop:
        i = np.arange(k)
        return i, (i + 1) % k
    if k == 1:
        return np.zeros(1, int), np.zeros(1, int)
    i = np.arange(k - 1)
    return i, i + 1


def _spline_second_derivatives(p: torch.Tensor, loop: bool) -> torch.Tensor:
    """M for the C2 cubic spline through keyframes p [K, D] (float64): cyclic or natural ends.

    Cyclic: the system matrix is circulant, so it is diagonal in Fourier space (eigenvalues
    4 + 2 cos(2 pi j / K) >= 2). Natural (M = 0 at both ends): a tridiagonal solve (Thomas).
    Both are O(K D), so long shows with thousands of keyframes build instantly.
    """
    k = p.shape[0]
    if loop:
        rhs = 6.0 * (torch.roll(p, -1, 0) - 2.0 * p + torch.roll(p, 1, 0))
        lam = 4.0 + 2.0 * torch.cos(2.0 * math.pi * torch.arange(k, dtype=p.dtype) / k)
        return torch.fft.ifft(torch.fft.fft(rhs, dim=0) / lam[:, None], dim=0).real
    m = torch.zeros_like(p)
    n = k - 2
    if n <= 0:
        return m
    r = 6.0 * (p[2:] - 2.0 * p[1:-1] + p[:-2])  # [K-2, D]
    c = [0.0] * n
    d = [None] * n
    c[0], d[0] = 0.25, r[0] / 4.0
    for i in range(1, n):
        denom = 4.0 - c[i - 1]
        c[i] = 1.0 / denom
        d[i] = (r[i] - d[i - 1]) / denom
    x = d[n - 1]
    m[n] = x
    for i in range(n - 2, -1, -1):
        x = d[i] - c[i] * x
        m[i + 1] = x
    return m


def poly_basis(p: torch.Tensor, method: str, loop: bool) -> torch.Tensor:
    """Per-segment polynomial coefficients: p(u) = sum_j basis[s, j] * u^j, u in [0, 1].

    p: [K, D] float64 keyframes. Returns [S, J, D] (J = 2 for linear, 4 for the cubics).
    """
    k = p.shape[0]
    a, b = (torch.as_tensor(x) for x in segment_ends(k, loop))
    p0, p1 = p[a], p[b]  # [S, D]
    if method == "linear":
        return torch.stack([p0, p1 - p0], 1)
    if method == "cubic":
        # Second derivatives M of the interpolating C2 spline with unit knot spacing:
        # M[i-1] + 4 M[i] + M[i+1] = 6 (P[i+1] - 2 P[i] + P[i-1]).
        m = _spline_second_derivatives(p, loop)  # [K, D]
        m0, m1 = m[a], m[b]
        return torch.stack([p0, (p1 - p0) - (2.0 * m0 + m1) / 6.0, m0 / 2.0, (m1 - m0) / 6.0], 1)
    if method == "catmull_rom":
        idx = torch.arange(k)
        if loop:
            t = (p[(idx + 1) % k] - p[(idx - 1) % k]) / 2.0
        else:
            t = (p[torch.clamp(idx + 1, max=k - 1)] - p[torch.clamp(idx - 1, min=0)])
            t[1:-1] /= 2.0  # one-sided differences at the open ends, central inside
        t0, t1 = t[a], t[b]
        return torch.stack([p0, t0, 3.0 * (p1 - p0) - 2.0 * t0 - t1, 2.0 * (p0 - p1) + t0 + t1], 1)
    raise ValueError(f"interpolation: {method!r} is not a polynomial path")
