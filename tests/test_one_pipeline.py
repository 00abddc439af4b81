"""One frame pipeline: a live show and its offline render are the same picture, frame for frame.

The live show is played headless with training off and real OSC (a hue change, a walk-speed
change and a scene jump with a crossfade); every frame is read back before encoding. The offline
render of the same show from the run folder the live show wrote, replaying its automation, is
encoded losslessly (FFV1) and decoded again: the two must agree pixel for pixel.
"""

import json

import numpy as np
import pytest
from click.testing import CliRunner
from tqdm import tqdm

from helpers import Client, wait_for
from test_show import write_show
from unstable.cli import main
from unstable.probe import probe, read_frames
from unstable.errors import ConfigError
from unstable.frame.automation import load_automation
from unstable.live import Engine
from unstable.render import render_show
from unstable.show import load_show

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SHOW = """\
size = [96, 32]
fps = 10
[pieces.eq]
piece = "pieces/eq.toml"
[pieces.eq2]
piece = "pieces/eq2.toml"
[layout]
panels = ["eq/g0", "eq/g1", "eq2/g0"]
[walk]
keyframes = 4
period = 0.5
[training]
render_threads = 1
[[scenes]]
name = "all"
[[scenes]]
name = "second"
crossfade = 0.4
layout = {panels = ["eq2/g0", "eq/g0"]}
params = {eq2 = {hue = -60}}
"""

FRAMES = 16


def silent(desc, total=None, **kw):
    return tqdm(total=total, disable=True)


def play_live(tmp_path, show_path, automation):
    """Frames 0..FRAMES-1 of the live show with OSC changes at frames 3, 6 and 9; returns them."""
    eng = Engine(load_show(show_path), headless=True, osc_port=0, web_port=0, run_dir=tmp_path / "run", train=False,
                 automation=automation, echo=lambda s: None, progress=silent)
    frames = []
    with eng:
        client = Client(eng.osc.port)
        for n in range(FRAMES):
            if n == 3:
                client.send("/unstable/eq/hue/raw", 90.0)
                assert wait_for(lambda: eng.params.get("eq", "hue") == 90.0)
            if n == 6:
                client.send("/unstable/eq2/walk_speed/raw", 2.5)
                assert wait_for(lambda: eng.params.get("eq2", "walk_speed") == 2.5)
            if n == 9:
                client.send("/unstable/scene", 1)
                assert wait_for(lambda: eng.params.get("show", "scene") == 1.0)
            eng.frame(number=n)
            frames.append(eng.read().copy())
        client.close()
    return frames


def test_a_live_frame_and_its_rendered_frame_are_the_same_picture(tmp_path, gl_ctx):
    show_path = write_show(tmp_path, SHOW)
    automation = tmp_path / "perf.automation.jsonl"
    live = play_live(tmp_path, show_path, automation)

    auto = load_automation(automation)
    assert auto.start_frame == 0
    assert any("scenes" in c for c in auto.changes.values())
    assert any(c.get("set", {}).get("eq", {}).get("hue") == 90.0 for c in auto.changes.values())

    out = tmp_path / "again.mov"
    (result,) = render_show(show_path, seconds=FRAMES / 10, out=str(out), preset="ffv1", automation=automation,
                            run=tmp_path / "run", ctx=gl_ctx, echo=lambda s: None, show_progress=False)
    assert result.frames == FRAMES
    rendered = list(read_frames(out))
    assert len(rendered) == FRAMES
    for n, (a, b) in enumerate(zip(live, rendered)):
        assert np.array_equal(a, b), f"frame {n} differs in {int((a != b).any(-1).sum())} pixels"
    # The changes did change the picture: the hue (frame 4), the crossfade (frames 10-13).
    assert not np.array_equal(live[3], live[4]) and not np.array_equal(live[11], live[15])


def test_rendering_a_show_again_at_another_size_and_in_parts(tmp_path, gl_ctx):
    show_path = write_show(tmp_path, SHOW)
    play_live(tmp_path, show_path, tmp_path / "a.automation.jsonl")
    whole = tmp_path / "whole.mov"
    render_show(show_path, seconds=1.2, out=str(whole), preset="ffv1", size=(192, 64), run=tmp_path / "run",
                ctx=gl_ctx, echo=lambda s: None, show_progress=False)
    info = probe(whole)
    assert (info.width, info.height, info.frames) == (192, 64, 12)
    part = tmp_path / "part.mov"
    render_show(show_path, seconds=1.2, frame_range="5:12", out=str(part), preset="ffv1", size=(192, 64),
                run=tmp_path / "run", ctx=gl_ctx, echo=lambda s: None, show_progress=False)
    a, b = list(read_frames(whole))[5:], list(read_frames(part))
    assert len(b) == 7 and all(np.array_equal(x, y) for x, y in zip(a, b))


def test_render_show_cli_errors_are_one_line(tmp_path):
    show_path = write_show(tmp_path, SHOW)
    r = CliRunner().invoke(main, ["render", str(show_path), "--run", str(tmp_path / "nothing"), "--seconds", "1"])
    assert r.exit_code == 2 and "pieces.eq" in r.output and "no trained weights" in r.output
    bad = tmp_path / "bad.automation.jsonl"
    bad.write_text(json.dumps({"automation": 1, "fps": "10", "start_frame": 0, "state": {}}) + "\n{\"frame\": \"x\"}\n")
    with pytest.raises(ConfigError, match="line 2"):
        load_automation(bad)
    r = CliRunner().invoke(main, ["render", str(show_path), "--size", "12by5"])
    assert r.exit_code == 2 and "--size" in r.output
