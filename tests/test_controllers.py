"""Controller layouts from the schema: every control is wired to an address the server serves."""

import json
import socket
import time
import xml.etree.ElementTree as ET
import zlib

import pytest
from pythonosc.osc_message_builder import OscMessageBuilder

from unstable.control.controllers import maxpat, write_controllers, write_maxpat, write_touchosc
from unstable.control.tosc_phone import write_touchosc_phone
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


SCENES = ["opening", "storm", "", "close"]   # the third unnamed: its button says "scene 2"


def every_param(g):
    """Every parameter that gets a fader or toggle: all but the show's scene (a button per scene)."""
    return [(piece, spec) for piece, specs in g.items() for spec in specs if (piece, spec.name) != ("show", "scene")]


def sent(node, osc):
    """The OSC message a press of this control sends, as a python-osc client would build it."""
    args = [int(v) if conv == "INTEGER" else 1.0 for kind, conv, v in partials(osc, "arguments")]
    return partials(osc, "path")[0][2], args


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
    path = write_touchosc(tmp_path / "show.tosc", g, host="192.168.1.10", port=9000, feedback_port=9101, scenes=SCENES)
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

    # Scenes: a button each, in order, sending its index on the press (not a 0..1 fader).
    scenes = by_path.pop("/unstable/scene")
    assert [prop(n, "name").text for n, _ in scenes] == [f"scene/{i}" for i in range(4)]
    for i, (node, osc) in enumerate(scenes):
        assert node.get("type") == "BUTTON" and prop(node, "buttonType").text == "0"
        assert partials(osc, "arguments") == [("CONSTANT", "INTEGER", str(i))]
        assert osc.find("./triggers/trigger/condition").text == "RISE" and osc.find("receive").text == "0"
    labels = {prop(n, "name").text: n.find("values/value/default").text
              for n in root.iter("node") if n.get("type") == "LABEL"}
    assert [labels[f"scene/{i}/label"] for i in range(4)] == ["opening", "storm", "scene 2", "close"]
    assert labels["eq/lr/label"] == "lr" and labels["eq/walk_speed/label"] == "walk speed (x)"
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
    path = write_maxpat(tmp_path / "show.maxpat", g, host="127.0.0.1", port=9000, feedback_port=9101, scenes=SCENES)
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

    # A clickable message per scene, straight to udpsend; no scene slider.
    for i in range(4):
        m, = by_text[f"/unstable/scene {i}"]
        assert boxes[m]["maxclass"] == "message" and m in sources[send]
    assert "prepend /unstable/show/scene" not in by_text
    assert {"opening", "storm", "scene 2", "close"} <= set(by_text)
    subscribe, = by_text["/unstable/subscribe 9101"]
    assert subscribe in sources[send] and boxes[sources[subscribe][0]]["text"] == "loadbang"


def test_every_generated_address_is_served(tmp_path):
    """Send what the layouts send to a real server: nothing is unknown, everything lands."""
    g = groups()
    params = ParameterStore(g)
    messages = set()
    for doc in (write_touchosc(tmp_path / "s.tosc", g, feedback_port=9101),
                write_touchosc_phone(tmp_path / "p.tosc", g, feedback_port=9101)):
        messages |= {(p, tuple(a)) for node in load_tosc(doc).iter("node") for p, a in
                     (sent(node, osc) for osc in osc_messages(node))}
    patch = maxpat(g)["patcher"]
    messages |= {(b["box"]["text"].split()[1], (1.0,)) for b in patch["boxes"]
                 if b["box"].get("text", "").startswith("prepend /")}
    messages |= {(b["box"]["text"].split()[0], tuple(int(w) for w in b["box"]["text"].split()[1:]))
                 for b in patch["boxes"] if b["box"]["maxclass"] == "message"}
    assert ("/unstable/scene", (2,)) in messages and ("/unstable/subscribe", (9101,)) in messages
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    with OscServer(params, port=0, log_interval=60.0) as srv:
        # The scenes last, in order: the show ends on the last scene's button.
        for p, args in sorted(messages, key=lambda m: (m[0] == "/unstable/scene", m)):
            b = OscMessageBuilder(address=p)
            for a in args:
                b.add_arg(a)
            sock.sendto(b.build().dgram, ("127.0.0.1", srv.port))
        end = time.monotonic() + 5
        while srv.stats["messages"] < len(messages) and time.monotonic() < end:
            time.sleep(0.005)
        assert srv.stats["messages"] == len(messages)
        assert srv.stats["unknown"] == 0 and srv.stats["rejected"] == 0
    sock.close()
    assert params.get("eq", "alpha") == 2.0 and params.get("show", "scene") == 3.0


