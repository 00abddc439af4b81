"""The live parameter store: mapping, clamping, smoothing on the frame clock, events, threads."""

import math
import threading

import pytest

from unstable.control.store import Event, ParameterStore
from unstable.errors import UnstableError
from unstable.schema import ParamSpec, address, common_specs, show_specs, with_common


def make():
    return ParameterStore({
        "eq": [ParamSpec("alpha", 0.0, 2.0, 1.0, smoothing=0.5),
               ParamSpec("lr", 1e-4, 1e-2, 1e-3, log=True, smoothing=1.0),
               ParamSpec("steps", 0, 10, 5, kind="int", smoothing=1.0)],
        "bad": with_common([ParamSpec("beta", -1.0, 1.0, 0.0)]),
        "show": show_specs(scenes=3),
    })


def test_schema_defaults_and_addresses():
    p = make()
    snap = p.snapshot(0.0)
    assert list(snap) == ["eq", "bad", "show"]
    assert snap["eq"] == {"alpha": 1.0, "lr": 1e-3, "steps": 5.0}
    assert snap["show"] == {"scene": 0.0, "master_fade": 1.0, "record": 0.0}
    assert [s.name for s in p.groups["bad"]] == ["beta"] + [s.name for s in common_specs()]
    assert address("eq", "alpha") == "/unstable/eq/alpha"
    assert address("eq", "alpha", raw=True) == "/unstable/eq/alpha/raw"


def test_a_system_spec_wins_over_the_common_one():
    own = ParamSpec("hue", 0.0, 1.0, 0.5)
    specs = with_common([own])
    assert [s for s in specs if s.name == "hue"] == [own]


def test_set_clamps_and_set_unit_maps_the_range():
    p = make()
    assert p.set("eq", "alpha", 5.0) == 2.0
    assert p.set("eq", "alpha", -1.0) == 0.0
    assert p.set_unit("eq", "alpha", 0.25) == 0.5
    assert p.set_unit("eq", "lr", 0.5) == pytest.approx(1e-3)  # log: the geometric middle
    assert p.get_unit("eq", "lr") == pytest.approx(0.5)
    assert p.set_unit("eq", "steps", 0.33) == 3.0            # ints round
    assert p.set_unit("show", "scene", 1.0) == 2.0
    with pytest.raises(ValueError, match="finite"):
        p.set("eq", "alpha", math.nan)
    with pytest.raises(KeyError, match="eq/nothing"):
        p.set("eq", "nothing", 1.0)


@pytest.mark.parametrize("spec, pairs", [
    (ParamSpec("hue", -180.0, 180.0, 0.0), [(0.0, -180.0), (0.25, -90.0), (0.5, 0.0), (1.0, 180.0)]),
    (ParamSpec("beta", -1.0, 1.0, 0.0), [(0.0, -1.0), (0.75, 0.5), (1.0, 1.0)]),
    (ParamSpec("gain", 2.0, 6.0, 3.0), [(0.0, 2.0), (0.25, 3.0), (1.0, 6.0)]),
    (ParamSpec("steps", 3, 7, 5, kind="int"), [(0.0, 3.0), (0.5, 5.0), (1.0, 7.0)]),
    (ParamSpec("lr", 1e-4, 1e-2, 1e-3, log=True), [(0.0, 1e-4), (0.5, 1e-3), (1.0, 1e-2)]),
])
def test_unit_mapping_on_ranges_that_do_not_start_at_zero(spec, pairs):
    # Fader position u <-> value lo + u (hi - lo) (log: in decades), both ways, ends included.
    for u, value in pairs:
        assert spec.from_unit(u) == pytest.approx(value)
        assert spec.to_unit(value) == pytest.approx(u)
    p = ParameterStore({"x": [spec]})
    for u, value in pairs:
        assert p.set_unit("x", spec.name, u) == pytest.approx(value)
        assert p.get("x", spec.name) == pytest.approx(value)
        assert p.get_unit("x", spec.name) == pytest.approx(u)


def test_smoothing_follows_the_frame_clock_not_the_wall_clock():
    p = make()
    p.snapshot(10.0)  # the first frame shows the targets as they are
    p.set("eq", "alpha", 2.0)
    p.set("eq", "steps", 9)
    p.set("bad", "beta", 0.5)  # no smoothing: jumps
    s = p.snapshot(10.0)      # no frame time has passed: nothing moved
    assert s["eq"]["alpha"] == 1.0 and s["eq"]["steps"] == 9.0 and s["bad"]["beta"] == 0.5
    s = p.snapshot(10.5)      # one time constant: 63% of the way
    assert s["eq"]["alpha"] == pytest.approx(1.0 + (1 - math.exp(-1)))
    assert p.snapshot(10.5) == s  # the same frame time gives the same frame
    s = p.snapshot(9.0)       # a clock that went back (a restarted render) advances nothing
    assert s["eq"]["alpha"] == pytest.approx(1.0 + (1 - math.exp(-1)))
    s = p.snapshot(9.0 + 60.0)
    assert s["eq"]["alpha"] == 2.0  # lands exactly, no endless drift


