"""Synchronised latent walks: one clock, one path per generator, seeded keyframes, seamless loops.

A walk is a closed (or open) path through latent space through keyframes drawn from seeds, as in
StyleGAN3's `gen_video.py`: each keyframe is `torch.randn(D)` from a local generator seeded with
the keyframe seed (drawn on the CPU so a seed means the same latent on every device), and the
path between keyframes is linear, spherical (slerp), a periodic C2 cubic spline or a Catmull-Rom
spline. Every panel (generator) of a piece walks its own path, seeded from the keyframe seed and
the panel's index, on one shared clock, so two generators move different but in step; `shared`
feeds one path to every panel of the same latent size.

    walk = Walk(WalkSettings(keyframes=6, period=3.0), {"left": 512, "right": 512}, device)
    z = walk.latents_at(clock.tick())              # {"left": [1, 512], "right": [1, 512]}
    zs = walk.latents_at_many([Fraction(n, 30) for n in range(16)])  # {"left": [16, 512], ...}

Everything the path needs is precomputed on the device: per segment a few basis vectors (the
maths is in `unstable.splines`), so a point on the path is a weighted sum of them. The weights are a handful of scalars computed on
the host from the time alone, so a frame costs no host round trip and allocates only its result.

Time in seconds may be a float or an exact `Fraction` (an offline render passes frame/fps
exactly), and with a Fraction the loop wraps exactly: a render lands on its keyframes bit-exactly.

Live shows drive a walk with `WalkClock`, which integrates speed x wall time into a phase
(changing speed never jumps); offline renders compute each frame's exact time themselves. A show's
period in beats ("4 bars") is its seconds at the show's starting tempo, and the show's timeline
scales the clock's speed by live tempo / starting tempo, so a loop takes its beats at any tempo.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from fractions import Fraction
from typing import Callable, Literal, Mapping, Sequence

import numpy as np
import torch

from .config import setting
from .errors import UnstableError
from .formats import exact
from .splines import ease, poly_basis, segment_ends
from .upload import to_device

__all__ = ["WalkSettings", "Walk", "WalkClock", "keyframe_latent", "panel_seed"]

Interpolation = Literal["linear", "slerp", "cubic", "catmull_rom"]
Easing = Literal["none", "smoothstep", "smootherstep", "sine"]


@dataclass(frozen=True)
class WalkSettings:
    """How a walk moves; loads from a show's or render job's `[walk]` table with `load_dataclass`."""

    seeds: tuple[int, ...] = setting((), ge=0, le=2**63 - 1, doc="keyframe seeds, one per keyframe (empty: `keyframes` seeds counted up from `seed`)")
    keyframes: int = setting(8, ge=1, le=10_000, doc="number of keyframes when `seeds` and `latents` are empty")
    seed: int = setting(0, ge=0, le=2**63 - 1 - 10_000, doc="first keyframe seed when `seeds` is empty")
    latents: tuple[tuple[float, ...], ...] = setting((), doc="explicit keyframe latents (one list per keyframe), fed to every panel")
    interpolation: Interpolation = setting("cubic", doc="path between keyframes: linear, slerp, cubic (C2 spline) or catmull_rom")
    loop: bool = setting(True, doc="close the path: the frame after the last keyframe returns to the first without a seam")
    period: float = setting(4.0, gt=0, doc="seconds per keyframe, or per whole loop (see period_per); in a show "
                            "also beats or bars, '4 bars', '8 beats' (then the walk follows the live tempo)")
    period_beats: float = setting(0.0, ge=0, doc="the period in beats (set by writing `period` in beats or bars; "
                                  "`period` then holds its seconds at the show's starting tempo)")
    period_per: Literal["keyframe", "loop"] = setting("keyframe", doc="what `period` measures")
    easing: Easing = setting("none", doc="ease each segment (smoothstep etc.: linger at keyframes)")
    temperature: float = setting(1.0, ge=0, le=100, doc="scale of the latents (N(0, T^2) keyframes)")
    keep_norm: bool = setting(False, doc="rescale linear/cubic paths to the keyframes' norm (no mid-segment dip)")
    shared: bool = setting(False, doc="same latent for every panel of the same latent size")

    def __post_init__(self):
        # TOML gives lists; keep the frozen settings hashable and immutable.
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "latents", tuple(tuple(float(v) for v in row) for row in self.latents))
        if self.seeds and self.latents:
            raise ValueError("latents: give either seeds or latents, not both")
        if self.latents:
            sizes = {len(row) for row in self.latents}
            if len(sizes) != 1 or 0 in sizes:
                raise ValueError(f"latents: every keyframe needs the same, non-zero number of values, got sizes {sorted(sizes)}")
            if not all(math.isfinite(v) for row in self.latents for v in row):
                raise ValueError("latents: values must be finite numbers")

    @property
    def keyframe_seeds(self) -> tuple[int, ...]:
        """The seed of every keyframe (empty when explicit latents are given)."""
        if self.latents:
            return ()
        return self.seeds or tuple(self.seed + i for i in range(self.keyframes))

    @property
    def count(self) -> int:
        """Number of keyframes."""
        return len(self.latents) or len(self.keyframe_seeds)

    @property
    def steps(self) -> int:
        """Keyframe-to-keyframe segments of one pass: the closing one back to the first too when the
        walk loops."""
        return self.count if self.loop else self.count - 1

    def loop_seconds(self) -> Fraction:
        """Seconds of one pass along the path (exact): `period` itself when it is given per loop,
        else `period` per segment."""
        per = exact(self.period)
        return per if self.period_per == "loop" else per * self.steps


def panel_seed(seed: int, panel_index: int) -> int:
    """The seed of a keyframe for one panel: the keyframe seed itself for panel 0, a hash for others.

    Panel 0 keeps the plain seed so "seed 42" means the same latent as in a one-generator tool.
    """
    if panel_index == 0:
        return int(seed)
    digest = hashlib.blake2b(f"unstable-walk/{int(seed)}/{int(panel_index)}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1  # 63 bits: any torch.Generator accepts it


def keyframe_latent(seed: int, dim: int) -> torch.Tensor:
    """z ~ N(0, I) of size `dim` from a local CPU generator seeded with `seed` (design convention 8)."""
    g = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(dim, generator=g, dtype=torch.float32)  # [D]


@dataclass
class _Path:
    """One panel's precomputed path (possibly shared by several panels)."""

    keys: torch.Tensor          # [K, D] float64, CPU: the keyframes
    basis: torch.Tensor         # [S, J, D] float32, on the device
    norm_coef: np.ndarray | None  # [S, J] norm path for keep_norm (polynomial methods)
    omega: np.ndarray | None      # [S] slerp angle per segment
    norm0: np.ndarray | None      # [S] slerp: keyframe norms at segment ends
    norm1: np.ndarray | None


