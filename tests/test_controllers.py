"""Controller layouts from the schema: every control is wired to an address the server serves."""

import json
import socket
import time
import xml.etree.ElementTree as ET
import zlib

import pytest
from pythonosc.osc_message_builder import OscMessageBuilder

from unstable.control.controllers import maxpat, write_controllers, write_maxpat, write_touchosc
from unstable.control.osc import OscServer
from unstable.control.store import ParameterStore
from unstable.errors import UnstableError
from unstable.schema import ParamSpec, address, show_specs, with_common


def groups():
    return {
        "eq": with_common([ParamSpec("alpha", 0.0, 2.0, 0.5), ParamSpec("lr", 1e-5, 1e-2, 1e-4, log=True)]),
        "bad": with_common([ParamSpec("temperature", 0.1, 3.0, 1.0, smoothing=0.5)]),
        "show": show_specs(scenes=4),
    }


def every_param(g):
    return [(piece, spec) for piece, specs in g.items() for spec in specs]


def prop(node, key):
    for p in node.find("properties"):
        if p.find("key").text == key:
            return p.find("value")
    return None


def osc_messages(node):
    return node.findall("./messages/osc")


def partials(osc, where):
    return [(p.find("type").text, p.find("conversion").text, p.find("value").text)
            for p in osc.findall(f"./{where}/partial")]


def load_tosc(path):
    data = path.read_bytes()
    root = ET.fromstring(zlib.decompress(data))
    assert root.tag == "lexml" and root.get("version") == "3"
    return root


def test_touchosc_has_one_control_per_parameter_wired_to_its_address(tmp_path):
    g = groups()
    path = write_touchosc(tmp_path / "show.tosc", g, host="192.168.1.10", port=9000, feedback_port=9101)
    root = load_tosc(path)
    doc = root.find("node")
    assert doc.get("type") == "GROUP"
    by_path = {}
    for node in root.iter("node"):
        for osc in osc_messages(node):
            path_parts = partials(osc, "path")
            assert len(path_parts) == 1 and path_parts[0][:2] == ("CONSTANT", "STRING")
            by_path.setdefault(path_parts[0][2], []).append((node, osc))

    for piece, spec in every_param(g):
        hits = by_path.pop(address(piece, spec.name))
        assert len(hits) == 1, f"{piece}/{spec.name} has {len(hits)} controls"
        node, osc = hits[0]
        assert node.get("type") == ("BUTTON" if spec.kind == "toggle" else "FADER")
        assert prop(node, "name").text == f"{piece}/{spec.name}"
        assert partials(osc, "arguments") == [("VALUE", "FLOAT", "x")]
        assert osc.find("send").text == "1" and osc.find("receive").text == "1"  # feedback moves it
        x = [v for v in node.find("values") if v.find("key").text == "x"][0]
        assert float(x.find("default").text) == pytest.approx(spec.to_unit(spec.default), abs=1e-5)

    # What is left: the header buttons, feedback port included.
    assert sorted(by_path) == ["/unstable/still", "/unstable/subscribe", "/unstable/sync"]
    (node, osc), = by_path["/unstable/subscribe"]
    assert partials(osc, "arguments") == [("CONSTANT", "INTEGER", "9101")]
    assert osc.find("./triggers/trigger/condition").text == "RISE"
    texts = [v.find("default").text for v in root.iter("value") if v.find("key") is not None
             and v.find("key").text == "text"]
    assert any("192.168.1.10:9000" in t and "9101" in t for t in texts)
    assert "sendOSC('/unstable/subscribe', 9101)" in prop(doc, "script").text
    # Frames lie inside the document.
    w = int(prop(doc, "frame").find("w").text)
    for node in root.iter("node"):
        f = prop(node, "frame")
        assert 0 <= int(f.find("x").text) and int(f.find("x").text) + int(f.find("w").text) <= w


