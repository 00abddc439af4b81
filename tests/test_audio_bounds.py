"""Sound at its edges: a header that lies about its rate, an hour of sound in bounded memory, NaN and
infinite samples, --audio on a show that maps none, and the AAC bitrate the README states."""

import math
import resource
import struct
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from test_audio import SHOW, clicks, play_live, write_wav
from test_show import write_show
from unstable.audio import features as F
from unstable.audio.decode import (MAX_RATE, MEMORY_BUDGET, MIN_RATE, AudioHeader, analysis_bytes, check_header,
                                  probe_header)
from unstable.audio.mapping import FileInput
from unstable.audio.mux import stream_seconds
from unstable.cli import main
from unstable.errors import UnstableError
from unstable.formats import ffmpeg_exe
from unstable.frame.automation import load_automation
from unstable.render import render_show
from unstable.render.renderer import show_renderer

ROOT = Path(__file__).resolve().parents[1]
FPS = 10


def write_float_wav(path: Path, x: np.ndarray, rate: int, channels: int = 1) -> Path:
    """A 32-bit float WAV (format 3) of interleaved `x`, NaN and infinities kept as they are."""
    data = np.asarray(x, "<f4").tobytes()
    fmt = struct.pack("<IHHIIHH", 16, 3, channels, rate, rate * channels * 4, channels * 4, 32)
    path.write_bytes(b"RIFF" + struct.pack("<I", 36 + len(data)) + b"WAVE" + b"fmt " + fmt
                     + b"data" + struct.pack("<I", len(data)) + data)
    return path


def run_limited(code: str, limit_bytes: int, cwd: Path) -> subprocess.CompletedProcess:
    """`code` in a child Python with its address space limited to `limit_bytes` (RLIMIT_AS)."""
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (limit_bytes, limit_bytes))
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                          preexec_fn=limit, cwd=cwd, timeout=120)


# --------------------------------------------------------------------------- lying headers, memory

