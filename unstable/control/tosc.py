"""TouchOSC documents as TouchOSC saves them: lexml version 3, a tree of typed nodes (GROUP, PAGER,
FADER, BUTTON, LABEL) with properties, values and OSC messages. The layouts (controllers.py for a
tablet or laptop, tosc_phone.py for a phone) build their documents with `Tosc`.
"""

from __future__ import annotations

import uuid
import xml.etree.ElementTree as ET

# BUTTON buttonType values.
MOMENTARY, TOGGLE = 0, 1
# FADER orientation values: the direction the value grows (north: a vertical fader, east: horizontal).
NORTH, EAST = 0, 1


class Tosc:
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
                ET.SubElement(v, k).text = num(x)
        else:
            v.text = num(value) if not isinstance(value, str) else value

    @staticmethod
    def value(node: ET.Element, key: str, default) -> None:
        v = ET.SubElement(node.find("values"), "value")
        ET.SubElement(v, "key").text = key
        ET.SubElement(v, "locked").text = "0"
        ET.SubElement(v, "lockedDefaultCurrent").text = "0"
        ET.SubElement(v, "default").text = default if isinstance(default, str) else num(default)
        ET.SubElement(v, "defaultPull").text = "0"

    @staticmethod
    def osc(node: ET.Element, path: str, args: list[tuple[str, str, str]], *, send=True,
            receive=True, condition="ANY", scale: tuple[float, float] = (0, 1)) -> None:
        """One OSC message: `args` are (partial type, conversion, value) triples; `scale` maps the
        control's 0..1 onto the sent argument (and the received one back), TouchOSC's scaleMin/Max."""
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
        Tosc._partials(ET.SubElement(osc, "path"), [("CONSTANT", "STRING", path)])
        Tosc._partials(ET.SubElement(osc, "arguments"), args, scale)

    @staticmethod
    def _partials(parent: ET.Element, partials, scale=(0, 1)) -> None:
        for ptype, conversion, value in partials:
            part = ET.SubElement(parent, "partial")
            ET.SubElement(part, "type").text = ptype
            ET.SubElement(part, "conversion").text = conversion
            ET.SubElement(part, "value").text = value
            ET.SubElement(part, "scaleMin").text = num(scale[0])
            ET.SubElement(part, "scaleMax").text = num(scale[1])


def num(x) -> str:
    if isinstance(x, bool):
        return str(int(x))
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer()):
        return str(int(x))
    return f"{x:.6g}"


def num(x) -> str:
    """A number as TouchOSC writes it: integers bare, others to six significant digits."""
    if isinstance(x, bool):
        return str(int(x))
    if isinstance(x, int) or (isinstance(x, float) and x.is_integer()):
        return str(int(x))
    return f"{x:.6g}"


def document(root: ET.Element) -> str:
    """The uncompressed XML of a document whose top node is `root`."""
    ET.indent(root, "  ")
    body = ET.tostring(root, encoding="unicode")
    return f"<?xml version='1.0' encoding='UTF-8'?>\n<lexml version='3'>\n{body}\n</lexml>\n"
