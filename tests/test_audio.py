"""Sound that plays the show: audio features on the frame clock, [[audio.map]] onto live parameters,
renders that follow an audio file frame-exactly and carry it, live input without a device."""

import wave
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from tqdm import tqdm

from test_show import write_show
from unstable.audio import features as F
from unstable.audio.mapping import AudioMapSettings, AudioModulator, DeviceInput, FileInput
from unstable.audio.mux import stream_seconds
from unstable.cli import main
from unstable.control.store import ParameterStore
from unstable.errors import ConfigError, UnstableError
from unstable.frame.automation import load_automation
from unstable.live import Engine
from unstable.probe import probe, read_frames
from unstable.render import render_show
from unstable.schema import ParamSpec, show_specs
from unstable.show import load_show
from helpers import ONE_PANEL_SHOW

FPS = 10
CLICK_FRAMES = [3, 4, 9, 15]          # 3 and 4: clicks in consecutive frames
SECONDS = 2.05                         # -> ceil(2.05 x 10) = 21 frames

SHOW = ONE_PANEL_SHOW + """\
[walk]
keyframes = 2
period = 0.5
[training]
render_threads = 1
[[audio.map]]
feature = "onset"
param = "show.master_fade"
amount = -1.0
[[audio.map]]
feature = "rms"
param = "eq.hue"
amount = 0.25
smoothing = 0.3
"""


def silent(desc, total=None, **kw):
    return tqdm(total=total, disable=True)


def clicks(frames, fps, seconds, *, noise=0.001, seed=0) -> np.ndarray:
    """Quiet noise with a click (a 0.8 impulse) in the middle of each of `frames`."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(int(round(F.RATE * seconds))) * noise).astype(np.float32)
    for f in frames:
        x[int(round((f + 0.5) / fps * F.RATE))] += 0.8
    return x


def write_wav(path: Path, x: np.ndarray, rate: int = F.RATE, channels: int = 1) -> Path:
    pcm = (np.clip(x, -1, 1) * 32767).astype("<i2")
    if channels == 2:
        pcm = np.repeat(pcm, 2)
    with wave.open(str(path), "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(pcm.tobytes())
    return path


# ------------------------------------------------------------------------------------- features

def test_onsets_land_in_the_frames_of_their_clicks_and_steady_sound_has_none():
    x = clicks([5, 17, 18, 40, 77, 100, 101], 30, 4.0)
    feats = F.analyse(x, 30)
    assert feats.frames == 120
    assert np.nonzero(feats.values["onset"])[0].tolist() == [5, 17, 18, 40, 77, 100, 101]
    # A steady tone: one onset where it starts, none after; its band and centroid are where it is.
    t = np.arange(F.RATE * 2) / F.RATE
    for hz, band, centroid in ((100, "low", (0.0, 0.05)), (1000, "mid", (0.45, 0.55)), (8000, "high", (0.9, 1.0))):
        g = F.analyse((0.5 * np.sin(2 * np.pi * hz * t)).astype(np.float32), 30)
        assert g.values["onset"][1:].sum() == 0
        others = [b for b in F.BANDS if b != band]
        assert g.values[band][10] == pytest.approx(0.9, abs=0.01)   # -6 dBFS on the -60..0 scale
        assert all(g.values[b][10] < 0.2 for b in others)
        assert g.values["rms"][10] == pytest.approx(0.9, abs=0.01)
        assert centroid[0] <= g.values["centroid"][10] <= centroid[1]
    # Silence reads 0 everywhere.
    z = F.analyse(np.zeros(F.RATE, np.float32), 30)
    assert all(v.max() == 0 for v in z.values.values())


def test_frame_count_is_the_ceiling_of_duration_times_fps():
    assert F.frame_count(F.RATE * 2, 30) == 60
    assert F.frame_count(F.RATE * 2 + 1, 30) == 61
    assert F.frame_count(int(F.RATE * 2.05), 10) == 21
    assert F.frame_count(F.RATE, Fraction(30000, 1001)) == 30    # 29.97 -> ceil
    assert F.frame_count(1, 30) == 1


def test_long_signals_are_analysed_in_blocks_with_the_same_result(monkeypatch):
    x = clicks([2, 7, 8, 20], 30, 1.0, noise=0.01)
    whole = F.columns(x)
    monkeypatch.setattr(F, "_BLOCK", 7)
    blocks = F.columns(x)
    assert np.allclose(whole.flux, blocks.flux) and np.allclose(whole.bands["mid"], blocks.bands["mid"])


def test_the_streaming_input_finds_the_same_onsets_frame_by_frame():
    """DeviceInput's path (the samples a device delivers, frame by frame), fed by hand: no device needed."""
    x = clicks([5, 12, 13, 25], 30, 1.2, noise=0.001)
    dev = DeviceInput.__new__(DeviceInput)
    dev.__init__("no-such-device-for-tests", 30)   # opens nothing here; features still computed from fed samples
    per = F.RATE // 30
    hits = []
    for n in range(36):
        dev.feed(x[n * per:(n + 1) * per])
        if dev.at(n)["onset"]:
            hits.append(n)
    # Live, an onset needs its window and one column after it: at most one frame later than offline.
    offline = np.nonzero(F.analyse(x, 30).values["onset"])[0].tolist()
    assert len(hits) == len(offline) == 4
    assert all(0 <= h - o <= 1 for h, o in zip(hits, offline))
    dev.close()


