"""The live engine's figures: frame rate and frame times while training, OSC-to-screen latency in
frames, the cost of composing a 1920x1080 frame, and the cost of refreshing the sampling mirrors.

    .venv/bin/python tests/bench/bench_live.py [--show shows/demo.toml] [--seconds 30] [--device cpu]
                                               [--no-passive] [--size 1920x1080] [--grown] [--window]
                                               [--ab-look-ahead 4] [--ab-present]

    # the projector figure: the demo as shipped (grown states), 1920x1080, look-ahead off/on, A/B/A/B
    .venv/bin/python tests/bench/bench_live.py --size 1920x1080 --grown --ab-look-ahead 4 --seconds 20 \
        --skip osc,compose,mirror
    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python tests/bench/bench_live.py --window ...
    # the window's cost: composed offscreen and presented vs straight into the window, A/B/A/B
    xvfb-run -a -s "-screen 0 1920x1080x24" .venv/bin/python tests/bench/bench_live.py --window --ab-present \
        --size 1920x1080 --grown --seconds 20 --skip osc,compose,mirror

Run it from the repository root (the BAD piece's base models are cached under .cache/). Not
collected by pytest. Four parts:

1. live: the show headless for `--seconds` (default 30), training on; the engine's own numbers
   (achieved fps, frame interval and work time p50/p99, late frames, training steps/s per piece)
   and the per-phase medians from its telemetry (sample, compose, output).
2. osc: the same show with every walk frozen (walk_speed 0) and the equilibrium-style pieces not
   training, so a frame changes only when a parameter does; every half second a real UDP message
   changes one piece's hue and we count the frames until the read-back frame differs (1 = the next
   frame). Other pieces keep training meanwhile.
3. compose: the engine's Composer at 1920x1080 with the show's layout and panel sizes (random
   images changing every frame): render + finish, and readback, p50/p99; also a crossfade frame.
4. mirror: SamplingMirror.sync() vs load_state_dict(state_dict()) per piece.

OMP_WAIT_POLICY=PASSIVE is set before torch is imported, as `unstable live` does (`--no-passive`
leaves OpenMP's default, to compare).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import sys

if "--no-passive" not in sys.argv:
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import json  # noqa: E402
import socket  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

from unstable.display.compositor import Compositor  # noqa: E402
from unstable.display.layout import place  # noqa: E402
from unstable.display.gl import create_headless_context  # noqa: E402
from unstable.frame.compose import Composer  # noqa: E402
from unstable.live import Engine, SamplingMirror  # noqa: E402
from unstable.show import load_show  # noqa: E402
from unstable.system import resolve_device  # noqa: E402


def pct(values, q):
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def quiet(line):
    pass


def grow(eng, step):
    """Start every piece at training step `step` (weights untouched): the equilibrium generators'
    growth is a function of the step count alone, so this shows the full-resolution costs at once."""
    for p in eng.pieces.values():
        p.system.step_count = max(p.system.step_count, step)
        p.mirror.sync()


def live(show, device, seconds, run_dir, start_step=0, grown=False, window=False, label="live", present_pass=False):
    tel = Path(run_dir) / f"{label}.telemetry.jsonl"
    # grown: the show's `start` states (what `unstable live` plays on a fresh clone), else its seeds.
    eng = Engine(show, device=device, headless=not window, seconds=seconds, telemetry=tel, osc_port=0, web_port=0,
                 run_dir=Path(run_dir) / label, fresh=not grown, echo=quiet)
    eng.open()
    if present_pass:  # the window as before Compositor.draw_into: composed offscreen, then presented
        eng.compositor.draw_into(None)
    if start_step:
        grow(eng, start_step)
    r = eng.run()
    lines = [json.loads(x) for x in tel.read_text().splitlines()]
    steady = lines[2:] or lines  # the first seconds include the first (slow) training steps
    phases = {k: round(float(np.median([ln[f"{k}_ms_p50"] for ln in steady])), 2)
              for k in ("sample", "compose", "output")}
    sps = {n: round(float(np.mean([ln["steps_per_s"][n] for ln in steady])), 2) for n in r.steps}
    print(f"{label}: {r.frames} frames in {r.seconds:.1f} s = {r.fps:.2f} fps (target {show.settings.fps:g}); "
          f"frame interval p50 {r.interval_p50_ms:.1f} ms p99 {r.interval_p99_ms:.1f} ms "
          f"(p99/p50 {r.interval_p99_ms / max(r.interval_p50_ms, 1e-9):.2f}); "
          f"work p50 {r.work_p50_ms:.1f} ms p99 {r.work_p99_ms:.1f} ms; {r.late_frames} late frames")
    print(f"{label}: phases (median of per-second p50, ms): {phases}; rss {steady[-1]['rss_mb']} MB")
    print(f"{label}: training steps {r.steps}, steps/s over the run {r.steps_per_second}, "
          f"mean steps/s after warm-up {sps}")
    return {"frames": r.frames, "fps": r.fps, "interval_p50_ms": r.interval_p50_ms, "interval_p99_ms": r.interval_p99_ms,
            "work_p50_ms": r.work_p50_ms, "work_p99_ms": r.work_p99_ms, "late": r.late_frames,
            "steps": r.steps, "steps_per_s": r.steps_per_second, "steps_per_s_steady": sps, "phases": phases}


def osc_latency(show, device, seconds, run_dir):
    eng = Engine(show, device=device, headless=True, seconds=seconds, osc_port=0, web_port=0,
                 run_dir=Path(run_dir) / "osc", fresh=True, echo=quiet)
    eng.open()
    target = next(iter(show.pieces))  # the piece whose hue we turn
    frozen = {n: {"walk_speed": 0.0} for n in show.pieces}
    frozen[target]["training"] = 0.0  # its picture changes only through parameters
    eng.params.update(frozen)
    eng.params.settle()
    region = [d for d, p in eng.pipeline.composer.piece_of.items() if p == target]
    # Where the target's panels land in scene 0 (the others keep changing as they train).
    snap = eng.params.snapshot(0.0)
    sizes = {}
    for name, p in eng.pieces.items():
        out = p.source.sample(p.source.latents([0.0]), snap[name])  # {display: [1, 3, H, W]}
        sizes.update({d: (x.shape[-1], x.shape[-2]) for d, x in out.items()})
    layout = show.scene_layout(0)
    rects = [pl for pl in place(layout, show.settings.size, sizes, layout.panel_names(list(sizes)))
             if pl.name in region]
    if not rects:
        raise SystemExit(f"osc: scene 0 shows no panel of {target!r}")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    state = {"ref": None, "sent": None, "value": 0.0, "latencies": [], "ms": []}
    every = max(2, int(show.settings.fps // 2))

    def crop(frame):
        return np.concatenate([frame[int(r.y0):int(r.y1), int(r.x0):int(r.x1)].reshape(-1) for r in rects])

    def hook(e):
        if e.timeline.director.current != 0 or e.timeline.director.previous is not None:
            state["sent"] = None  # another scene: the rects no longer apply
            return
        frame = crop(e.read())
        if state["sent"] is not None:
            if not np.array_equal(frame, state["ref"]):
                state["latencies"].append(e.frames - state["sent"][0])
                state["ms"].append((time.perf_counter() - state["sent"][1]) * 1e3)
                state["sent"] = None
            elif e.frames - state["sent"][0] > 30:
                state["latencies"].append(float("inf"))
                state["sent"] = None
            state["ref"] = frame
            return
        state["ref"] = frame
        if e.frames % every == 0 and e.frames > 2 * every:
            state["value"] = 90.0 if state["value"] != 90.0 else -90.0
            b = OscMessageBuilder(address=f"/unstable/{target}/hue/raw")
            b.add_arg(state["value"])
            state["sent"] = (e.frames, time.perf_counter())
            sock.sendto(b.build().dgram, ("127.0.0.1", e.osc.port))

    eng.frame_hooks.append(hook)
    r = eng.run()
    sock.close()
    lat = state["latencies"]
    counts = {k: lat.count(k) for k in sorted(set(lat))}
    print(f"osc: {len(lat)} hue changes of {target!r} over UDP ({region}); frames until visible: {counts} "
          f"(1 = the next frame); send-to-readback ms p50 {pct(state['ms'], 50):.1f} p99 {pct(state['ms'], 99):.1f}; "
          f"{r.fps:.1f} fps meanwhile")
    return {"frames_until_visible": counts, "ms_p50": pct(state["ms"], 50), "ms_p99": pct(state["ms"], 99)}


def compose_cost(show, device, frames=200, grown=False):
    from unstable.live import build_systems
    systems = build_systems(show, torch.device("cpu"))
    piece_of, sizes = {}, {}
    for name, s in systems.items():
        if grown:  # panels at their full size (the equilibrium generators grow with the step count)
            s.step_count = 10**6
        z = {p: torch.zeros(1, d) for p, d in s.panels().items()}
        try:
            out = s.sample(z, {})
        except RuntimeError:  # a system that needs prepare() to sample: assume 28 px digits
            out = {p: torch.zeros(1, 3, 28, 28) for p in z}
        for p, x in out.items():
            piece_of[f"{name}/{p}"] = name
            sizes[f"{name}/{p}"] = tuple(x.shape[1:])
    ctx = create_headless_context()
    results = {}
    base = show.scene_layout(0)
    def every_panel(filt):
        return dataclasses.replace(base, filter=filt, styles={k: dataclasses.replace(v, filter=None)
                                                              for k, v in base.styles.items()})

    nearest, bicubic, sharp = every_panel("nearest"), every_panel("bicubic"), every_panel("sharp")
    labels = {id(nearest): " nearest", id(bicubic): " bicubic (every panel)", id(sharp): " sharp (every panel)"}
    for size, lay0 in (((1920, 1080), base), ((1920, 1080), nearest), ((1920, 1080), bicubic),
                       ((1920, 1080), sharp), (tuple(show.settings.size), base)):
        comp = Compositor(ctx, size)
        composer = Composer(comp, piece_of)
        g = torch.Generator().manual_seed(0)
        sets = [{n: torch.rand(*shape, generator=g).to(device) for n, shape in sizes.items()} for _ in range(4)]
        snap = {n: {"hue": 20.0, "saturation": 1.0, "fade": 1.0} for n in systems}
        snap["show"] = {"master_fade": 1.0}
        col0 = show.scene_colour(0)
        nxt = (show.scene_layout(1), show.scene_colour(1)) if len(show.scene_list()) > 1 else None
        comp_t, read_t, fade_t = [], [], []
        for i in range(frames + 10):
            images = sets[i % 4]
            t0 = time.perf_counter()
            composer.render(images, snap, (lay0, col0))
            ctx.finish()
            t1 = time.perf_counter()
            comp.read()
            t2 = time.perf_counter()
            if nxt is not None and i % 4 == 0:
                composer.render(images, snap, (lay0, col0), nxt, 0.5)
                ctx.finish()
                fade_t.append(time.perf_counter() - t2)
            if i >= 10:
                comp_t.append(t1 - t0)
                read_t.append(t2 - t1)
        ms = lambda v, q: round(pct(v, q) * 1e3, 2)  # noqa: E731
        label = f"{size[0]}x{size[1]}" + labels.get(id(lay0), "")
        results[label] = {"compose_p50": ms(comp_t, 50), "compose_p99": ms(comp_t, 99),
                                           "read_p50": ms(read_t, 50), "read_p99": ms(read_t, 99),
                                           "crossfade_p50": ms(fade_t, 50) if fade_t else None}
        print(f"compose {label} ({len(sizes)} panels {sorted(set(v[1:] for v in sizes.values()))}, piece hue on): "
              f"compose+finish p50 "
              f"{ms(comp_t, 50)} ms p99 {ms(comp_t, 99)} ms; readback p50 {ms(read_t, 50)} ms; "
              f"crossfade frame p50 {ms(fade_t, 50) if fade_t else '-'} ms")
        comp.release()
    ctx.release()
    return results


def mirror_cost(show, device):
    from unstable.live import build_systems
    from unstable.trainer import progress_bar
    out = {}
    for name, s in build_systems(show, device).items():
        s.prepare(progress_bar)
        m = SamplingMirror(s)
        for _ in range(3):
            m.sync()
        t0 = time.perf_counter()
        for _ in range(20):
            m.sync()
        fast = (time.perf_counter() - t0) / 20 * 1e3
        # The protocol's way needs a whole copy (the mirror has no optimiser to load into).
        whole = copy.deepcopy(s, memo={id(s.piece): s.piece})
        t0 = time.perf_counter()
        for _ in range(5):
            whole.load_state_dict(s.state_dict())
        full = (time.perf_counter() - t0) / 5 * 1e3
        out[name] = {"sync_ms": round(fast, 3), "load_state_dict_ms": round(full, 2)}
        print(f"mirror {name}: sync {fast:.2f} ms, load_state_dict(state_dict()) {full:.2f} ms")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--show", default="shows/demo.toml")
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--osc-seconds", type=float, default=15.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--start-step", type=int, default=0,
                    help="start the pieces at this step count (e.g. 1000: equilibrium fully grown, 64 px)")
    ap.add_argument("--no-passive", action="store_true", help="leave OMP_WAIT_POLICY unset")
    ap.add_argument("--skip", default="", help="comma-separated parts to skip: live,osc,compose,mirror")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--size", default=None, metavar="WxH", help="output size instead of the show's (1920x1080)")
    ap.add_argument("--grown", action="store_true",
                    help="start from the show's `start` states (as `unstable live` does), not from the seeds")
    ap.add_argument("--window", action="store_true", help="in a window (run under xvfb-run without a display)")
    ap.add_argument("--ab-look-ahead", type=int, default=0, metavar="N",
                    help="the live part as A/B/A/B rounds: look_ahead 1 against N, the same show otherwise")
    ap.add_argument("--ab-present", action="store_true",
                    help="with --window: the live part as A/B/A/B rounds, the frame composed offscreen and "
                         "presented (a second full-size pass) against composed straight into the window")
    args = ap.parse_args()
    device = resolve_device(args.device)
    show = load_show(args.show)
    if args.size:
        w, h = (int(v) for v in args.size.lower().split("x"))
        show = dataclasses.replace(show, settings=dataclasses.replace(show.settings, size=(w, h)))
    skip = set(filter(None, args.skip.split(",")))
    print(f"bench_live: {args.show} {show.settings.size[0]}x{show.settings.size[1]}"
          f"{' in a window' if args.window else ' headless'}{', grown states' if args.grown else ''} "
          f"on {device}, start step {args.start_step}, OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY', 'unset')}, "
          f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        if "live" not in skip and args.ab_look_ahead:
            rounds = []
            for i, k in enumerate((1, args.ab_look_ahead) * 2):
                ab = dataclasses.replace(show, settings=dataclasses.replace(show.settings, look_ahead=k))
                rounds.append(live(ab, device, args.seconds, tmp, args.start_step, args.grown, args.window,
                                   label=f"round{i + 1}-look_ahead{k}"))
            one, many = rounds[0::2], rounds[1::2]
            fps = [b["fps"] / a["fps"] for a, b in zip(one, many)]
            p99 = [b["interval_p99_ms"] / a["interval_p99_ms"] for a, b in zip(one, many)]
            print(f"look-ahead {args.ab_look_ahead} / 1: fps ratio {fps[0]:.2f}, {fps[1]:.2f}; "
                  f"frame interval p99 ratio {p99[0]:.2f}, {p99[1]:.2f}")
            results["live_ab"] = rounds
        elif "live" not in skip and args.ab_present:
            rounds = []
            for i, present in enumerate((True, False) * 2):
                label = f"round{i + 1}-{'present-pass' if present else 'direct'}"
                rounds.append(live(show, device, args.seconds, tmp, args.start_step, args.grown, args.window,
                                   label=label, present_pass=present))
            before, after = rounds[0::2], rounds[1::2]
            fps = [b["fps"] / a["fps"] for a, b in zip(before, after)]
            work = [b["work_p50_ms"] / a["work_p50_ms"] for a, b in zip(before, after)]
            print(f"direct / present pass: fps ratio {fps[0]:.2f}, {fps[1]:.2f}; work p50 ratio {work[0]:.2f}, {work[1]:.2f}")
            results["live_ab_present"] = rounds
        elif "live" not in skip:
            results["live"] = live(show, device, args.seconds, tmp, args.start_step, args.grown, args.window)
        if "osc" not in skip:
            results["osc"] = osc_latency(show, device, args.osc_seconds, tmp)
    if "compose" not in skip:
        results["compose"] = compose_cost(show, device, grown=args.grown)
    if "mirror" not in skip:
        results["mirror"] = mirror_cost(show, device)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
