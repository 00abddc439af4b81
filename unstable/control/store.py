"""The live parameter store: one thread-safe table of every parameter of a show, by group.

A group is a piece (its name in the show, e.g. "eq" and "bad") or one of the show's own groups
("show": `unstable.schema.show_specs`; "audio": the audio map's amounts); every key is
(group, name). The engine builds one `ParameterStore` from the ParamSpecs of every group.
Writers (the OSC thread, the engine applying a preset or a scene) call `set`/`set_unit`/`update`:
a dict write under a lock, nothing else. The render loop calls `snapshot(now)` once per frame and gets
{group: {name: value}} with smoothing applied against *its* clock (the frame clock, wall time live
or frame/fps offline), so what is rendered never depends on when OSC packets happened to arrive.

Listeners (`add_listener`) hear about every change with its origin, which is how controller
feedback follows presets and scene changes. Show-level actions (scene, record, still) sent by
a controller are queued as `Event`s that the engine drains once per frame (`drain_events`).
"""

from __future__ import annotations

import collections
import logging
import math
import threading
from dataclasses import dataclass
from typing import Callable, Mapping

from ..schema import ACTIONS, ParamSpec, normalise_groups

log = logging.getLogger("unstable.store")

Origin = tuple[str, int]
COALESCED = frozenset({"record", "still"})  # action kinds of which only the newest waits in the queue
Listener = Callable[[list[tuple[str, str]], "Origin | None"], None]


class _ListenerKey:
    """A log rate-limit key for one listener, equal only for that very listener. It holds the
    listener: a bare id() would pass to a new listener made where a removed one was freed, and
    the new one's first failure would be suppressed as the old one's."""

    __slots__ = ("fn",)

    def __init__(self, fn: Listener):
        self.fn = fn

    def __hash__(self) -> int:
        return id(self.fn)

    def __eq__(self, other) -> bool:
        return isinstance(other, _ListenerKey) and other.fn is self.fn


@dataclass(frozen=True)
class Event:
    """A show-level action from a controller: kind "scene" (value = index), "record" (value = 0/1,
    the wanted state: handle it idempotently) or "still" (value None); or an action on one piece
    (`group` names it): "directions/refresh", "clusters/refresh". `origin` is the sender."""

    kind: str
    value: float | None = None
    origin: Origin | None = None
    group: str | None = None
    name: str | None = None     # a preset action's preset (unstable.control.presets)
    unit: str = "s"             # a preset morph's length unit, and its curve
    curve: str = "smooth"


class _Entry:
    """One parameter's state: the target writers set and the smoothed value snapshots read."""

    __slots__ = ("group", "name", "spec", "target", "current", "tau", "log")

    def __init__(self, group: str, spec: ParamSpec):
        self.group = group
        self.name = spec.name
        self.spec = spec
        self.target = spec.clamp(spec.default)
        self.current = self.target
        # Integers and toggles jump: a smoothed scene index or on/off switch means nothing.
        self.tau = spec.smoothing if spec.kind == "float" else 0.0
        self.log = spec.log


