"""Benchmark: sound that plays the show.

    .venv/bin/python tests/bench/bench_audio.py                      # 512x256 at 30 fps, one piece
    .venv/bin/python tests/bench/bench_audio.py --size 1536x512 --seconds 20 --train

Two figures, on the demo show (its pieces from their shipped grown states, in a temporary run
folder) with `[[audio.map]] onset -> show.master_fade`, amount -1, added, so a frame that hears an
onset is black:

1. Onset -> visible frame, live, from a file: `unstable live --audio` (headless, paced on the wall
   clock, training off unless --train) plays a WAV of clicks at random times (not on the frame
   grid). A frame hook reads every drawn frame back from the GPU; the latency of a click is the
   wall time of the read-back of the first black frame after it minus the click's time on the
   wall clock (frame 0 due + click seconds). Frame n hears [n / fps, (n + 1) / fps) and is due at
   n / fps, so a click can show before it sounds (negative latency, down to -1 frame) when the
   frame is drawn on time; a late frame adds its lateness. Reported in ms and frames, p50 / p99,
   and how many clicks were seen at all (a click whose frame was dropped is missed).
2. Render fps with audio on vs off, one process, alternating off/on `--repeat` times: the same
   show for the same frames, once with `--audio` (features, the mapping, the mux into the H.264
   file) and once without; ratio on / off of the best of each.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import wave
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from unstable.audio.features import RATE  # noqa: E402
from unstable.live import Engine  # noqa: E402
from unstable.render import render_show  # noqa: E402
from unstable.show import load_show  # noqa: E402

MAP = """
[[audio.map]]
feature = "onset"
param = "show.master_fade"
amount = -1.0
"""


def demo_with_audio(size: tuple[int, int]) -> str:
    """shows/demo.toml with its paths made absolute, another size, and an onset map on the master fade."""
    text = (ROOT / "shows" / "demo.toml").read_text()
    text = text.replace('"../pieces/', f'"{ROOT}/pieces/').replace('"demo.states/', f'"{ROOT}/shows/demo.states/')
    text = text.replace("size = [512, 256]", f"size = [{size[0]}, {size[1]}]")
    assert str(ROOT) in text and "size = [" in text
    return text + MAP


def write_clicks(path: Path, seconds: float, count: int, seed: int = 0) -> np.ndarray:
    """Quiet noise with `count` clicks at random times, at least 0.25 s apart; returns their times."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(int(RATE * seconds)) * 0.001
    times = np.sort(rng.uniform(0.5, seconds - 0.5, count))
    times = times[np.concatenate([[True], np.diff(times) > 0.25])]
    for t in times:
        x[int(t * RATE)] += 0.8
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes((np.clip(x, -1, 1) * 32767).astype("<i2").tobytes())
    return times


def pct(xs, q):
    return float(np.percentile(np.asarray(xs, np.float64), q)) if len(xs) else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="512x256")
    ap.add_argument("--seconds", type=float, default=20.0, help="length of the click file (live and render)")
    ap.add_argument("--clicks", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=3, help="render rounds (off, on) each")
    ap.add_argument("--train", action="store_true", help="train the piece while live (off: display only)")
    ap.add_argument("--skip", default="", help="comma list of parts to leave out: live,render")
    args = ap.parse_args()
    w, h = (int(v) for v in args.size.split("x"))
    skip = set(filter(None, args.skip.split(",")))
    args.fps = 30  # the demo's
    print(f"bench_audio: demo show {w}x{h} at {args.fps} fps, load average "
          f"{' '.join(f'{x:.1f}' for x in os.getloadavg())} on {os.cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        show_path = tmp / "audio.toml"
        show_path.write_text(demo_with_audio((w, h)))
        wav = tmp / "clicks.wav"
        clicks = write_clicks(wav, args.seconds, args.clicks)
        run = tmp / "run"

        seen: list[tuple[int, float, bool]] = []  # (frame, wall time of read-back, black)

        def hook(eng):
            picture = eng.read()
            seen.append((eng.last_frame, time.perf_counter(), bool(picture[::8, ::8].mean() < 1.0)))

        eng = Engine(load_show(show_path), headless=True, osc_port=0, run_dir=run, train=args.train,
                     seconds=args.seconds, audio=wav, echo=lambda s: None, time_source=time.perf_counter,
                     progress=lambda desc, total=None, **kw: tqdm(total=total, disable=True))
        eng.frame_hooks.append(hook)
        if "live" not in skip:
            report = eng.run()
            start = eng.timer.start
            lat_ms = []
            for c in clicks:
                wall = start + c
                # Onsets are placed up to ~8 ms before a click (unstable.audio.features): 20 ms of slack.
                black = [t for n, t, b in seen if b and (n + 1) / args.fps > c - 0.02 and n / args.fps <= c + 0.2]
                if black:
                    lat_ms.append((black[0] - wall) * 1000.0)
            frame_ms = 1000.0 / args.fps
            print(f"live from file: {report.frames} frames, {report.fps:.2f} fps, {report.late_frames} late; "
                  f"{len(lat_ms)} of {len(clicks)} clicks seen")
            print(f"onset -> visible frame: p50 {pct(lat_ms, 50):.1f} ms ({pct(lat_ms, 50) / frame_ms:+.2f} frames), "
                  f"p99 {pct(lat_ms, 99):.1f} ms ({pct(lat_ms, 99) / frame_ms:+.2f} frames), "
                  f"min {min(lat_ms):.1f} ms, max {max(lat_ms):.1f} ms")
        else:
            with eng:  # the run folder the renders read
                eng.frame(number=0)

        if "render" not in skip:
            times = {"off": [], "on": []}
            frames = {}
            for i in range(args.repeat):
                for mode in ("off", "on"):
                    out = tmp / f"{mode}{i}.mp4"
                    t0 = time.perf_counter()
                    (r,) = render_show(show_path, run=run, out=str(out), preset="h264", fresh=True,
                                       seconds=args.seconds if mode == "off" else None,
                                       audio=wav if mode == "on" else None, echo=lambda s: None,
                                       show_progress=False)
                    times[mode].append(time.perf_counter() - t0)
                    frames[mode] = r.frames
            from unstable.audio.mapping import FileInput
            from unstable.audio.mux import mux_audio
            t0 = time.perf_counter()
            FileInput(wav, args.fps)
            t_features = time.perf_counter() - t0
            t0 = time.perf_counter()
            mux_audio(tmp / "off0.mp4", wav, "h264", args.seconds)
            t_mux = time.perf_counter() - t0
            print(f"audio work of one render: decode + features {t_features:.2f} s, mux {t_mux:.2f} s")
            fps_off = frames["off"] / min(times["off"])
            fps_on = frames["on"] / min(times["on"])
            med = float(np.median(times["off"])) / float(np.median(times["on"]))
            print(f"median rounds: off {np.median(times['off']):.1f} s, on {np.median(times['on']):.1f} s: "
                  f"ratio on/off {med:.3f}")
            print(f"render {frames['off']} / {frames['on']} frames h264: audio off {fps_off:.1f} fps, "
                  f"audio on {fps_on:.1f} fps (features + mapping + mux); ratio on/off {fps_on / fps_off:.3f} "
                  f"(rounds off {', '.join(f'{t:.1f}' for t in times['off'])} s, "
                  f"on {', '.join(f'{t:.1f}' for t in times['on'])} s)")
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
