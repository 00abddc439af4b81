"""What the mutation runs of frame/pipeline.py, cursor.py and timelapse.py left alive after
test_mutation_pipeline.py (scripts/mutation.sh pipeline, job-timeline; docs/mutation.md, fourth
session): a timelapse's crossfade reaching the compositor, its checkpoint's temperature and file
name, the render cursor advancing each show frame once, and one piece's glide not stopping the
warming of another's panels.

The timelapse tests open a real render job over a real run (3 training steps, a checkpoint kept at
each) with real GL, as `unstable render` does.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from unstable.checkpoint import load_checkpoint
from unstable.control.store import ParameterStore
from unstable.display.layout import Colour, Layout
from unstable.errors import CheckpointError
from unstable.frame.automation import load_automation
from unstable.frame.cursor import FrameCursor
from unstable.frame.pipeline import FramePipeline
from unstable.frame.sources import PanelSource
from unstable.frame.timeline import FrameState, ShowTimeline
from unstable.render import job_renderer
from unstable.renderjob import load_job
from unstable.schema import SHOW, common_specs, show_specs
from unstable.show import SceneSettings
from unstable.trainer import train
from unstable.walk import Walk, WalkSettings
from test_render import PIECE  # the render tests' tiny piece: a checkpoint kept at each of 3 steps

pytestmark = pytest.mark.usefixtures("one_torch_thread_per_module")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run of 3 real training steps with a checkpoint kept at every step (steps 0..3)."""
    root = tmp_path_factory.mktemp("lapse-run")
    (root / "tiny.toml").write_text(PIECE)
    return train(root / "tiny.toml", out=root / "run", show_progress=False, echo=lambda s: None)


def timelapse(tmp_path: Path, run: Path, gl_ctx, extra: str = "", source: str = "", tables: str = "",
              at: float = 0.25):
    """A renderer of a timelapse job over `run`: 4 checkpoints held 3 frames each at 8 fps, the
    last frame of each hold crossfading into the next, the walk standing at `at` s (`extra`:
    top-level keys, `source`: [sources.eq] lines, `tables`: more tables)."""
    job = tmp_path / "lapse.toml"
    job.write_text(f'size = [16, 8]\nfps = 8\npreset = "ffv1"\nbatch = 4\nchunk = 4\n{extra}'
                   f'output = "{(tmp_path / "out").as_posix()}/{{job}}-{{variation}}.mov"\n'
                   f'[sources.eq]\nrun = "{run.as_posix()}"\n{source}'
                   "[walk]\nkeyframes = 3\nperiod = 0.5\nseed = 11\n"
                   f"[timelapse]\non = true\nhold = 3\ncrossfade = 1\nat = {at}\n{tables}")
    return job_renderer(load_job(job), str(job), ctx=gl_ctx, echo=lambda s: None)


def picture(pipe: FramePipeline, state: FrameState, images) -> np.ndarray:
    """The frame's picture with `images` alone (no crossfade), read back from the compositor."""
    pipe.compose(dataclasses.replace(state, scenes=(0, None, 0.0)), images)
    return pipe.compositor.read().astype(np.float64)  # [H, W, 3]


def test_a_timelapse_crossfade_draws_both_checkpoints_through_the_frame_call_and_the_cursor(tmp_path, run, gl_ctx):
    with timelapse(tmp_path, run, gl_ctx) as r:
        cursor = r.cursor
        state, result = cursor.frame(2)  # the last frame of checkpoint 0's hold
        assert state.checkpoints == {"eq": (0, 1)} and 0.0 < state.scenes[2] < 1.0
        drawn = cursor.pipeline.compositor.read().astype(np.float64)
        mix = state.scenes[2]
        assert sorted(result.next_images) == sorted(result.images)
        first = picture(cursor.pipeline, state, result.images)
        second = picture(cursor.pipeline, state, result.next_images)
        assert np.abs(first - second).max() > 8  # training moved the picture between the two
        # The crossfade is the mix of the two checkpoints' pictures (not the first one alone).
        assert not np.array_equal(drawn, first)
        assert np.abs(drawn - ((1 - mix) * first + mix * second)).max() <= 2.0
        # The second checkpoint is the one faded into: frame 3 shows it alone.
        _, held = cursor.frame(3)
        for d, x in held.images.items():
            torch.testing.assert_close(x, result.next_images[d])
        # The cursor composes the same crossfade again (a variation composed once more).
        cursor.compose(state, result, Colour(hue=90.0))
        cursor.compose(state, result)
        assert np.array_equal(cursor.pipeline.compositor.read(), drawn)


