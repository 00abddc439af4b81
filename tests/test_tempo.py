"""The show's tempo: tap tempo (floods ignored), NaN and out-of-range tempos over real OSC on
loopback, beats and bars, and Ableton Link with a second peer in another process (both in a network
namespace of their own, so Link's multicast stays on its loopback), beside two CPU hogs."""

from __future__ import annotations

import json
import math
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import ONE_PANEL_SHOW, Client, send_burst, wait_for
from unstable.control.osc import OscServer
from unstable.control.store import ParameterStore
from unstable.schema import SHOW, show_specs
from unstable.tempo import TAP, TapTempo, TempoLink, parse_beats, tempo_specs

ROOT = Path(__file__).resolve().parents[1]


def store(bpm=120.0):
    return ParameterStore({SHOW: show_specs(2) + tempo_specs(bpm)})


def test_taps_make_the_median_tempo_and_a_pause_starts_over():
    tap = TapTempo()
    assert tap.tap(0.0) is None
    assert tap.tap(0.5) == pytest.approx(120.0)
    assert tap.tap(1.0) == pytest.approx(120.0)
    assert tap.tap(1.6) == pytest.approx(120.0)            # one late tap: the median holds
    assert tap.tap(2.0) == pytest.approx(120.0)
    assert tap.tap(10.0) is None                            # a long pause: a new count
    assert tap.tap(10.4) == pytest.approx(150.0)


def test_a_tap_flood_is_ignored_with_one_line_and_the_tempo_stays(caplog):
    tap = TapTempo()
    tap.tap(0.0)
    assert tap.tap(0.5) == pytest.approx(120.0)
    with caplog.at_level("WARNING", logger="unstable.tempo"):
        results = [tap.tap(0.5 + 0.001 * i) for i in range(1, 1001)]
    assert results == [None] * 1000 and tap.ignored == 1000
    assert len([r for r in caplog.records if "tap tempo" in r.getMessage()]) == 1
    assert tap.tap(2.0) is None                             # the flood broke the count: a new one
    assert tap.tap(2.5) == pytest.approx(120.0)


def test_the_tap_parameter_taps_each_press_and_sets_the_tempo():
    s = store()
    link = TempoLink(s, tap=TapTempo(clock=iter([0.0, 0.4, 0.8]).__next__)).start()
    try:
        for _ in range(3):
            s.set(SHOW, "tap", 1, origin=("127.0.0.1", 9))   # pressed again without a release: still a tap
            assert s.get(SHOW, "tap") == 0.0
        assert s.get(SHOW, "tempo") == pytest.approx(150.0)
    finally:
        link.stop()


def test_tempo_over_osc_nan_and_floods_are_one_line_each_and_the_show_keeps_its_tempo(caplog):
    s = store()
    server = OscServer(s, port=0).start()
    link = TempoLink(s).start()
    c = Client(server.port)
    try:
        with caplog.at_level("WARNING"):
            c.send("/unstable/show/tempo/raw", float("nan"))
            c.send("/unstable/show/tempo/raw", 133.0)
            assert wait_for(lambda: s.get(SHOW, "tempo") == 133.0 and server.stats["messages"] == 2, 30)
            # a tap flood from one sender, in chunks that fit the receive buffer (so none is lost)
            send_burst(c, [("/unstable/show/tap", 1.0)] * 500, lambda: server.stats["messages"])
            c.send("/unstable/show/tempo/raw", 999.0)       # clamped to 300, said once
            assert wait_for(lambda: s.get(SHOW, "tempo") == 300.0 and server.stats["messages"] == 503, 30)
        nan_lines = [r for r in caplog.records if "nan" in r.getMessage().lower() and "tempo" in r.getMessage()]
        assert len(nan_lines) == 1, [r.getMessage() for r in caplog.records]
        assert len([r for r in caplog.records if "tap tempo" in r.getMessage()]) <= 2
        assert server.running
    finally:
        c.close()
        link.stop()
        server.stop()


def test_beats_and_bars():
    assert parse_beats(8.0) is None
    assert parse_beats("8 bars") == 32.0 and parse_beats("3 beats", 3) == 3.0 and parse_beats("1 bar", 3) == 3.0
    assert parse_beats("0.5 beat") == 0.5
    for bad in ("8 barz", "bars", "-1 bars", "nan beats"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_beats(bad)


def test_a_show_file_refuses_a_nan_tempo_in_one_line(tmp_path):
    from unstable.config import load_dataclass
    from unstable.errors import ConfigError
    from unstable.tempo import TempoSettings
    for bpm in (math.nan, 10.0, 1e9):
        with pytest.raises(ConfigError) as info:
            load_dataclass(TempoSettings, {"bpm": bpm}, source="shows/x.toml", prefix="tempo")
        assert "tempo.bpm" in str(info.value) and "\n" not in str(info.value)


def _netns_ok() -> bool:
    if shutil.which("unshare") is None:
        return False
    r = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up && ip link set lo multicast on"],
                       capture_output=True)
    return r.returncode == 0


