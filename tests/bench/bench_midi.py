"""Benchmark: MIDI and Link tempo into a live show.

    .venv/bin/python tests/bench/bench_midi.py                 # 512x256 at 30 fps, 20 s, 60 notes
    .venv/bin/python tests/bench/bench_midi.py --size 1920x1080 --skip link

Two figures:

1. MIDI message -> visible frame, live: the demo show (its pieces from their shipped grown states,
   in a temporary run folder; training off unless --train) with its scenes replaced by two, the
   second black (colour brightness 0, no crossfade), and `[[midi.map]]` note 60 -> scene 1, note 61
   -> scene 0. A thread injects the notes at the port layer (`MidiLink.inject`, where rtmidi's
   callback delivers them) at random times, off the frame grid; a frame hook reads every drawn
   frame back. Latency: the wall time of the read-back of the first frame that shows the note's
   scene, minus the injection's. Reported p50 / p99 in ms and frames.
2. Link tempo change -> the show's tempo: tests/link_peer.py in another process (both in a network
   namespace of their own, loopback only: `unshare -rn`) changes the session's tempo REPEAT times,
   0.3 s apart; the latency is the wall time the show's parameter store holds the new tempo minus
   the time the peer set it (the next frame reads it: add up to one frame for the picture).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

MIDI = """
[[scenes]]
name = "on"
crossfade = 0
[[scenes]]
name = "black"
crossfade = 0
[scenes.colour]
brightness = 0.0

[midi]
[[midi.map]]
note = 60
scene = 1
[[midi.map]]
note = 61
scene = 0
"""


def demo_with_midi(size: tuple[int, int]) -> str:
    """shows/demo.toml with absolute paths, another size, two scenes (the second black) and a note map."""
    text = (ROOT / "shows" / "demo.toml").read_text()
    text = text.replace('"../pieces/', f'"{ROOT}/pieces/').replace('"demo.states/', f'"{ROOT}/shows/demo.states/')
    text = text.replace("size = [512, 256]", f"size = [{size[0]}, {size[1]}]")
    text = text[:text.index("[[scenes]]")]
    assert str(ROOT) in text and "size = [" in text
    return text + MIDI


def pct(xs, q):
    return float(np.percentile(np.asarray(xs, np.float64), q)) if len(xs) else float("nan")


def bench_midi(args) -> None:
    import mido

    from unstable.control.midi import MidiLink
    from unstable.live import Engine
    from unstable.show import load_show
    w, h = (int(v) for v in args.size.split("x"))
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        show_path = tmp / "midi.toml"
        show_path.write_text(demo_with_midi((w, h)))
        show = load_show(show_path)
        seen: list[tuple[int, float, bool]] = []    # (frame, wall time of read-back, black)
        sent: list[tuple[float, bool]] = []         # (wall time, to black)
        rng = np.random.default_rng(0)

        def inject(link):
            t = 1.0
            black = False
            while t < args.seconds - 0.5 and len(sent) < args.notes:
                t += float(rng.uniform(0.2, 0.45))
                time.sleep(max(0.0, eng.timer.start + t - time.perf_counter()))
                black = not black
                sent.append((time.perf_counter(), black))
                link.inject(mido.Message("note_on", note=60 if black else 61, velocity=100))

        def hook(eng):
            if not seen:  # the store exists: the port layer, without a port (messages are injected)
                link = MidiLink(eng.params, show.settings.midi, None)
                threading.Thread(target=inject, args=(link,), daemon=True).start()
            picture = eng.read()
            seen.append((eng.frames, time.perf_counter(), bool(picture[::8, ::8].mean() < 1.0)))

        eng = Engine(show, headless=True, osc_port=0, web=False, run_dir=tmp / "run", train=args.train,
                     seconds=args.seconds, echo=lambda s: None, time_source=time.perf_counter,
                     progress=lambda desc, total=None, **kw: tqdm(total=total, disable=True))
        eng.frame_hooks.append(hook)
        report = eng.run()
        lat = []
        for i, (t, black) in enumerate(sent):
            nxt = sent[i + 1][0] if i + 1 < len(sent) else float("inf")
            shown = [tt for _, tt, b in seen if t < tt < nxt and b == black]
            if shown:
                lat.append((shown[0] - t) * 1000.0)
        frame_ms = 1000.0 / show.settings.fps
        print(f"live: {report.frames} frames, {report.fps:.2f} fps, {report.late_frames} late; "
              f"{len(lat)} of {len(sent)} notes seen")
        print(f"MIDI note -> visible frame (read back): p50 {pct(lat, 50):.1f} ms ({pct(lat, 50) / frame_ms:.2f} "
              f"frames), p99 {pct(lat, 99):.1f} ms ({pct(lat, 99) / frame_ms:.2f} frames), "
              f"max {max(lat):.1f} ms")


def bench_link(args) -> None:
    inner = [sys.executable, __file__, "--link-inner", "--repeat", str(args.repeat)]
    cmd = ["unshare", "-rn", "sh", "-c", "ip link set lo up && ip link set lo multicast on && exec "
           + " ".join(inner)]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        print(f"link: the network namespace run failed: {r.stderr.strip()[-400:]}")
        return
    res = json.loads(r.stdout.strip().splitlines()[-1])
    lat = res["latencies_ms"]
    print(f"Link tempo change -> show's tempo: {len(lat)} of {res['changes']} changes followed; p50 "
          f"{pct(lat, 50):.1f} ms, p99 {pct(lat, 99):.1f} ms, max {max(lat):.1f} ms")


def link_inner(args) -> None:
    from unstable.control.store import ParameterStore
    from unstable.schema import SHOW, show_specs
    from unstable.tempo import TempoLink, tempo_specs
    store = ParameterStore({SHOW: show_specs(1) + tempo_specs(120.0)})
    seen = []
    store.add_listener(lambda keys, origin: (SHOW, "tempo") in keys and seen.append(
        (time.time(), store.get(SHOW, "tempo"))))
    link = TempoLink(store, link=True).start()
    peer = subprocess.run([sys.executable, str(ROOT / "tests" / "link_peer.py"), "0.5", "133",
                           str(1.5 + 0.3 * args.repeat), str(args.repeat)], capture_output=True, text=True)
    link.stop()
    sets = [(float(x.split()[1]), float(x.split()[2])) for x in peer.stdout.splitlines() if x.startswith("set ")]
    lat = []
    for t, bpm in sets:
        got = [tt for tt, v in seen if tt >= t - 0.05 and abs(v - bpm) < 1e-3]
        if got:
            lat.append((got[0] - t) * 1000.0)
    print(json.dumps({"changes": len(sets), "latencies_ms": lat}))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", default="512x256")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--notes", type=int, default=60)
    ap.add_argument("--repeat", type=int, default=30, help="Link tempo changes")
    ap.add_argument("--train", action="store_true", help="train the pieces while live (off: display only)")
    ap.add_argument("--skip", default="", help="comma list of parts to leave out: midi,link")
    ap.add_argument("--link-inner", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.link_inner:
        return link_inner(args)
    skip = set(filter(None, args.skip.split(",")))
    print(f"bench_midi: {args.size}, load average {' '.join(f'{x:.1f}' for x in os.getloadavg())} on "
          f"{os.cpu_count()} CPUs")
    if "midi" not in skip:
        bench_midi(args)
    if "link" not in skip:
        bench_link(args)
    print(f"load average after: {' '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
