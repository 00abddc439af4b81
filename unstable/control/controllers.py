"""Controller layouts generated from the parameter schema: a TouchOSC document and a Max patch.

Both come from the same groups ({piece: [ParamSpec]}) the OSC server maps, so every control is
wired to an address the server knows, and nothing is typed by hand. A float or int parameter
gets a fader on its 0..1 address (the server maps it onto the range, log-scaled or integer as
the spec says); a toggle gets an on/off button. Every control also *receives* on its address, so
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
import uuid
import xml.etree.ElementTree as ET
import zlib
from pathlib import Path

from ..schema import PREFIX, SHOW, ParamSpec, address, normalise_groups

# Fader geometry (TouchOSC points; it scales the document to the screen).
_FADER_W, _FADER_H, _GAP, _LABEL_H, _HEADER_H, _MARGIN = 70, 260, 10, 36, 70, 20
_PALETTE = [(0.96, 0.55, 0.20), (0.30, 0.70, 0.95), (0.55, 0.85, 0.35), (0.90, 0.40, 0.70),
            (0.95, 0.85, 0.30), (0.60, 0.50, 0.95)]
_SHOW_COLOUR = (0.85, 0.85, 0.85)

# TouchOSC BUTTON buttonType values.
_MOMENTARY, _TOGGLE = 0, 1


def _label(spec: ParamSpec) -> str:
    return f"{spec.name} ({spec.unit})" if spec.unit else spec.name


def _colour(i: int, piece: str) -> tuple[float, float, float]:
    return _SHOW_COLOUR if piece == SHOW else _PALETTE[i % len(_PALETTE)]


# -- TouchOSC ---------------------------------------------------------------------------------


class _Tosc:
    """Builds the lexml tree: nodes with properties, values, messages and children."""

    def __init__(self, seed: str):
        # Deterministic IDs: the same schema gives the same file (diffable, reproducible).
        self._ns = uuid.uuid5(uuid.NAMESPACE_URL, "unstable:" + seed)
        self._count = 0

    def node(self, parent: ET.Element | None, kind: str, name: str, frame, colour, **props) -> ET.Element:
        self._count += 1
        attrs = {"ID": str(uuid.uuid5(self._ns, f"{self._count}:{name}")), "type": kind}
        node = ET.Element("node", attrs) if parent is None else ET.SubElement(
            parent.find("children") if parent.find("children") is not None
            else ET.SubElement(parent, "children"), "node", attrs)
        p = ET.SubElement(node, "properties")
        self.prop(p, "s", "name", name)
        self.prop(p, "r", "frame", dict(zip("xywh", (int(v) for v in frame))))
        self.prop(p, "c", "color", {"r": colour[0], "g": colour[1], "b": colour[2], "a": 1})
        self.prop(p, "b", "background", 1)
        self.prop(p, "b", "outline", 1)
        self.prop(p, "b", "visible", 1)
        self.prop(p, "b", "locked", 0)
        for key, (ptype, value) in props.items():
            self.prop(p, ptype, key, value)
        ET.SubElement(node, "values")
        return node

    @staticmethod
    def prop(props: ET.Element, ptype: str, key: str, value) -> None:
        p = ET.SubElement(props, "property", {"type": ptype})
        ET.SubElement(p, "key").text = key
        v = ET.SubElement(p, "value")
        if isinstance(value, dict):
            for k, x in value.items():
                ET.SubElement(v, k).text = _num(x)
        else:
            v.text = _num(value) if not isinstance(value, str) else value

    @staticmethod
    def value(node: ET.Element, key: str, default) -> None:
        v = ET.SubElement(node.find("values"), "value")
        ET.SubElement(v, "key").text = key
        ET.SubElement(v, "locked").text = "0"
        ET.SubElement(v, "lockedDefaultCurrent").text = "0"
        ET.SubElement(v, "default").text = default if isinstance(default, str) else _num(default)
        ET.SubElement(v, "defaultPull").text = "0"

    @staticmethod
    def osc(node: ET.Element, path: str, args: list[tuple[str, str, str]], *, send=True,
            receive=True, condition="ANY") -> None:
        """One OSC message: `args` are (partial type, conversion, value) triples."""
        msgs = node.find("messages")
        if msgs is None:
            msgs = ET.SubElement(node, "messages")
        osc = ET.SubElement(msgs, "osc")
        for key, flag in (("enabled", 1), ("send", int(send)), ("receive", int(receive)),
                          ("feedback", 0)):
            ET.SubElement(osc, key).text = str(flag)
        ET.SubElement(osc, "connections").text = "00001"  # connection 1 (of five)
        trig = ET.SubElement(ET.SubElement(osc, "triggers"), "trigger")
        ET.SubElement(trig, "var").text = "x"
        ET.SubElement(trig, "condition").text = condition
        _Tosc._partials(ET.SubElement(osc, "path"), [("CONSTANT", "STRING", path)])
        _Tosc._partials(ET.SubElement(osc, "arguments"), args)

    @staticmethod
    def _partials(parent: ET.Element, partials) -> None:
        for ptype, conversion, value in partials:
            part = ET.SubElement(parent, "partial")
            ET.SubElement(part, "type").text = ptype
            ET.SubElement(part, "conversion").text = conversion
            ET.SubElement(part, "value").text = value
            ET.SubElement(part, "scaleMin").text = "0"
            ET.SubElement(part, "scaleMax").text = "1"


def _num(x) -> str:
    if isinstance(x, bool):
        return str(int(x))
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer()):
        return str(int(x))
    return f"{x:.6g}"


def touchosc_xml(groups, *, host: str = "127.0.0.1", port: int = 9000,
                 feedback_port: int = 9001, title: str = "unstable", actions=None) -> str:
    """The TouchOSC document (uncompressed XML) for `groups` = {piece: [ParamSpec]}.

    One row per piece: a fader per float/int parameter (a toggle button per toggle), each named
    `<piece>/<param>`, sending and receiving its 0..1 address, with a label under it. A header
    row has subscribe / sync / still buttons and the connection settings to enter in TouchOSC.
    `actions` ({piece: ["directions/refresh", ...]}) adds a button per piece action to its row.
    """
    actions = actions or {}
    groups = normalise_groups(groups)
    t = _Tosc(title + repr(sorted((p, [s.name for s in v]) for p, v in groups.items())))
    row_w = max([len(specs) for specs in groups.values()] + [4])
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
            t.osc(c, address(piece, spec.name), [("VALUE", "FLOAT", "x")])
            lab = t.node(g, "LABEL", f"{name}/label", (cx - 4, _LABEL_H + _FADER_H + 2, _FADER_W + 8, _LABEL_H),
                         colour, background=("b", 0), textSize=("i", 11))
            t.value(lab, "text", _label(spec))
        y += row_h
    ET.indent(root, "  ")
    body = ET.tostring(root, encoding="unicode")
    return f"<?xml version='1.0' encoding='UTF-8'?>\n<lexml version='3'>\n{body}\n</lexml>\n"


def write_touchosc(path, groups, *, host: str = "127.0.0.1", port: int = 9000,
                   feedback_port: int = 9001, title: str = "unstable", actions=None) -> Path:
    """Write the `.tosc` for `groups` (zlib-compressed XML, as TouchOSC saves it); returns the path."""
    xml = touchosc_xml(groups, host=host, port=port, feedback_port=feedback_port, title=title, actions=actions)
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
           title: str = "unstable", actions=None) -> dict:
    """The Max patcher (as a dict, ready for json.dump) for `groups` = {piece: [ParamSpec]}.

    Per parameter: a 0..1 slider (a toggle for toggles) -> `prepend /unstable/<piece>/<param>` ->
    `udpsend HOST PORT`, and feedback `udpreceive FEEDBACK_PORT` -> `route` (one per piece) ->
    `prepend set` -> the slider; the raw value from `/raw` feedback shows in a number box.
    `actions` ({piece: ["directions/refresh", ...]}) adds a clickable message per piece action.
    """
    actions = actions or {}
    groups = normalise_groups(groups)
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
                ctrl = p.box("slider", (cx, top, 24, 130), inlets=1, outlets=1, outlettype=[""],
                             floatoutput=1, size=1.0, min=0.0, parameter_enable=0)
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
                 feedback_port: int = 9001, title: str = "unstable", actions=None) -> Path:
    """Write the `.maxpat` for `groups`; returns the path."""
    patch = maxpat(groups, host=host, port=port, feedback_port=feedback_port, title=title, actions=actions)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(patch, indent=1) + "\n", encoding="utf-8")
    return path


def write_controllers(groups, *, touchosc=None, max=None, host: str = "127.0.0.1",  # noqa: A002
                      port: int = 9000, feedback_port: int = 9001, title: str = "unstable",
                      actions=None) -> list[Path]:
    """Write whichever of the TouchOSC / Max files are asked for; returns the paths written.

    The `unstable controllers SHOW --touchosc FILE --max FILE` command is this call with the
    show's groups and OSC settings.
    """
    out = []
    if touchosc:
        out.append(write_touchosc(touchosc, groups, host=host, port=port,
                                  feedback_port=feedback_port, title=title, actions=actions))
    if max:
        out.append(write_maxpat(max, groups, host=host, port=port,
                                feedback_port=feedback_port, title=title, actions=actions))
    return out