@pytest.mark.skipif(not _netns_ok(), reason="needs `unshare -rn` (a network namespace of our own) and iproute2")
def test_a_link_peer_in_another_process_sets_133_and_the_show_follows_and_tap_moves_the_peer(cpu_hogs):
    r = subprocess.run(["unshare", "-rn", "sh", "-c", "ip link set lo up && ip link set lo multicast on && "
                        f"exec {sys.executable} {ROOT / 'tests' / 'link_show.py'}"],
                       capture_output=True, text=True, timeout=150, cwd=ROOT)
    assert r.returncode == 0, r.stderr
    res = json.loads(r.stdout.strip().splitlines()[-1])
    assert res["set"] is not None, res
    assert res["followed"] is not None and res["followed"] - res["set"] < 1.0, res
    # The tempo the taps made is the median of their intervals as they happened (each tap's time is
    # known to within the call that made it), whatever the sleeps between them overslept.
    pairs = list(zip(res["taps"], res["taps"][1:]))  # ((before, after) a tap, the same of the next)
    shortest = statistics.median(nxt[0] - tap[1] for tap, nxt in pairs)
    longest = statistics.median(nxt[1] - tap[0] for tap, nxt in pairs)
    assert res["tapped"] is not None and 60 / longest - 1e-6 <= res["tapped"] <= 60 / shortest + 1e-6, res
    # The peer moves to a tempo the taps made within 2 s of the first (and ends on the last).
    (first_made, _), (moved, peer_bpm) = res["made"][0], res["peer_tapped"] or (math.inf, None)
    assert moved - first_made < 2.0 and any(abs(peer_bpm - v) < 0.01 for _, v in res["made"]), res
    assert res["final"] == pytest.approx(res["tapped"], abs=0.01), res
    assert res["peer_final"] == pytest.approx(res["tapped"], abs=0.01), res


def test_link_keeps_the_show_going_when_the_session_sends_nonsense():
    s = store()
    link = TempoLink(s)

    class Session:
        tempo, num_peers, beat = math.nan, 1, 0.0
    link.link = Session()
    link._follow()
    assert s.get(SHOW, "tempo") == 120.0
    Session.tempo = 133.0
    link._follow()
    assert s.get(SHOW, "tempo") == 133.0
    assert TAP != ("link", 0)


LIVE = ONE_PANEL_SHOW + """\
[training]
render_threads = 1
"""


@pytest.mark.slow
@pytest.mark.skipif(not _netns_ok(), reason="needs `unshare -rn` (a network namespace of our own) and iproute2")
def test_unstable_live_with_link_follows_a_peer_that_sets_133(tmp_path, cpu_hogs):
    """The whole path: `unstable live --link` (the CLI, the show's inputs on the engine) beside a
    Link peer in another process, both in a loopback-only namespace; the telemetry shows 133."""
    from test_show import write_show
    show = write_show(tmp_path, LIVE)
    tele = tmp_path / "t.jsonl"
    script = (f"ip link set lo up && ip link set lo multicast on && "
              f"{{ {sys.executable} {ROOT / 'tests' / 'link_peer.py'} 1.0 133 250 > {tmp_path / 'peer.txt'} 2>&1 < /dev/null & "
              f"echo $! > {tmp_path / 'peer.pid'}; }} && "
              f"exec {sys.executable} -m unstable live {show} --headless --seconds 12 --link --no-web --osc-port 0 "
              f"--no-train --run {tmp_path / 'run'} --telemetry {tele}")
    # The peer lives as long as the show may take to start beside the hogs, and is ended here.
    try:
        r = subprocess.run(["unshare", "-rn", "sh", "-c", script], capture_output=True, text=True, timeout=300,
                           cwd=ROOT)
    finally:
        pid = tmp_path / "peer.pid"
        if pid.is_file():
            subprocess.run(["kill", pid.read_text().strip()], capture_output=True)
    assert r.returncode == 0, r.stderr[-2000:]
    lines = [json.loads(x) for x in tele.read_text().splitlines()]
    tempos = [line["params"]["show"]["tempo"] for line in lines]
    assert tempos[-1] == pytest.approx(133.0), tempos
    assert "beat_offset" in lines[-1]["params"]["show"]
