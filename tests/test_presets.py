"""Presets: save the live state under a name (OSC on loopback, files in the run folder), recall it,
morph to it along a curve in each parameter's own units; bad names refused in one line while the
show plays on. Headless engine with the two tiny pieces of test_show."""

import json
import logging
import math

import pytest
from helpers import Client, wait_for
from test_show import SHOW, write_show
from tqdm import tqdm

from unstable.control.presets import PresetBank, PresetError, check_preset_name, interpolate
from unstable.control.store import ParameterStore
from unstable.frame.automation import load_automation
from unstable.live import Engine
from unstable.schema import SHOW as SHOW_GROUP, ParamSpec, common_specs, show_specs
from unstable.show import load_show

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def silent(desc, total=None, **kw):
    return tqdm(total=total, disable=True)


def make_engine(tmp_path, **kw) -> Engine:
    show = load_show(write_show(tmp_path, SHOW))
    return Engine(show, headless=True, osc_port=0, web_port=0, run_dir=tmp_path / "run", echo=lambda line: None,
                  progress=silent, train=False, **kw)


def store() -> ParameterStore:
    return ParameterStore({"eq": common_specs() + [ParamSpec("lr", 1e-4, 1e-1, 1e-3, log=True, smoothing=0.5)],
                           SHOW_GROUP: show_specs(2)})


# -- names ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", ["../x", "", "   ", "a/b", ".hidden", "x" * 65, "a\nb", "..", 7])
def test_bad_preset_names_are_refused_with_one_line(bad, tmp_path):
    with pytest.raises(PresetError) as e:
        check_preset_name(bad)
    assert "\n" not in str(e.value)
    bank = PresetBank(store(), tmp_path / "presets")
    with pytest.raises(PresetError):
        bank.save(bad)
    assert not any(tmp_path.rglob("*.json"))  # nothing written anywhere, inside the folder or above it


# -- per-parameter units ----------------------------------------------------------------------------

def test_each_parameter_morphs_in_its_own_units():
    hue = ParamSpec("hue", -180.0, 180.0, 0.0, unit="deg")
    assert interpolate(hue, 170.0, -170.0, 0.5) in (180.0, -180.0)  # the short way, through 180
    assert interpolate(hue, 170.0, -170.0, 0.25) == pytest.approx(175.0)
    assert interpolate(hue, 170.0, -170.0, 0.75) == pytest.approx(-175.0)
    lr = ParamSpec("lr", 1e-4, 1e-1, 1e-3, log=True)
    assert interpolate(lr, 1e-4, 1e-2, 0.5) == pytest.approx(1e-3)  # geometric, not 5e-3
    on = ParamSpec("training", 0, 1, 1, kind="toggle")
    assert interpolate(on, 1.0, 0.0, 0.49) == 1.0 and interpolate(on, 1.0, 0.0, 0.5) == 0.0
    speed = ParamSpec("walk_speed", 0.0, 4.0, 1.0)
    assert interpolate(speed, 1.0, 3.0, 0.5) == 2.0


def test_a_morph_is_written_on_the_frame_clock_and_ends_on_the_preset(tmp_path):
    s = store()
    bank = PresetBank(s, tmp_path / "presets")
    s.update({"eq": {"hue": 170.0, "lr": 1e-4, "training": 1, "walk_speed": 1.0}})
    bank.save("a")
    s.update({"eq": {"hue": -170.0, "lr": 1e-2, "training": 0, "walk_speed": 3.0}})
    bank.save("b")
    bank.recall("a")
    assert bank.morph("b", 2.0, "s", "linear") == 2.0
    targets = {}
    s.snapshot(10.0, targets)                 # the morph starts at the next snapshot: t0 = 10
    assert targets["eq"]["walk_speed"] == 1.0
    s.snapshot(11.0, targets)                 # the midpoint
    assert targets["eq"]["walk_speed"] == 2.0
    assert targets["eq"]["lr"] == pytest.approx(1e-3)
    assert abs(targets["eq"]["hue"]) == 180.0
    assert targets["eq"]["training"] == 0.0
    s.snapshot(12.5, targets)
    assert bank.morphing is None and bank.morphs == 1
    assert targets["eq"] == {**targets["eq"], "hue": -170.0, "lr": pytest.approx(1e-2), "walk_speed": 3.0}


def test_beats_use_the_shows_tempo_or_120_bpm(tmp_path):
    bank = PresetBank(store(), tmp_path / "presets")
    assert bank.seconds(8, "beats") == pytest.approx(4.0)
    assert bank.seconds(2, "bars") == pytest.approx(4.0)
    with pytest.raises(PresetError):
        bank.seconds(math.nan, "s")
    with pytest.raises(PresetError):
        bank.seconds(1, "weeks")
    timed = ParameterStore({SHOW_GROUP: show_specs(1) + [ParamSpec("tempo", 20.0, 300.0, 133.0, unit="bpm")]})
    assert PresetBank(timed, tmp_path / "p2").seconds(8, "beats") == pytest.approx(8 * 60 / 133)


# -- the live show ----------------------------------------------------------------------------------

