"""The live parameter schema: what a System lets performers play.

A `ParamSpec` is the single source of truth for a parameter: its OSC address, controller fader,
range, default, unit and smoothing all derive from it (never from hand-written strings).
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class ParamSpec:
    """One live parameter: `name` in [lo, hi], `default`, `unit`, smoothing time in seconds.

    `kind` is "float", "int" or "toggle" (0/1); `log` maps a 0..1 fader exponentially, which
    suits learning rates and temperatures spanning decades.
    """

    name: str
    lo: float
    hi: float
    default: float
    unit: str = ""
    smoothing: float = 0.0
    kind: str = "float"
    log: bool = False
    doc: str = ""

    def __post_init__(self):
        if not self.lo <= self.default <= self.hi:
            raise ValueError(f"{self.name}: default {self.default} outside [{self.lo}, {self.hi}]")
        if self.log and self.lo <= 0:
            raise ValueError(f"{self.name}: a log-scaled parameter needs lo > 0")

    def clamp(self, value: float) -> float:
        """`value` limited to the range (and rounded for int/toggle parameters)."""
        v = min(max(float(value), self.lo), self.hi)
        if self.kind in ("int", "toggle"):
            v = float(round(v))
        return v

    def from_unit(self, u: float) -> float:
        """Map a 0..1 fader position onto the range (clamped)."""
        u = min(max(float(u), 0.0), 1.0)
        if self.log:
            v = math.exp(math.log(self.lo) + u * (math.log(self.hi) - math.log(self.lo)))
        else:
            v = self.lo + u * (self.hi - self.lo)
        return self.clamp(v)

    def to_unit(self, value: float) -> float:
        """The 0..1 fader position that shows `value`."""
        v = self.clamp(value)
        if self.hi == self.lo:
            return 0.0
        if self.log:
            return (math.log(v) - math.log(self.lo)) / (math.log(self.hi) - math.log(self.lo))
        return (v - self.lo) / (self.hi - self.lo)


def defaults(specs: list[ParamSpec]) -> dict[str, float]:
    """{name: default} for a schema."""
    return {s.name: s.default for s in specs}