# ------------------------------------------------------------------------------------- mapping

def test_a_map_moves_its_parameter_by_amount_times_level_of_its_fader_travel_and_stays_in_range():
    maps = [AudioMapSettings("onset", "eq.hue", 0.25), AudioMapSettings("rms", "eq.hue", 0.5),
            AudioMapSettings("low", "eq.learning_rate", 1.0)]
    hue = ParamSpec("hue", -180.0, 180.0, 0.0)
    lr = ParamSpec("learning_rate", 0.01, 10.0, 1.0, log=True)
    amounts = {f"amount{i}": m.amount for i, m in enumerate(maps)}
    mod = AudioModulator(maps, {("eq", "hue"): hue, ("eq", "learning_rate"): lr}, 30)
    snap = {"eq": {"hue": 0.0, "learning_rate": 1.0}, "audio": dict(amounts)}
    mod.apply(snap, [1.0, 0.0, 0.0])
    assert snap["eq"]["hue"] == pytest.approx(90.0)           # 0.25 of 360 degrees
    snap = {"eq": {"hue": 170.0, "learning_rate": 1.0}, "audio": dict(amounts)}
    mod.apply(snap, [1.0, 1.0, 1.0])
    assert snap["eq"]["hue"] == 180.0 and snap["eq"]["learning_rate"] == pytest.approx(10.0)  # clamped
    snap = {"eq": {"hue": 0.0, "learning_rate": 1.0}, "audio": {**amounts, "amount0": -0.5}}
    mod.apply(snap, [0.5, 0.0, 0.0])                            # the live amount, not the show file's
    assert snap["eq"]["hue"] == pytest.approx(-90.0)              # -0.5 x 0.5 of 360 degrees


def test_envelopes_rise_at_once_and_fall_with_the_smoothing_time():
    class Fixed:
        frames = 10

    feats = F.FrameFeatures(Fraction(10), 10, {f: np.zeros(10, np.float32) for f in F.FEATURES}, np.zeros(0))
    feats.values["onset"][2] = 1.0
    inp = FileInput.__new__(FileInput)
    inp.features, inp.frames = feats, 10
    mod = AudioModulator([AudioMapSettings("onset", "eq.hue", 1.0, smoothing=0.1),
                          AudioMapSettings("onset", "eq.hue", 1.0)], {}, 10, inp)
    assert [mod.levels(n)[1] for n in range(5)] == [0, 0, 1, 0, 0]
    decay = [mod.levels(n)[0] for n in range(2, 6)]
    assert decay == pytest.approx([1.0, np.exp(-1), np.exp(-2), np.exp(-3)])


