"""OSC input benchmark: throughput, loss in a burst, latency to the snapshot, frame cost.

    .venv/bin/python tests/bench/bench_osc.py [--burst 10000] [--samples 500] [--pieces 2]

What it measures, on loopback with a real server:
- burst: N messages sent as fast as a separate sender process can (a controller is another
  process), to parameters of the show; messages/s handled (first send to last handled) and loss.
  Meanwhile the main thread runs a 60 fps "frame loop" calling `params.snapshot(now)`: the
  slowest snapshot and the longest gap between frames show whether the burst stalls a frame
  (the gap includes the GIL: the OSC thread shares the interpreter with the loop). A subscribed controller's feedback
  is counted too (coalescing keeps it far below 2 messages per input).
- latency: one message at a time from this process; send -> value written into the store (time
  stamped by a listener in the server thread) and send -> value seen by a snapshot polled every
  0.1 ms, p50 / p99 / max in ms.
Numbers under CPU contention are not comparable to a quiet machine; say which one you used.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import socket
import statistics
import struct
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

from unstable.control.osc import OscServer  # noqa: E402
from unstable.control.store import ParameterStore  # noqa: E402
from unstable.schema import ParamSpec, address, show_specs, with_common  # noqa: E402


def schema(pieces: int):
    g = {}
    for i in range(pieces):
        g[f"p{i}"] = with_common([ParamSpec("alpha", 0.0, 2.0, 1.0, smoothing=0.2),
                                  ParamSpec("beta", -1.0, 1.0, 0.0),
                                  ParamSpec("temperature", 0.1, 3.0, 1.0, smoothing=0.5),
                                  ParamSpec("lr", 1e-6, 1e-2, 1e-4, log=True)])
    g["show"] = show_specs(4)
    return g


def _sender(port: int, addrs: list[str], n: int, go, done) -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    heads = []
    for a in addrs:
        b = OscMessageBuilder(address=a)
        b.add_arg(0.0, "f")
        heads.append(b.build().dgram[:-4])
    # Built before the clock starts: we measure the server, not the sender's encoder.
    dgrams = [heads[i % len(heads)] + struct.pack(">f", (i + 1) / (n + 1)) for i in range(n)]
    go.wait()
    for d in dgrams:
        sock.sendto(d, ("127.0.0.1", port))
    done.set()


def pct(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(q / 100 * (len(xs) - 1))))]


def bench_burst(n: int, pieces: int) -> dict:
    params = ParameterStore(schema(pieces))
    addrs = [address(p, s.name) for p, specs in params.groups.items() if p != "show"
             for s in specs if s.kind == "float"]
    fb = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fb.bind(("127.0.0.1", 0))
    fb.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    fb.settimeout(0.05)
    with OscServer(params, port=0, log_interval=60.0) as srv:
        srv.subscribe("127.0.0.1", fb.getsockname()[1])
        ctx = mp.get_context("spawn")
        go, done = ctx.Event(), ctx.Event()
        proc = ctx.Process(target=_sender, args=(srv.port, addrs, n, go, done))
        proc.start()
        time.sleep(1.0)  # let the sender build its datagrams
        while True:  # drain the subscribe-time sync
            try:
                fb.recv(65536)
            except socket.timeout:
                break
        base_fb = srv.stats["feedback_sent"]
        t0 = time.perf_counter()
        go.set()
        snap_ms, starts, frame = [], [], 0
        deadline = t0 + 30.0
        last_seen, last_change = -1, t0
        while time.perf_counter() < deadline:
            t = time.perf_counter()
            starts.append(t)
            params.snapshot(frame / 60.0)
            snap_ms.append((time.perf_counter() - t) * 1e3)
            frame += 1
            handled = srv.stats["packets"]
            if handled != last_seen:
                last_seen, last_change = handled, time.perf_counter()
            if handled >= n or (done.is_set() and time.perf_counter() - last_change > 1.0):
                break
            time.sleep(max(0.0, 1 / 60 - (time.perf_counter() - t)))
        # The handled count moves in the server thread: time to the last message handled.
        t_end = last_change
        proc.join()
        feedback = srv.stats["feedback_sent"] - base_fb
        handled = srv.stats["packets"]
        applied = srv.stats["applied"]
    fb.close()
    return {"sent": n, "handled": handled, "applied": applied, "lost": n - handled,
            "msgs_per_s": handled / max(t_end - t0, 1e-9), "frames": frame,
            "snapshot_ms_p50": statistics.median(snap_ms), "snapshot_ms_max": max(snap_ms),
            "frame_gap_ms_max": max(b - a for a, b in zip(starts, starts[1:])) * 1e3,
            "feedback_datagrams": feedback, "params": len(params.keys())}


def bench_latency(samples: int, pieces: int) -> dict:
    params = ParameterStore(schema(pieces))
    stamp = {}
    params.add_listener(lambda keys, origin: stamp.setdefault("t", time.perf_counter()))
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    to_store, to_snap = [], []
    with OscServer(params, port=0, log_interval=60.0) as srv:
        target = ("127.0.0.1", srv.port)
        for i in range(samples):
            v = 0.1 + 0.8 * (i % 2)  # alternate so every message is a change
            b = OscMessageBuilder(address=address("p0", "beta", raw=True))
            b.add_arg(v, "f")
            d = b.build().dgram
            want = struct.unpack(">f", struct.pack(">f", v))[0]
            stamp.clear()
            t0 = time.perf_counter()
            sock.sendto(d, target)
            while params.snapshot(float(i))["p0"]["beta"] != want:
                time.sleep(0.0001)
                if time.perf_counter() - t0 > 1.0:
                    break
            t1 = time.perf_counter()
            to_snap.append((t1 - t0) * 1e3)
            to_store.append((stamp.get("t", t1) - t0) * 1e3)
            time.sleep(0.002)
    sock.close()
    return {"samples": samples,
            "store_ms_p50": pct(to_store, 50), "store_ms_p99": pct(to_store, 99),
            "snapshot_ms_p50": pct(to_snap, 50), "snapshot_ms_p99": pct(to_snap, 99),
            "snapshot_ms_max": max(to_snap)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--burst", type=int, default=10_000)
    ap.add_argument("--samples", type=int, default=500)
    ap.add_argument("--pieces", type=int, default=2)
    args = ap.parse_args()
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f} python={sys.version.split()[0]}")
    r = bench_burst(args.burst, args.pieces)
    print(f"burst: {r['sent']} sent, {r['handled']} handled, {r['lost']} lost "
          f"({r['applied']} applied), {r['msgs_per_s']:.0f} msgs/s over {r['params']} params; "
          f"{r['frames']} frames at 60 fps meanwhile, snapshot p50 {r['snapshot_ms_p50']:.3f} ms, "
          f"max {r['snapshot_ms_max']:.3f} ms, longest frame gap {r['frame_gap_ms_max']:.1f} ms "
          f"(16.7 ideal); {r['feedback_datagrams']} feedback datagrams to 1 "
          f"subscriber")
    r = bench_latency(args.samples, args.pieces)
    print(f"latency over {r['samples']} messages: send->store p50 {r['store_ms_p50']:.3f} ms "
          f"p99 {r['store_ms_p99']:.3f} ms; send->snapshot p50 {r['snapshot_ms_p50']:.3f} ms "
          f"p99 {r['snapshot_ms_p99']:.3f} ms max {r['snapshot_ms_max']:.3f} ms")


if __name__ == "__main__":
    main()