def test_a_timelapse_is_drawn_at_the_jobs_temperature_of_video_time_0(tmp_path, run, gl_ctx):
    """A temperature curve scales a timelapse's latents (its value at video time 0: the walk stands
    still), not the walk's own temperature (1 here)."""
    with timelapse(tmp_path, run, gl_ctx, "temperature = [[0.0, 1.6], [1.0, 0.6]]\n") as r:
        state = r.cursor.state(4)
        assert state.temperatures == {"eq": pytest.approx(1.6)}
        src = r.cursor.pipeline.sources["eq"]
        images = r.cursor.pipeline.images(state)  # checkpoint 1, loaded into the system
        z = src.walk.latents_at_many([0.25], temperature=1.0)  # {display: [1, D]}
        at_one = src.system.sample({src.panels[d]: z[d] for d in images}, state.snapshot["eq"])
        scaled = src.system.sample({src.panels[d]: z[d] * 1.6 for d in images}, state.snapshot["eq"])
        for d, x in images.items():
            assert (x - scaled[src.panels[d]][0]).abs().max() < 1e-5
            assert (x - at_one[src.panels[d]][0]).abs().max() > 1e-3


def test_a_timelapse_checkpoint_that_does_not_load_is_named_in_the_error(tmp_path, run, gl_ctx):
    """A checkpoint replaced after the job was opened (a worker's copy of the run, say): the error
    names the file, not `None`."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    with timelapse(tmp_path, copy, gl_ctx) as r:
        bad = copy / "checkpoints" / "step_000001.pt"
        payload = load_checkpoint(bad)
        del payload["rng"]
        torch.save(payload, bad)
        r.cursor.frame(0)
        with pytest.raises(CheckpointError) as err:
            r.cursor.frame(3)
    assert str(err.value).startswith(f"{bad}: not a whole checkpoint")


class Recording:
    """A sampler that notes the panels and parameters of each call and samples through `inner`."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def sample(self, latents, params):
        self.calls.append((sorted(latents), dict(params)))
        return self.inner.sample(latents, params)


def test_a_timelapse_reads_each_checkpoint_once_and_samples_only_the_panels_it_shows(tmp_path, run, gl_ctx,
                                                                                       monkeypatch):
    """A checkpoint shown for a whole hold is read from disk once; each frame samples the panels
    the layout shows with the job's parameters; the images of at most the two newest checkpoints
    are kept (a long timelapse's memory), whatever the walk time it stands at."""
    import unstable.frame.timelapse as timelapse_module

    read = []
    load = timelapse_module.load_checkpoint

    def counted(path, **kw):
        read.append(Path(path).name)
        return load(path, **kw)

    monkeypatch.setattr(timelapse_module, "load_checkpoint", counted)
    with timelapse(tmp_path, run, gl_ctx, source="[sources.eq.params]\ntruncation = 0.7\n",
                   tables='[layout]\npanels = ["eq/g1"]\n', at=1.25) as r:
        src = r.cursor.pipeline.sources["eq"]
        assert sorted(src.panels) == ["eq/g0", "eq/g1"]  # the source has both, the layout shows one
        src.sampler = Recording(src.sampler)
        for k in range(12):
            state, result = r.cursor.frame(k)
            newest = max(c for c in state.checkpoints["eq"] if c is not None)
            assert {key[0] for key in src._kept} <= {newest - 1, newest}
    assert read == [f"step_{i:06d}.pt" for i in range(4)]
    assert src.sampler.calls == [(["g1"], {"truncation": 0.7})] * 4


