"""The parameter schema: what a System lets performers play, and the OSC address space of a show.

A `ParamSpec` is the single source of truth for a parameter: its OSC address, controller fader,
range, default, unit and smoothing all derive from it (never from hand-written strings).
Everything here is pure data (no threads, no sockets): the live values are kept by
`unstable.control.store.ParameterStore`.

Addresses are derived here, from the schema, and nowhere else:
`/unstable/<piece>/<param>` takes 0..1, `/unstable/<piece>/<param>/raw` the value in its units;
a parameter declared `osc_units` (the show's tempo, in BPM) takes its own units on both.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Mapping, Sequence

from .errors import UnstableError

# Who reads a parameter. The frame pipeline decides by this, never by a parameter's name, what a
# change costs: only a sampling parameter changes the images a sampler makes (so only one of those
# gliding makes the look-ahead sample frame by frame); a compositor parameter restyles the panels;
# a clock parameter moves the timeline (walk speed, scene, recording, audio amounts), and a
# training parameter is read by the training step alone.
SAMPLING = "sampling"
TRAINING = "training"
COMPOSITOR = "compositor"
CLOCK = "clock"
CONSUMERS = (SAMPLING, TRAINING, COMPOSITOR, CLOCK)


@dataclass(frozen=True)
class ParamSpec:
    """One live parameter: `name` in [lo, hi], `default`, `unit`, smoothing time in seconds.

    `kind` is "float", "int" or "toggle" (0/1); `log` maps a 0..1 fader exponentially, which
    suits learning rates and temperatures spanning decades. `reads` names its consumer, one of
    CONSUMERS; undeclared it is SAMPLING, the safe guess: a look-ahead then re-samples when it
    changes. `osc_units`: its plain OSC address takes and sends the value in its own units, not
    0..1 (a number performers and other tools speak in, as a tempo in BPM); linear only, because
    controllers scale their faders onto it linearly.
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
    reads: str = SAMPLING
    osc_units: bool = False

    def __post_init__(self):
        if self.reads not in CONSUMERS:
            raise ValueError(f"{self.name}: reads {self.reads!r}, expected one of {', '.join(CONSUMERS)}")
        if self.osc_units and (self.log or self.kind == "toggle"):
            raise ValueError(f"{self.name}: osc_units needs a linear float or int parameter")
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


def read_by(specs: Sequence[ParamSpec], *consumers: str) -> frozenset[str]:
    """The names of the parameters in `specs` that one of `consumers` reads."""
    return frozenset(s.name for s in specs if s.reads in consumers)


# ------------------------------------------------------------------------------ address space

PREFIX = "/unstable"
SHOW = "show"
# The group of the [[audio.map]] amounts (/unstable/audio/amount<i>); a piece cannot take its name
# in a show that maps audio.
AUDIO = "audio"
# Top-level words of the address space; a piece cannot take one of these names.
# "preset": /unstable/preset/save|recall|morph (control/presets.py).
RESERVED = frozenset({"subscribe", "unsubscribe", "sync", "scene", "still", "record", "preset"})
# Show parameters whose change by a controller is also an action for the engine.
ACTIONS = frozenset({(SHOW, "scene"), (SHOW, "record")})
# Actions on one piece, at /unstable/<piece>/<action>: recompute its latent directions (matched to
# the previous ones) or its bends' channel clusters from its current weights.
PIECE_ACTIONS = ("directions/refresh", "clusters/refresh")
# Safe in an OSC address and in a TouchOSC / Max name: no spaces, no pattern characters.
_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_-]{0,63}$")


def address(group: str, name: str, raw: bool = False) -> str:
    """The OSC address of a parameter: 0..1 on the plain address (own units where the spec says
    `osc_units`), own units on `/raw`."""
    return f"{PREFIX}/{group}/{name}" + ("/raw" if raw else "")


def raw_branch(group: str, name: str) -> str:
    """The same parameter in own units where OSCQuery tools find it, `/unstable/<piece>/raw/<name>`:
    OSCQuery clients (python-oscquery among them) refuse a node that is both a value and a
    container, so `.../hue/raw` cannot be published under the `.../hue` fader. Both addresses take
    the value in own units."""
    return f"{PREFIX}/{group}/raw/{name}"


