"""Benchmark: the NDI sink's whole-frame path alone, at 1920x1080, in one run: the three-channel
read-back spread to RGBX on the sending thread (before, NdiSink.RGBX = False) against the RGBX read
straight into the mailbox (now), interleaved twice, with a real compositor (EGL) and a cyndilib
receiver in another process (loopback NDI configuration). 30 frames a second offered for 8 s each;
reported: frames NDI sent (the rest were replaced in the mailbox), the process's CPU per sent
frame (render thread, sending thread and NDI's own), and the render thread's `put` p50/p99.

    .venv/bin/python tests/bench/bench_ndi_path.py
"""
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
import numpy as np  # noqa: E402
import torch  # noqa: E402
from unstable.display.compositor import Compositor  # noqa: E402
from unstable.display.gl import create_headless_context  # noqa: E402
from unstable.display.layout import Colour, Layout  # noqa: E402
from unstable.frame.compose import Composer  # noqa: E402
from unstable.frame.ndi_sink import NdiSettings, NdiSink, write_ndi_config  # noqa: E402

W, H = 1920, 1080


def composed_frame():
    """A compositor holding one composed 1920x1080 frame (two panels of noise)."""
    comp = Compositor(create_headless_context(), (W, H))
    composer = Composer(comp, {"a": "a", "b": "b"})
    g = torch.Generator().manual_seed(0)
    images = {n: torch.rand(3, 64, 64, generator=g) for n in ("a", "b")}  # [3, H, W]
    look = {"hue": 0.0, "saturation": 1.0, "fade": 1.0}
    composer.render(images, {"a": look, "b": look, "show": {"master_fade": 1.0}},
                    (Layout(panels=("a", "b"), filter="nearest"), Colour()))
    return comp


def run(comp, tmp: Path, rgbx: bool, seconds: float = 8.0, fps: float = 30.0) -> dict:
    """Offer `fps` frames a second for `seconds` to an NdiSink with a receiver reading."""
    NdiSink.RGBX = rgbx
    name = f"path-{'rgbx' if rgbx else 'rgb'}-{time.time_ns() % 10**6}"
    sink = NdiSink(NdiSettings(name=name), "x", (W, H), fps)
    sink.put(0, comp)  # opens the source
    proc = subprocess.Popen([sys.executable, str(ROOT / "tests" / "ndi_receiver.py"), name, str(seconds + 20),
                             str(tmp / "got.npz"), "--block"], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().startswith("found")
    time.sleep(1.5)
    sent0, ru0, t0, n, puts = sink.frame.sent, resource.getrusage(resource.RUSAGE_SELF), time.perf_counter(), 0, []
    while time.perf_counter() - t0 < seconds:
        n += 1
        a = time.perf_counter()
        sink.put(n, comp)
        puts.append(time.perf_counter() - a)
        time.sleep(max(0.0, t0 + n / fps - time.perf_counter()))
    ru1, dt = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter() - t0
    sent = sink.frame.sent - sent0
    proc.kill()
    proc.wait()
    sink.close()
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    return {"mode": "rgbx" if rgbx else "rgb", "offered": n, "sent": sent, "sent_fps": sent / dt,
            "cpu_ms": 1000 * cpu / max(sent, 1), "put_p50": 1000 * float(np.median(puts)),
            "put_p99": 1000 * float(np.percentile(puts, 99)), "load": os.getloadavg()[0]}


def main() -> int:
    tmp = Path(tempfile.mkdtemp())
    write_ndi_config(tmp / "ndi", ["127.0.0.1"])
    os.environ["NDI_CONFIG_DIR"] = str(tmp / "ndi")  # before NDI's first use, here and in the receiver
    torch.set_num_threads(1)
    comp = composed_frame()
    for rgbx in (False, True, False, True):
        r = run(comp, tmp, rgbx)
        print(f"{r['mode']:<5} offered {r['offered']} sent {r['sent']} ({r['sent_fps']:.1f}/s)  CPU per sent frame "
              f"{r['cpu_ms']:.1f} ms  render-thread put p50 {r['put_p50']:.1f} ms p99 {r['put_p99']:.1f} ms  "
              f"load {r['load']:.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
