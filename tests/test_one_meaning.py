"""One meaning per name (issue 24): the names that meant several things now mean one, through the
real objects that carry them: a show's file, the store's groups and the events that name one, the
resumable state of a show's timeline against one frame's FrameState, and a part of a render as an
"A:B" text (`frame_range`) against the (A, B) it becomes (`span`). Real files, real GL, real ffmpeg."""

from __future__ import annotations

from pathlib import Path

import pytest

from test_render import PIECE, job_file
from unstable.control.oscquery import AddressSpace
from unstable.control.store import ParameterStore
from unstable.display.layout import Colour, Layout
from unstable.errors import ConfigError
from unstable.frame.timeline import FrameState, ShowTimeline
from unstable.probe import probe
from unstable.render import render_job
from unstable.render.renderer import job_renderer
from unstable.renderjob import load_job
from unstable.schema import ParamSpec, show_specs
from unstable.show import SceneSettings, load_show
from unstable.trainer import train

ROOT = Path(__file__).resolve().parent.parent
QUIET = dict(show_progress=False, echo=lambda s: None)


def test_a_show_knows_its_file_as_show_file_and_its_errors_name_it(tmp_path):
    demo = ROOT / "shows" / "demo.toml"
    show = load_show(demo)
    assert show.show_file == str(demo) and not hasattr(show, "source")
    assert show.resolve("demo.states/eq.pt") == demo.parent / "demo.states" / "eq.pt"  # beside the file
    # A check that needs the systems names the file it read through the same field.
    bad = tmp_path / "bad.toml"
    bad.write_text(demo.read_text().replace('"eq/g0", "eq/g1"', '"eq/g0", "eq/g9"')
                   .replace("../pieces/", f"{(ROOT / 'pieces').as_posix()}/")
                   .replace('"demo.states/', f'"{(demo.parent / "demo.states").as_posix()}/'))
    loaded = load_show(bad)
    with pytest.raises(ConfigError) as e:
        loaded.check_systems({"eq": {"g0": 8, "g1": 8}, "bad": {"decoder": 16}}, {"eq": [], "bad": []})
    assert str(bad) in str(e.value) and "eq/g9" in str(e.value)


def _store() -> ParameterStore:
    return ParameterStore({"eq": [ParamSpec("alpha", 0.0, 2.0, 1.0)], "show": show_specs(scenes=2)})


def test_the_store_is_keyed_by_group_and_its_events_name_their_group():
    store = _store()
    assert ("show", "master_fade") in store.keys() and ("eq", "alpha") in store.keys()
    store.set("show", "master_fade", 0.25)
    store.set("eq", "alpha", 1.5)
    assert store.targets()["show"]["master_fade"] == 0.25 and store.targets()["eq"] == {"alpha": 1.5}
    store.post_event("directions/refresh", None, ("127.0.0.1", 9), group="eq")
    store.post_event("still", None, None)
    events = store.drain_events()
    assert [(e.kind, e.group) for e in events] == [("directions/refresh", "eq"), ("still", None)]
    # The OSCQuery tree's methods carry the same key: a show parameter's group is "show".
    space = AddressSpace(store, pieces=["eq"])
    assert space.methods["/unstable/show/master_fade"].group == "show"
    assert space.methods["/unstable/eq/alpha"].group == "eq"


def _timeline(store: ParameterStore) -> ShowTimeline:
    scenes = [SceneSettings(name=f"s{i}", layout=Layout(panels=["eq/g0"]), colour=Colour()) for i in range(2)]
    return ShowTimeline(scenes, store, ["eq"], 10)


def test_a_timelines_resume_state_is_not_a_frame_state():
    store = _store()
    tl = _timeline(store)
    first = tl.advance(0)
    assert isinstance(first, FrameState)
    store.set("eq", "alpha", 2.0)
    tl.advance(5)
    saved = tl.resume_state()  # plain numbers, what an automation header keeps
    assert isinstance(saved, dict) and not isinstance(saved, FrameState)
    assert saved["store"]["target"]["eq/alpha"] == 2.0
    again = _timeline(_store())
    again.load_resume_state(saved)
    assert again.store.targets()["eq"]["alpha"] == 2.0


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("one-meaning-run")
    (root / "tiny.toml").write_text(PIECE)
    return train(root / "tiny.toml", out=root / "run", **QUIET)


def test_a_part_of_a_render_is_a_frame_range_text_and_a_span(tmp_path, run, gl_ctx):
    job = job_file(tmp_path, run, frames="8")
    [part] = render_job(job, frame_range="2:6", ctx=gl_ctx, **QUIET)
    assert part.path.name == "job-main.f000002-000006.mov" and probe(part.path).frames == 4
    with job_renderer(load_job(job), str(job), ctx=gl_ctx, echo=lambda s: None) as r:
        assert [p.name for _, _, p in r.outputs(span=(0, 4))] == ["job-main.f000000-000004.mov"]
        [whole] = r.render(span=(0, 8), show_progress=False)
    assert whole.path.name == "job-main.mov" and probe(whole.path).frames == 8