def test_show_files_check_their_audio_maps(tmp_path):
    from test_show import checked
    good = write_show(tmp_path, SHOW)
    show, _ = checked(good)
    assert [m.param for m in show.settings.audio.map] == ["show.master_fade", "eq.hue"]
    for change, key in ((('param = "eq.hue"', 'param = "eq.nope"'), "audio.map[1].param"),
                        (('param = "eq.hue"', 'param = "ghost.hue"'), "audio.map[1].param"),
                        (('param = "eq.hue"', 'param = "hue"'), "audio.map[1].param"),
                        (('feature = "rms"', 'feature = "loudness"'), "audio.map[1].feature"),
                        (("amount = 0.25", "amount = 2.0"), "audio.map[1].amount"),
                        (('[pieces.eq]', '[pieces.audio]'), "pieces.audio")):
        bad = write_show(tmp_path, SHOW.replace(*change).replace('"eq/g0"', '"audio/g0"' if "audio]" in change[1]
                                                                      else '"eq/g0"'), name="bad.toml")
        with pytest.raises(ConfigError, match=key.replace("[", r"\[").replace("]", r"\]")):
            checked(bad)


# ----------------------------------------------------------------------------- live and render

def play_live(tmp_path, show_path, frames, *, audio=None, automation=None, echo=None):
    """Frames 0..frames-1 of the live show (training off), read back."""
    eng = Engine(load_show(show_path), headless=True, osc_port=0, run_dir=tmp_path / "run", train=False,
                 automation=automation, audio=audio, echo=echo or (lambda s: None), progress=silent)
    out = []
    with eng:
        for n in range(frames):
            eng.frame(number=n)
            out.append(eng.read().copy())
    return eng, out


@pytest.mark.usefixtures("one_torch_thread")
def test_a_render_follows_clicks_in_exactly_their_frames_and_carries_the_audio(tmp_path, gl_ctx):
    show_path = write_show(tmp_path, SHOW)
    wav = write_wav(tmp_path / "clicks.wav", clicks(CLICK_FRAMES, FPS, SECONDS), channels=2)
    frames = 21
    # Live from the file, its automation recorded: the run folder the render reads comes from here.
    auto_path = tmp_path / "live.automation.jsonl"
    eng, live = play_live(tmp_path, show_path, frames, audio=wav, automation=auto_path)
    assert eng.params.keys()[-2:] == [("audio", "amount0"), ("audio", "amount1")]
    assert eng.osc is not None and "/unstable/audio/amount0" in eng.osc.server.dispatcher._map

    out = tmp_path / "follow.mov"
    (r,) = render_show(show_path, audio=wav, out=str(out), preset="ffv1", run=tmp_path / "run", ctx=gl_ctx,
                       echo=lambda s: None, show_progress=False)
    assert r.frames == frames == F.frame_count(int(round(F.RATE * SECONDS)), FPS)
    rendered = list(read_frames(out))
    assert len(rendered) == frames
    brightness = [float(f.mean()) for f in rendered]
    dark = [n for n, b in enumerate(brightness) if b < 1.0]
    assert dark == CLICK_FRAMES, brightness
    assert min(b for n, b in enumerate(brightness) if n not in CLICK_FRAMES) > 10
    # Live from the same file is the same picture, frame for frame.
    for n, (a, b) in enumerate(zip(live, rendered)):
        assert np.array_equal(a, b), f"frame {n}"
    # The muxed audio lasts as long as the video, within one frame (read back with the bundled ffmpeg).
    info = probe(out)
    assert info.frames == frames
    durations = stream_seconds(out)
    assert durations["video"] == pytest.approx(frames / FPS)
    assert abs(durations["audio"] - durations["video"]) <= 1 / FPS
    # The automation recorded the levels: a render of it, without the sound, is the same picture.
    auto = load_automation(auto_path)
    assert [f for f, c in sorted(auto.changes.items()) if c.get("audio", [0])[0] == 1.0] == CLICK_FRAMES
    again = tmp_path / "again.mov"
    render_show(show_path, automation=auto_path, seconds=frames / FPS, out=str(again), preset="ffv1",
                run=tmp_path / "run", ctx=gl_ctx, echo=lambda s: None, show_progress=False)
    assert all(np.array_equal(a, b) for a, b in zip(rendered, read_frames(again)))
    assert "audio" not in stream_seconds(again)


