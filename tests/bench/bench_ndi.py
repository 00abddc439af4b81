"""Benchmark: NDI out.

    .venv/bin/python tests/bench/bench_ndi.py                       # both sizes, 10 s each
    .venv/bin/python tests/bench/bench_ndi.py --sizes 512x256 --seconds 20 --skip-latency
    .venv/bin/python tests/bench/bench_ndi.py --sizes 1920x1080 --modes read,on,panels --compare --skip-latency

Two figures, discovery through a loopback NDI configuration (NDI_CONFIG_DIR, no multicast):

1. The show with NDI off; off but reading every frame back ("read": what any output that needs the
   pixels pays, a recording or the window's swap; headless and unread, llvmpipe may never finish
   drawing a frame, so "off" flatters the show); on with no receiver ("idle"); on with a cyndilib receiver in another
   process connected and reading ("on"); on with that receiver stopped (SIGSTOP, "stalled": it
   reads nothing, its socket fills); and on with `panels = true`, receiver reading. The demo show
   (its pieces from their shipped grown states, training off, headless, paced on the wall clock)
   at each size. Reported: fps (frames drawn / seconds), frame interval p50/p99 and work p99
   (ms), late frames, and the NDI source's sent/dropped counts.
2. Send -> receive latency on loopback: an NdiSource (the sink's own sending thread and mailbox)
   at each size and 30 fps, noise frames (the codec's worst case); the receiver process notes the
   wall time each frame arrives and its NDI timestamp, which `NdiSource.frame_at` turns into the
   frame number. Latency = arrival - the moment the frame was offered (`NdiSource.offer`: the
   mailbox, the copy and NDI's compression included), p50/p99 ms, over the frames that arrived
   (and how many did).
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from tqdm import tqdm

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
RECEIVER = ROOT / "tests" / "ndi_receiver.py"

from unstable.frame.ndi_sink import NdiSource, write_ndi_config  # noqa: E402


def pct(xs, q):
    return float(np.percentile(np.asarray(xs, np.float64), q)) if len(xs) else float("nan")


def demo_show(folder: Path, size: tuple[int, int], ndi: str | None, panels: bool) -> Path:
    """shows/demo.toml with absolute paths, another size and (optionally) [outputs.ndi]."""
    text = (ROOT / "shows" / "demo.toml").read_text()
    text = text.replace('"../pieces/', f'"{ROOT}/pieces/').replace('"demo.states/', f'"{ROOT}/shows/demo.states/')
    text = text.replace("size = [512, 256]", f"size = [{size[0]}, {size[1]}]")
    assert str(ROOT) in text
    if ndi is not None:
        text += f'\n[outputs.ndi]\nname = "{ndi}"\npanels = {"true" if panels else "false"}\n'
    path = folder / "demo.toml"
    path.write_text(text)
    return path


def receiver(name: str, seconds: float, out: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(RECEIVER), name, str(seconds), str(out), "--block"],
                            stdout=subprocess.PIPE, text=True)


def show_run(size, mode: str, seconds: float, folder: Path, rgbx: bool = True) -> dict:
    """One paced headless run of the demo show; mode "off", "read", "idle", "on", "stalled" or "panels";
    `rgbx` False: the sink reads three channels back and spreads them to RGBX (as before RGBX reads)."""
    from unstable.frame.ndi_sink import NdiSink
    from unstable.live import Engine
    from unstable.show import load_show
    NdiSink.RGBX = rgbx
    name = f"bench-{size[0]}x{size[1]}-{mode}-{'rgbx' if rgbx else 'rgb'}"
    run = folder / name
    run.mkdir()
    show = load_show(demo_show(run, size, None if mode in ("off", "read") else name, mode == "panels"))
    eng = Engine(show, headless=True, osc_port=0, web=False, run_dir=run / "run", train=False, seconds=seconds,
                 echo=lambda line: None, progress=lambda *a, **k: tqdm(disable=True, total=k.get("total")))
    proc = None
    if mode == "read":
        eng.frame_hooks.append(lambda e: e.read())
    if mode not in ("off", "read", "idle"):
        eng.open()
        eng.frame(number=0)  # the source exists from its first frame
        proc = receiver(name, seconds + 60, run / "got.npz")
        line = proc.stdout.readline()
        assert line.startswith("found"), line
        time.sleep(1.0)
        if mode == "stalled":
            os.kill(proc.pid, signal.SIGSTOP)
    try:
        r = eng.run()
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
    ndi = eng.outputs.ndi.stats() if eng.outputs.ndi is not None else {}
    idle = eng.outputs.ndi.idle if eng.outputs.ndi is not None else 0
    main = ndi.get(name, {})
    return {"size": f"{size[0]}x{size[1]}", "mode": mode + ("" if rgbx else "/rgb"), "fps": r.frames / r.seconds if r.seconds else 0.0,
            "interval_p50": r.interval_p50_ms, "interval_p99": r.interval_p99_ms, "work_p99": r.work_p99_ms,
            "late": r.late_frames, "frames": r.frames, "sources": len(ndi),
            "sent": main.get("sent", 0), "dropped": main.get("dropped", 0), "idle": idle}


def latency(size, seconds: float, fps: float, folder: Path) -> dict:
    """Offer -> arrival of noise frames through an NdiSource and a receiver in another process."""
    w, h = size
    name = f"bench-latency-{w}x{h}"
    src = NdiSource(name, fps)
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 255, (h, w, 3), dtype=np.uint8)  # noise: the codec's worst case
    src.offer(0, frame)
    out = folder / f"{name}.npz"
    proc = receiver(name, seconds + 3, out)
    assert proc.stdout.readline().startswith("found")
    time.sleep(1.0)
    offered = {}
    t0 = time.perf_counter()
    n = 0
    while time.perf_counter() - t0 < seconds:
        n += 1
        frame[:8, :8] = n % 256
        offered[n] = time.time()
        src.offer(n, frame)
        time.sleep(max(0.0, t0 + n / fps - time.perf_counter()))
    proc.wait(30)
    src.close()
    got = np.load(out)
    lat = []
    for stamp, arrived in zip(got["stamps"], got["times"]):
        m = src.frame_at(float(stamp))  # NDI stamps a frame with the time it was handed over
        if m in offered:  # frame 0 opened the source before the receiver came
            lat.append((arrived - offered[m]) * 1000)
    return {"size": f"{w}x{h}", "offered": n, "received": len(lat), "p50": pct(lat, 50), "p99": pct(lat, 99),
            "sender_dropped": src.dropped}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="512x256,1920x1080")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--skip-show", action="store_true")
    ap.add_argument("--skip-latency", action="store_true")
    ap.add_argument("--modes", default="off,read,idle,on,stalled,panels")
    ap.add_argument("--compare", action="store_true",
                    help="run each NDI mode twice, interleaved: reading RGBX back (now) and three channels "
                         "spread to RGBX on the sending thread (before); '/rgb' marks the latter")
    a = ap.parse_args()
    sizes = [tuple(int(x) for x in s.split("x")) for s in a.sizes.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        write_ndi_config(folder / "ndi", ["127.0.0.1"])
        os.environ["NDI_CONFIG_DIR"] = str(folder / "ndi")  # before NDI's first use, here and in the receiver
        if not a.skip_show:
            print("size       mode         fps   interval p50/p99 ms   work p99 ms  late  sources  sent  dropped  "
                  "not read back")
            for size in sizes:
                runs = [(m, True) for m in a.modes.split(",")]
                if a.compare:
                    runs = [(m, x) for m, _ in runs for x in ((False, True) if m not in ("off", "read") else (True,))]
                for mode, rgbx in runs:
                    r = show_run(size, mode, a.seconds, folder, rgbx)
                    print(f"{r['size']:<10} {r['mode']:<11} {r['fps']:5.1f}   {r['interval_p50']:6.1f} / "
                          f"{r['interval_p99']:6.1f}      {r['work_p99']:7.1f}   {r['late']:4d}  {r['sources']:7d}  "
                          f"{r['sent']:4d}  {r['dropped']:7d}  {r['idle']:6d}", flush=True)
        if not a.skip_latency:
            print("\nsend -> receive on loopback (30 fps, noise frames)")
            for size in sizes:
                r = latency(size, a.seconds, 30.0, folder)
                print(f"{r['size']:<10} received {r['received']}/{r['offered']}  p50 {r['p50']:.1f} ms  "
                      f"p99 {r['p99']:.1f} ms  (dropped at the sender {r['sender_dropped']})", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
