"""A walk period in beats or bars follows the live tempo: a loop of 4 beats takes 2 s at 120 BPM and
4 s at 60, a tempo change mid-loop changes the walk's speed without a jump in its phase, a show
rendered from its automation walks the live show's phases (and draws its pictures), a period in
seconds walks as it always did, and a bad period is one line naming the file and key."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from tqdm import tqdm

from helpers import Client, wait_for
from test_show import write_show
from unstable.cli import main
from unstable.control.store import ParameterStore
from unstable.errors import ConfigError
from unstable.frame.automation import load_automation
from unstable.frame.timeline import ShowTimeline
from unstable.schema import SHOW, common_specs, show_specs
from unstable.show import SceneSettings, load_show
from unstable.tempo import tempo_specs
from unstable.walk import Walk, WalkSettings

FPS = 10

SHOW_TEXT = """\
size = [64, 32]
fps = 10
[pieces.eq]
piece = "pieces/eq.toml"
[layout]
panels = ["eq/g0", "eq/g1"]
[tempo]
bpm = {bpm}
[walk]
keyframes = 4
period = "{period}"
period_per = "loop"
[training]
render_threads = 1
"""


def show_at(tmp_path, bpm=120, period="4 beats", name="show.toml"):
    return load_show(write_show(tmp_path, SHOW_TEXT.format(bpm=bpm, period=period), name=name))


def timeline(show):
    """The show's timeline on a store of the eq piece's common and the show's tempo parameters,
    made as the drivers make it (walk_bpm = Show.walk_tempo)."""
    t = show.settings.tempo
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(1) + tempo_specs(t.bpm, t.link)})
    return ShowTimeline(show.resolved_scenes(), store, ["eq"], FPS,
                        walk_bpm=show.walk_tempo)


def walk_times(tl, frames, at=None):
    """Piece eq's walk time at frames 0..frames-1; `at` {frame: bpm} sets the tempo before that frame
    (as Link would: origin LINK)."""
    out = []
    for n in range(frames):
        if at and n in at:
            tl.store.set(SHOW, "tempo", at[n], origin=("link", 0))
        out.append(tl.advance(n).walk_times["eq"])
    return out


def loop_frames(times, duration) -> int:
    """The first frame whose walk time has gone once round the loop."""
    return next(n for n, w in enumerate(times) if w >= float(duration) - 1e-9)


def test_a_walk_period_in_beats_loops_in_its_beats_at_the_live_tempo(tmp_path):
    show = show_at(tmp_path)
    walk = Walk(show.settings.walk, {"eq/g0": 8})
    assert (show.settings.walk.period_beats, show.walk_tempo, walk.duration) == (4.0, 120.0, 2)
    assert loop_frames(walk_times(timeline(show), 60), walk.duration) == 20          # 4 beats at 120: 2 s
    # The same show played at 60 BPM from its first frame: 4 s.
    assert loop_frames(walk_times(timeline(show), 60, {0: 60.0}), walk.duration) == 40
    # Written at 60 BPM ([tempo] bpm = 60): 4 beats are 4 s from the start; at 120 they are 2 s again.
    slow = show_at(tmp_path, bpm=60, name="slow.toml")
    slow_walk = Walk(slow.settings.walk, {"eq/g0": 8})
    assert slow_walk.duration == 4
    assert loop_frames(walk_times(timeline(slow), 60), slow_walk.duration) == 40
    assert loop_frames(walk_times(timeline(slow), 60, {0: 120.0}), slow_walk.duration) == 20
    # Bars count beats_per_bar beats; the loop closes: frame 20's latents are frame 0's.
    bars = show_at(tmp_path, period="1 bar", name="bars.toml")
    times = walk_times(timeline(bars), 21)
    z = Walk(bars.settings.walk, {"eq/g0": 8}).latents_at_many(times)["eq/g0"]  # [21, 8]
    assert torch.allclose(z[20], z[0], atol=1e-5) and not torch.allclose(z[10], z[0], atol=1e-2)


def test_a_tempo_change_mid_loop_changes_the_walks_speed_without_a_jump():
    # Built by hand (no show file): the walk's period is its seconds at 120 BPM.
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(1) + tempo_specs(120.0)})
    tl = ShowTimeline([SceneSettings(crossfade=0.0)], store, ["eq"], FPS, walk_bpm=120.0)
    times = walk_times(tl, 40, {7: 60.0})
    steps = np.diff(times)
    # Frames 1..7 walk 0.1 s a frame (frame 7's interval ran at the tempo before it), then 0.05 s:
    # the phase is continuous, only its rate changed.
    assert times[7] == pytest.approx(0.7)
    assert np.allclose(steps[:7], 0.1) and np.allclose(steps[7:], 0.05)
    # The loop (2 s of walk: 4 beats at 120) ends where the beats say: 0.7 s walked in 1.4 beats,
    # the other 2.6 beats at 60 BPM take 2.6 s -> frame 7 + 26.
    assert loop_frames(times, 2.0) == 33
    # The walk's latents move no further in a frame after the change than before it.
    walk = Walk(WalkSettings(keyframes=4, period=2.0, period_per="loop", period_beats=4.0), {"eq/g0": 8})
    z = walk.latents_at_many(times)["eq/g0"]                      # [40, 8]
    moves = (z[1:] - z[:-1]).norm(dim=1)                         # [39]
    assert moves[7:12].max() <= moves[:7].max() * 0.75


def test_a_period_in_seconds_walks_as_before_whatever_the_tempo(tmp_path):
    seconds = load_show(write_show(tmp_path, SHOW_TEXT.format(bpm=120, period="x").replace('"x"', "2.0"),
                                   name="secs.toml"))
    assert seconds.walk_tempo is None and seconds.settings.walk.period_beats == 0
    plain = walk_times(timeline(seconds), 30, {5: 60.0, 12: 200.0})
    assert np.allclose(plain, np.arange(30) / FPS, rtol=0, atol=1e-12)          # the tempo moved nothing
    # The same numbers, bit for bit, as a timeline made without `walk_bpm` (as before walks had beats).
    store = ParameterStore({"eq": common_specs(), SHOW: show_specs(1) + tempo_specs(120.0)})
    before = ShowTimeline(seconds.resolved_scenes(), store, ["eq"], FPS)
    assert plain == walk_times(before, 30, {5: 60.0, 12: 200.0})


def test_a_bad_walk_period_is_one_line_naming_the_file_and_key(tmp_path):
    for period, what in [("4 barz", "not a duration"), ("0 beats", "more than 0 beats"), ("soon", "not a duration")]:
        with pytest.raises(ConfigError) as info:
            show_at(tmp_path, period=period, name="bad.toml")
        msg = str(info.value)
        assert "bad.toml" in msg and "walk.period" in msg and what in msg and "\n" not in msg, msg
    text = SHOW_TEXT.format(bpm=120, period="x").replace('"x"', "3.0\nperiod_beats = 4")
    with pytest.raises(ConfigError) as info:
        load_show(write_show(tmp_path, text, name="bad.toml"))
    msg = str(info.value)
    assert "bad.toml" in msg and "walk.period_beats" in msg and "\n" not in msg, msg
    # And from the command line: a non-zero exit with that line.
    path = write_show(tmp_path, SHOW_TEXT.format(bpm=120, period="4 barz"), name="bad.toml")
    r = CliRunner().invoke(main, ["render", str(path), "--seconds", "1"])
    assert r.exit_code != 0 and "bad.toml" in r.output and "walk.period" in r.output, r.output
    assert len(r.output.strip().splitlines()) == 1, r.output


# -- live = render ------------------------------------------------------------------------------

FRAMES = 24
TEMPOS = {5: 60.0, 13: 150.0}   # frame -> BPM sent over OSC before it


def silent(desc, total=None, **kw):
    return tqdm(total=total, disable=True)


def play_live(tmp_path, show_path, automation):
    """The live show, headless, training off, with tempo changes over OSC; its frames and walk phases."""
    from unstable.live import Engine
    eng = Engine(load_show(show_path), headless=True, osc_port=0, web_port=0, run_dir=tmp_path / "run", train=False,
                 automation=automation, echo=lambda s: None, progress=silent)
    frames, phases = [], []
    with eng:
        client = Client(eng.osc.port)
        for n in range(FRAMES):
            if n in TEMPOS:
                client.send("/unstable/show/tempo/raw", TEMPOS[n])
                assert wait_for(lambda: eng.params.get(SHOW, "tempo") == TEMPOS[n])
            eng.frame(number=n)
            frames.append(eng.read().copy())
            phases.append(eng.timeline.clocks["eq"].phase)
        client.close()
    return frames, phases


@pytest.mark.usefixtures("one_torch_thread")
def test_a_show_rendered_from_its_automation_walks_the_live_phases(tmp_path, gl_ctx, cpu_hogs):
    from unstable.probe import read_frames
    from unstable.render import render_show
    show_path = write_show(tmp_path, SHOW_TEXT.format(bpm=120, period="2 beats"))
    automation = tmp_path / "perf.automation.jsonl"
    live, phases = play_live(tmp_path, show_path, automation)
    # The tempo moved the walk: 0.1 s of walk a frame at 120, 0.05 at 60, 0.125 at 150.
    steps = np.diff(phases)
    assert np.allclose(steps[:5], 0.1) and np.allclose(steps[5:13], 0.05) and np.allclose(steps[13:], 0.125)
    # The automation's timeline walks the same phases, bit for bit ...
    show = load_show(show_path)
    auto = load_automation(automation)
    again = timeline(show)
    again.replay(auto)
    assert [again.advance(n).walk_times["eq"] for n in range(FRAMES)] == phases
    # ... and the render draws the same pictures (the walk is most of what changes in them).
    out = tmp_path / "again.mov"
    (result,) = render_show(show_path, seconds=FRAMES / FPS, out=str(out), preset="ffv1", automation=automation,
                            run=tmp_path / "run", ctx=gl_ctx, echo=lambda s: None, show_progress=False)
    rendered = list(read_frames(out))
    assert len(rendered) == FRAMES
    for n, (a, b) in enumerate(zip(live, rendered)):
        assert np.array_equal(a, b), f"frame {n} differs in {int((a != b).any(-1).sum())} pixels"
    assert not np.array_equal(live[6], live[20])