def test_write_controllers_and_bad_names(tmp_path):
    out = write_controllers(groups(), touchosc=tmp_path / "a/x.tosc", max=tmp_path / "b/x.maxpat",
                            phone=tmp_path / "a/x-phone.tosc")
    assert [p.name for p in out] == ["x.tosc", "x-phone.tosc", "x.maxpat"] and all(p.exists() for p in out)
    with pytest.raises(UnstableError, match="reserved"):
        write_touchosc(tmp_path / "y.tosc", {"still": []})


# -- the `unstable controllers` command ---------------------------------------------------------

def test_the_command_writes_the_host_and_ports_it_is_given(tmp_path, monkeypatch):
    """`--host/--port/--feedback-port` reach all three files: the port `unstable live --osc-port`
    was given, not the show file's."""
    import sys
    from pathlib import Path

    from click.testing import CliRunner
    sys.path.insert(0, str(Path(__file__).parent))
    from test_show import SHOW, write_show

    from unstable.cli import main
    show = write_show(tmp_path, SHOW.replace("[[scenes]]\nduration = 5", '[[scenes]]\nname = "calm"\nduration = 5'))
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["controllers", str(show), "--touchosc", str(out / "s.tosc"),
                                    "--max", str(out / "s.maxpat"), "--host", "192.168.4.20", "--port", "9555",
                                    "--feedback-port", "9666"])
    assert res.exit_code == 0, res.output
    assert [ln.split(": ")[1] for ln in res.output.splitlines()] == [
        str(out / "s.tosc"), str(out / "s-phone.tosc"), str(out / "s.maxpat")]
    for name in ("s.tosc", "s-phone.tosc"):
        root = load_tosc(out / name)
        texts = [n.find("values/value/default").text for n in root.iter("node") if n.get("type") == "LABEL"]
        assert any("192.168.4.20:9555" in t and "9666" in t for t in texts), name
        assert "sendOSC('/unstable/subscribe', 9666)" in prop(root.find("node"), "script").text
        scenes = [n for n in root.iter("node") for o in osc_messages(n) if partials(o, "path")[0][2] == "/unstable/scene"]
        assert len(scenes) == 2
        assert any(t == "calm" for t in texts) and any(t == "scene 1" for t in texts)
    text = (out / "s.maxpat").read_text()
    assert "udpsend 192.168.4.20 9555" in text and "udpreceive 9666" in text
    # Without them: the show's own settings (its [osc] port, controllers.host and feedback_port).
    res = CliRunner().invoke(main, ["controllers", str(show), "--max", str(out / "d.maxpat")])
    assert res.exit_code == 0 and "udpsend 127.0.0.1 9000" in (out / "d.maxpat").read_text()


def test_the_command_refuses_ports_a_controller_cannot_use(tmp_path):
    import sys
    from pathlib import Path

    from click.testing import CliRunner
    sys.path.insert(0, str(Path(__file__).parent))
    from test_show import SHOW, write_show

    from unstable.cli import main
    show = write_show(tmp_path, SHOW + "[osc]\nport = 0\n")
    res = CliRunner().invoke(main, ["controllers", str(show), "--max", str(tmp_path / "x.maxpat")])
    assert res.exit_code != 0 and "port is 0" in res.output and "--port" in res.output
    assert "Traceback" not in res.output and not (tmp_path / "x.maxpat").exists()
    res = CliRunner().invoke(main, ["controllers", str(show), "--max", str(tmp_path / "x.maxpat"), "--port", "70000"])
    assert res.exit_code == 2 and "--port" in res.output
