"""Render jobs through the one frame pipeline (issue 24, item 1): a job's timeline (curves, plan,
timelapse) behind the `Timeline` protocol, the look-ahead's aligned groups as its only batching,
frames into encoder sinks, and nothing under unstable/render sampling, walking or composing."""

from __future__ import annotations

import ast
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import tiny_job, train_tiny_run
from unstable.display.compositor import Compositor
from unstable.display.layout import Colour, Layout, Scene
from unstable.encode import VideoWriter
from unstable.frame.curves import ParamCurves
from unstable.frame.job_timeline import JobTimeline
from unstable.frame.sinks import EncoderSink
from unstable.probe import read_frames
from unstable.render import job_renderer
from unstable.renderjob import FramePlan, load_job

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# What only the frame pipeline may do: sample, walk, weigh checkpoints in, compose, or make a
# frame's state by hand. A name here called anywhere under unstable/render is a second pipeline.
FRAME_WORK = {"sample", "latents", "latents_at", "latents_at_many", "walk_time", "temperatures", "checkpoint_at",
              "restore", "load_checkpoint", "images", "images_of", "FrameState", "Scene", "Composer"}


def test_nothing_under_render_samples_walks_or_composes():
    calls = []
    for path in sorted((ROOT / "unstable" / "render").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call):
                f = node.func
                name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else None
                if name in FRAME_WORK:
                    calls.append(f"{path.name}:{node.lineno} {name}()")
    assert calls == []


def plan(**kw) -> FramePlan:
    base = dict(frames=40, fps=Fraction(8), speed=Fraction(1, 2), start=Fraction(1, 4),
                curve=((0.0, 1.0), (2.0, 3.0)))
    return FramePlan(**{**base, **kw})


def test_a_job_timeline_is_its_curves_and_plan_at_each_frame_in_any_order():
    curves = ParamCurves({"eq.truncation": ((0.0, 1.0), (1.0, 0.5)), "eq.hue": ((0.0, 0.0), (2.0, 90.0)),
                          "show.master_fade": ((0.0, 0.0), (1.0, 1.0)), "eq.walk_speed": ((0.0, 2.0),)},
                         Fraction(8))
    tl = JobTimeline(plan(), curves, {"eq": {"noise": 0.5}, "bad": {}}, ["eq", "bad"])
    forward = [tl.advance(n) for n in range(12)]
    backward = [tl.advance(n) for n in reversed(range(12))][::-1]
    assert forward == backward  # no memory: a part or a worker may start anywhere
    s = tl.advance(4)  # video time 0.5 s
    assert (s.frame, s.t, s.scenes) == (4, 0.5, (0, None, 0.0))
    assert s.snapshot == {"eq": {"noise": 0.5, "truncation": 0.75, "hue": 22.5, "walk_speed": 2.0},
                          "bad": {}, "show": {"master_fade": 0.5}}
    # eq walks at twice the plan's speed (its walk_speed curve), bad exactly on the plan.
    assert s.walk_times == {"eq": 0.25 + 0.5 * 2.0 * 0.5, "bad": Fraction(1, 4) + 4 * Fraction(1, 2) / 8}
    assert s.temperatures == {"eq": 1.5, "bad": 1.5}
    assert tl.walk_times_ahead("bad", [4, 8]) == [s.walk_times["bad"], Fraction(1, 4) + Fraction(1, 2)]
    assert s.checkpoints == {} and tl.state_of is not None


def test_a_timelapse_timeline_says_which_checkpoint_each_frame_shows():
    lapse = plan(frames=9, hold=3, checkpoints=3, crossfade=1)
    tl = JobTimeline(lapse, ParamCurves({}, Fraction(8)), {"eq": {}}, ["eq"], timelapse_at=0.75)
    states = [tl.advance(n) for n in range(9)]
    assert [s.checkpoints["eq"] for s in states] == [(0, None), (0, None), (0, 1), (1, None), (1, None), (1, 2),
                                                     (2, None), (2, None), (2, None)]
    assert [s.scenes for s in states[1:4]] == [(0, None, 0.0), (0, 0, 0.5), (0, None, 0.0)]
    # The walk stands still, at the temperature of video time 0.
    assert {s.walk_times["eq"] for s in states} == {Fraction(3, 4)}
    assert {s.temperatures["eq"] for s in states} == {1.0}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return train_tiny_run(tmp_path_factory.mktemp("run"))


def test_a_job_samples_aligned_groups_split_where_a_curve_moves_and_parts_equal_the_whole(tmp_path, tiny_run, gl_ctx):
    job = tmp_path / "job.toml"
    # fps 8, look-ahead groups of 4 (batch); truncation 1 until 0.25 s (frame 2), 0.5 from 0.26 s.
    job.write_text(tiny_job(tmp_path / "out", tiny_run, 12)
                   + '[curves]\n"eq.truncation" = [[0.0, 1.0], [0.25, 1.0], [0.26, 0.5]]\n')

    def draw(frames):
        with job_renderer(load_job(job), str(job), ctx=gl_ctx, echo=lambda s: None, threads=1) as r:
            out = {}
            for f in frames:
                out[f] = r.cursor.pipeline.images(r.cursor.state(f))
            return out, r.cursor.pipeline.look_ahead.calls

    whole, calls = draw(range(12))
    # Group 0-3: frames 0-2 (truncation 1) and frame 3 (0.5) apart; groups 4-7 and 8-11 whole.
    assert calls == 4
    part, calls = draw(range(5, 12))
    assert calls == 2  # 5..7 from the group 4-7 sampled whole, then 8-11
    for f in part:
        for d in part[f]:
            assert torch.equal(part[f][d], whole[f][d]), (f, d)
    assert not torch.equal(whole[2]["eq/g0"], whole[3]["eq/g0"])


def test_the_encoder_sink_writes_each_composed_frame(tmp_path, gl_ctx):
    comp = Compositor(gl_ctx, (32, 16))
    try:
        sink = EncoderSink(VideoWriter(tmp_path / "x.mov", 32, 16, Fraction(8), "ffv1"))
        layout = Layout(panels=("a",))
        want = []
        for n in range(3):
            image = torch.full((3, 4, 4), n / 3)
            image[0] = 1.0 - n / 3
            comp.render(Scene({"a": image}, layout, Colour()))
            want.append(comp.read().copy())
            sink.put(n, comp)
        sink.close()
        got = list(read_frames(tmp_path / "x.mov"))
        assert len(got) == 3 and all(np.array_equal(g, w) for g, w in zip(got, want))
        assert not np.array_equal(want[0], want[2])
    finally:
        comp.release()


def test_a_render_never_compiles_its_passes_so_its_frames_never_depend_on_when_a_compile_ends(tmp_path, tiny_run):
    # On a GPU a live show's passes compile in the background and are swapped in part way
    # (unstable.compiled_sampling), within two levels of 255 of the trace's images: a render must
    # give the same frames every time, whole or in parts, so its systems never opt in.
    from unstable.render.job_frames import _panel_sources
    from unstable.render.job_sources import open_sources

    job = tmp_path / "job.toml"
    job.write_text(tiny_job(tmp_path / "out", tiny_run, 4))
    loaded = load_job(job)
    opened = open_sources(loaded, str(job), torch.device("cpu"), echo=lambda s: None)
    sources = _panel_sources(loaded, str(job), opened, torch.device("cpu"))
    assert sources and not any(src.system._traced.compiles for src in sources.values())