class Walk:
    """Latent paths for named panels, all driven by one time in seconds.

    `panels` maps panel name -> latent size, in a fixed order: a panel's index in it seeds its path.
    """

    def __init__(self, settings: WalkSettings, panels: Mapping[str, int], device: torch.device | str = "cpu"):
        if not panels:
            raise ValueError("a walk needs at least one panel")
        self.settings = settings
        self.device = torch.device(device)
        self.panels = {str(k): int(v) for k, v in panels.items()}
        s = settings
        k = s.count
        self.count = k
        self._loop = s.loop
        # Time span of the path in keyframe units, and the period as an exact Fraction so that
        # Fraction times (frame / fps) wrap the loop exactly.
        self._span = s.steps
        per = exact(s.period)
        if s.period_per == "loop":
            per /= max(self._span, 1)
        self._period = per
        self._period_f = float(per)

        explicit = None
        if s.latents:
            explicit = torch.tensor(s.latents, dtype=torch.float64)  # [K, D]
            for name, dim in self.panels.items():
                if dim != explicit.shape[1]:
                    raise UnstableError(f"walk.latents: keyframes have {explicit.shape[1]} values but panel "
                                        f"{name!r} takes {dim}-d latents")
        # Panels that get the same path share one _Path (and one result tensor per frame).
        self._group_of: dict[str, tuple] = {}
        self._paths: dict[tuple, _Path] = {}
        for index, (name, dim) in enumerate(self.panels.items()):
            if dim < 1:
                raise ValueError(f"panel {name!r}: latent size must be >= 1, got {dim}")
            key = ("dim", dim) if (s.shared or explicit is not None) else ("panel", name)
            self._group_of[name] = key
            if key in self._paths:
                continue
            if explicit is not None:
                keys = explicit
            else:
                pidx = 0 if s.shared else index
                keys = torch.stack([keyframe_latent(panel_seed(seed, pidx), dim)
                                    for seed in s.keyframe_seeds]).double()  # [K, D]
            self._paths[key] = self._build(keys)

    # -------------------------------------------------------------------------------- building

    def _build(self, keys: torch.Tensor) -> _Path:
        s = self.settings
        if s.interpolation == "slerp":
            a, b = segment_ends(keys.shape[0], self._loop)
            norms = keys.norm(dim=1)  # [K]
            unit = keys / norms.clamp_min(1e-30)[:, None]
            unit[norms == 0] = 0.0  # a zero keyframe has no direction; its norm weight is 0 anyway
            cos = (unit[a] * unit[b]).sum(1).clamp(-1.0, 1.0)
            basis = torch.stack([unit[a], unit[b]], 1)  # [S, 2, D]
            return _Path(keys, basis.to(self.device, torch.float32), None,
                         torch.arccos(cos).numpy(), norms[a].numpy(), norms[b].numpy())
        basis = poly_basis(keys, s.interpolation, self._loop)  # [S, J, D]
        norm_coef = None
        if s.keep_norm:
            norm_coef = poly_basis(keys.norm(dim=1, keepdim=True), s.interpolation, self._loop)[:, :, 0].numpy()
        return _Path(keys, basis.to(self.device, torch.float32), norm_coef, None, None, None)

    # -------------------------------------------------------------------------------- timing

    @property
    def duration(self) -> Fraction:
        """Seconds for one loop (or from first to last keyframe on an open path)."""
        return self._span * self._period

    @property
    def period(self) -> Fraction:
        """Seconds per keyframe."""
        return self._period

    def keyframe_time(self, i: int) -> Fraction:
        """When the path passes keyframe `i`."""
        return i * self._period

    def keyframes(self, panel: str) -> torch.Tensor:
        """The keyframe latents of one panel (before temperature). # [K, D] on the device"""
        return self._paths[self._group_of[panel]].keys.to(self.device, torch.float32)

    def _locate(self, ts) -> tuple[np.ndarray, np.ndarray]:
        """Segment index [T] and position u in [0, 1] [T] for times in seconds."""
        n_seg = max(self._span, 1)
        if isinstance(ts, torch.Tensor):
            ts = ts.detach().to("cpu", torch.float64).numpy()
        if isinstance(ts, np.ndarray) and ts.dtype != object:
            s = np.asarray(ts, np.float64).reshape(-1) / self._period_f
            if self._loop:
                s = np.mod(s, self._span)
            else:
                s = np.clip(s, 0.0, self._span)
            idx = np.minimum(np.floor(s), n_seg - 1)
            return idx.astype(np.int64), np.clip(s - idx, 0.0, 1.0)
        idx, us = [], []
        for t in ts:
            if isinstance(t, (int, Fraction)):  # exact arithmetic: loops wrap to the bit
                s = Fraction(t) / self._period
                s = s % self._span if self._loop else min(max(s, Fraction(0)), Fraction(self._span))
            else:
                s = float(t) / self._period_f
                s = s % self._span if self._loop else min(max(s, 0.0), float(self._span))
            i = min(math.floor(s), n_seg - 1)
            idx.append(i)
            us.append(min(max(float(s - i), 0.0), 1.0))
        return np.asarray(idx, np.int64), np.asarray(us, np.float64)

    def _weights(self, path: _Path, idx: np.ndarray, u: np.ndarray, temperature: float):
        """Host-side weights [T, J] of the basis vectors, and the target norm [T] (or None)."""
        u = ease(u, self.settings.easing)
        if path.omega is not None:  # slerp: directions on the sphere, norms interpolated linearly
            om = path.omega[idx]
            so = np.sin(om)
            safe = so > 1e-6
            w0 = np.where(safe, np.sin((1 - u) * om) / np.where(safe, so, 1.0), 1 - u)
            w1 = np.where(safe, np.sin(u * om) / np.where(safe, so, 1.0), u)
            n = (1 - u) * path.norm0[idx] + u * path.norm1[idx]
            return np.stack([w0, w1], 1) * (n * temperature)[:, None], None
        powers = np.stack([u ** j for j in range(path.basis.shape[1])], 1)  # [T, J]
        if path.norm_coef is not None:
            target = (powers * path.norm_coef[idx]).sum(1) * temperature
            return powers, target
        return powers * temperature, None

    # -------------------------------------------------------------------------------- sampling

    def latents_at(self, t, temperature: float | None = None) -> dict[str, torch.Tensor]:
        """Every panel's latent at time `t` seconds (float or Fraction). {panel: [1, D]} on the device.

        Panels sharing a path get the same tensor object; treat results as read-only.
        """
        temp = self.settings.temperature if temperature is None else float(temperature)
        idx, u = self._locate([t])
        i = int(idx[0])
        out: dict[tuple, torch.Tensor] = {}
        for key, path in self._paths.items():
            w, target = self._weights(path, idx, u, temp)
            w = w[0].tolist()
            basis = path.basis[i]  # [J, D] view, no copy
            z = basis[0:1] * w[0]  # [1, D]: the one allocation of this frame
            for j in range(1, len(w)):
                z.add_(basis[j:j + 1], alpha=w[j])
            if target is not None:
                z.mul_(float(target[0]) / z.norm().clamp_min(1e-12))
            out[key] = z
        return {name: out[key] for name, key in self._group_of.items()}

    def latents_at_many(self, ts, temperature: float | None = None) -> dict[str, torch.Tensor]:
        """Latents for a batch of times (sequence of floats/Fractions, ndarray or tensor). {panel: [T, D]}."""
        temp = self.settings.temperature if temperature is None else float(temperature)
        idx, u = self._locate(ts)
        idx_d = to_device(idx, self.device)
        out: dict[tuple, torch.Tensor] = {}
        for key, path in self._paths.items():
            w, target = self._weights(path, idx, u, temp)
            w_d = to_device(w, self.device, torch.float32)  # [T, J]
            basis = path.basis[idx_d]  # [T, J, D]
            z = basis[:, 0] * w_d[:, 0:1]  # [T, D]
            for j in range(1, basis.shape[1]):
                z.add_(basis[:, j] * w_d[:, j:j + 1])
            if target is not None:
                t_d = to_device(target, self.device, torch.float32)[:, None]
                z.mul_(t_d / z.norm(dim=1, keepdim=True).clamp_min(1e-12))
            out[key] = z
        return {name: out[key] for name, key in self._group_of.items()}