@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("preset, codec", [("h264", "aac"), ("prores", "pcm_s16le")])
def test_delivery_and_master_presets_carry_aac_and_pcm(tmp_path, gl_ctx, preset, codec):
    import subprocess
    from unstable.formats import ffmpeg_exe
    show_path = write_show(tmp_path, SHOW.replace("size = [48, 16]", "size = [48, 16]\n"))
    wav = write_wav(tmp_path / "c.wav", clicks([2], FPS, 1.03))
    play_live(tmp_path, show_path, 1)
    out = tmp_path / ("o.mp4" if preset == "h264" else "o.mov")
    (r,) = render_show(show_path, audio=wav, out=str(out), preset=preset, run=tmp_path / "run", ctx=gl_ctx,
                       echo=lambda s: None, show_progress=False)
    assert r.frames == 11
    d = stream_seconds(out)
    assert abs(d["audio"] - d["video"]) <= 1 / FPS and d["video"] == pytest.approx(1.1)
    err = subprocess.run([ffmpeg_exe(), "-hide_banner", "-i", str(out)], capture_output=True, text=True).stderr
    assert f"Audio: {codec}" in err


@pytest.mark.usefixtures("one_torch_thread")
def test_parts_of_a_render_join_and_take_the_audio_after_the_join(tmp_path, gl_ctx):
    show_path = write_show(tmp_path, SHOW)
    wav = write_wav(tmp_path / "clicks.wav", clicks(CLICK_FRAMES, FPS, SECONDS))
    play_live(tmp_path, show_path, 1)
    whole = tmp_path / "whole.mov"
    render_show(show_path, audio=wav, out=str(whole), preset="ffv1", run=tmp_path / "run", ctx=gl_ctx,
                echo=lambda s: None, show_progress=False)
    lines = []
    parts = [tmp_path / "p1.mov", tmp_path / "p2.mov"]
    for part, frame_range in zip(parts, ("0:8", "8:")):
        render_show(show_path, audio=wav, frame_range=frame_range, out=str(part), preset="ffv1", run=tmp_path / "run",
                    ctx=gl_ctx, echo=lines.append, show_progress=False)
    assert len(lines) == 2 and all("part" in ln and "concat" in ln for ln in lines)
    joined = tmp_path / "joined.mov"
    r = CliRunner().invoke(main, ["render", "concat", *map(str, parts), "--out", str(joined), "--audio", str(wav)])
    assert r.exit_code == 0, r.output
    assert all(np.array_equal(a, b) for a, b in zip(read_frames(whole), read_frames(joined)))
    d = stream_seconds(joined)
    assert probe(joined).frames == 21 and abs(d["audio"] - d["video"]) <= 1 / FPS


@pytest.mark.usefixtures("one_torch_thread")
def test_without_an_input_device_live_audio_is_one_line_and_the_show_plays_on(tmp_path):
    """For real: sounddevice (PortAudio) on a machine with no audio device."""
    show_path = write_show(tmp_path, SHOW)
    lines = []
    eng, frames = play_live(tmp_path, show_path, 5, echo=lines.append)
    audio_lines = [ln for ln in lines if "sound input" in ln or "no live input" in ln]
    assert len(audio_lines) == 1 and "no live input" in audio_lines[0] and "plays on" in audio_lines[0]
    assert len(frames) == 5 and eng.frames == 5
    assert eng.audio is not None and eng.audio.input is None


@pytest.mark.usefixtures("one_torch_thread")
def test_a_file_that_is_not_audio_is_one_line(tmp_path, gl_ctx):
    show_path = write_show(tmp_path, SHOW)
    junk = tmp_path / "notes.txt"
    junk.write_text("this is not a sound\n" * 50)
    with pytest.raises(UnstableError, match="notes.txt: not an audio file"):
        FileInput(junk, 10)
    # Live: one line, and the show plays on at its frame rate.
    lines = []
    eng, frames = play_live(tmp_path, show_path, 3, audio=junk, echo=lines.append)
    audio_lines = [ln for ln in lines if "notes.txt" in ln]
    assert len(audio_lines) == 1 and "not an audio file" in audio_lines[0] and len(frames) == 3
    # A render: one line on stderr, exit status 2, nothing written.
    r = CliRunner().invoke(main, ["render", str(show_path), "--audio", str(junk), "--run", str(tmp_path / "run"),
                                  "--out", str(tmp_path / "x.mov"), "--preset", "ffv1"])
    assert r.exit_code == 2 and "notes.txt" in r.output and len(r.output.strip().splitlines()) == 1
    assert not (tmp_path / "x.mov").exists()
    r = CliRunner().invoke(main, ["render", str(show_path), "--audio", str(tmp_path / "missing.wav")])
    assert r.exit_code == 2 and "missing.wav: no such file" in r.output