class ParameterStore:
    """Thread-safe live values for every (group, parameter) of a show.

    Writes are cheap (clamp, dict write under a lock, listeners told outside it); `snapshot(now)`
    is O(params). Smoothing is an exponential approach with time constant `spec.smoothing`
    seconds (63% of the way after one, 95% after three), in log space for log-scaled parameters
    so a learning rate glides through its decades evenly.
    """

    def __init__(self, groups, *, max_events: int = 256):
        self.groups = normalise_groups(groups)
        self._lock = threading.Lock()
        self._entries: dict[tuple[str, str], _Entry] = {}
        for group, specs in self.groups.items():
            for spec in specs:
                self._entries[(group, spec.name)] = _Entry(group, spec)
        self._order = list(self._entries.values())
        self._last_now: float | None = None
        self._events: collections.deque[Event] = collections.deque(maxlen=max_events)
        self._listeners: list[Listener] = []
        # Called with `now` before each snapshot, outside the lock (a preset morph writes its
        # targets there, on the frame clock: unstable.control.presets).
        self._snapshot_hooks: list[Callable[[float], None]] = []
        from .osclog import RateLimitedLog
        self._warn = RateLimitedLog(log, 10.0)  # a listener failing on every write: one line per 10 s

    # -- schema ---------------------------------------------------------------------------------

    def keys(self) -> list[tuple[str, str]]:
        """Every (group, name), in schema order."""
        return list(self._entries)

    def spec(self, group: str, name: str) -> ParamSpec:
        """The ParamSpec of (group, name); KeyError if there is none."""
        return self._entry(group, name).spec

    def __contains__(self, key) -> bool:
        return key in self._entries

    def _entry(self, group: str, name: str) -> _Entry:
        try:
            return self._entries[(group, name)]
        except KeyError:
            raise KeyError(f"no live parameter {group}/{name}") from None

    # -- writes ---------------------------------------------------------------------------------

    def set(self, group: str, name: str, value: float, origin: Origin | None = None) -> float:
        """Set the target of (group, name) in its own units, clamped to its range; returns the
        stored value. `origin` is the controller's (host, port), None for the engine itself.
        A non-finite value is a bug in the caller and raises ValueError."""
        e = self._entry(group, name)
        v = float(value)
        if not math.isfinite(v):
            raise ValueError(f"{group}/{name}: {value!r} is not a finite number")
        v = e.spec.clamp(v)
        with self._lock:
            changed = e.target != v
            e.target = v
            if origin is not None and (group, name) in ACTIONS:
                self._queue(Event(name, v, origin))
        if changed:
            self._notify([(group, name)], origin)
        return v

    def set_unit(self, group: str, name: str, u: float, origin: Origin | None = None) -> float:
        """Set (group, name) from a 0..1 fader position (mapped by ParamSpec.from_unit)."""
        e = self._entry(group, name)
        u = float(u)
        if not math.isfinite(u):
            raise ValueError(f"{group}/{name}: {u!r} is not a finite number")
        return self.set(group, name, e.spec.from_unit(u), origin)

    def update(self, values: Mapping[str, Mapping[str, float]], origin: Origin | None = None) -> int:
        """Set many targets at once (a preset, a scene): {group: {name: value}} in own units.

        Names the schema does not know (a preset from an older piece) and non-finite values are
        skipped with a warning. Returns how many values changed; listeners hear one call.
        """
        staged = []
        for group, table in values.items():
            for name, value in table.items():
                e = self._entries.get((group, name))
                if e is None:
                    log.warning("preset value %s/%s ignored: no such live parameter", group, name)
                    continue
                try:
                    v = float(value)
                except (TypeError, ValueError):
                    v = math.nan
                if not math.isfinite(v):
                    log.warning("preset value %s/%s = %r ignored: not a finite number", group, name, value)
                    continue
                staged.append((e, e.spec.clamp(v)))
        changed = []
        with self._lock:
            for e, v in staged:
                if e.target != v:
                    e.target = v
                    changed.append((e.group, e.name))
        if changed:
            self._notify(changed, origin)
        return len(changed)

    def reset(self, origin: Origin | None = None) -> int:
        """Every target back to its default; returns how many changed."""
        return self.update({p: {s.name: s.default for s in specs} for p, specs in self.groups.items()},
                           origin)

    def settle(self) -> None:
        """Make every smoothed value jump to its target (a hard cut, e.g. on a scene change)."""
        with self._lock:
            for e in self._order:
                e.current = e.target

    # -- reads ----------------------------------------------------------------------------------

    def get(self, group: str, name: str) -> float:
        """The target (newest written value) of (group, name), in its own units."""
        return self._entry(group, name).target

    def get_unit(self, group: str, name: str) -> float:
        """The 0..1 fader position that shows the target of (group, name)."""
        e = self._entry(group, name)
        return e.spec.to_unit(e.target)

    def targets(self) -> dict[str, dict[str, float]]:
        """{group: {name: target}}: what a preset or a feedback sync saves or sends."""
        with self._lock:
            out: dict[str, dict[str, float]] = {p: {} for p in self.groups}
            for e in self._order:
                out[e.group][e.name] = e.target
        return out

    def snapshot(self, now: float, targets: dict | None = None) -> dict[str, dict[str, float]]:
        """{group: {name: value}} for the frame at time `now` (seconds on the frame clock).

        Smoothing advances by `now` minus the previous snapshot's `now`; the first snapshot, and
        any parameter without smoothing, shows the target. A clock that goes backwards (a render
        restarted) advances nothing. Calling it twice with the same `now` gives the same values.
        `targets`, when given, is filled with the targets this snapshot moved towards, read under
        the same lock (automation records exactly what the frame saw).
        """
        now = float(now)
        for hook in self._snapshot_hooks:  # a copy-on-write list, as the listeners'
            try:
                hook(now)
            except Exception:
                self._warn.warning(("hook", _ListenerKey(hook)), "snapshot hook %r failed", hook, exc_info=True)
        with self._lock:
            first = self._last_now is None
            dt = 0.0 if first else max(0.0, now - self._last_now)
            self._last_now = now
            out: dict[str, dict[str, float]] = {p: {} for p in self.groups}
            if targets is not None:
                targets.clear()
                targets.update({p: {} for p in self.groups})
                for e in self._order:
                    targets[e.group][e.name] = e.target
            for e in self._order:
                if first or e.tau <= 0.0:
                    e.current = e.target
                elif e.current != e.target and dt > 0.0:
                    k = 1.0 - math.exp(-dt / e.tau)
                    if e.log:
                        cur = math.exp(math.log(e.current) + (math.log(e.target) - math.log(e.current)) * k)
                    else:
                        cur = e.current + (e.target - e.current) * k
                    # Land exactly once within a millionth of the range: no endless tiny drift.
                    if abs(e.target - cur) <= 1e-6 * (e.spec.hi - e.spec.lo):
                        cur = e.target
                    e.current = cur
                out[e.group][e.name] = e.current
        return out

    def smoothing_state(self) -> dict:
        """Targets, smoothed values and the last snapshot's time, as plain numbers: with
        `load_smoothing_state` a replay continues the glide exactly where a live show was."""
        with self._lock:
            return {"last_now": self._last_now,
                    "target": {f"{e.group}/{e.name}": e.target for e in self._order},
                    "current": {f"{e.group}/{e.name}": e.current for e in self._order}}

    def load_smoothing_state(self, state: Mapping) -> None:
        """Continue from `smoothing_state()`; names the schema does not know are skipped."""
        last = state.get("last_now")
        with self._lock:
            self._last_now = None if last is None else float(last)
            for key, attr in (("target", "target"), ("current", "current")):
                for name, v in (state.get(key) or {}).items():
                    group, _, param = name.partition("/")
                    e = self._entries.get((group, param))
                    if e is not None and isinstance(v, (int, float)) and math.isfinite(v):
                        setattr(e, attr, e.spec.clamp(float(v)))

    # -- events ---------------------------------------------------------------------------------

    def post_event(self, kind: str, value: float | None = None, origin: Origin | None = None,
                   group: str | None = None, **more) -> None:
        """Queue an action for the engine (the oldest is dropped past `max_events`; of a record or a
        still only the newest waits). `more`: a preset action's name, unit and curve."""
        with self._lock:
            self._queue(Event(kind, value, origin, group, **more))

    def _queue(self, ev: Event) -> None:
        # Records and stills coalesce: a burst is one wish (the newest), and it cannot push scene
        # changes out of the bounded queue. Scene jumps keep their order (automation replays them).
        if ev.kind in COALESCED:
            for old in [e for e in self._events if e.kind == ev.kind]:
                self._events.remove(old)
        self._events.append(ev)

    def drain_events(self) -> list[Event]:
        """Every queued Event, oldest first; the queue is empty afterwards. Call once per frame."""
        with self._lock:
            events = list(self._events)
            self._events.clear()
        return events

    # -- listeners ------------------------------------------------------------------------------

    def add_listener(self, fn: Listener) -> None:
        """Call `fn(changed_keys, origin)` after every change (in the writer's thread; keep it
        cheap). An exception in a listener is logged and never reaches the writer."""
        with self._lock:
            self._listeners = self._listeners + [fn]

    def remove_listener(self, fn: Listener) -> None:
        """Stop calling `fn`."""
        with self._lock:
            self._listeners = [f for f in self._listeners if f is not fn]

    def add_snapshot_hook(self, fn: Callable[[float], None]) -> None:
        """Call `fn(now)` at the start of every `snapshot(now)`, before its values are taken (it
        may write targets: they are this frame's)."""
        with self._lock:
            self._snapshot_hooks = self._snapshot_hooks + [fn]

    def remove_snapshot_hook(self, fn: Callable[[float], None]) -> None:
        """Stop calling `fn` before snapshots."""
        with self._lock:
            self._snapshot_hooks = [f for f in self._snapshot_hooks if f is not fn]

    def _notify(self, keys: list[tuple[str, str]], origin: Origin | None) -> None:
        for fn in self._listeners:  # a copy-on-write list: safe to iterate without the lock
            try:
                fn(keys, origin)
            except Exception:
                self._warn.warning(("listener", _ListenerKey(fn)), "parameter listener %r failed", fn, exc_info=True)
