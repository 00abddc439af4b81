"""The show's OSCQuery address space (the Vidvox OSCQuery proposal), generated from the schema.

Pure data over the live `ParameterStore`: no sockets, no threads (`webserver.py` serves it). The
methods are the OSC server's own addresses (`unstable.schema.address`), so what an OSCQuery client
sends to a FULL_PATH is handled by the same handlers as TouchOSC's messages:

    /unstable/<piece>/<param>              f 0..1 (T/F for toggles), the fader position, ACCESS 3
    /unstable/<piece>/directions/refresh   N   an action (ACCESS 0: it has no value)
    /unstable/show/scene|master_fade|record   the show group, likewise 0..1
    /unstable/show/tempo                   f in BPM, RANGE and UNIT: a spec with `osc_units` takes its
                                           own units on its plain address too
    /unstable/scene                        i 0..scenes-1, the scene index in its own units
    /unstable/record                       T/F  recording on or off
    /unstable/still                        N   a still

    /unstable/<piece>/raw/<param>          f (i for whole numbers) in own units, RANGE lo..hi, UNIT

Why own units on a branch of their own: a node that is both a method (it has a VALUE) and a
container (`.../hue` holding `.../hue/raw`) is legal OSC, but OSCQuery clients such as
python-oscquery refuse to parse one. So each parameter is published twice: its 0..1 fader at the
plain address (what TouchOSC sends), and in own units, with its RANGE and UNIT, at
`/unstable/<piece>/raw/<param>`, an address the OSC server takes as it takes `.../<param>/raw`.
UNIT names follow ossia's where one fits (`deg` is `angle.degree`); others are the show's own.

The tree lists the pieces the current scene shows (`set_shown`): a scene that shows other pieces
changes the address space, which the web server announces with PATH_CHANGED. Parameters of pieces
off screen still take OSC, LISTEN and the control page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping, Sequence

from pythonosc.osc_message_builder import OscMessageBuilder

from ..schema import PREFIX, SHOW, address, raw_branch
from .store import ParameterStore

__all__ = ["AddressSpace", "Method", "ATTRIBUTES", "EXTENSIONS"]

# Attributes a client may ask for with `?NAME`; HOST_INFO is answered by the web server.
ATTRIBUTES = ("FULL_PATH", "CONTENTS", "TYPE", "VALUE", "RANGE", "ACCESS", "DESCRIPTION", "CLIPMODE", "UNIT")
# Our units as ossia's unit names (what OSCQuery tools such as ossia score and Chataigne read).
OSSIA_UNITS = {"deg": "angle.degree", "s": "time.second", "ms": "time.millisecond", "Hz": "time.hz"}
EXTENSIONS = {"ACCESS": True, "VALUE": True, "RANGE": True, "DESCRIPTION": True, "CLIPMODE": True,
              "TAGS": False, "EXTENDED_TYPE": False, "UNIT": True, "CRITICAL": False,
              "LISTEN": True, "PATH_CHANGED": True, "HTML": True}


@dataclass(frozen=True)
class Method:
    """One OSC method of the tree: a parameter's address (its store key `group`, `name`; `raw` for the
    top-level scene index), or an action (`group`/`name` None) that takes no value."""

    path: str
    type: str                 # OSC type tag: "f", "i", "T" (T/F), "N" (an impulse)
    group: str | None = None
    name: str | None = None
    raw: bool = False         # the value in own units (/unstable/scene, .../raw/<param>), not 0..1
    description: str = ""
    unit: str = ""            # own unit of a raw method ("" none)
    choices: Callable[[], list] | None = None  # an action's first argument, listed as RANGE VALS

    @property
    def is_action(self) -> bool:
        return self.group is None


def _fmt(x: float) -> str:
    return f"{x:g}"


class AddressSpace:
    """The OSCQuery view of a show: its tree as JSON, attribute queries, values as OSC messages.

    `actions`: {piece: ["directions/refresh", ...]} (from `unstable.live.pieces.piece_actions`).
    `pieces`: the groups that are pieces (None: every group but the show's); other groups (the show,
    audio) are always in the tree. `shown`: the pieces the current scene shows (None: every piece).
    """

    def __init__(self, store: ParameterStore, *, actions: Mapping[str, Sequence[str]] | None = None,
                 pieces: Iterable[str] | None = None, shown: Iterable[str] | None = None,
                 name: str = "unstable"):
        self.store = store
        self.name = name
        self.pieces = [p for p in store.groups if p != SHOW and (pieces is None or p in set(pieces))]
        self.actions = {p: tuple(a) for p, a in (actions or {}).items() if p in store.groups}
        self.methods: dict[str, Method] = {}
        self.by_key: dict[tuple[str, str], list[str]] = {}
        # More for the page, asked for each time it loads: {"midi": the MIDI link's bindings()}.
        self.page_extras: dict[str, Callable[[], Any]] = {}
        for group, specs in store.groups.items():
            for spec in specs:
                rng = f"{_fmt(spec.lo)}..{_fmt(spec.hi)}" + (f" {spec.unit}" if spec.unit else "")
                scale = ", log scale" if spec.log else ""
                doc = f"{spec.doc}: " if spec.doc else ""
                desc = (f"{doc}0..1 across {rng}{scale} (own units at {address(group, spec.name, raw=True)})"
                        if spec.kind != "toggle" else f"{doc}on/off")
                if spec.osc_units:  # its plain address is in its own units: say so in RANGE and UNIT
                    desc = f"{doc}{rng}"
                self._add(Method(address(group, spec.name), "T" if spec.kind == "toggle" else "f",
                                 group, spec.name, description=desc, raw=spec.osc_units,
                                 unit=spec.unit if spec.osc_units else ""))
                if spec.kind != "toggle":
                    self._add(Method(raw_branch(group, spec.name), "i" if spec.kind == "int" else "f",
                                     group, spec.name, raw=True, unit=spec.unit,
                                     description=f"{doc}{rng}{scale} (the fader at {address(group, spec.name)})"))
        if (SHOW, "scene") in store:
            n = int(store.spec(SHOW, "scene").hi) + 1
            self._add(Method(f"{PREFIX}/scene", "i", SHOW, "scene", raw=True,
                             description=f"go to scene 0..{n - 1} (crossfading)"))
        if (SHOW, "record") in store:
            self._add(Method(f"{PREFIX}/record", "T", SHOW, "record", raw=True,
                             description="record the output on/off"))
        self._add(Method(f"{PREFIX}/still", "N", description="save a PNG still of the output"))
        for piece, acts in self.actions.items():
            for what in acts:
                self._add(Method(f"{PREFIX}/{piece}/{what}", "N",
                                 description=f"{what.split('/')[0]}: recompute from the current weights"))
        self.shown = self._shown(shown)

    def add_presets(self, names: Callable[[], list[str]]) -> None:
        """List `/unstable/preset/save s`, `/recall s` and `/morph sf` in the tree, the saved
        presets (`names()`, asked at each query) as the VALS of their name, and on the page."""
        self._add(Method(f"{PREFIX}/preset/save", "s", description="save the live state as this preset"))
        self._add(Method(f"{PREFIX}/preset/recall", "s", choices=names, description="recall this preset at once"))
        self._add(Method(f"{PREFIX}/preset/morph", "sf", choices=names,
                         description="morph to this preset over f seconds (optional 3rd argument 'beats' or "
                                     "'bars', 4th a curve: smooth, linear, ease)"))
        self.page_extras["presets"] = lambda: {"names": names(), "save": f"{PREFIX}/preset/save",
                                               "recall": f"{PREFIX}/preset/recall",
                                               "morph": f"{PREFIX}/preset/morph"}

    def _add(self, m: Method) -> None:
        self.methods[m.path] = m
        if m.group is not None:
            self.by_key.setdefault((m.group, m.name), []).append(m.path)

    def _shown(self, shown: Iterable[str] | None) -> tuple[str, ...]:
        return tuple(self.pieces) if shown is None else tuple(p for p in self.pieces if p in set(shown))

    def set_shown(self, pieces: Iterable[str]) -> bool:
        """Show the tree of these pieces only; True when that changed the address space."""
        new = self._shown(pieces)
        if new == self.shown:
            return False
        self.shown = new
        return True

    # -- values ---------------------------------------------------------------------------------

    def value(self, m: Method) -> list:
        """The method's VALUE array (its current target), [] for an action."""
        if m.is_action:
            return []
        if m.raw:
            v = self.store.get(m.group, m.name)
        else:
            v = self.store.get_unit(m.group, m.name)
        if m.type == "T":
            return [bool(v >= 0.5)]
        if m.type == "i":
            return [int(round(v))]
        return [float(v)]

    def message(self, path: str) -> bytes | None:
        """The current value of `path` as one binary OSC message (what LISTEN streams), or None."""
        m = self.methods.get(path)
        if m is None or m.is_action:
            return None
        (v,) = self.value(m)
        b = OscMessageBuilder(address=path)
        if m.type == "T":
            b.add_arg(v, "T" if v else "F")
        elif m.type == "i":
            b.add_arg(v, "i")
        else:
            b.add_arg(v, "f")
        return b.build().dgram

    def paths(self, keys: Iterable[tuple[str, str]]) -> list[str]:
        """The methods whose value the changed (group, name) keys change."""
        out: list[str] = []
        for k in keys:
            out.extend(self.by_key.get(k, ()))
        return out

    # -- the tree -------------------------------------------------------------------------------

    def _visible(self, path: str) -> bool:
        parts = path.split("/")
        return len(parts) < 3 or parts[2] not in self.pieces or parts[2] in self.shown

    def _method_json(self, m: Method) -> dict:
        node: dict = {"FULL_PATH": m.path, "DESCRIPTION": m.description}
        if m.is_action:
            # ACCESS 0 as every action's: OSCQuery clients (python-oscquery among them) refuse a
            # writable node without a VALUE, and a preset name has no current value to show.
            node.update(TYPE=m.type, ACCESS=0)
            if m.choices is not None:  # e.g. the saved presets, as they are now
                node["RANGE"] = [{"VALS": list(m.choices())}] + [{}] * (len(m.type) - 1)
            return node
        node.update(TYPE=m.type, ACCESS=3, VALUE=self.value(m))
        if m.type == "f" and m.raw:
            spec = self.store.spec(m.group, m.name)
            node.update(RANGE=[{"MIN": float(spec.lo), "MAX": float(spec.hi)}], CLIPMODE=["both"])
        elif m.type == "f":
            node.update(RANGE=[{"MIN": 0.0, "MAX": 1.0}], CLIPMODE=["both"])
        elif m.type == "i":
            spec = self.store.spec(m.group, m.name)
            node.update(RANGE=[{"MIN": int(spec.lo), "MAX": int(spec.hi)}], CLIPMODE=["both"])
        if m.unit:
            node["UNIT"] = [OSSIA_UNITS.get(m.unit, m.unit)]
        return node

    def node(self, path: str) -> dict | None:
        """The JSON object of the node at `path` with everything below it, or None if there is none
        (or it belongs to a piece the current scene does not show)."""
        path = "/" + path.strip("/") if path != "/" else "/"
        if not self._visible(path):
            return None
        m = self.methods.get(path)
        if m is not None:
            return self._method_json(m)
        prefix = "" if path == "/" else path
        children: dict[str, dict] = {}
        for p in self.methods:
            if not p.startswith(prefix + "/") or not self._visible(p):
                continue
            child = p[len(prefix) + 1:].split("/", 1)[0]
            if child not in children:
                children[child] = self.node(f"{prefix}/{child}")
        if not children:
            return None
        desc = {"/": f"{self.name}: the show's OSC address space", PREFIX: "unstable",
                f"{PREFIX}/{SHOW}": "the show: scene, master fade, recording"}.get(path, "")
        if not desc and path.count("/") == 2 and path.split("/")[2] in self.pieces:
            desc = f"piece {path.split('/')[2]}"
        return {"FULL_PATH": path, "ACCESS": 0, "DESCRIPTION": desc, "CONTENTS": children}

    def attribute(self, path: str, attr: str) -> tuple[int, dict | None]:
        """(HTTP status, JSON) of `path?ATTR`: 200 with {ATTR: value}, 204 when the node has no such
        attribute (VALUE of a container or an action), 400 for an attribute this server does not
        know, 404 for no node."""
        if attr not in ATTRIBUTES:
            return 400, None
        node = self.node(path)
        if node is None:
            return 404, None
        if attr not in node:
            return 204, None
        return 200, {attr: node[attr]}

    # -- the control page -----------------------------------------------------------------------

    def page_schema(self, scenes: Sequence[str] = ()) -> dict:
        """What the control page draws: every piece's parameters (own range, unit, log scale, kind,
        the address its fader sends 0..1 to, or its own units with `osc_units`), the show's, the scene
        names and the actions."""
        groups = []
        for group, specs in self.store.groups.items():
            params = []
            for s in specs:
                params.append({"name": s.name, "address": address(group, s.name), "lo": s.lo, "hi": s.hi,
                               "default": s.default, "unit": s.unit, "kind": s.kind, "log": s.log, "doc": s.doc,
                               "osc_units": s.osc_units,
                               "unit_value": self.store.get_unit(group, s.name),
                               "value": self.store.get(group, s.name)})
            groups.append({"piece": group, "params": params,
                           "actions": [f"{PREFIX}/{group}/{a}" for a in self.actions.get(group, ())]})
        return {"name": self.name, "groups": groups, "scenes": list(scenes),
                "scene_address": f"{PREFIX}/scene", "record_address": f"{PREFIX}/record",
                "still_address": f"{PREFIX}/still", **{k: f() for k, f in self.page_extras.items()}}
