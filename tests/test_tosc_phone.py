"""The phone's TouchOSC layout: a 390x844 portrait document in pages, every control inside its page,
full-width horizontal faders with names above, 48 pt or more to touch, scenes as big buttons."""

import xml.etree.ElementTree as ET
import zlib

import pytest

from unstable.control.tosc_phone import HEIGHT, TABBAR, WIDTH, write_touchosc_phone
from unstable.schema import ParamSpec, address, show_specs, with_common

TOUCH = 48


def frame(node):
    for p in node.find("properties"):
        if p.find("key").text == "frame":
            return {k: int(p.find(f"value/{k}").text) for k in "xywh"}
    raise AssertionError("no frame")


def prop(node, key):
    for p in node.find("properties"):
        if p.find("key").text == key:
            return p.find("value").text
    return None


def kids(node):
    c = node.find("children")
    return [] if c is None else list(c)


def sends(node):
    return [(o.find("path/partial/value").text, [(a.find("conversion").text, a.find("value").text)
                                                  for a in o.findall("arguments/partial")])
            for o in node.findall("messages/osc")]


def load(path):
    root = ET.fromstring(zlib.decompress(path.read_bytes()))
    assert root.tag == "lexml" and root.get("version") == "3"
    return root.find("node")


def phone_doc(tmp_path, groups, scenes):
    doc = load(write_touchosc_phone(tmp_path / "phone.tosc", groups, host="10.0.0.5", port=9000,
                                    feedback_port=9001, scenes=scenes, actions={"eq": ["directions/refresh"]}))
    pager, = kids(doc)
    assert pager.get("type") == "PAGER" and prop(pager, "tabbarSize") == str(TABBAR)
    return doc, {prop(p, "tabLabel"): p for p in kids(pager)}


def groups(n_eq=4):
    return {"eq": with_common([ParamSpec(f"p{i}", 0.0, 1.0, 0.5) for i in range(n_eq)]),
            "bad": with_common([ParamSpec("alpha", -2.0, 2.0, 1.0)]), "show": show_specs(scenes=3)}


def test_the_phone_page_is_390_by_844_and_everything_fits_a_finger(tmp_path):
    g = groups()
    doc, pages = phone_doc(tmp_path, g, ["opening", "storm", "close"])
    assert frame(doc) == {"x": 0, "y": 0, "w": WIDTH, "h": HEIGHT} == {"x": 0, "y": 0, "w": 390, "h": 844}
    assert list(pages) == ["show", "eq 1", "eq 2", "bad"]   # eq: 4 + 5 common parameters, 7 to a page
    controls = {}
    for label, page in pages.items():
        assert frame(page) == {"x": 0, "y": 0, "w": WIDTH, "h": HEIGHT - TABBAR}
        for node in kids(page):
            f = frame(node)
            # Inside its page, nothing off either edge or under the bottom.
            assert f["x"] >= 0 and f["y"] >= 0 and f["x"] + f["w"] <= WIDTH and f["y"] + f["h"] <= HEIGHT - TABBAR, \
                (label, prop(node, "name"), f)
            if node.get("type") in ("FADER", "BUTTON"):
                assert f["h"] >= TOUCH and f["w"] >= TOUCH, (label, prop(node, "name"), f)
                for path, args in sends(node):
                    controls.setdefault(path, []).append((node, args, label))
    # Every parameter but the scene: one control, on its piece's page, a fader full width and horizontal,
    # its name in words in a label just above it.
    names = {prop(n, "name"): n for p in pages.values() for n in kids(p)}
    for piece, specs in g.items():
        for spec in specs:
            if (piece, spec.name) == ("show", "scene"):
                continue
            (node, args, label), = controls.pop(address(piece, spec.name))
            assert label.split()[0] == piece and args == [("FLOAT", "x")]
            f = frame(node)
            if spec.kind == "toggle":
                assert node.get("type") == "BUTTON" and prop(node, "buttonType") == "1"
            else:
                assert node.get("type") == "FADER" and prop(node, "orientation") == "1"
                assert f["w"] >= WIDTH - 2 * 16
            above = names[f"{piece}/{spec.name}/label"]
            assert frame(above)["y"] + frame(above)["h"] <= f["y"]
            assert above.find("values/value/default").text.startswith(spec.name.replace("_", " "))
    # Scenes: one big button each on the show page, sending its index.
    scenes = controls.pop("/unstable/scene")
    assert [(args, label) for _, args, label in scenes] == [([("INTEGER", str(i))], "show") for i in range(3)]
    assert all(frame(n)["h"] >= 64 and frame(n)["w"] >= WIDTH // 2 - 24 for n, _, _ in scenes)
    assert [names[f"scene/{i}/label"].find("values/value/default").text for i in range(3)] == \
        ["opening", "storm", "close"]
    # The piece's action on its last page; still, sync and subscribe on the show page.
    (_, _, label), = controls.pop("/unstable/eq/directions/refresh")
    assert label == "eq 2"
    assert sorted(controls) == ["/unstable/still", "/unstable/subscribe", "/unstable/sync"]
    assert controls["/unstable/subscribe"][0][1] == [("INTEGER", "9001")]
    assert "10.0.0.5:9000" in names["connection"].find("values/value/default").text


@pytest.mark.parametrize("n_scenes", [1, 6, 7, 40])
def test_many_scenes_and_parameters_go_to_more_pages(tmp_path, n_scenes):
    g = groups(n_eq=30) | {"show": show_specs(scenes=n_scenes)}
    doc, pages = phone_doc(tmp_path, g, [f"s{i}" for i in range(n_scenes)])
    per = sum(1 for n in kids(pages["show"]) if n.get("type") == "BUTTON" and prop(n, "name").startswith("scene/"))
    assert per == min(n_scenes, 6)
    buttons = [prop(n, "name") for p in pages.values() for n in kids(p)
               if n.get("type") == "BUTTON" and prop(n, "name").startswith("scene/")]
    assert buttons == [f"scene/{i}" for i in range(n_scenes)]
    assert sum(1 for lab in pages if lab.startswith("eq")) == -(-35 // 7)
    for page in pages.values():
        for node in kids(page):
            f = frame(node)
            assert f["y"] + f["h"] <= HEIGHT - TABBAR and f["x"] + f["w"] <= WIDTH