def test_a_compositor_curve_over_a_timelapse_neither_rereads_nor_resamples_a_checkpoint(tmp_path, run, gl_ctx,
                                                                                        monkeypatch):
    """A hue glide across the whole timelapse changes every frame's parameters but no checkpoint's
    images: each checkpoint is read once and sampled once; a sampling curve (truncation) over the
    same frames samples again, from the checkpoint already held."""
    import unstable.frame.timelapse as timelapse_module

    read = []
    load = timelapse_module.load_checkpoint
    monkeypatch.setattr(timelapse_module, "load_checkpoint", lambda path, **kw: read.append(Path(path).name)
                        or load(path, **kw))
    hue = '[curves]\n"eq.hue" = [[0.0, 0.0], [1.5, 90.0]]\n'
    with timelapse(tmp_path, run, gl_ctx, tables=hue) as r:
        src = r.cursor.pipeline.sources["eq"]
        src.sampler = Recording(src.sampler)
        hues = {round(r.cursor.frame(k)[0].snapshot["eq"]["hue"], 3) for k in range(12)}
    assert len(hues) == 12  # the curve did move every frame
    assert read == [f"step_{i:06d}.pt" for i in range(4)]
    assert len(src.sampler.calls) == 4
    read.clear()
    glide = '[curves]\n"eq.truncation" = [[0.0, 1.0], [1.5, 0.5]]\n'
    with timelapse(tmp_path, run, gl_ctx, tables=glide) as r:
        src = r.cursor.pipeline.sources["eq"]
        src.sampler = Recording(src.sampler)
        for k in range(12):
            r.cursor.frame(k)
    assert read == [f"step_{i:06d}.pt" for i in range(4)]  # each checkpoint read once, while it is shown
    assert len(src.sampler.calls) > 4  # and sampled again as the truncation glides


# -- the render cursor over a show's timeline ----------------------------------------------------

PANELS = {"eq/g0": "g0", "eq/g1": "g1"}


class Identity:
    """A piece whose picture of a latent is the latent itself (batched and single calls alike)."""

    def __init__(self):
        self.calls = []

    def param_specs(self):
        return []

    def sample(self, latents, params):
        self.calls.append((tuple(sorted(latents)), next(iter(latents.values())).shape[0]))
        return {q: z[:, :3, None, None].expand(-1, 3, 4, 4).clone() for q, z in latents.items()}  # [T, 3, 4, 4]


def source(name: str, panels: dict[str, str]) -> PanelSource:
    system = Identity()
    walk = Walk(WalkSettings(keyframes=3, period=0.5), {d: 4 for d in panels})
    return PanelSource(name, system, system, walk, dict(panels))


def looks(*panel_lists):
    return [SceneSettings(name=f"s{i}", crossfade=0.0, layout=Layout(panels=tuple(p)), colour=Colour())
            for i, p in enumerate(panel_lists)]


def replayed_timeline(automation: Path, advanced: list):
    """A show's timeline replaying `automation`, each frame it advances appended to `advanced`."""
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(1)})
    tl = ShowTimeline(looks(["eq/g0"]), store, ["eq"], 10)
    tl.replay(load_automation(automation))
    advance = tl.advance

    def counted(frame, t=None):
        advanced.append(frame)
        return advance(frame, t)

    tl.advance = counted
    return tl