def send(eng, client, address, *args) -> None:
    """Send one OSC message and wait until the show has taken it (it acts in the next frame)."""
    before = eng.osc.stats().get("applied", 0) + eng.osc.stats().get("rejected", 0)
    client.send(address, *args)
    assert wait_for(lambda: eng.osc.stats().get("applied", 0) + eng.osc.stats().get("rejected", 0) > before)


def test_osc_save_recall_and_morph_and_the_midpoint_frame_has_the_midpoint_values(tmp_path):
    auto = tmp_path / "show.automation.jsonl"
    eng = make_engine(tmp_path, automation=auto)
    with eng:
        client = Client(eng.osc.port)
        eng.params.update({"eq": {"walk_speed": 0.5, "hue": 170.0, "training": 1}})
        eng.frame(number=0)
        send(eng, client, "/unstable/preset/save", "calm")
        eng.frame(number=1)
        assert wait_for(lambda: (tmp_path / "run" / "presets" / "calm.json").exists())
        eng.params.update({"eq": {"walk_speed": 2.5, "hue": -170.0, "training": 0}})
        send(eng, client, "/unstable/preset/save", "wild")
        eng.frame(number=2)
        assert wait_for(lambda: (tmp_path / "run" / "presets" / "wild.json").exists())
        send(eng, client, "/unstable/preset/recall", "calm")
        eng.frame(number=3)  # acted on after this frame's snapshot: the targets are the preset's
        assert eng.params.get("eq", "walk_speed") == 0.5 and eng.params.get("eq", "training") == 1
        send(eng, client, "/unstable/preset/morph", "wild", 2.0, "s", "linear")  # 20 frames
        eng.frame(number=4)      # the event is acted on after this frame's snapshot
        seen = {}
        eng.frame_hooks.append(lambda e: seen.__setitem__(e.last_frame, dict(e.snapshot["eq"])))
        for n in range(5, 27):
            eng.frame(number=n)  # the morph starts at frame 5's snapshot: midpoint frame 15, end 25
        # What the frames saw: a toggle (no smoothing) switches at the midpoint frame exactly; a
        # smoothed parameter follows the morph's targets as it follows any controller.
        assert seen[14]["training"] == 1.0 and seen[15]["training"] == 0.0
        assert 0.5 < seen[15]["walk_speed"] < 1.5 < seen[20]["walk_speed"]
        assert eng.params.get("eq", "walk_speed") == 2.5 and eng.presets.morphing is None
        client.close()
    # The automation recorded each frame's targets: frame 15's are the midpoint values exactly.
    a = load_automation(auto)
    values = {}
    for frame, change in sorted(a.changes.items()):
        for g, vals in change.get("set", {}).items():
            for k, v in vals.items():
                values.setdefault(frame, {})[f"{g}/{k}"] = v
    state = {}
    at = {}
    for f in range(0, 27):
        state.update(values.get(f, {}))
        at[f] = dict(state)
    assert at[15]["eq/walk_speed"] == pytest.approx(1.5)
    assert abs(at[15]["eq/hue"]) == pytest.approx(180.0)
    assert at[14]["eq/training"] == 1 and at[15]["eq/training"] == 0  # the toggle switches at the midpoint
    assert at[6]["eq/walk_speed"] == pytest.approx(0.6) and at[25]["eq/walk_speed"] == pytest.approx(2.5)
    assert at[10]["eq/walk_speed"] == pytest.approx(1.0)


def test_presets_survive_a_restart_and_bad_names_leave_the_show_playing(tmp_path, caplog):
    eng = make_engine(tmp_path)
    with eng:
        client = Client(eng.osc.port)
        eng.params.update({"eq": {"saturation": 1.5}})
        send(eng, client, "/unstable/preset/save", "keep")
        eng.frame(number=0)
        assert wait_for(lambda: (tmp_path / "run" / "presets" / "keep.json").exists())
        client.close()
    saved = json.loads((tmp_path / "run" / "presets" / "keep.json").read_text())
    assert saved["values"]["eq"]["saturation"] == 1.5 and "record" not in saved["values"]["show"]

    eng = make_engine(tmp_path, reset_params=True)  # the values from the show, the presets from the folder
    with eng, caplog.at_level(logging.WARNING):
        assert eng.presets.names() == ["keep"]
        client = Client(eng.osc.port)
        eng.frame(number=0)
        assert eng.params.get("eq", "saturation") == 1.0
        for bad in ("../escape", "", "x" * 80):
            send(eng, client, "/unstable/preset/save", bad)
        send(eng, client, "/unstable/preset/recall", "nothing-here")
        send(eng, client, "/unstable/preset/morph", "keep", float("nan"))
        eng.frame(number=1)
        eng.frame(number=2)
        send(eng, client, "/unstable/preset/recall", "keep")
        eng.frame(number=3)
        assert eng.params.get("eq", "saturation") == 1.5
        assert eng.frames == 4
        client.close()
    lines = [r.getMessage() for r in caplog.records]
    assert any("../escape" in m and "rejected" in m for m in lines)
    assert any("nothing-here" in m and "refused" in m for m in lines)
    assert not (tmp_path / "run" / "escape.json").exists() and not (tmp_path / "escape.json").exists()
    assert sorted(p.name for p in (tmp_path / "run" / "presets").iterdir()) == ["keep.json"]
