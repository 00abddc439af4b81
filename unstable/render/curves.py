"""Keyframed parameters of a render job: `[curves] "eq.hue" = [[seconds, value], ...]`.

Linear between points and held before the first and after the last, evaluated at video time
frame / fps. A curve on a system's own parameter (truncation, temperature, a bend amount) goes to
its sampling; `hue`, `saturation`, `fade` and the show's `master_fade` go to the compositor as in a
live show; `walk_speed` scales how fast the source's walk runs (its integral over video time is
the walk's progress, so a speed ramp never jumps).
"""

from __future__ import annotations

from fractions import Fraction
from typing import Mapping

import numpy as np

from ..errors import ConfigError
from ..schema import COMPOSITOR, SHOW, TRAINING, common_specs, read_by

__all__ = ["ParamCurves"]

# What the compositor reads of every source, as the schema declares it (hue, saturation, fade).
_COMPOSITOR = tuple(sorted(read_by(common_specs(), COMPOSITOR)))


class ParamCurves:
    """The curves of a job, by group ({source or "show": {name: (times, values)}})."""

    def __init__(self, curves: Mapping[str, tuple], fps: Fraction):
        self.fps = Fraction(fps)
        self.by_group: dict[str, dict[str, tuple[np.ndarray, np.ndarray]]] = {}
        for key, points in curves.items():
            group, _, name = key.partition(".")
            xs = np.array([p[0] for p in points], np.float64)
            ys = np.array([p[1] for p in points], np.float64)
            self.by_group.setdefault(group, {})[name] = (xs, ys)

    def check(self, source: str, specs: Mapping[str, Mapping[str, object]]) -> None:
        """Every curve names a live parameter of its source and stays in its range.

        `specs`: {source: {name: ParamSpec}} of each open source (its system's own specs).
        """
        common = {s.name: s for s in common_specs()}
        for group, table in self.by_group.items():
            if group == SHOW:
                continue
            known = {**common, **specs.get(group, {})}
            for name, (_, ys) in table.items():
                key = f"curves.{group}.{name}"
                if group not in specs:
                    raise ConfigError(source, key, f"source {group!r} is not rendered (its run is missing)")
                spec = known.get(name)
                if spec is None:
                    raise ConfigError(source, key, f"not a live parameter of {group}'s system, expected one of "
                                      f"{', '.join(sorted(known))}")
                if spec.reads == TRAINING:
                    raise ConfigError(source, key, f"{name} is read by training only, which a render does not run")
                if ys.min() < spec.lo or ys.max() > spec.hi:
                    raise ConfigError(source, key, f"values {ys.min():g}..{ys.max():g} leave the range "
                                      f"{spec.lo:g} to {spec.hi:g}")

    def value(self, group: str, name: str, frame: int) -> float | None:
        """The curve's value at `frame` (None without a curve)."""
        c = self.by_group.get(group, {}).get(name)
        if c is None:
            return None
        return float(np.interp(float(frame / self.fps), c[0], c[1]))

    def values(self, group: str, names, frame: int) -> dict[str, float]:
        """{name: value} at `frame` for those of `names` that have a curve."""
        out = {}
        for name in names:
            v = self.value(group, name, frame)
            if v is not None:
                out[name] = v
        return out

    def sampling(self, group: str, own: set[str], frame: int) -> dict[str, float]:
        """The curved values of `group`'s own system parameters at `frame` (for System.sample)."""
        return self.values(group, [n for n in self.by_group.get(group, {}) if n in own], frame)

    def snapshot(self, frame: int) -> dict[str, dict[str, float]]:
        """What the compositor reads at `frame`: each source's hue/saturation/fade, the master fade."""
        snap = {g: self.values(g, _COMPOSITOR, frame) for g in self.by_group if g != SHOW}
        fade = self.value(SHOW, "master_fade", frame)
        if fade is not None:
            snap[SHOW] = {"master_fade": fade}
        return snap

    def walk_progress(self, group: str, frame: int) -> float | None:
        """Integral of `walk_speed` over video time 0..frame/fps (None without a walk_speed curve)."""
        c = self.by_group.get(group, {}).get("walk_speed")
        if c is None:
            return None
        xs, ys = c
        t = float(frame / self.fps)
        # Breakpoints up to t, with the held ends: the integral of a piecewise linear function.
        pts = np.concatenate([[0.0], xs[(xs > 0) & (xs < t)], [t]])
        vals = np.interp(pts, xs, ys)
        return float(np.sum((pts[1:] - pts[:-1]) * (vals[1:] + vals[:-1]) / 2.0))
