"""Controller layouts generated from the parameter schema: a TouchOSC document and a Max patch.

Both come from the same groups ({piece: [ParamSpec]}) the OSC server maps, so every control is
wired to an address the server knows, and nothing is typed by hand. A float or int parameter
gets a fader on its 0..1 address (the server maps it onto the range, log-scaled or integer as
the spec says); a toggle gets an on/off button. The show's scene is not a fader but one button per
scene, sending `/unstable/scene <index>`; actions (still, sync, a piece's refreshes) are buttons too. Every control also *receives* on its address, so
the feedback the server sends moves it (presets, scene changes, other controllers).

TouchOSC (`.tosc`): a zlib-compressed XML document (root `<lexml version='3'>`, nodes with
typed properties, values and OSC messages). The connection itself (host, ports) lives in the
TouchOSC app, not in the document: the layout shows what to enter and has a "subscribe" button
(and a root script that subscribes on load) so feedback starts.

Max (`.maxpat`): a JSON patcher. `udpsend HOST PORT` for output, `udpreceive FEEDBACK_PORT` and a
`route` per piece for feedback, which reaches each slider through `prepend set` so a fed-back
value moves the slider without sending it again. A `loadbang` subscribes.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Sequence

from ..schema import PREFIX, SHOW, address, normalise_groups
from .surface import PALETTE as _PALETTE, SHOW_COLOUR as _SHOW_COLOUR, label as _label, plays as _plays, scene_names
from .tosc import MOMENTARY as _MOMENTARY, TOGGLE as _TOGGLE, Tosc as _Tosc, document

# Fader geometry (TouchOSC points; it scales the document to the screen).
_FADER_W, _FADER_H, _GAP, _LABEL_H, _HEADER_H, _MARGIN = 70, 260, 10, 36, 70, 20
_SCENES_PER_COLUMN = 4


def _colour(i: int, piece: str) -> tuple[float, float, float]:
    return _SHOW_COLOUR if piece == SHOW else _PALETTE[i % len(_PALETTE)]


# -- TouchOSC ---------------------------------------------------------------------------------

def touchosc_xml(groups, *, host: str = "127.0.0.1", port: int = 9000,
                 feedback_port: int = 9001, title: str = "unstable", actions=None,
                 scenes: Sequence[str] | None = None) -> str:
    """The TouchOSC document (uncompressed XML) for `groups` = {piece: [ParamSpec]}.

    One row per piece: a fader per float/int parameter (a toggle button per toggle), each named
    `<piece>/<param>`, sending and receiving its 0..1 address, with a label under it. A header
    row has subscribe / sync / still buttons and the connection settings to enter in TouchOSC.
    `actions` ({piece: ["directions/refresh", ...]}) adds a button per piece action to its row;
    the show's row has a button per scene (`scenes`: their names) instead of a scene fader.
    """
    actions = actions or {}
    groups = normalise_groups(groups)
    names = scene_names(groups, scenes)
    groups = {piece: tuple(s for s in specs if _plays(piece, s)) for piece, specs in groups.items()}
    t = _Tosc(title + repr(sorted((p, [s.name for s in v]) for p, v in groups.items())) + repr(names))
    scene_cols = -(-len(names) // _SCENES_PER_COLUMN)  # columns of scene buttons, each two faders wide
    row_w = max([len(specs) + (2 * scene_cols if piece == SHOW else 0) for piece, specs in groups.items()] + [4])
    width = max(2 * _MARGIN + row_w * (_FADER_W + _GAP), 640)
    row_h = _LABEL_H + _FADER_H + _LABEL_H + _GAP
    height = _HEADER_H + len(groups) * row_h + _MARGIN
    script = (f"-- subscribe to feedback from the unstable engine when the document loads\n"
              f"function init()\n  sendOSC('{PREFIX}/subscribe', {int(feedback_port)})\nend\n")
    root = t.node(None, "GROUP", title, (0, 0, width, height), (0.08, 0.08, 0.09),
                  script=("s", script))

    info = (f"{title}: send to {host}:{port}, receive on port {feedback_port} "
            "(TouchOSC > Connections > OSC, connection 1)")
    t.node(root, "LABEL", "connection", (_MARGIN, 8, width - 2 * _MARGIN - 330, 50),
           (0.2, 0.2, 0.2), textSize=("i", 14))
    t.value(root.find("children")[-1], "text", info)
    x = width - _MARGIN - 320
    for label, path, args in (
            ("subscribe", f"{PREFIX}/subscribe", [("CONSTANT", "INTEGER", str(int(feedback_port)))]),
            ("sync", f"{PREFIX}/sync", []),
            ("still", f"{PREFIX}/still", [("VALUE", "FLOAT", "x")])):
        b = t.node(root, "BUTTON", label, (x, 8, 100, 50), (0.5, 0.5, 0.55),
                   buttonType=("i", _MOMENTARY))
        t.value(b, "x", 0)
        # RISE: only the press is sent, so one tap is one action.
        t.osc(b, path, args, receive=False, condition="RISE")
        x += 110

    y = _HEADER_H
    for i, (piece, specs) in enumerate(groups.items()):
        colour = _colour(i, piece)
        g = t.node(root, "GROUP", piece, (0, y, width, row_h), (0.12, 0.12, 0.13))
        lab = t.node(g, "LABEL", f"{piece}/title", (_MARGIN, 0, width - 2 * _MARGIN, _LABEL_H),
                     colour, background=("b", 0), textSize=("i", 18))
        t.value(lab, "text", piece)
        for k, action in enumerate(reversed(actions.get(piece, ()))):
            b = t.node(g, "BUTTON", f"{piece}/{action}", (width - _MARGIN - (k + 1) * 170, 2, 160, _LABEL_H - 4),
                       colour, buttonType=("i", _MOMENTARY))
            t.value(b, "x", 0)
            t.osc(b, f"{PREFIX}/{piece}/{action}", [("VALUE", "FLOAT", "x")], receive=False, condition="RISE")
        for j, spec in enumerate(specs):
            cx = _MARGIN + j * (_FADER_W + _GAP)
            name = f"{piece}/{spec.name}"
            if spec.kind == "toggle":
                c = t.node(g, "BUTTON", name, (cx, _LABEL_H + _FADER_H - _FADER_W, _FADER_W, _FADER_W),
                           colour, buttonType=("i", _TOGGLE))
            else:
                extra = {}
                steps = int(spec.hi - spec.lo)
                if spec.kind == "int" and 1 <= steps <= 32:
                    extra = {"grid": ("b", 1), "gridSteps": ("i", steps)}
                c = t.node(g, "FADER", name, (cx, _LABEL_H, _FADER_W, _FADER_H), colour,
                           orientation=("i", 0), bar=("b", 1), cursor=("b", 1), response=("i", 0),
                           **extra)
            t.value(c, "x", spec.to_unit(spec.default))
            t.osc(c, address(piece, spec.name), [("VALUE", "FLOAT", "x")],
                  scale=(spec.lo, spec.hi) if spec.osc_units else (0, 1))  # tempo: the fader sends BPM
            lab = t.node(g, "LABEL", f"{name}/label", (cx - 4, _LABEL_H + _FADER_H + 2, _FADER_W + 8, _LABEL_H),
                         colour, background=("b", 0), textSize=("i", 11))
            t.value(lab, "text", _label(spec))
        if piece == SHOW:
            _scene_buttons(t, g, names, _MARGIN + len(specs) * (_FADER_W + _GAP), colour)
        y += row_h
    return document(root)


def _scene_buttons(t: _Tosc, row: ET.Element, names: Sequence[str], x0: int, colour) -> None:
    """A momentary button per scene in `row` from `x0`, columns of _SCENES_PER_COLUMN: a press
    sends `/unstable/scene <index>` (the scene's own index, not a fader position)."""
    h = (_FADER_H - (_SCENES_PER_COLUMN - 1) * _GAP) // _SCENES_PER_COLUMN
    for i, name in enumerate(names):
        col, k = divmod(i, _SCENES_PER_COLUMN)
        b = t.node(row, "BUTTON", f"scene/{i}", (x0 + col * 2 * (_FADER_W + _GAP), _LABEL_H + k * (h + _GAP),
                                                 2 * _FADER_W + _GAP, h), colour, buttonType=("i", _MOMENTARY))
        t.value(b, "x", 0)
        t.osc(b, f"{PREFIX}/scene", [("CONSTANT", "INTEGER", str(i))], receive=False, condition="RISE")
        lab = t.node(row, "LABEL", f"scene/{i}/label", (x0 + col * 2 * (_FADER_W + _GAP), _LABEL_H + k * (h + _GAP),
                                                        2 * _FADER_W + _GAP, h),
                     (0.1, 0.1, 0.1), background=("b", 0), textSize=("i", 16), interactive=("b", 0))
        t.value(lab, "text", name)


def write_touchosc(path, groups, *, host: str = "127.0.0.1", port: int = 9000,
                   feedback_port: int = 9001, title: str = "unstable", actions=None,
                   scenes: Sequence[str] | None = None) -> Path:
    """Write the `.tosc` for `groups` (zlib-compressed XML, as TouchOSC saves it); returns the path."""
    xml = touchosc_xml(groups, host=host, port=port, feedback_port=feedback_port, title=title, actions=actions,
                       scenes=scenes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zlib.compress(xml.encode("utf-8"), 9))
    return path


# -- Max ----------------------------------------------------------------------------------------


class _Patch:
    """Boxes and patch lines of a Max patcher."""

    def __init__(self):
        self.boxes: list[dict] = []
        self.lines: list[dict] = []

    def box(self, maxclass: str, rect, *, text: str | None = None, inlets: int = 1,
            outlets: int = 1, outlettype=None, **attrs) -> str:
        bid = f"obj-{len(self.boxes) + 1}"
        box = {"id": bid, "maxclass": maxclass, "numinlets": inlets, "numoutlets": outlets,
               "patching_rect": [float(v) for v in rect]}
        if outlets:
            box["outlettype"] = list(outlettype) if outlettype is not None else [""] * outlets
        if text is not None:
            box["text"] = text
        box.update(attrs)
        self.boxes.append({"box": box})
        return bid

    def obj(self, text: str, rect, inlets: int = 1, outlets: int = 1, outlettype=None) -> str:
        return self.box("newobj", rect, text=text, inlets=inlets, outlets=outlets, outlettype=outlettype)

    def connect(self, src: str, dst: str, outlet: int = 0, inlet: int = 0) -> None:
        self.lines.append({"patchline": {"source": [src, outlet], "destination": [dst, inlet]}})


def maxpat(groups, *, host: str = "127.0.0.1", port: int = 9000, feedback_port: int = 9001,
           title: str = "unstable", actions=None, scenes: Sequence[str] | None = None) -> dict:
    """The Max patcher (as a dict, ready for json.dump) for `groups` = {piece: [ParamSpec]}.

    Per parameter: a 0..1 slider (a toggle for toggles) -> `prepend /unstable/<piece>/<param>` ->
    `udpsend HOST PORT`, and feedback `udpreceive FEEDBACK_PORT` -> `route` (one per piece) ->
    `prepend set` -> the slider; the raw value from `/raw` feedback shows in a number box.
    `actions` ({piece: ["directions/refresh", ...]}) adds a clickable message per piece action; each
    scene (`scenes`: their names) is a clickable `/unstable/scene <index>` message, not a slider.
    """
    actions = actions or {}
    groups = normalise_groups(groups)
    names = scene_names(groups, scenes)
    groups = {piece: tuple(s for s in specs if _plays(piece, s)) for piece, specs in groups.items()}
    p = _Patch()
    col_w, x0 = 110.0, 20.0
    p.box("comment", (x0, 10, 600, 20), text=f"{title}: OSC to {host}:{port}, feedback on "
          f"{feedback_port}. Sliders send 0..1; the number under each shows the value in its units.",
          inlets=1, outlets=0)
    send = p.obj(f"udpsend {host} {int(port)}", (x0, 40, 160, 22), outlets=0)
    recv = p.obj(f"udpreceive {int(feedback_port)}", (x0 + 420, 40, 140, 22))
    load = p.obj("loadbang", (x0 + 180, 40, 60, 22), outlettype=["bang"])
    sub = p.box("message", (x0 + 180, 70, 170, 22), text=f"{PREFIX}/subscribe {int(feedback_port)}",
                inlets=2, outlets=1)
    sync = p.box("message", (x0 + 360, 70, 100, 22), text=f"{PREFIX}/sync", inlets=2, outlets=1)
    snap_btn = p.box("button", (x0 + 470, 70, 22, 22), inlets=1, outlets=1, outlettype=["bang"],
                     parameter_enable=0)
    snap = p.box("message", (x0 + 500, 70, 130, 22), text=f"{PREFIX}/still 1", inlets=2, outlets=1)
    p.connect(load, sub)
    for m in (sub, sync, snap):
        p.connect(m, send)
    p.connect(snap_btn, snap)

    y = 120.0
    if names:
        p.box("comment", (x0, y, 300, 20), text="scenes (click one to play it)", inlets=1, outlets=0, fontsize=14.0)
        for i, name in enumerate(names):
            m = p.box("message", (x0 + 150 * (i % 6), y + 25 + 50 * (i // 6), 140, 22),
                      text=f"{PREFIX}/scene {i}", inlets=2, outlets=1)
            p.box("comment", (x0 + 150 * (i % 6), y + 47 + 50 * (i // 6), 140, 20), text=name, inlets=1, outlets=0)
            p.connect(m, send)
        y += 80.0 + 50 * ((len(names) - 1) // 6)
    for piece, specs in groups.items():
        p.box("comment", (x0, y, 300, 20), text=piece, inlets=1, outlets=0, fontsize=14.0)
        for k, action in enumerate(actions.get(piece, ())):
            m = p.box("message", (x0 + 320 + 230 * k, y, 220, 22), text=f"{PREFIX}/{piece}/{action} 1",
                      inlets=2, outlets=1)
            p.connect(m, send)
        routes = []
        for spec in specs:
            routes += [address(piece, spec.name), address(piece, spec.name, raw=True)]
        n = len(routes)
        text = "route " + " ".join(routes)
        route = p.obj(text, (x0, y + 25, min(1200.0, 7.0 * len(text)), 22), inlets=2, outlets=n + 1)
        p.connect(recv, route)
        for j, spec in enumerate(specs):
            cx = x0 + j * col_w
            top = y + 60
            if spec.kind == "toggle":
                ctrl = p.box("toggle", (cx, top + 90, 30, 30), inlets=1, outlets=1,
                             outlettype=["int"], parameter_enable=0)
            else:
                # An osc_units parameter (tempo) sends and is fed back its own units: the slider spans them.
                lo, size = (spec.lo, spec.hi - spec.lo) if spec.osc_units else (0.0, 1.0)
                ctrl = p.box("slider", (cx, top, 24, 130), inlets=1, outlets=1, outlettype=[""],
                             floatoutput=1, size=float(size), min=float(lo), parameter_enable=0)
            pre = p.obj(f"prepend {address(piece, spec.name)}", (cx, top + 140, 100, 22))
            setter = p.obj("prepend set", (cx + 30, top, 75, 22))
            raw_set = p.obj("prepend set", (cx, top + 170, 75, 22))
            raw_box = p.box("flonum", (cx, top + 195, 80, 22), inlets=1, outlets=2,
                            outlettype=["", "bang"], format=6, parameter_enable=0)
            p.box("comment", (cx, top + 220, 105, 20), text=_label(spec), inlets=1, outlets=0)
            p.connect(ctrl, pre)
            p.connect(pre, send)
            p.connect(route, setter, outlet=2 * j)
            p.connect(setter, ctrl)
            p.connect(route, raw_set, outlet=2 * j + 1)
            p.connect(raw_set, raw_box)
        y += 310.0
    width = max(700.0, x0 * 2 + col_w * max([len(s) for s in groups.values()] + [1]))
    return {"patcher": {
        "fileversion": 1,
        "appversion": {"major": 8, "minor": 5, "revision": 0, "architecture": "x64", "modernui": 1},
        "classnamespace": "box",
        "rect": [50.0, 50.0, width, min(y + 40.0, 1000.0)],
        "bglocked": 0,
        "openinpresentation": 0,
        "default_fontsize": 12.0,
        "default_fontname": "Arial",
        "gridonopen": 1,
        "gridsize": [15.0, 15.0],
        "description": f"{title} controller, generated from the parameter schema",
        "boxes": p.boxes,
        "lines": p.lines,
    }}


def write_maxpat(path, groups, *, host: str = "127.0.0.1", port: int = 9000,
                 feedback_port: int = 9001, title: str = "unstable", actions=None,
                 scenes: Sequence[str] | None = None) -> Path:
    """Write the `.maxpat` for `groups`; returns the path."""
    patch = maxpat(groups, host=host, port=port, feedback_port=feedback_port, title=title, actions=actions,
                   scenes=scenes)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(patch, indent=1) + "\n", encoding="utf-8")
    return path


def write_controllers(groups, *, touchosc=None, max=None, phone=None,  # noqa: A002
                      host: str = "127.0.0.1", port: int = 9000, feedback_port: int = 9001,
                      title: str = "unstable", actions=None, scenes: Sequence[str] | None = None) -> list[Path]:
    """Write whichever of the TouchOSC / TouchOSC phone / Max files are asked for; returns the paths.

    The `unstable controllers SHOW` command is this call with the show's groups, scene names and
    OSC settings (or the host and ports given to it).
    """
    from .tosc_phone import write_touchosc_phone
    kw = dict(host=host, port=port, feedback_port=feedback_port, title=title, actions=actions, scenes=scenes)
    out = []
    if touchosc:
        out.append(write_touchosc(touchosc, groups, **kw))
    if phone:
        out.append(write_touchosc_phone(phone, groups, **kw))
    if max:
        out.append(write_maxpat(max, groups, **kw))
    return out