def test_a_wav_that_claims_1_hz_is_refused_in_one_line_under_a_memory_limit(tmp_path):
    """1 MB of valid float WAV at 1 Hz: resampled to 48 kHz it would be 69 hours (the 6-hour cap:
    1.04e9 samples, 23 GB). Refused from the header, before anything is decoded. Both tries run in
    a child whose address space is capped (3 GB), where the old code died with a numpy
    _ArrayMemoryError traceback (uncapped, the OOM killer took it at 23.5 GB)."""
    lying = write_float_wav(tmp_path / "one-hertz.wav", np.zeros(250_000, np.float32), rate=1)
    proc = run_limited(f"""
        from unstable.audio.mapping import FileInput
        from unstable.errors import UnstableError
        try:
            FileInput({str(lying)!r}, 30)
        except UnstableError as e:
            print(e)
    """, 3 << 30, tmp_path)
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    (line,) = proc.stdout.splitlines()
    assert "one-hertz.wav" in line and "1 Hz" in line and f"{MIN_RATE}..{MAX_RATE} Hz" in line
    # The CLI says one line and exits 2.
    show_path = write_show(tmp_path, SHOW)
    proc = run_limited(f"""
        import sys
        from unstable.cli import main
        sys.argv = ["unstable", "render", {str(show_path)!r}, "--audio", {str(lying)!r},
                    "--run", {str(tmp_path / "run")!r}, "--out", {str(tmp_path / "x.mov")!r}, "--preset", "ffv1"]
        main()
    """, 3 << 30, tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "MemoryError" not in proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and "one-hertz.wav" in errors[0] and "1 Hz" in errors[0], proc.stderr


def test_rates_and_lengths_outside_the_limits_are_refused_naming_the_sizes(tmp_path):
    for rate, ok in ((MIN_RATE - 1, False), (MIN_RATE, True), (MAX_RATE, True), (MAX_RATE + 1, False)):
        path = write_float_wav(tmp_path / f"r{rate}.wav", np.zeros(rate // 10, np.float32), rate=rate)
        if ok:
            assert FileInput(path, 30).samples == F.RATE // 10
        else:
            with pytest.raises(UnstableError, match=f"r{rate}.wav: its header says {rate} Hz"):
                FileInput(path, 30)
    # A header whose duration is past the limits (a WAV's duration follows its real size, so the
    # header is built here: what ffmpeg would read from 7 hours of stereo FLAC).
    h = AudioHeader("flac", 44_100, 2, "stereo", "s16", 7 * 3600.0)
    with pytest.raises(UnstableError) as e:
        check_header(h, "seven-hours.flac", 30)
    line = str(e.value)
    assert "seven-hours.flac: 7.0 hours long (flac, 44100 Hz, stereo)" in line and "GB" in line and "6 hours" in line
    check_header(AudioHeader("flac", 44_100, 2, "stereo", "s16", 5 * 3600.0), "five-hours.flac", 30)
    # The budget: 6 hours at 30 fps fits it; the estimate grows with the frame rate too.
    assert analysis_bytes(6 * 3600, 30) < MEMORY_BUDGET < analysis_bytes(6 * 3600, 240)


def test_an_analysis_holds_what_analysis_bytes_says_not_the_signal(tmp_path):
    """Ten minutes of sound (a 115 MB float32 signal at 48 kHz; the old analysis held it several
    times over, as float64 copies): the child's peak RSS grows by less than `analysis_bytes`."""
    wav = tmp_path / "ten-minutes.flac"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
                    "sine=f=220:beep_factor=4:r=44100:d=600", "-ac", "2", "-c:a", "flac", str(wav)], check=True)
    proc = subprocess.run([sys.executable, "-c", textwrap.dedent(f"""
        import resource
        from unstable.audio.mapping import FileInput
        import numpy  # noqa: F401
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        f = FileInput({str(wav)!r}, 30)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(f.frames, int(f.features.values["onset"].sum()), after - before)
    """)], capture_output=True, text=True, check=True, timeout=120)
    frames, onsets, grown = map(int, proc.stdout.split())
    assert frames == 18000 and onsets >= 600          # a beep a second (and its cut-off end)
    assert grown < analysis_bytes(600, 30), (grown, analysis_bytes(600, 30))
    assert grown < 600 * F.RATE * 4 / 2               # less than half of the float32 signal itself


def test_blocks_of_any_length_give_the_features_of_the_whole_signal():
    x = clicks([2, 7, 8, 20, 33], 30, 1.3, noise=0.01)
    whole = F.analyse(x, 30)
    rng = np.random.default_rng(3)
    for _ in range(3):
        an = F.Analyser(30)
        i = 0
        while i < len(x):
            n = int(rng.integers(1, 5000))
            an.feed(x[i:i + n])
            i += n
        parts = an.finish()
        assert parts.frames == whole.frames
        for f in F.FEATURES:
            assert np.allclose(parts.values[f], whole.values[f], atol=1e-6), f
        assert np.array_equal(parts.onset_times, whole.onset_times)


# ------------------------------------------------------------------------------ non-finite samples

def nan_clicks(path: Path, seconds: float = 2.05) -> Path:
    """Clicks in frames 3, 4, 9 and 15 as 32-bit float stereo, with NaN, +inf and -inf runs in it."""
    x = clicks([3, 4, 9, 15], FPS, seconds)
    x[int(0.6 * F.RATE):int(0.6 * F.RATE) + 50] = np.nan
    x[int(1.1 * F.RATE)] = np.inf
    x[int(1.7 * F.RATE):int(1.7 * F.RATE) + 3] = -np.inf
    return write_float_wav(path, np.repeat(x, 2), rate=F.RATE, channels=2)


def test_nan_and_infinite_samples_are_silence_and_every_feature_is_finite(tmp_path):
    wav = nan_clicks(tmp_path / "nan.wav")
    f = FileInput(wav, FPS)
    assert f.nonfinite > 0
    for name, v in f.features.values.items():
        assert np.isfinite(v).all() and v.min() >= 0 and v.max() <= 1, name
    assert np.nonzero(f.features.values["onset"])[0].tolist() == [3, 4, 9, 15]
    # Levels handed in from elsewhere (a replay, a device) are clamped finite too.
    x = np.array([0.1, np.nan, np.inf, -np.inf, 3e38], np.float32)
    feats = F.analyse(x, FPS)
    assert all(np.isfinite(v).all() for v in feats.values.values())


@pytest.mark.usefixtures("one_torch_thread")
def test_a_float_wav_with_nan_and_inf_keeps_every_parameter_finite_and_muxes(tmp_path, gl_ctx):
    show_path = write_show(tmp_path, SHOW)
    wav = nan_clicks(tmp_path / "nan.wav")
    # Live from it, recorded: the automation holds finite levels and replays.
    auto_path = tmp_path / "nan.automation.jsonl"
    play_live(tmp_path, show_path, 21, audio=wav, automation=auto_path)
    auto = load_automation(auto_path)
    levels = [v for c in auto.changes.values() for v in c.get("audio", [])]
    assert levels and all(math.isfinite(v) for v in levels)
    # The render's own timeline: every mapped parameter finite in every frame, and moved.
    with show_renderer(show_path, audio=wav, run=tmp_path / "run", ctx=gl_ctx, echo=lambda s: None) as r:
        snaps = [r.cursor.state(k).snapshot for k in range(r.spec.length)]
    fades = [s["show"]["master_fade"] for s in snaps]
    hues = [s["eq"]["hue"] for s in snaps]
    assert all(math.isfinite(v) for v in fades + hues)
    assert [n for n, v in enumerate(fades) if v < 0.5] == [3, 4, 9, 15]
    # `render --audio` draws every frame and muxes the sound (H.264 beside AAC: the encoder that
    # refused NaN), exit 0.
    out = tmp_path / "nan.mp4"
    res = CliRunner().invoke(main, ["render", str(show_path), "--audio", str(wav), "--run", str(tmp_path / "run"),
                                    "--out", str(out), "--preset", "h264"])
    assert res.exit_code == 0, res.output
    d = stream_seconds(out)
    assert d["video"] == pytest.approx(2.1) and abs(d["audio"] - d["video"]) <= 1 / FPS
    # ProRes/FFV1 carry 16-bit PCM: the NaN and inf runs are silence there, not full-scale bursts.
    mov = tmp_path / "nan.mov"
    render_show(show_path, audio=wav, out=str(mov), preset="ffv1", run=tmp_path / "run", ctx=gl_ctx,
                echo=lambda s: None, show_progress=False)
    pcm = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(mov), "-map", "0:a:0",
                          "-f", "s16le", "-ac", "1", "-"], capture_output=True, check=True).stdout
    pcm = np.frombuffer(pcm, "<i2").astype(np.int32)
    around = pcm[int(0.6 * F.RATE) - 10:int(0.6 * F.RATE) + 60]
    assert np.abs(around).max() < 200     # quiet noise (0.001) around the NaN run, no burst


