"""Real ffmpeg (the imageio-ffmpeg binary) on tiny videos: presets, exact fps, lossless, concat, failures."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
import time
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from unstable.encode import VideoWriter
from unstable.formats import parse_fps
from unstable.probe import concat, frame_md5s, probe, read_frames
from unstable.errors import UnstableError

W, H = 64, 48


def noise_frames(n, seed=0, w=W, h=H):
    """Random frames: hard for lossy codecs, so only lossless presets return them exactly."""
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def smooth_frames(n, w=W, h=H):
    """A moving colour gradient: what lossy presets should reproduce closely."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    out = []
    for i in range(n):
        r = 127 + 100 * np.sin((x + 3 * i) / 9)
        g = 127 + 100 * np.cos((y - 2 * i) / 7)
        b = (x + y + 5 * i) % 256
        out.append(np.stack([r, g, b], -1).clip(0, 255).astype(np.uint8))
    return np.stack(out)  # [T, H, W, 3]


def write(path, frames, fps, preset, **kw):
    with VideoWriter(path, frames.shape[2], frames.shape[1], fps, preset, **kw) as w:
        for f in frames:
            w.write(f)
    return w


@pytest.mark.parametrize("fps", [30, "30000/1001", Fraction(24000, 1001), 25.0])
@pytest.mark.parametrize("preset,suffix", [("h264", ".mp4"), ("h264_live", ".mp4"), ("prores", ".mov")])
def test_lossy_presets_read_back_count_fps_size_and_colour(tmp_path, preset, suffix, fps):
    frames = smooth_frames(7)
    path = tmp_path / f"v{suffix}"
    start = time.perf_counter()
    w = write(path, frames, fps, preset)
    elapsed = time.perf_counter() - start
    info = probe(path)
    assert (info.frames, info.width, info.height) == (7, W, H)
    assert info.fps == parse_fps(fps) and isinstance(info.fps, Fraction)
    assert w.stats.frames == 7 and 0 < w.stats.encode_seconds <= elapsed
    back = np.stack(list(read_frames(path)))
    assert back.shape == frames.shape
    # Colour conversion is consistent both ways (BT.709 tags honoured by the decoder).
    assert np.abs(back.astype(int) - frames).mean() < 6


def top_level_atoms(data: bytes) -> list[bytes]:
    """The names of an MP4 file's top-level boxes, in file order."""
    names, i = [], 0
    while i + 8 <= len(data):
        size, name = int.from_bytes(data[i:i + 4], "big"), data[i + 4:i + 8]
        if size == 1:  # 64-bit size follows
            size = int.from_bytes(data[i + 8:i + 16], "big")
        names.append(name)
        if size < 8:
            break
        i += size
    return names


def test_h264_delivery_preset_settings_read_back_from_the_file(tmp_path):
    import imageio_ffmpeg
    path = tmp_path / "d.mp4"
    write(path, smooth_frames(4), 25, "h264")
    data = path.read_bytes()
    # x264 writes its settings into the stream (an SEI message): constant quality 18, preset slow.
    sei = data[data.index(b"x264 - core"):][:2000]
    assert b" rc=crf " in sei and b" crf=18.0 " in sei
    assert b" subme=8 " in sei and b" ref=5 " in sei  # what -preset slow sets (medium: 7 and 3)
    # faststart: the index (moov) comes before the media data, so players start before the end.
    atoms = top_level_atoms(data)
    assert b"moov" in atoms and b"mdat" in atoms and atoms.index(b"moov") < atoms.index(b"mdat")
    # The pixel format and colour tags as ffmpeg reads them back.
    out = subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-hide_banner", "-i", str(path)],
                         capture_output=True, text=True).stderr
    stream = next(line for line in out.splitlines() if "Video:" in line)
    assert "h264" in stream and "yuv420p" in stream and "bt709" in stream, stream


def test_probe_counts_decoded_frames_the_same(tmp_path):
    path = tmp_path / "a.mp4"
    write(path, smooth_frames(9), "30000/1001", "h264")
    assert probe(path, decode=True).frames == probe(path).frames == 9
    assert probe(path, decode=True).fps == Fraction(30000, 1001)