@pytest.mark.parametrize("look_ahead", [1, 4])
def test_a_render_cursor_advances_each_show_frame_once_in_order(tmp_path, look_ahead):
    """Frame k of a show is reached by advancing each frame before it once: a frame advanced again
    replays its automation and walks its clock again (here walk_speed changes at frames 3 and 6),
    and a frame drawn in order is sampled as a live show samples it, no more."""
    auto = tmp_path / "a.automation.jsonl"
    head = {"automation": 1, "show": "s", "fps": "10", "start_frame": 0, "state": {}}
    lines = [head, {"frame": 3, "set": {"eq": {"walk_speed": 4.0}}}, {"frame": 6, "set": {"eq": {"walk_speed": 0.5}}}]
    auto.write_text("".join(json.dumps(x) + "\n" for x in lines))

    def make_pipeline(timeline):
        return FramePipeline({"eq": source("eq", PANELS)}, looks(["eq/g0"]), None, look_ahead=look_ahead,
                             walk_ahead=timeline.walk_times_ahead)

    reference: list = []
    tl = replayed_timeline(auto, reference)
    live = make_pipeline(tl)
    want, pictures = [], []
    for k in range(12):  # as a live show draws them: each frame sampled as it is advanced
        s = tl.advance(k)
        want.append(s.walk_times["eq"])
        if k < 5:
            pictures.append(live.images(s)["eq/g0"])
    assert want[5] - want[4] > 1.5 * (want[3] - want[2])  # the change is seen

    advanced: list = []
    cursor = FrameCursor(lambda: replayed_timeline(auto, advanced), make_pipeline)
    drawn = []
    for k in range(5):
        s = cursor.state(k)
        drawn.append((s.walk_times["eq"], cursor.pipeline.images(s)["eq/g0"]))
    assert [t for t, _ in drawn] == want[:5]
    assert all(torch.equal(x, y) for (_, x), y in zip(drawn, pictures))
    assert cursor.pipeline.sources["eq"].system.calls == live.sources["eq"].system.calls
    walked = [cursor.state(k).walk_times["eq"] for k in (7, 8, 11)]  # skipping over 5, 6, 9, 10
    assert walked == [want[k] for k in (7, 8, 11)]
    assert advanced == list(range(12))


# -- warming a scene's new panels beside a gliding piece -------------------------------------------

def test_one_piece_gliding_does_not_stop_the_warming_of_another_pieces_panels():
    """Groups of 2 leave one frame of lead, so every new panel is warmed in the frame before the
    change: piece a's (gliding its temperature, nothing to gain) is skipped, b's still warmed."""
    sources = {"a": source("a", {"a/g0": "g0", "a/g1": "g1"}), "b": source("b", {"b/g0": "g0"})}

    def walk_ahead(name, frames):
        return [f / 10 for f in frames]

    pipe = FramePipeline(sources, looks(["a/g0"], ["a/g1", "b/g0"]), None, look_ahead=2, walk_ahead=walk_ahead)
    assert list(pipe.piece_of) == ["a/g0", "a/g1", "b/g0"]  # a's new panel comes first
    b = sources["b"].system
    for n in range(10):
        state = FrameState(n, n / 10, {"a": {"temperature": 1.0 + n / 100}, "b": {"temperature": 1.0}},
                           (0, None, 0.0), {"a": n / 10, "b": n / 10},
                           targets={"a": {"temperature": 2.0}, "b": {}}, upcoming=(10, 1))
        pipe.images(state)
        assert b.calls == ([] if n < 9 else [(("g0",), 1)])
    assert all(c[0] == ("g0",) for c in sources["a"].system.calls)  # a's gliding panel: not warmed


def test_a_timelapse_keeps_bounded_images_whichever_way_its_checkpoints_are_asked(tmp_path, run, gl_ctx):
    """A farm's worker may take a timelapse's chunks in any order, and a gliding parameter makes a new
    key every frame: the source keeps only the checkpoints next to the one asked last, KEEP entries
    at most."""
    with timelapse(tmp_path, run, gl_ctx) as r:
        src = r.cursor.pipeline.sources["eq"]
        for k in (3, 2, 1, 0):   # newest first
            src.images_of(k, 0.0, None, {}, ["eq/g0"])
            assert {key[0] for key in src._kept} <= {k, k + 1}
        for i in range(3 * src.KEEP):
            src.images_of(0, 0.0, None, {"truncation": 0.5 + i / 100}, ["eq/g0"])
            assert len(src._kept) <= src.KEEP
        assert src.images_of(0, 0.0, None, {"truncation": 0.5 + (3 * src.KEEP - 1) / 100}, ["eq/g0"]) is \
            src._kept[next(reversed(src._kept))]   # the newest entry is still served from the cache