# --------------------------------------------------------------------------- --audio without maps

@pytest.mark.usefixtures("one_torch_thread")
def test_audio_on_a_show_without_maps_says_so_naming_the_show_and_what_to_add(tmp_path):
    plain = SHOW[:SHOW.index("[[audio.map]]")]
    show_path = write_show(tmp_path, plain, name="quiet.toml")
    wav = write_wav(tmp_path / "clicks.wav", clicks([3], FPS, 1.0))
    r = CliRunner().invoke(main, ["live", str(show_path), "--headless", "--osc-port", "0", "--web-port", "0", "--no-train",
                                  "--seconds", "0.3", "--run", str(tmp_path / "run"), "--device", "cpu",
                                  "--audio", str(wav)])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if "clicks.wav" in ln]
    assert len(lines) == 1 and str(show_path) in lines[0] and "[[audio.map]]" in lines[0], r.output
    assert "feature" in lines[0] and "param" in lines[0]
    r = CliRunner().invoke(main, ["render", str(show_path), "--audio", str(wav), "--run", str(tmp_path / "run"),
                                  "--out", str(tmp_path / "q.mov"), "--preset", "ffv1"])
    assert r.exit_code == 0, r.output
    lines = [ln for ln in r.output.splitlines() if "clicks.wav" in ln and "[[audio.map]]" in ln]
    assert len(lines) == 1 and str(show_path) in lines[0] and "muxed" in lines[0], r.output
    # A show that maps audio says nothing of the kind.
    mapped = write_show(tmp_path, SHOW, name="loud.toml")
    r = CliRunner().invoke(main, ["render", str(mapped), "--audio", str(wav), "--run", str(tmp_path / "run"),
                                  "--out", str(tmp_path / "l.mov"), "--preset", "ffv1"])
    assert r.exit_code == 0 and "[[audio.map]]" not in r.output, r.output