@pytest.mark.parametrize("preset,suffix", [("ffv1", ".mov"), ("h264_lossless", ".mp4"), ("png", "")])
def test_lossless_round_trip_is_bit_exact(tmp_path, preset, suffix):
    frames = noise_frames(6)
    path = tmp_path / f"v{suffix}"
    # One batched write plus single frames: both forms are accepted.
    with VideoWriter(path, W, H, "30000/1001", preset) as w:
        w.write(frames[:3])
        for f in frames[3:]:
            w.write(f)
    back = np.stack(list(read_frames(path)))
    assert back.dtype == np.uint8 and np.array_equal(back, frames)
    info = probe(path)
    assert (info.frames, info.fps) == (6, Fraction(30000, 1001))


@pytest.mark.parametrize("preset,suffix", [("ffv1", ".mov"), ("h264_lossless", ".mp4"), ("png", "")])
def test_concat_of_two_parts_equals_whole_render(tmp_path, preset, suffix):
    frames = noise_frames(10, seed=3)
    write(tmp_path / f"whole{suffix}", frames, 30, preset)
    write(tmp_path / f"a{suffix}", frames[:4], 30, preset)
    write(tmp_path / f"b{suffix}", frames[4:], 30, preset)
    info = concat([tmp_path / f"a{suffix}", tmp_path / f"b{suffix}"], tmp_path / f"joined{suffix}")
    assert (info.frames, info.fps) == (10, Fraction(30))
    assert frame_md5s(tmp_path / f"joined{suffix}") == frame_md5s(tmp_path / f"whole{suffix}")
    assert np.array_equal(np.stack(list(read_frames(tmp_path / f"joined{suffix}"))), frames)


def test_concat_refuses_mismatched_parts(tmp_path):
    write(tmp_path / "a.mov", noise_frames(2), 30, "ffv1")
    write(tmp_path / "b.mov", noise_frames(2), 25, "ffv1")
    with pytest.raises(UnstableError, match="parts must match"):
        concat([tmp_path / "a.mov", tmp_path / "b.mov"], tmp_path / "c.mov")


def test_png_preset_writes_numbered_files(tmp_path):
    out = tmp_path / "seq"
    write(out, smooth_frames(5), "30000/1001", "png")
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == [f"frame_{i:06d}.png" for i in range(5)]
    assert probe(out).fps == Fraction(30000, 1001)
    # A resumed render continues the numbering.
    write(out, smooth_frames(2), "30000/1001", "png", start_number=5)
    assert len(list(out.glob("*.png"))) == 7 and (out / "frame_000006.png").exists()
    # A new, shorter render into the same folder leaves no stale frames behind.
    write(out, smooth_frames(3), 30, "png")
    assert probe(out).frames == 3 and probe(out).fps == 30
    with pytest.raises(UnstableError, match="refusing to overwrite"):
        VideoWriter(out, W, H, 30, "png", overwrite=False)


@pytest.mark.parametrize("preset,size", [("h264", (65, 48)), ("h264_live", (64, 47)), ("prores", (63, 48))])
def test_odd_size_fails_with_one_line_before_encoding(tmp_path, preset, size):
    path = tmp_path / ("v.mov" if preset == "prores" else "v.mp4")
    with pytest.raises(UnstableError) as e:
        VideoWriter(path, *size, 30, preset)
    msg = str(e.value)
    assert "\n" not in msg and f"{size[0]}x{size[1]}" in msg and preset in msg
    assert not path.exists()  # nothing was started


def test_odd_size_is_fine_for_rgb_presets(tmp_path):
    frames = noise_frames(2, w=65, h=47)
    write(tmp_path / "odd.mov", frames, 30, "ffv1")
    assert np.array_equal(np.stack(list(read_frames(tmp_path / "odd.mov"))), frames)


@pytest.mark.parametrize("fps", [0, -30, "0/1", "abc", float("nan"), "30/0"])
def test_bad_fps_fails(tmp_path, fps):
    with pytest.raises(UnstableError, match="fps"):
        VideoWriter(tmp_path / "v.mp4", W, H, fps, "h264")
    assert not (tmp_path / "v.mp4").exists()


