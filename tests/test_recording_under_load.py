"""A live recording is constant-rate on the show clock, with the machine loaded (issue 22, item 2).

Every test here runs the paced show (`Engine.run`, the wall clock) with two busy processes beside
it, and checks behaviour, not speed: the file holds exactly seconds x fps frames, frame n of the
file is the show's slot n (a dropped slot repeats the frame before, as OBS does), the re-render
from the recording's own automation is the same picture at every drawn slot, the counts in the
report, the telemetry and the end line add up, and a recording's sound lasts frames / fps and is
heard at its own slots. Dropped slots are forced by a frame hook that sleeps now and then (the
hogs add more, wherever they fall); recordings that must be compared bit for bit are written
losslessly (`Recorder.PRESET`), the slow one with the real h264_live.
"""

import json
import time

import numpy as np
import pytest
from tqdm import tqdm

from helpers import Client
from test_audio import clicks, write_wav
from test_show import write_show
from unstable.audio.decode import decode
from unstable.audio.features import RATE, frame_count
from unstable.audio.mux import stream_seconds
from unstable.frame.automation import automation_path, load_automation
from unstable.frame.timers import WallTimer
from unstable.live import Engine
from unstable.live.recorder import Recorder
from unstable.probe import probe, read_frames
from unstable.render import render_show
from unstable.show import load_show

pytestmark = pytest.mark.usefixtures("one_torch_thread")

# Scene 0 is all three panels; at `duration` it cuts (no crossfade) to eq2/g1 alone in the middle
# (the sides go black) and eq2's hue glides to 90 degrees: a glide and a cut that a recording off
# the show clock, or a timeline that jumped over dropped slots, would put elsewhere.
SHOW = """\
size = [96, 32]
fps = {fps}
[pieces.eq]
piece = "pieces/eq.toml"
[pieces.eq2]
piece = "pieces/eq2.toml"
[layout]
panels = ["eq/g0", "eq/g1", "eq2/g0"]
[walk]
keyframes = 4
period = 1.5
[training]
render_threads = 1
{extra}
[[scenes]]
duration = {duration}
crossfade = 0
[[scenes]]
duration = {duration}
crossfade = 0
layout = {{panels = ["eq2/g1"]}}
params = {{eq2 = {{hue = 90}}}}
"""


def silent(desc, total=None, **kw):
    return tqdm(total=total, disable=True)




def engine(tmp_path, fps, duration, extra="", **kw):
    show = write_show(tmp_path, SHOW.format(fps=fps, duration=duration, extra=extra))
    eng = Engine(load_show(show), headless=True, osc_port=0, web_port=0, run_dir=tmp_path / "run", train=False,
                 echo=lambda line: None, progress=silent, **kw)
    return show, eng


def capture(eng, stalls: dict[int, float]):
    """Keep every drawn frame {slot: [H, W, 3]}; sleep `stalls[slot]` seconds after the first slot
    drawn at or after `slot` (the hogs may have dropped that one)."""
    drawn = {}

    def hook(e):
        drawn[e.last_frame] = e.read().copy()
        due = [k for k in stalls if k <= e.last_frame]
        time.sleep(sum(stalls.pop(k) for k in due))

    eng.frame_hooks.append(hook)
    return drawn


def controller(eng, sends: list[tuple[int, str, float]]):
    """A real OSC controller on loopback: (slot, address, value) sent once the show has drawn that
    slot, so each lands in whichever slot, drawn or dropped, the loaded show happens to be in."""
    client = []

    def hook(e):
        if not client:
            client.append(Client(e.osc.port))
        while sends and e.last_frame >= sends[0][0]:
            _, address, value = sends.pop(0)
            client[0].send(address, value)

    eng.frame_hooks.append(hook)
    return client


def shown_at(drawn, slots: int) -> list[int]:
    """For each slot, the drawn slot the show had on screen then (the last drawn at or before it)."""
    out, last = [], None
    for k in range(slots):
        last = k if k in drawn else last
        out.append(last)
    return out