def common_specs() -> list[ParamSpec]:
    """Live parameters the engine gives every piece, whatever its system.

    Systems list their own (alpha, beta, temperature, learning rate...) in `param_specs()`; these
    are the engine's: whether the piece trains, how fast its walk runs, its colour and its fade.
    """
    return [
        ParamSpec("training", 0, 1, 1, kind="toggle", doc="learning on, or off to hold the picture as it is",
                  reads=TRAINING),
        ParamSpec("walk_speed", 0.0, 4.0, 1.0, unit="x", smoothing=0.5,
                  doc="how fast the images drift through their loop (0: still)", reads=CLOCK),
        ParamSpec("hue", -180.0, 180.0, 0.0, unit="deg", smoothing=0.3, doc="turns the colours round the colour wheel",
                  reads=COMPOSITOR),
        ParamSpec("saturation", 0.0, 2.0, 1.0, smoothing=0.3, doc="colour strength: 0 grey, 1 as made, 2 vivid",
                  reads=COMPOSITOR),
        ParamSpec("fade", 0.0, 1.0, 1.0, smoothing=0.5, doc="how much of this piece shows (0: none)",
                  reads=COMPOSITOR),
    ]


def with_common(specs: Sequence[ParamSpec]) -> list[ParamSpec]:
    """A system's specs followed by the common ones it does not define itself (its own win)."""
    own = {s.name for s in specs}
    return list(specs) + [s for s in common_specs() if s.name not in own]


def show_specs(scenes: int = 1) -> list[ParamSpec]:
    """The show-level group (`SHOW`): scene index, master fade, record on/off.

    A controller changing `scene` or `record` also queues an Event; `/unstable/still` is an
    action only (no stored value).
    """
    if scenes < 1:
        raise ValueError(f"a show needs at least one scene, got {scenes}")
    return [
        ParamSpec("scene", 0, scenes - 1, 0, kind="int", doc="the scene playing now", reads=CLOCK),
        ParamSpec("master_fade", 0.0, 1.0, 1.0, smoothing=1.0, doc="fades the whole picture to black",
                  reads=COMPOSITOR),
        ParamSpec("record", 0, 1, 0, kind="toggle", doc="record the output", reads=CLOCK),
    ]


def normalise_groups(groups) -> dict[str, tuple[ParamSpec, ...]]:
    """{piece: (ParamSpec, ...)} from a mapping or a sequence of (piece, specs) pairs, checked.

    Piece and parameter names must be address-safe ([A-Za-z0-9_-], 64 chars at most); a piece
    cannot be named after a top-level action and no parameter may be called "raw".
    """
    items = groups.items() if isinstance(groups, Mapping) else groups
    out: dict[str, tuple[ParamSpec, ...]] = {}
    for piece, specs in items:
        if not isinstance(piece, str) or not _NAME.match(piece):
            raise UnstableError(f"piece name {piece!r} cannot be used in an OSC address "
                                "(letters, digits, '_' and '-' only, 64 at most)")
        if piece in RESERVED:
            raise UnstableError(f"piece name {piece!r} is reserved for /unstable/{piece}, "
                                "choose another name")
        if piece in out:
            raise UnstableError(f"piece name {piece!r} appears twice in the show")
        seen = set()
        for spec in specs:
            if not isinstance(spec, ParamSpec):
                raise TypeError(f"{piece}: expected ParamSpec, got {type(spec).__name__}")
            if not _NAME.match(spec.name) or spec.name == "raw":
                raise UnstableError(f"{piece}: parameter name {spec.name!r} cannot be used in an "
                                    "OSC address (letters, digits, '_' and '-', not 'raw')")
            if spec.name in seen:
                raise UnstableError(f"{piece}: parameter {spec.name!r} is defined twice")
            seen.add(spec.name)
        out[piece] = tuple(specs)
    return out