def test_touchosc_output_is_reproducible(tmp_path):
    a = write_touchosc(tmp_path / "a.tosc", groups()).read_bytes()
    b = write_touchosc(tmp_path / "b.tosc", groups()).read_bytes()
    assert a == b


def test_maxpat_is_valid_json_with_a_wired_slider_per_parameter(tmp_path):
    g = groups()
    path = write_maxpat(tmp_path / "show.maxpat", g, host="127.0.0.1", port=9000, feedback_port=9101)
    patch = json.loads(path.read_text())["patcher"]
    boxes = {b["box"]["id"]: b["box"] for b in patch["boxes"]}
    lines = [(l["patchline"]["source"], l["patchline"]["destination"]) for l in patch["lines"]]
    for (src, out), (dst, inlet) in lines:  # every line joins real outlets to real inlets
        assert out < boxes[src]["numoutlets"] and inlet < boxes[dst]["numinlets"]
    by_text = {}
    for b in boxes.values():
        by_text.setdefault(b.get("text"), []).append(b["id"])
    send, = by_text["udpsend 127.0.0.1 9000"]
    recv, = by_text["udpreceive 9101"]
    sources = {}
    for (src, _), (dst, _) in lines:
        sources.setdefault(dst, []).append(src)

    for piece, spec in every_param(g):
        pre, = by_text[f"prepend {address(piece, spec.name)}"]
        assert pre in sources[send]
        ctrl, = sources[pre]
        assert boxes[ctrl]["maxclass"] == ("toggle" if spec.kind == "toggle" else "slider")
        if spec.kind != "toggle":
            assert boxes[ctrl]["floatoutput"] == 1 and boxes[ctrl]["size"] == 1.0
        # Feedback reaches the control through `prepend set` (moves it without re-sending).
        setter, = sources[ctrl]
        assert boxes[setter]["text"] == "prepend set"
        route, = sources[setter]
        assert recv in sources[route]
        words = boxes[route]["text"].split()
        assert words[0] == "route"
        outlet = [l[0][1] for l in lines if l[0][0] == route and l[1][0] == setter][0]
        assert words[1 + outlet] == address(piece, spec.name)

    subscribe, = by_text["/unstable/subscribe 9101"]
    assert subscribe in sources[send] and boxes[sources[subscribe][0]]["text"] == "loadbang"


def test_every_generated_address_is_served(tmp_path):
    """Send what the layouts send to a real server: nothing is unknown, everything lands."""
    g = groups()
    params = ParameterStore(g)
    tosc = load_tosc(write_touchosc(tmp_path / "s.tosc", g))
    tosc_paths = {partials(osc, "path")[0][2] for node in tosc.iter("node") for osc in osc_messages(node)}
    patch = maxpat(g)["patcher"]
    max_paths = {b["box"]["text"].split()[1] for b in patch["boxes"]
                 if b["box"].get("text", "").startswith("prepend /")}
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with OscServer(params, port=0, log_interval=60.0) as srv:
        for p in sorted(tosc_paths | max_paths):
            b = OscMessageBuilder(address=p)
            b.add_arg(9101 if p.endswith("subscribe") else 1.0)
            sock.sendto(b.build().dgram, ("127.0.0.1", srv.port))
        n = len(tosc_paths | max_paths)
        end = time.monotonic() + 5
        while srv.stats["messages"] < n and time.monotonic() < end:
            time.sleep(0.005)
        assert srv.stats["messages"] == n
        assert srv.stats["unknown"] == 0 and srv.stats["rejected"] == 0
    sock.close()
    assert params.get("eq", "alpha") == 2.0 and params.get("show", "scene") == 3.0


def test_write_controllers_and_bad_names(tmp_path):
    out = write_controllers(groups(), touchosc=tmp_path / "a/x.tosc", max=tmp_path / "b/x.maxpat")
    assert [p.name for p in out] == ["x.tosc", "x.maxpat"] and all(p.exists() for p in out)
    with pytest.raises(UnstableError, match="reserved"):
        write_touchosc(tmp_path / "y.tosc", {"still": []})