def test_log_parameters_glide_in_log_space():
    p = make()
    p.snapshot(0.0)
    p.set("eq", "lr", 1e-2)
    s = p.snapshot(math.log(2.0))  # half way after tau * ln 2 ...
    assert s["eq"]["lr"] == pytest.approx(math.sqrt(1e-3 * 1e-2))  # ... in decades, not linearly


def test_settle_and_reset():
    p = make()
    p.snapshot(0.0)
    p.set("eq", "alpha", 2.0)
    p.settle()
    assert p.snapshot(0.0)["eq"]["alpha"] == 2.0
    assert p.reset() == 1
    assert p.state()["eq"]["alpha"] == 1.0


def test_update_applies_a_preset_and_skips_what_it_cannot(caplog):
    p = make()
    calls = []
    p.add_listener(lambda keys, origin: calls.append((sorted(keys), origin)))
    n = p.update({"eq": {"alpha": 0.5, "lr": 1e-3, "gone": 3.0, "steps": math.inf},
                  "nobody": {"x": 1.0}, "bad": {"beta": "0.25"}})
    assert n == 2  # lr was already 1e-3
    assert calls == [([("bad", "beta"), ("eq", "alpha")], None)]
    assert p.get("eq", "steps") == 5.0
    assert "eq/gone" in caplog.text and "nobody/x" in caplog.text and "eq/steps" in caplog.text


def test_listeners_hear_changes_with_their_origin_and_cannot_break_a_write():
    p = make()
    heard = []
    p.add_listener(lambda keys, origin: 1 / 0)
    p.add_listener(lambda keys, origin: heard.append((keys, origin)))
    assert p.set("eq", "alpha", 0.5, origin=("10.0.0.2", 9001)) == 0.5
    p.set("eq", "alpha", 0.5)  # no change, nothing to hear
    assert heard == [([("eq", "alpha")], ("10.0.0.2", 9001))]


def test_controller_actions_become_events_engine_changes_do_not():
    p = make()
    p.set("show", "scene", 2, origin=("127.0.0.1", 5000))
    p.set("show", "scene", 1)  # the engine moving to a scene: no event back to itself
    p.set("show", "record", 1, origin=("127.0.0.1", 5000))
    p.set("show", "master_fade", 0.0, origin=("127.0.0.1", 5000))  # a plain parameter
    p.post_event("still", origin=("127.0.0.1", 5000))
    assert p.drain_events() == [Event("scene", 2.0, ("127.0.0.1", 5000)),
                                Event("record", 1.0, ("127.0.0.1", 5000)),
                                Event("still", None, ("127.0.0.1", 5000))]
    assert p.drain_events() == []


def test_the_event_queue_is_bounded():
    p = ParameterStore({"show": show_specs(2)}, max_events=4)
    for i in range(10):
        p.post_event("scene", float(i))
    assert [e.value for e in p.drain_events()] == [6.0, 7.0, 8.0, 9.0]


def test_records_and_stills_coalesce_and_cannot_push_scenes_out():
    p = ParameterStore({"show": show_specs(4)}, max_events=4)
    p.set("show", "scene", 2, origin=("127.0.0.1", 5000))
    for i in range(1000):  # a flood of stills and record toggles
        p.post_event("still", origin=("127.0.0.1", 5000))
        p.set("show", "record", i % 2, origin=("127.0.0.1", 5000))
    assert [(e.kind, e.value) for e in p.drain_events()] == [("scene", 2.0), ("still", None), ("record", 1.0)]


@pytest.mark.parametrize("groups, match", [
    ({"e q": []}, "cannot be used in an OSC address"),
    ({"sync": []}, "reserved"),
    ({"eq": [ParamSpec("raw", 0, 1, 0)]}, "not 'raw'"),
    ({"eq": [ParamSpec("a/b", 0, 1, 0)]}, "cannot be used"),
    ({"eq": [ParamSpec("a", 0, 1, 0), ParamSpec("a", 0, 2, 0)]}, "defined twice"),
    ([("eq", []), ("eq", [])], "appears twice"),
])
def test_names_must_be_address_safe(groups, match):
    with pytest.raises(UnstableError, match=match):
        ParameterStore(groups)


def test_show_specs_need_a_scene():
    assert show_specs(1)[0].hi == 0
    with pytest.raises(ValueError):
        show_specs(0)


def test_concurrent_writers_and_a_frame_reader():
    p = make()
    n = 2000
    errors = []

    def writer(name, lo, hi):
        try:
            for i in range(n):
                p.set("bad" if name == "beta" else "eq", name, lo + (hi - lo) * i / (n - 1),
                      origin=("127.0.0.1", 1))
        except Exception as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=("alpha", 0.0, 2.0)),
               threading.Thread(target=writer, args=("beta", -1.0, 1.0))]
    for t in threads:
        t.start()
    frames = 0
    while any(t.is_alive() for t in threads):
        s = p.snapshot(frames / 60)
        assert 0.0 <= s["eq"]["alpha"] <= 2.0 and -1.0 <= s["bad"]["beta"] <= 1.0
        frames += 1
    for t in threads:
        t.join()
    assert not errors
    p.settle()
    s = p.snapshot(frames / 60)
    assert s["eq"]["alpha"] == 2.0 and s["bad"]["beta"] == 1.0
