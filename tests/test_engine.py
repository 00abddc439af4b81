"""The live engine, headless (EGL), with real UDP on loopback, real training steps and real ffmpeg.

Shows use two tiny equilibrium pieces (`eq`, `eq2`, from test_show) on a 96x32 frame with three
32x32 cells: eq/g0 | eq/g1 | eq2/g0. Most tests drive `Engine.frame(now)` with explicit frame-clock
times so smoothing and scene timing are exact; one runs the paced loop, one stops a real process
with SIGTERM.
"""

import json
import os
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import Client, frames_played, frames_repeated, live_until_sigterm, wait_for
from test_show import SHOW, write_show
from tqdm import tqdm

from unstable.checkpoint import load_checkpoint
from unstable.display.compositor import Compositor
from unstable.display.layout import Colour, Layout
from unstable.frame.compose import Composer
from unstable.live import Engine, SamplingMirror
from unstable.probe import probe
from unstable.show import load_show
from unstable.system import build_system, load_piece

CELLS = {"eq/g0": slice(0, 32), "eq/g1": slice(32, 64), "eq2/g0": slice(64, 96)}


# One torch thread, as the engine's own threads use.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def silent(desc, total=None, **kw):
    return tqdm(total=total, disable=True)


def make_engine(tmp_path, text=SHOW, **kw) -> Engine:
    show = load_show(write_show(tmp_path, text))
    kw.setdefault("train", False)
    return Engine(show, headless=True, osc_port=0, web_port=0, run_dir=tmp_path / "run", echo=lambda line: None,
                  progress=silent, **kw)


