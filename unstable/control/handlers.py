"""OSC handlers: argument checks, then a write into the parameter store (or a feedback request).

Every handler has python-osc's reply-address signature `handler(origin, address, *args)`, runs
in the OSC server thread and does only cheap work: validate, clamp with a warning, write into the
`ParameterStore` (a dict write under a lock). Nothing a controller sends is evaluated as code; a
wrong type or count, NaN or infinity is rejected with a line naming the address.
"""

from __future__ import annotations

import math

from ..schema import AUDIO, PIECE_ACTIONS, PREFIX, SHOW, address, raw_branch
from .feedback import Feedback
from .osclog import RateLimitedLog, reject, shorten
from .presets import CURVES, UNITS, PresetError, check_preset_name
from .store import ParameterStore


PRESET_ACTIONS = ("save", "recall", "morph")


class OscHandlers:
    """The handlers of a show's address space, mapped from its schema by `map_onto` (`feedback` may
    be None where only `map_controls` is used: the control page's websocket has no UDP feedback)."""

    def __init__(self, store: ParameterStore, feedback: Feedback | None, stats: dict, warn: RateLimitedLog):
        self.store = store
        self.feedback = feedback
        self.stats = stats
        self.warn = warn

    def map_onto(self, dispatcher) -> None:
        """Map every parameter (0..1 and /raw), the show actions and the feedback requests onto
        `dispatcher`."""
        self.map_controls(dispatcher)
        dispatcher.map(f"{PREFIX}/subscribe", self.on_subscribe, needs_reply_address=True)
        dispatcher.map(f"{PREFIX}/unsubscribe", self.on_unsubscribe, needs_reply_address=True)
        dispatcher.map(f"{PREFIX}/sync", self.on_sync, needs_reply_address=True)

    def map_controls(self, dispatcher) -> None:
        """Map what writes into the store only: every parameter (0..1 and /raw), scene, record,
        still and the pieces' actions (the control page's websocket takes exactly these)."""
        for group, name in self.store.keys():
            plain_unit = not self.store.spec(group, name).osc_units  # tempo's plain address is in BPM
            dispatcher.map(address(group, name), self.param_handler(group, name, unit=plain_unit),
                           needs_reply_address=True)
            dispatcher.map(address(group, name, raw=True),
                           self.param_handler(group, name, unit=False), needs_reply_address=True)
            dispatcher.map(raw_branch(group, name),  # the same, where OSCQuery tools find it
                           self.param_handler(group, name, unit=False), needs_reply_address=True)
        for piece in dict.fromkeys(p for p, _ in self.store.keys() if p not in (SHOW, AUDIO)):
            for what in PIECE_ACTIONS:
                dispatcher.map(f"{PREFIX}/{piece}/{what}", self.action_handler(piece, what),
                               needs_reply_address=True)
        dispatcher.map(f"{PREFIX}/still", self.on_still, needs_reply_address=True)
        for what in PRESET_ACTIONS:
            dispatcher.map(f"{PREFIX}/preset/{what}", self.preset_handler(what), needs_reply_address=True)
        for name in ("scene", "record"):
            if (SHOW, name) in self.store:
                dispatcher.map(f"{PREFIX}/{name}",
                               self.param_handler(SHOW, name, unit=False, pattern_ok=False),
                               needs_reply_address=True)

    # -- argument checks ------------------------------------------------------------------------

    def number(self, addr: str, origin, args) -> float | None:
        """The single finite number in `args`, or None after logging why not."""
        if len(args) != 1:
            reject(self.warn, self.stats, addr, origin, f"expected one number, got {len(args)} arguments")
            return None
        v = args[0]
        if isinstance(v, bool):
            v = float(v)
        if not isinstance(v, (int, float)):
            reject(self.warn, self.stats, addr, origin, f"expected a number, got {type(v).__name__} {shorten(v)}")
            return None
        v = float(v)
        if not math.isfinite(v):
            reject(self.warn, self.stats, addr, origin, f"{v!r} is not a finite number")
            return None
        return v

    def port_arg(self, addr: str, origin, args) -> int | None:
        """The single UDP port number in `args`, or None after logging why not."""
        v = self.number(addr, origin, args)
        if v is None:
            return None
        if v != int(v) or not 1 <= v <= 65535:
            reject(self.warn, self.stats, addr, origin, f"expected a port 1..65535, got {v!r}")
            return None
        return int(v)

    # -- handlers -------------------------------------------------------------------------------

    def param_handler(self, group: str, name: str, unit: bool, pattern_ok: bool = True):
        """The handler of one parameter address: 0..1 (`unit`) or own units; OSC patterns reach
        it only when `pattern_ok`."""
        spec = self.store.spec(group, name)
        lo, hi = (0.0, 1.0) if unit else (spec.lo, spec.hi)

        def handle(origin, addr, *args):
            v = self.number(addr, origin, args)
            if v is None:
                return
            if not lo <= v <= hi:
                self.warn.warning(("clamped", addr), "OSC %s from %s:%s: %r is outside [%g, %g], "
                                  "clamped", addr, origin[0], origin[1], v, lo, hi)
                self.stats["clamped"] += 1
            if unit:
                self.store.set_unit(group, name, v, origin)
            else:
                self.store.set(group, name, v, origin)
            self.stats["applied"] += 1

        handle.is_param = pattern_ok
        return handle

    def action_handler(self, piece: str, what: str):
        """The handler of a piece's action (`/unstable/<piece>/directions/refresh`...): an event for
        the engine, which does the work between frames (a handler never touches a model)."""

        def handle(origin, addr, *args):
            if args and args != (None,):  # OSCQuery clients send an impulse as one Nil
                v = self.number(addr, origin, args)
                if v is None or v == 0.0:  # a button's release
                    return
            self.store.post_event(what, None, origin, group=piece)
            self.stats["applied"] += 1

        return handle

    def preset_handler(self, what: str):
        """`/unstable/preset/save s`, `/recall s`, `/morph s f [unit] [curve]` (f in seconds, or
        in "beats" / "bars"; curve "smooth" unless given): checked here, carried out by the
        engine between frames (an Event with the name)."""
        usage = {"save": "a name", "recall": "a name",
                 "morph": f"a name, a length and optionally a unit ({'/'.join(UNITS)}) and a curve "
                          f"({'/'.join(CURVES)})"}[what]

        def handle(origin, addr, *args):
            if not args or not isinstance(args[0], str) or (what != "morph" and len(args) != 1) \
                    or (what == "morph" and not 2 <= len(args) <= 4):
                reject(self.warn, self.stats, addr, origin, f"expected {usage}, got {shorten(args)}")
                return
            try:
                name = check_preset_name(args[0])
            except PresetError as e:
                reject(self.warn, self.stats, addr, origin, str(e))
                return
            value, unit, curve = None, "s", "smooth"
            if what == "morph":
                value = self.number(addr, origin, args[1:2])
                if value is None:
                    return
                unit = args[2] if len(args) > 2 else unit
                curve = args[3] if len(args) > 3 else curve
                if value < 0 or unit not in UNITS or curve not in CURVES:
                    reject(self.warn, self.stats, addr, origin, f"expected {usage}, got {shorten(args)}")
                    return
            self.store.post_event(f"preset/{what}", value, origin, name=name, unit=unit, curve=curve)
            self.stats["applied"] += 1

        return handle

    def on_subscribe(self, origin, addr, *args) -> None:
        port = self.port_arg(addr, origin, args)
        if port is not None:
            self.feedback.subscribe(origin[0], port, sender=origin)

    def on_unsubscribe(self, origin, addr, *args) -> None:
        port = self.port_arg(addr, origin, args)
        if port is not None:
            self.feedback.unsubscribe(origin[0], port)

    def on_sync(self, origin, addr, *args) -> None:
        self.feedback.sync(origin)  # the full state to the sender's own subscriptions, budgeted

    def on_still(self, origin, addr, *args) -> None:
        if args and args != (None,):  # OSCQuery clients send an impulse as one Nil
            v = self.number(addr, origin, args)
            if v is None or v == 0.0:  # a TouchOSC button sends 1 on press and 0 on release
                return
        self.store.post_event("still", None, origin)
        self.stats["applied"] += 1
