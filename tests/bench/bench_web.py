"""The control page's figures: browser fader -> visible frame latency, and the OSCQuery tree's
response time.

    .venv/bin/python tests/bench/bench_web.py [--show shows/demo.toml] [--trials 30] [--requests 300]

Run it from the repository root; needs Debian's chromium and chromium-driver (scripts/setup.sh).
Not collected by pytest. The show plays headless at its own size and rate with every walk frozen
and training off, so a frame changes only when a parameter does.

1. fader: a real chromium (Selenium) opens the control page; each trial clicks the first piece's
   hue fader (alternately at 30 % and 70 % of its width). The page records the time of the input
   event (performance.timeOrigin + now, the same wall clock as Python's time.time()); the engine's
   frame hook reads every composed frame back and notes when it first differs from the settled
   frame before the click. Latency = that frame's read-back time - the input event's time; frames
   = which frame begun after the click first showed it (1 = the very next frame; 0 = the frame
   already in flight when the click came). Between
   trials the smoothing is settled so the next trial starts from a still frame.
2. tree: GET / (the full OSCQuery tree) over one keep-alive connection, `--requests` times, while
   the show plays: p50/p99 and the size of the answer; also GET /unstable/<piece>/hue?VALUE.
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import http.client
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

from unstable.live import Engine  # noqa: E402
from unstable.show import load_show  # noqa: E402


def pct(values, q):
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    opts = webdriver.ChromeOptions()
    opts.binary_location = shutil.which("chromium")
    for a in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=900,1400"):
        opts.add_argument(a)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=opts)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--show", default="shows/demo.toml")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--screenshot", default=None, help="save a screenshot of the page here (PNG) at the end")
    args = ap.parse_args()
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    show = load_show(args.show)
    # Scenes hold (duration 0): a scene change mid-trial would be a change the fader did not make.
    scenes = tuple(dataclasses.replace(sc, duration=0.0) for sc in show.settings.scenes)
    show = dataclasses.replace(show, settings=dataclasses.replace(show.settings, scenes=scenes))
    run_dir = Path(tempfile.mkdtemp(prefix="bench-web-"))
    eng = Engine(show, headless=True, osc_port=0, web_port=0, train=False, run_dir=run_dir, echo=lambda s: None)
    piece = next(iter(show.pieces))
    frames: list[tuple[float, int, bool]] = []   # (read-back time, frame number, differs from ref)
    state = {"ref": None}
    lock = threading.Lock()

    def hook(e):
        f = e.read()
        t = time.time()
        with lock:
            if state["ref"] is None:
                state["ref"] = f.copy()
                frames.append((t, e.frames, False))
            else:
                frames.append((t, e.frames, not np.array_equal(f, state["ref"])))

    eng.frame_hooks.append(hook)
    runner = threading.Thread(target=eng.run, name="show")
    runner.start()
    while not eng.frames:
        time.sleep(0.1)
    eng.params.update({n: {"walk_speed": 0.0} for n in show.pieces})
    eng.params.settle()
    print(f"show {show.name} {show.settings.size[0]}x{show.settings.size[1]} at {show.settings.fps:g} fps; "
          f"fader: /unstable/{piece}/hue; page {eng.web.url()}")

    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait
    driver = browser()
    latencies, counts, missed = [], [], 0
    try:
        driver.get(eng.web.url())
        WebDriverWait(driver, 30).until(lambda d: d.find_element(By.ID, "status").text == "live")
        address = f"/unstable/{piece}/hue"
        el = driver.find_element(By.CSS_SELECTOR, f"[data-address='{address}']")
        driver.execute_script("arguments[0].scrollIntoView({block: 'center'});"
                              "arguments[0].addEventListener('input', () => "
                              "{ window.__t = performance.timeOrigin + performance.now(); });", el)
        width = el.size["width"]
        for i in range(args.trials):
            # A still frame to compare with: smoothing settled, a fresh reference, two equal frames.
            eng.params.settle()
            time.sleep(3.0 / show.settings.fps)
            with lock:
                state["ref"] = None
                frames.clear()
            while True:
                time.sleep(0.02)
                with lock:
                    if len(frames) >= 3 and not any(c for _, _, c in frames):
                        break
                    if len(frames) >= 3:  # still moving: take a newer reference
                        state["ref"] = None
                        frames.clear()
            driver.execute_script("window.__t = null;")
            frac = 0.3 if i % 2 == 0 else 0.7
            ActionChains(driver).move_to_element_with_offset(el, int((frac - 0.5) * width), 0).click().perform()
            # Wait on this side for a changed frame (polling the browser would load the machine),
            # then ask the page once when its input event fired.
            end = time.time() + 3.0
            while time.time() < end:
                time.sleep(0.005)
                with lock:
                    if any(c for _, _, c in frames):
                        break
            t_input = driver.execute_script("return window.__t;")
            hit = None
            if t_input is not None:
                t_input /= 1e3
                with lock:
                    seen = list(frames)
                # Frames begun after the input: those whose predecessor was read back after it (a
                # frame starts after the previous one's read-back); the one in flight is not counted.
                begun = [seen[k] for k in range(1, len(seen)) if seen[k - 1][0] > t_input]
                hit = next(((t, k + 1) for k, (t, n, c) in enumerate(begun) if c), None)
                if hit is None and any(c and t > t_input for t, n, c in seen):
                    hit = (next(t for t, n, c in seen if c and t > t_input), 0)  # in the frame in flight
            if hit is None:
                missed += 1
                continue
            latencies.append((hit[0] - t_input) * 1e3)
            counts.append(hit[1])
        if args.screenshot:
            driver.execute_script("window.scrollTo(0, 0)")
            time.sleep(1.5)  # a preview frame and a telemetry line
            driver.save_screenshot(args.screenshot)
        # The full tree while the show plays.
        conn = http.client.HTTPConnection("127.0.0.1", eng.web.port, timeout=10)
        tree_ms, size = [], 0
        for _ in range(args.requests):
            t0 = time.perf_counter()
            conn.request("GET", "/")
            body = conn.getresponse().read()
            tree_ms.append((time.perf_counter() - t0) * 1e3)
            size = len(body)
        value_ms = []
        for _ in range(args.requests):
            t0 = time.perf_counter()
            conn.request("GET", f"/unstable/{piece}/hue?VALUE")
            conn.getresponse().read()
            value_ms.append((time.perf_counter() - t0) * 1e3)
        conn.close()
    finally:
        driver.quit()
        eng.request_stop()
        runner.join(60)
    r = eng.report()
    nodes = len(eng.web.space.methods)
    print(f"fader -> visible frame: {len(latencies)} trials ({missed} missed): p50 {pct(latencies, 50):.1f} ms, "
          f"p99 {pct(latencies, 99):.1f} ms (min {min(latencies):.1f}, max {max(latencies):.1f}); frames from "
          f"the click: p50 {pct(counts, 50):.0f}, p99 {pct(counts, 99):.0f}, max {max(counts)} "
          f"(a frame every {1e3 / show.settings.fps:.1f} ms); trials per frame count "
          f"{dict(sorted(collections.Counter(counts).items()))}")
    print(f"OSCQuery full tree ({nodes} methods, {size} bytes): p50 {pct(tree_ms, 50):.2f} ms, "
          f"p99 {pct(tree_ms, 99):.2f} ms over {len(tree_ms)} requests; ?VALUE p50 {pct(value_ms, 50):.2f} ms, "
          f"p99 {pct(value_ms, 99):.2f} ms")
    print(f"show meanwhile: {r.fps:.2f} fps, frame interval p50 {r.interval_p50_ms:.1f} ms p99 "
          f"{r.interval_p99_ms:.1f} ms, {r.late_frames} late")
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    shutil.rmtree(run_dir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