def test_wrong_suffix_and_unknown_preset_fail(tmp_path):
    with pytest.raises(UnstableError, match=r"\.mov"):
        VideoWriter(tmp_path / "v.mp4", W, H, 30, "prores")
    with pytest.raises(UnstableError, match="unknown"):
        VideoWriter(tmp_path / "v.mp4", W, H, 30, "h265")


def test_wrong_frame_shape_is_a_bug_not_a_user_error(tmp_path):
    with VideoWriter(tmp_path / "v.mov", W, H, 30, "ffv1") as w:
        with pytest.raises(ValueError, match="uint8"):
            w.write(np.zeros((H, W, 3), np.float32))
        with pytest.raises(ValueError):
            w.write(np.zeros((W, H, 3), np.uint8))
        w.write(np.zeros((H, W, 3), np.uint8))
    assert probe(tmp_path / "v.mov").frames == 1


@pytest.mark.parametrize("preset", ["h264", "h264_live"])
def test_close_after_partial_writes_gives_playable_file(tmp_path, preset):
    path = tmp_path / "v.mp4"
    frames = smooth_frames(5)
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(path, W, H, 30, preset) as w:
            for f in frames:
                w.write(f)
            raise KeyboardInterrupt  # the producer is interrupted mid-render
    assert w.stats.frames == 5
    assert w.close() is w.stats  # idempotent
    assert probe(path).frames == 5 and len(list(read_frames(path))) == 5
    with pytest.raises(UnstableError, match="after close"):
        w.write(frames[0])


@pytest.mark.parametrize("ending", ["sigterm", "exit_without_close"])
def test_killed_or_exiting_producer_still_leaves_playable_file(tmp_path, ending):
    """SIGTERM skips finally/atexit: ffmpeg (own session) sees end-of-input and finalises by itself.
    A script that just exits without close() is finalised by the atexit hook."""
    path = tmp_path / "v.mp4"
    script = textwrap.dedent(f"""
        import sys, time, numpy as np
        from unstable.encode import VideoWriter
        w = VideoWriter({str(path)!r}, {W}, {H}, 30, "h264")
        for i in range(6):
            w.write(np.full(({H}, {W}, 3), 40 * i, np.uint8))
        if {ending!r} == "exit_without_close":
            sys.exit(0)
        while w.frames_written < 6:
            time.sleep(0.01)
        print(w.pid, flush=True)
        time.sleep(60)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                             cwd=Path(__file__).resolve().parents[1])
    try:
        if ending == "exit_without_close":
            assert child.wait(timeout=30) == 0
        else:
            ffmpeg_pid = int(child.stdout.readline())
            child.send_signal(signal.SIGTERM)
            assert child.wait(timeout=20) == -signal.SIGTERM
            # The orphaned ffmpeg finishes on its own; wait until it is gone (or a zombie of init).
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                try:
                    state = Path(f"/proc/{ffmpeg_pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
                except (FileNotFoundError, ProcessLookupError):
                    break
                if state == "Z":
                    break
                time.sleep(0.05)
    finally:
        if child.poll() is None:
            child.kill()
        child.stdout.close()
    info = probe(path)
    assert info.frames == 6 and info.fps == 30


def test_ffmpeg_failure_is_an_unstable_error(tmp_path):
    # A folder where the output file should be: ffmpeg cannot open it and exits at once.
    (tmp_path / "v.mp4").mkdir()
    w = VideoWriter(tmp_path / "v.mp4", W, H, 30, "h264_live")
    with pytest.raises(UnstableError, match="v.mp4"):
        for _ in range(50):
            w.write(smooth_frames(1))
            time.sleep(0.02)
        w.close()


def test_probe_rejects_missing_and_non_video(tmp_path):
    with pytest.raises(UnstableError, match="not found"):
        probe(tmp_path / "nope.mp4")
    (tmp_path / "x.mp4").write_text("hello")
    with pytest.raises(UnstableError, match="ffmpeg can"):
        probe(tmp_path / "x.mp4")