# ------------------------------------------------------------------------------------ AAC bitrate

def audio_kbps(path: Path) -> float:
    """The audio stream's bitrate as muxed: its packets' bytes over its duration (ffmpeg's framemd5)."""
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path), "-map", "0:a:0",
                          "-c", "copy", "-f", "framemd5", "-"], capture_output=True, text=True, check=True).stdout
    size = sum(int(ln.split(",")[4]) for ln in out.splitlines() if ln and not ln.startswith("#"))
    return size * 8 / stream_seconds(path)["audio"] / 1000


def test_the_aac_in_an_h264_render_is_encoded_at_256_kbps(tmp_path):
    """Dense stereo sound takes the whole 256 kb/s; ffmpeg's AAC encoder has no constant-bitrate
    mode, so sparse or mono sound comes out lower (the README gives the measured numbers)."""
    from unstable.audio.mux import mux_audio
    video = tmp_path / "v.mp4"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
                    "color=c=gray:s=32x32:r=10:d=6", "-c:v", "libx264", "-pix_fmt", "yuv420p", str(video)], check=True)
    noise = tmp_path / "noise.wav"
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostdin", "-f", "lavfi", "-i",
                    "anoisesrc=r=48000:a=0.3:d=6:seed=1", "-ac", "2", "-c:a", "pcm_s16le", str(noise)], check=True)
    mux_audio(video, noise, "h264", 6)
    assert 240 <= audio_kbps(video) <= 270


# ------------------------------------------------------------------------------ the shipped sound

def test_the_shipped_sound_is_what_make_sound_makes_and_small(tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    import make_sound
    shipped = ROOT / "shows" / "sounds" / "demo.flac"
    assert shipped.stat().st_size < 2_000_000
    h = probe_header(shipped)
    assert h.codec == "flac" and h.rate == 44_100 and h.channels == 1 and 30 <= h.seconds <= 60

    def pcm(path):
        return np.frombuffer(subprocess.run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(path),
                                             "-f", "s16le", "-"], capture_output=True, check=True).stdout, "<i2")
    again = make_sound.write(tmp_path / "again.wav", make_sound.synthesise())
    a, b = pcm(shipped).astype(np.int32), pcm(again).astype(np.int32)
    assert len(a) == len(b) and np.abs(a - b).max() <= 1   # 1 LSB: last-bit float differences across machines


def test_a_live_recording_of_a_file_with_nan_and_inf_keeps_its_sound(tmp_path):
    """The live recorder's mux (unstable.live.sound) silences non-finite samples as the render's does:
    ffmpeg's AAC encoder fails the whole mux on them, and the recording would lose its sound."""
    import imageio.v2 as imageio
    from fractions import Fraction

    from unstable.audio.mux import stream_seconds
    from unstable.live.sound import mux_sound

    wav = nan_clicks(tmp_path / "nan.wav")
    video = tmp_path / "rec.mp4"
    with imageio.get_writer(video, fps=30, codec="libx264", macro_block_size=1) as w:
        for i in range(60):
            w.append_data(np.full((32, 32, 3), 4 * i, np.uint8))
    mux_sound(video, wav, Fraction(0), Fraction(2))
    assert abs(stream_seconds(video)["audio"] - 2.0) < 0.05