def rerender(show, tmp_path, recording, slots, fps, gl_ctx):
    out = tmp_path / "again.mov"
    (r,) = render_show(show, seconds=slots / fps, out=str(out), preset="ffv1", automation=automation_path(recording),
                       run=tmp_path / "run", ctx=gl_ctx, echo=lambda s: None, show_progress=False)
    assert r.frames == slots
    return list(read_frames(out))


def cut_at(frames, tol=0) -> int:
    """The first frame whose sides are black (scene 1), from frames showing scene 0 before it
    (`tol`: H.264's noise; a lossy file is judged a few pixels away from the middle panel)."""
    a, b = (30, 66) if tol == 0 else (24, 72)
    dark = [int(f[:, :a].max() <= tol and f[:, b:].max() <= tol) for f in frames]
    k = dark.index(1)
    assert not any(dark[:k]), dark
    return k


def test_dropped_slots_repeat_the_last_frame_and_the_file_stays_on_the_show_clock(tmp_path, gl_ctx, cpu_hogs,
                                                                                  monkeypatch):
    monkeypatch.setattr(Recorder, "PRESET", "h264_lossless")  # decoded bit for bit
    fps, slots = 10, 30
    out, tel = tmp_path / "take.mp4", tmp_path / "telemetry.jsonl"
    show, eng = engine(tmp_path, fps, 1.0, seconds=slots / fps, record=out, telemetry=tel)
    # Slot 8 (or 9) overruns past slot 10, the scene cut; slot 20 into 21; the hogs may add more.
    drawn = capture(eng, {8: 0.35, 20: 0.25})
    osc = controller(eng, [(4, "/unstable/eq/hue/raw", 90.0), (13, "/unstable/eq2/walk_speed/raw", 2.5),
                           (18, "/unstable/scene", 0)])
    report = eng.run()
    osc[0].close()

    info = probe(out)
    assert info.frames == slots
    assert report.repeated_frames == slots - report.frames >= 3
    assert report.dropped_slots >= report.repeated_frames and report.late_frames >= 2
    lines = [json.loads(line) for line in tel.read_text().splitlines()]
    assert lines[-1]["repeated_frames"] == report.repeated_frames
    assert lines[-1]["dropped_slots"] == report.dropped_slots
    changes = load_automation(automation_path(out)).changes
    assert [n for n, c in changes.items() if c.get("set", {}).get("eq", {}).get("hue") == 90.0], changes
    # (The later two are there unless the loaded show drew no frame after them: no assertion.)

    recorded = list(read_frames(out))
    on_screen = shown_at(drawn, slots)
    for k, d in enumerate(on_screen):
        assert np.array_equal(recorded[k], drawn[d]), f"file frame {k} is not slot {d}, the frame on screen"
    # The cut falls at slot 10 on the show clock: shown first by the next drawn slot, in the file there.
    assert cut_at(recorded) == min(k for k in drawn if k >= 10)

    # The render of the recording's own automation draws every slot: each slot the show drew is the
    # same picture (the dropped slots' scene cut and glide steps happened on the timeline too).
    rendered = rerender(show, tmp_path, out, slots, fps, gl_ctx)
    assert cut_at(rendered) == 10
    for n, image in drawn.items():
        assert np.array_equal(image, rendered[n]), f"drawn slot {n} differs from its render"


