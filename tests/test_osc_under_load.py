"""OSC to frame with the machine busy: the paced live loop, two CPU hogs beside it, real UDP.

A gallery PC plays sound and video beside the show, so the claim "a change shows in the next
frame" is checked there, by frame counts rather than milliseconds: every value sent arrives
(nothing lost), and each one moves the parameter (gliding, as its smoothing says) in one of the
first two frames drawn after the OSC thread stored it, however many slots the machine dropped.
"""

import threading
import time

import pytest
from helpers import Client, wait_for
from test_engine import make_engine

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_osc_changes_reach_the_next_frames_with_cpu_hogs_beside_the_show(tmp_path, cpu_hogs):
    eng = make_engine(tmp_path, seconds=6.0)
    drawn: list[tuple[float, float]] = []   # (perf_counter at the frame's end, the hue it was drawn with)
    eng.frame_hooks.append(lambda e: drawn.append((time.perf_counter(), e.snapshot["eq"]["hue"])))
    result = {}
    runner = threading.Thread(target=lambda: result.setdefault("report", eng.run()), daemon=True)
    runner.start()
    assert wait_for(lambda: len(drawn) >= 3, timeout=30)
    client = Client(eng.osc.port)
    stored: list[tuple[float, float]] = []   # (perf_counter when the store held it, value)

    def heard(keys, origin):  # on the OSC thread, right after the store changed: the moment itself
        if ("eq", "hue") in keys:
            stored.append((time.perf_counter(), eng.params.get("eq", "hue")))

    eng.params.add_listener(heard)
    for i, value in enumerate((60.0, 0.0, 60.0, 0.0, 60.0, 0.0)):
        client.send("/unstable/eq/hue/raw", value)
        assert wait_for(lambda: len(stored) == i + 1, timeout=30), f"value {i} lost"
        assert stored[-1][1] == value
        time.sleep(0.35)   # a few frames apart at 10 fps
    client.close()
    runner.join(30)
    report = result["report"]
    assert report.frames >= 20
    for t, value in stored:
        before = [hue for end, hue in drawn if end < t][-1]
        after = [hue for end, hue in drawn if end >= t][:2]
        # The frame in flight when it was stored may have snapshotted before it; the next one has it.
        assert len(after) == 2 and any(abs(h - value) < abs(before - value) for h in after), (value, before, after)


def test_a_failing_telemetry_line_never_ends_the_show(tmp_path, caplog):
    """The per-second report (built with or without --telemetry) failing every second — out of file
    descriptors, say — costs one log line, not the show."""
    eng = make_engine(tmp_path, seconds=2.5)

    def broken(now):
        raise OSError(24, "Too many open files")

    eng.reporter.line = broken
    with caplog.at_level("WARNING", logger="unstable.live"):
        report = eng.run()
    assert report.frames >= 20
    failed = [r for r in caplog.records if "telemetry: this second's line failed" in r.getMessage()]
    assert len(failed) == 1, [r.getMessage() for r in failed]
