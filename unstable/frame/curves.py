"""Keyframed parameters of a render job: `[curves] "eq.hue" = [[seconds, value], ...]`.

Linear between points and held before the first and after the last, evaluated at video time
frame / fps. The values at a frame are that frame's parameter snapshot (unstable.frame.job_timeline):
each parameter goes where its ParamSpec says, as in a live show (a system's own truncation or bend
amount to sampling, hue/saturation/fade and the show's master_fade to the compositor); the
integral of `walk_speed` over video time is the walk's progress, so a speed ramp never jumps.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Mapping

import numpy as np

from ..errors import ConfigError
from ..schema import SHOW, TRAINING, common_specs

__all__ = ["ParamCurves"]

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

    def check(self, path: str, specs: Mapping[str, Mapping[str, object]]) -> None:
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
                    raise ConfigError(path, key, f"source {group!r} is not rendered (its run is missing)")
                spec = known.get(name)
                if spec is None:
                    raise ConfigError(path, key, f"not a live parameter of {group}'s system, expected one of "
                                      f"{', '.join(sorted(known))}")
                if spec.reads == TRAINING:
                    raise ConfigError(path, key, f"{name} is read by training only, which a render does not run")
                if ys.min() < spec.lo or ys.max() > spec.hi:
                    raise ConfigError(path, key, f"values {ys.min():g}..{ys.max():g} leave the range "
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

    def names(self, group: str) -> list[str]:
        """The parameters of `group` that have a curve."""
        return list(self.by_group.get(group, {}))

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