@pytest.mark.usefixtures("one_torch_thread")
def test_the_amounts_are_live_parameters_played_over_osc_and_replayed_from_the_automation(tmp_path, gl_ctx):
    from helpers import Client, wait_for
    show_path = write_show(tmp_path, SHOW)
    wav = write_wav(tmp_path / "clicks.wav", clicks(CLICK_FRAMES, FPS, SECONDS))
    auto_path = tmp_path / "osc.automation.jsonl"
    eng = Engine(load_show(show_path), headless=True, osc_port=0, run_dir=tmp_path / "run", train=False,
                 automation=auto_path, audio=wav, echo=lambda s: None, progress=silent)
    live = []
    with eng:
        client = Client(eng.osc.port)
        for n in range(21):
            if n == 6:  # the onset map off from frame 6 on: clicks 9 and 15 no longer darken the frame
                client.send("/unstable/audio/amount0", 0.5)  # fader middle = amount 0
                assert wait_for(lambda: eng.params.get("audio", "amount0") == 0.0)
            eng.frame(number=n)
            live.append(eng.read().copy())
        client.close()
    dark = [n for n, f in enumerate(live) if f.mean() < 1.0]
    assert dark == [3, 4]
    out = tmp_path / "again.mov"
    render_show(show_path, automation=auto_path, out=str(out), preset="ffv1", run=tmp_path / "run", ctx=gl_ctx,
                echo=lambda s: None, show_progress=False)
    rendered = list(read_frames(out))
    assert len(rendered) >= 16 and all(np.array_equal(a, b) for a, b in zip(live, rendered))


def test_a_live_show_that_drops_frames_still_shows_the_onsets_it_skipped():
    feats = F.FrameFeatures(Fraction(10), 10, {f: np.zeros(10, np.float32) for f in F.FEATURES}, np.zeros(0))
    feats.values["onset"][3] = 1.0
    inp = FileInput.__new__(FileInput)
    inp.features, inp.frames = feats, 10
    mod = AudioModulator([AudioMapSettings("onset", "eq.hue", 1.0)], {}, 10, inp)
    assert [mod.levels(n)[0] for n in (0, 1, 2, 5, 6)] == [0, 0, 0, 1, 0]   # frames 3 and 4 were dropped
    again = AudioModulator([AudioMapSettings("onset", "eq.hue", 1.0)], {}, 10, inp)
    assert [again.levels(n)[0] for n in range(7)] == [0, 0, 0, 1, 0, 0, 0]


@pytest.mark.usefixtures("one_torch_thread")
def test_unstable_live_with_audio_from_the_command_line(tmp_path):
    show_path = write_show(tmp_path, SHOW)
    wav = write_wav(tmp_path / "clicks.wav", clicks(CLICK_FRAMES, FPS, SECONDS))
    junk = tmp_path / "cover.png"
    junk.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(200))

    def live(*flags):
        r = CliRunner().invoke(main, ["live", str(show_path), "--headless", "--osc-port", "0", "--web-port", "0", "--no-train",
                                      "--seconds", "0.5", "--run", str(tmp_path / "run"), "--device", "cpu", *flags])
        assert r.exit_code == 0, r.output
        return [ln for ln in r.output.splitlines() if any(k in ln for k in ("moves", "sound input"))]

    (line,) = live("--audio", str(wav))
    assert "clicks.wav moves show.master_fade (onset), eq.hue (rms)" in line
    (line,) = live("--audio", str(junk))
    assert "cover.png: not an audio file" in line and "plays on" in line
    (line,) = live()
    assert "no live input" in line and "plays on" in line