# ---------------------------------------------------------------------------------------- clocks

class WalkClock:
    """Live clock: the phase (walk seconds) integrates speed x wall-time, so changing speed never jumps.

    `time_source` is injectable (seconds, monotonic); the default is `time.perf_counter`.
    Save `state_dict()` to resume a show where it was; the time it was off does not count.
    """

    def __init__(self, speed: float = 1.0, phase: float = 0.0, time_source: Callable[[], float] = time.perf_counter):
        self._now = time_source
        self._speed = float(speed)
        self._phase = float(phase)
        self._last = self._now()

    def _advance(self) -> None:
        now = self._now()
        self._phase += self._speed * (now - self._last)
        self._last = now

    def tick(self) -> float:
        """Advance to now and return the walk time for the frame about to be drawn."""
        self._advance()
        return self._phase

    def ahead(self, times: Sequence[float]) -> list[float]:
        """The walk times at the clock times `times` (ascending, after the last tick) if the speed
        stays as it is. The same arithmetic as `tick`, step by step, so a prediction equals the
        tick it predicts bit for bit (the frame pipeline's look-ahead relies on that)."""
        phase, last, out = self._phase, self._last, []
        for now in times:
            phase += self._speed * (now - last)
            last = now
            out.append(phase)
        return out

    @property
    def phase(self) -> float:
        """Walk time as of the last tick or speed change."""
        return self._phase

    @phase.setter
    def phase(self, value: float) -> None:
        self._phase = float(value)
        self._last = self._now()

    @property
    def speed(self) -> float:
        """Walk seconds per wall second (0 pauses, negative walks back)."""
        return self._speed

    @speed.setter
    def speed(self, value: float) -> None:
        self._advance()  # the time so far runs at the old speed
        self._speed = float(value)

    def state_dict(self) -> dict:
        """Phase and speed as plain floats (integrated up to now)."""
        self._advance()
        return {"phase": self._phase, "speed": self._speed}

    def load_state_dict(self, state: Mapping) -> None:
        """Continue from a saved phase and speed, starting now."""
        self._speed = float(state["speed"])
        self.phase = float(state["phase"])