@pytest.mark.slow
def test_twenty_seconds_at_30_fps_under_load_record_exactly_600_frames_on_the_show_clock(tmp_path, gl_ctx, cpu_hogs):
    fps, slots = 30, 600
    out = tmp_path / "take.mp4"
    show, eng = engine(tmp_path, fps, 7.0, seconds=20, record=out)
    drawn = capture(eng, {100: 0.2, 209: 0.15})   # 210: the first cut, on a dropped slot
    report = eng.run()

    info = probe(out)
    assert (info.frames, info.fps) == (slots, 30)
    assert report.repeated_frames == slots - report.frames >= 5
    rendered = rerender(show, tmp_path, out, slots, fps, gl_ctx)
    for n, image in drawn.items():
        assert np.array_equal(image, rendered[n]), f"drawn slot {n} differs from its render"
    # The scene changes (slots 210 and 420) are where the render has them, in the lossy file too.
    recorded = list(read_frames(out))
    first = cut_at(recorded, tol=12)
    assert first == min(k for k in drawn if k >= 210) and cut_at(rendered) == 210
    back = [k for k in range(first, slots) if recorded[k][:, :24].max() > 12]
    assert back and back[0] == min(k for k in drawn if k >= 420)
    # And frame by frame it is the slot on screen, not another: each file frame is nearer (H.264
    # noise) to the render of the slot on screen than to the render a second later or earlier.
    on_screen = shown_at(drawn, slots)
    for k, d in enumerate(on_screen):
        err = np.abs(recorded[k].astype(int) - rendered[d]).mean()
        for other in (d - fps, d + fps):
            if 0 <= other < slots:
                assert err < np.abs(recorded[k].astype(int) - rendered[other]).mean(), (k, d, other)


def test_a_recording_carries_the_shows_sound_for_exactly_its_frames(tmp_path, cpu_hogs):
    """A show following an audio file, recorded from slot 5 on with slots dropped: the muxed sound
    starts at its first slot's sound, lasts frames / fps, and each click is heard at its own slot
    and seen there (a click in a dropped slot: in the next frame drawn)."""
    fps, slots = 10, 25
    click_slots = [8, 10, 18]
    sound = clicks(click_slots, fps, 2.1)
    write_wav(tmp_path / "clicks.wav", sound)  # ends before the show does
    extra = ('[audio]\nfile = "clicks.wav"\n[[audio.map]]\nfeature = "onset"\nparam = "show.master_fade"\n'
             'amount = -1.0')
    _, eng = engine(tmp_path, fps, 60, extra=extra, seconds=slots / fps)
    out = tmp_path / "sound.mp4"
    drawn = capture(eng, {9: 0.3, 15: 0.25})   # 10, a click, dropped (unless the hogs dropped 9)

    def start_recording(e):
        if e.last_frame >= 4 and not e.recorder.recording and not e.recorder.recordings:
            e.recorder.record(out)   # from the next frame drawn (slot 5 unless the hogs drop it)
    eng.frame_hooks.append(start_recording)
    report = eng.run()
    assert report.repeated_frames >= 2
    start = load_automation(automation_path(out)).start_frame
    assert start in drawn and 5 <= start
    heard_at = [c for c in click_slots if c >= start]
    assert heard_at
    frames = probe(out).frames
    assert frames == slots - start
    d = stream_seconds(out)
    assert d["video"] == pytest.approx(frames / fps)
    assert abs(d["audio"] - frames / fps) <= 1 / fps
    heard = decode(out)
    peaks = [i for i in np.flatnonzero(np.abs(heard) > 0.4)]
    groups = [p for i, p in enumerate(peaks) if i == 0 or p - peaks[i - 1] > RATE // 100]
    assert [int(p / RATE * fps) + start for p in groups] == heard_at
    # The video agrees: a drawn slot is black (master fade -1) when a click fell in it or in the
    # slots dropped just before it; the file shows it at its slot and repeats it in the drops after.
    dark = [k + start for k, f in enumerate(read_frames(out)) if f.mean() < 1.0]
    on_screen = shown_at(drawn, slots)
    # (A drawn slot past the sound's end shows no click dropped before it: the file's levels end.)
    black = {n for n in drawn for c in click_slots
             if max((k for k in drawn if k < n), default=-1) < c <= n < frame_count(len(sound), fps)}
    assert black and dark == [k for k in range(start, slots) if on_screen[k] in black]


def test_the_timer_counts_the_slots_it_drops():
    now = [0.0]
    timer = WallTimer(10, time_source=lambda: now[0], sleep=lambda s: None)
    now[0] = 0.34                          # frame 0 ran into slots 1-3: 1, 2 dropped, 3 caught up
    assert timer.next_after(0) == 3 and (timer.late, timer.dropped) == (1, 2)
    now[0] = 0.41
    assert timer.next_after(3) == 4 and timer.dropped == 2
    timer.restart()
    assert (timer.late, timer.dropped) == (0, 0)