def test_composer_puts_each_image_in_its_panel_with_its_piece_colour(gl_ctx):
    comp = Compositor(gl_ctx, (96, 32))
    composer = Composer(comp, {"eq/g0": "eq", "eq/g1": "eq", "eq2/g0": "eq2"})
    images = {}
    for name, rgb in zip(CELLS, ((1.0, 0, 0), (0, 1.0, 0), (0, 0, 1.0))):
        images[name] = torch.tensor(rgb, dtype=torch.float32)[:, None, None].expand(3, 8, 8).contiguous()
    layout = Layout(panels=tuple(CELLS), filter="nearest")
    look = {"hue": 0.0, "saturation": 1.0, "fade": 1.0}

    def frame(eq=None, eq2=None, master=1.0):
        snap = {"eq": {**look, **(eq or {})}, "eq2": {**look, **(eq2 or {})}, "show": {"master_fade": master}}
        composer.render(images, snap, (layout, Colour()))
        f = comp.read()
        return {n: f[16, (s.start + s.stop) // 2].astype(int).tolist() for n, s in CELLS.items()}

    assert frame() == {"eq/g0": [255, 0, 0], "eq/g1": [0, 255, 0], "eq2/g0": [0, 0, 255]}
    # A piece's hue turns only its own panels: red -> green, green -> blue.
    assert frame(eq={"hue": 120.0}) == {"eq/g0": [0, 255, 0], "eq/g1": [0, 0, 255], "eq2/g0": [0, 0, 255]}
    # A piece's fade takes only its panels to black; master fade takes everything.
    assert frame(eq2={"fade": 0.0}) == {"eq/g0": [255, 0, 0], "eq/g1": [0, 255, 0], "eq2/g0": [0, 0, 0]}
    half = frame(master=0.5)
    assert all(abs(max(v) - 128) <= 1 for v in half.values()), half
    comp.release()


def test_sampling_mirror_is_only_updated_by_sync(tmp_path):
    write_show(tmp_path)
    system = build_system(load_piece(tmp_path / "pieces" / "eq.toml"), torch.device("cpu"))
    mirror = SamplingMirror(system)
    z = {"g0": torch.randn(1, 8, generator=torch.Generator().manual_seed(0)), "g1": torch.zeros(1, 8)}
    before = mirror.sample(z, {})
    for _ in range(4):  # through a growth stage too
        system.step({})
    assert torch.equal(mirror.sample(z, {})["g0"], before["g0"])  # training did not touch the mirror
    assert not torch.equal(system.sample(z, {})["g0"], before["g0"])
    mirror.sync()
    assert mirror.system.step_count == system.step_count == 4
    after, live = mirror.sample(z, {}), system.sample(z, {})
    assert all(torch.equal(after[k], live[k]) for k in z)
    assert mirror.syncs == 1


def test_osc_values_reach_the_parameter_and_the_next_frame(tmp_path):
    eng = make_engine(tmp_path)
    with eng:
        client = Client(eng.osc.port)
        # Freeze the walks so the only change between frames is what OSC does.
        eng.params.update({"eq": {"walk_speed": 0.0}, "eq2": {"walk_speed": 0.0}})
        eng.frame(0.0)
        first = eng.read().copy()
        assert first[:, CELLS["eq/g0"]].max() > 0 and first[:, CELLS["eq2/g0"]].max() > 0

        # Normalised 0..1 on the plain address: hue -180..180, 0.75 -> 90 degrees.
        client.send("/unstable/eq/hue", 0.75)
        assert wait_for(lambda: eng.params.get("eq", "hue") == 90.0)
        eng.frame(0.1)  # the very next frame already shows it (smoothing has begun)
        nxt = eng.read().copy()
        assert not np.array_equal(nxt[:, CELLS["eq/g0"]], first[:, CELLS["eq/g0"]])
        assert np.array_equal(nxt[:, CELLS["eq2/g0"]], first[:, CELLS["eq2/g0"]])  # eq2 untouched

        # Own units on /raw: fade 0 takes the piece to black once smoothing has settled.
        client.send("/unstable/eq/fade/raw", 0.0)
        assert wait_for(lambda: eng.params.get("eq", "fade") == 0.0)
        eng.frame(20.0)
        f = eng.read()
        assert f[:, :64].max() == 0
        assert f[:, CELLS["eq2/g0"]].max() > 0
        assert eng.snapshot["eq"]["fade"] == pytest.approx(0.0, abs=1e-6)
        client.close()


def test_feedback_reaches_subscribers_and_not_the_sender(tmp_path):
    listener = Client(9)  # subscribed by the show file from the start
    text = SHOW.replace("[layout]", f'[osc]\nsubscribe = ["127.0.0.1:{listener.port}"]\n[layout]')
    eng = make_engine(tmp_path, text)
    with eng:
        sender = Client(eng.osc.port)
        sync = listener.received()
        assert ("/unstable/eq/hue/raw", 0.0) in sync and ("/unstable/show/scene/raw", 0.0) in sync
        sender.send("/unstable/subscribe", sender.port)
        assert ("/unstable/eq2/fade/raw", 1.0) in sender.received()  # its own full sync
        listener.received(quiet=0.1)

        sender.send("/unstable/eq/hue/raw", 45.0)
        heard = listener.received()
        assert ("/unstable/eq/hue/raw", 45.0) in heard
        assert ("/unstable/eq/hue", pytest.approx(0.625)) in heard
        assert sender.received(quiet=0.3) == []  # no echo of its own change

        # A change the engine makes (a scene) goes to every subscriber, the sender too.
        sender.send("/unstable/scene", 1)
        assert wait_for(lambda: eng.params.get("show", "scene") == 1.0)
        eng.frame(1.0)
        assert ("/unstable/eq/hue/raw", 30.0) in sender.received()  # scene 1's preset
        sender.close()
    listener.close()


def test_scenes_jump_over_osc_with_a_crossfade_and_advance_by_duration(tmp_path):
    eng = make_engine(tmp_path)
    with eng:
        client = Client(eng.osc.port)
        eng.frame(0.0)
        client.send("/unstable/scene", 1)
        assert wait_for(lambda: eng.params.get("show", "scene") == 1.0)
        eng.frame(1.0)  # the event is handled here: crossfade of 0.5 s starts
        assert eng.timeline.director.current == 1 and eng.params.get("eq", "hue") == 30.0
        eng.frame(1.25)
        mid = eng.read().copy()
        eng.frame(2.0)
        done = eng.read().copy()
        # Scene 1 shows eq2/g1 alone, fitted in the middle: the sides are background.
        assert done[:, :31].max() == 0 and done[:, 65:].max() == 0 and done[:, 33:63].max() > 0
        assert mid[:, :31].max() > 0  # halfway, the old layout still shows
        # Back to scene 0 over OSC, then it moves on to scene 1 by itself after its 5 s.
        client.send("/unstable/scene", 0)
        assert wait_for(lambda: eng.params.get("show", "scene") == 0.0)
        eng.frame(3.0)
        assert eng.timeline.director.current == 0
        eng.frame(7.9)
        assert eng.timeline.director.current == 0
        eng.frame(8.1)
        assert eng.timeline.director.current == 1 and eng.params.get("show", "scene") == 1.0
        client.close()


def test_record_toggle_and_snapshot_over_osc(tmp_path):
    # Without the rate limit (record_min_interval, tests/test_osc_bounds.py): each toggle acts at once.
    eng = make_engine(tmp_path, SHOW.replace("[layout]", "[actions]\nrecord_min_interval = 0\n[layout]"))
    with eng:
        client = Client(eng.osc.port)
        eng.frame(0.0)
        client.send("/unstable/record", 1)
        assert wait_for(lambda: eng.params.get("show", "record") == 1.0)
        for i in range(5):
            eng.frame(0.1 * (i + 1))
        client.send("/unstable/record", 0)
        assert wait_for(lambda: eng.params.get("show", "record") == 0.0)
        eng.frame(0.6)
        assert eng.recorder.writer is None
        client.send("/unstable/still")
        assert wait_for(lambda: eng.params._events)
        eng.frame(0.7)
        client.close()
    report = eng.close()
    (recording,) = report.recordings
    # The record event is handled in the frame at 0.1; the recording (and its automation) starts
    # with the next frame, 0.2, so that its automation header is the state that frame starts from.
    assert probe(recording).frames == 4
    assert Path(recording + ".automation.jsonl").is_file()
    (still,) = report.stills
    assert Path(still).is_file()
    import imageio.v3 as iio
    assert iio.imread(still).shape == (32, 96, 3)
    assert (tmp_path / "run" / "eq" / "checkpoint.pt").is_file()


def test_stopping_a_recording_finishes_it_in_the_background_while_frames_go_on(tmp_path, monkeypatch):
    # ffmpeg's finish is held back by a gate: stop() must return and frames must go on meanwhile,
    # and closing the show waits for the file to be whole.
    from unstable.encode import VideoWriter
    gate, closing = threading.Event(), threading.Event()
    real_close = VideoWriter.close

    def gated_close(self):
        closing.set()
        assert gate.wait(30)
        return real_close(self)

    monkeypatch.setattr(VideoWriter, "close", gated_close)
    eng = make_engine(tmp_path, SHOW.replace("[layout]", "[actions]\nrecord_min_interval = 0\n[layout]"))
    with eng:
        eng.recorder.record(tmp_path / "take.mp4")
        for n in range(4):
            eng.frame(number=n)
        eng.recorder.stop()              # returns with the writer still closing
        assert closing.wait(10) and eng.recorder.writer is None
        for n in range(4, 8):            # the show goes on while ffmpeg finishes
            eng.frame(number=n)
        assert eng.frames == 8 and closing.is_set() and not gate.is_set()
        gate.set()
    report = eng.close()
    assert report.recordings == [str(tmp_path / "take.mp4")]
    assert probe(tmp_path / "take.mp4").frames == 4  # frames 0-3, whole


def test_headless_run_trains_records_every_frame_and_resumes(tmp_path):
    out, tel = tmp_path / "live.mp4", tmp_path / "telemetry.jsonl"
    # Training on the show's thread: it steps from the first frame, where a training process (a CPU
    # show's default, tests/test_train_process.py) first starts an interpreter at a lower priority,
    # which on a busy machine can take longer than this 2 s show.
    text = SHOW.replace("[layout]", "[training]\nprocess = false\n[layout]")
    eng = make_engine(tmp_path, text, train=True, seconds=2.0, record=out, telemetry=tel)
    report = eng.run()
    info = probe(out)
    # seconds x fps: a frame per slot, a dropped slot (a busy machine) repeats the frame before
    assert info.frames == report.frames + report.repeated_frames == 20
    assert info.fps == 10 and (info.width, info.height) == (96, 32)
    assert report.steps["eq"] > 0 and report.steps["eq2"] > 0  # real training went on meanwhile
    lines = [json.loads(line) for line in tel.read_text().splitlines()]
    assert lines and {"fps", "frame_ms_p50", "frame_ms_p99", "steps_per_s", "params", "rss_mb"} <= set(lines[0])
    assert lines[-1]["params"]["eq"]["walk_speed"] == 1.0 and lines[-1]["rss_mb"] > 0
    saved = {}
    for name in ("eq", "eq2"):
        payload = load_checkpoint(tmp_path / "run" / name / "checkpoint.pt")
        assert payload["step"] == eng.pieces[name].system.step_count >= report.steps[name]
        saved[name] = payload["step"]
    # Playing the show again continues from the run folder's checkpoints.
    again = make_engine(tmp_path)
    with again:
        assert {n: p.system.step_count for n, p in again.pieces.items()} == saved
        assert again.pieces["eq"].mirror.system.step_count == saved["eq"]


def test_sigterm_stops_a_live_process_cleanly(tmp_path):
    path = write_show(tmp_path)
    out = tmp_path / "sig.mp4"
    code, rest = live_until_sigterm(path, "--record", str(out), "--run", str(tmp_path / "run"))
    assert code == 0, rest
    frames = frames_played(rest)
    repeated = frames_repeated(rest)  # slots dropped while recording
    assert frames > 0 and probe(out).frames == frames + repeated
    assert load_checkpoint(tmp_path / "run" / "eq" / "checkpoint.pt")["step"] >= 0


def test_training_is_capped_and_runs_below_the_display_priority(tmp_path):
    text = SHOW.replace("[layout]", "[training]\nprocess = false\nmax_steps_per_second = 4\nnice = 5\n[layout]")
    eng = make_engine(tmp_path, text, train=True)
    with eng:
        start = time.monotonic()
        assert wait_for(lambda: eng.pieces["eq"].steps >= 2 and eng.pieces["eq2"].steps >= 2, timeout=60)
        tid = eng.trainer._thread.native_id
        # Linux niceness stops at 19: a suite itself run under `nice -n 19` sees the thread there.
        assert os.getpriority(os.PRIO_PROCESS, tid) == min(19, os.getpriority(os.PRIO_PROCESS, 0) + 5)
        eng.frame(0.0)
        time.sleep(0.5)
        eng.frame(0.5)
        assert eng.pieces["eq"].mirror.syncs >= 1  # the display sees trained weights
    elapsed = time.monotonic() - start
    for p in eng.pieces.values():
        assert p.steps <= 4 * elapsed + 1, (p.name, p.steps, elapsed)


def test_live_size_overrides_the_shows_size(tmp_path):
    from click.testing import CliRunner
    from unstable.cli import main
    show = write_show(tmp_path)
    out = tmp_path / "big.mp4"
    r = CliRunner().invoke(main, ["live", str(show), "--headless", "--seconds", "0.3", "--osc-port", "0", "--web-port", "0", "--no-train",
                                  "--run", str(tmp_path / "run"), "--record", str(out), "--size", "192x64"])
    assert r.exit_code == 0, r.output
    info = probe(out)
    assert (info.width, info.height) == (192, 64)
    r = CliRunner().invoke(main, ["live", str(show), "--headless", "--size", "191x64"])
    assert r.exit_code == 2 and "--size 191x64" in r.output
