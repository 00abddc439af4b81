"""A walk period in beats stands on Ableton Link's beat, as scenes do: with a second Link peer in
another process (both in a network namespace of their own, beside two CPU hogs), the beats the
show's walk has walked agree, modulo the bar, with the beat that peer reads from the session at the
same wall time, before and after the peer changes the tempo to 133 BPM and after it moves the
session's beat on by two (Link's force_beat), which the show re-aligns to within a second."""

from __future__ import annotations

import bisect
import json
import subprocess
import sys
from pathlib import Path

import pytest

from test_show import write_show
from test_tempo import _netns_ok

ROOT = Path(__file__).resolve().parents[1]
AFTER = 2.5  # seconds the show plays past the peer's forced beat (checked up to 1.5 s past it)
SHOW_TEXT = """\
size = [64, 32]
fps = 50
[pieces.eq]
piece = "pieces/eq.toml"
[layout]
panels = ["eq/g0", "eq/g1"]
[tempo]
bpm = 120
link = true
beats_per_bar = 4
[walk]
keyframes = 4
period = "1 bar"
period_per = "loop"
"""


def bar_distance(a: float, b: float, bar: float = 4.0) -> float:
    d = (a - b) % bar
    return min(d, bar - d)


@pytest.mark.slow  # 5.5 s of show after discovery beside the hogs, 12-28 s in all on 2 cores
@pytest.mark.skipif(not _netns_ok(), reason="needs `unshare -rn` (a network namespace of our own) and iproute2")
def test_a_walk_in_beats_lands_on_the_link_sessions_beat(tmp_path, cpu_hogs):
    show = write_show(tmp_path, SHOW_TEXT)
    r = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up && ip link set lo multicast on && "
                        f"exec {sys.executable} {ROOT / 'tests' / 'link_walk_show.py'} {show} {AFTER}"],
                       capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    res = json.loads(r.stdout.strip().splitlines()[-1])
    beats = [(float(x.split()[1]), float(x.split()[2])) for x in res["peer"] if x.startswith("beat ")]
    found, set_at, forced = (next((float(x.split()[1]) for x in res["peer"] if x.startswith(word + " ")), None)
                             for word in ("peers", "set", "forced"))
    assert None not in (found, set_at, forced), ("the peer never found the show, set 133 or forced the beat",
                                                 res["peer"][:3], res["peer"][-3:])
    times = [t for t, _ in beats]
    checked, off = 0, []
    for wall, walked, count, bpm in res["frames"]:
        # From the first alignment (a second after the show joined) on, past the second after the
        # tempo change and the forced beat (the show re-aligns once a second); frames outside the
        # peer's report are skipped (and the few milliseconds before its `forced` line, where its
        # reported beats straddle the jump).
        if wall < found + 1.2 or set_at < wall < set_at + 1.2 or forced - 0.05 < wall < forced + 1.2:
            continue
        i = bisect.bisect_left(times, wall)
        if not 0 < i < len(times) or times[i] - times[i - 1] > 0.05:
            continue
        (t0, b0), (t1, b1) = beats[i - 1], beats[i]
        if not 0 <= b1 - b0 <= (t1 - t0) * 300 / 60 + 0.01:
            continue  # the two reports straddle the forced jump: nothing to interpolate
        peer_beat = b0 + (b1 - b0) * (wall - t0) / (t1 - t0)
        off.append(bar_distance(walked, peer_beat))
        assert bar_distance(count, peer_beat) < 0.1, (wall - found, count, peer_beat)   # the scenes' beat
        checked += 1
    assert checked > 50 and res["frames"][-1][0] > forced + 1.5, (checked, len(res["frames"]), len(beats))
    assert any(abs(f[3] - 133.0) < 1e-3 for f in res["frames"]), "the show never followed the peer to 133 BPM"
    assert max(off) < 0.1, f"the walk is off the session's beat by up to {max(off):.3f} beats"
