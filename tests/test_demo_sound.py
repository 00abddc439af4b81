"""The shipped show with sound (shows/demo-sound.toml): its maps follow the shipped sound's kicks,
bass and hi-hats, in the parameters a render draws from and in the rendered pixels."""

import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from unstable.audio.mapping import AudioModulator, FileInput
from unstable.cli import main
from unstable.control.store import ParameterStore
from unstable.frame.timeline import ShowTimeline
from unstable.live import build_systems, show_groups
from unstable.probe import read_frames
from unstable.show import load_show

ROOT = Path(__file__).resolve().parents[1]
SHOW = ROOT / "shows" / "demo-sound.toml"
FIRST_KICK = 2.0   # seconds (scripts/make_sound.py): a pad alone before it
FIRST_HAT = 4.25


def timeline(show, audio=True):
    """The show's timeline as a render builds it (render/show_frames.py, open_show's timeline())."""
    import torch
    s = show.settings
    systems = build_systems(show, torch.device("cpu"))
    store = ParameterStore(show_groups(show, systems))
    specs = {k: store.spec(*k) for k in store.keys()}
    fps = Fraction(repr(float(s.fps)))
    source = FileInput(show.audio_file(), fps) if audio else None
    mod = AudioModulator(s.audio.map, specs, fps, source) if audio else None
    return ShowTimeline(show.resolved_scenes(), store, list(systems), s.fps, loop=s.loop_scenes,
                        start_values={n: e.params for n, e in s.pieces.items()}, audio=mod), source


@pytest.mark.usefixtures("one_torch_thread")
def test_the_demo_with_sound_moves_its_parameters_with_the_kicks_the_bass_and_the_hats():
    show = load_show(SHOW)
    assert show.audio_file() == ROOT / "shows" / "sounds" / "demo.flac"
    maps = {m.param: m.feature for m in show.settings.audio.map}
    assert maps == {"eq.hue": "onset", "bad.temperature": "low", "eq.saturation": "high"}
    frames = 8 * 30   # 8 s: the pad alone, then kicks and bass, then hats
    with_sound, source = timeline(show)
    silent, _ = timeline(show, audio=False)
    moved = {p: [] for p in maps}
    for n in range(frames):
        a, b = with_sound.advance(n).snapshot, silent.advance(n).snapshot
        for p in maps:
            g, name = p.split(".")
            moved[p].append(a[g][name] - b[g][name])
    moved = {p: np.array(v) for p, v in moved.items()}
    kick = int(FIRST_KICK * 30) - 1   # an onset sits at its column's centre, up to ~8 ms early
    hat = int(FIRST_HAT * 30)
    onsets = np.nonzero(source.features.values["onset"][:frames])[0]
    assert onsets[0] == kick and len(onsets) >= 15
    # The kicks turn the hue: nothing before the first, a jump at each onset, falling back between.
    assert np.all(moved["eq.hue"][:kick] == 0)
    assert np.all(moved["eq.hue"][onsets] > 40)            # 0.15 of 360 degrees at an onset
    kicks = onsets[onsets < hat - 8]                        # a kick every 15 frames, nothing between
    assert len(kicks) == 4 and np.all(moved["eq.hue"][kicks + 7] < 0.5 * moved["eq.hue"][kicks])
    # The bass: BAD's temperature is up more once the kick and bass play than over the pad alone.
    temp = moved["bad.temperature"]
    assert np.all(temp >= 0) and temp[kick + 5:].mean() > 1.3 * temp[:kick].mean()
    # The hats: saturation still over the pad alone, barely touched by the kicks' clicks, up with the hats.
    sat = moved["eq.saturation"]
    assert np.all(sat[:kick] == 0) and sat[hat:].mean() > 3 * sat[kick:hat - 1].mean(), (sat[kick:hat - 1], sat[hat:])


def silence(path: Path, seconds: float) -> Path:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(44_100)
        w.writeframes(bytes(2 * int(44_100 * seconds)))
    return path


@pytest.mark.slow
@pytest.mark.usefixtures("one_torch_thread", "tmp_cwd")
def test_a_render_of_the_demo_with_sound_shows_the_kicks_and_carries_the_sound(tmp_path):
    """Rendered with its sound and with silence of the same length: the generators' panels are the
    same frame for frame until the first kick and differ after it; BAD's panel differs from the
    start (the pad has bass in it)."""
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["live", str(SHOW), "--headless", "--osc-port", "0", "--web-port", "0", "--no-train",
                                  "--seconds", "0.2", "--size", "96x32", "--run", str(run), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    outs = {}
    for name, audio in (("sound", []), ("silence", ["--audio", str(silence(tmp_path / "s.wav", 3.0))])):
        out = tmp_path / f"{name}.mov"
        r = CliRunner().invoke(main, ["render", str(SHOW), "--seconds", "3", "--size", "96x32", "--run", str(run),
                                      "--out", str(out), "--preset", "ffv1", *audio])
        assert r.exit_code == 0, r.output
        outs[name] = np.stack(list(read_frames(out)))   # [frames, H, W, 3]
    sound, quiet = outs["sound"], outs["silence"]
    assert sound.shape == quiet.shape and sound.shape[0] == 90
    kick = int(FIRST_KICK * 30) - 1
    eq = (slice(None), slice(None), slice(0, 60))     # the two generators' panels: left two thirds
    bad = (slice(None), slice(None), slice(66, 96))
    diff_eq = [np.abs(s[eq[1:]].astype(int) - q[eq[1:]]).mean() for s, q in zip(sound, quiet)]
    diff_bad = [np.abs(s[bad[1:]].astype(int) - q[bad[1:]]).mean() for s, q in zip(sound, quiet)]
    assert max(diff_eq[:kick]) == 0, diff_eq[:kick]
    assert min(diff_eq[kick:kick + 8]) > 1.0, diff_eq[kick:kick + 8]
    assert np.mean(diff_bad[:kick]) > 0.5
