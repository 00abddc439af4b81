"""Automation files that lie: every bad header field, a 400-digit value, bytes that are not UTF-8
and an over-long line are one ConfigError naming the file, the line and the key; a large file is
streamed (checked and replayed under an address-space limit far below its size)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from unstable.errors import ConfigError
from unstable.frame.automation import load_automation

ROOT = Path(__file__).resolve().parents[1]

STATE = {"store": {"last_now": 1.0, "target": {"eq/hue": 10.0}, "current": {"eq/hue": 5.0}},
         "scene": {"current": 0, "previous": None, "started": 0.0, "fade_len": 0.0},
         "walk": {"eq": {"phase": 0.25, "speed": 1.0, "at": 1.0}}}


def write(tmp_path, head=None, lines=(), raw: bytes | None = None) -> Path:
    path = tmp_path / "a.automation.jsonl"
    if raw is not None:
        path.write_bytes(raw)
        return path
    head = {"automation": 1, "show": "demo", "fps": "30", "start_frame": 0, "state": STATE} if head is None else head
    path.write_text("\n".join([json.dumps(head), *lines]) + "\n")
    return path


def header(**state_changes):
    state = json.loads(json.dumps(STATE))
    for dotted, value in state_changes.items():
        *parents, key = dotted.split("__")
        t = state
        for p in parents:
            t = t[p]
        t[key] = value
    return {"automation": 1, "show": "demo", "fps": "30", "start_frame": 0, "state": state}


def test_a_good_file_loads_and_replays(tmp_path):
    path = write(tmp_path, lines=['{"frame": 2, "t": 0.06, "set": {"eq": {"hue": 40}}}',
                                  '{"frame": 2, "t": 0.06, "scenes": [1]}', '{"frame": 5, "t": 0.1, "audio": [2]}'])
    auto = load_automation(path)
    assert auto.last_frame == 5 and auto.state["walk"]["eq"]["phase"] == 0.25
    assert auto.at(1) is None and auto.at(2) == {"set": {"eq": {"hue": 40.0}}, "scenes": [1]}
    assert auto.at(5) == {"audio": [1.0]}
    assert auto.at(2)["scenes"] == [1]  # back in time: seeks again


def test_a_replay_abandoned_part_way_leaves_at_working(tmp_path):
    path = write(tmp_path, lines=['{"frame": 2, "t": 0.06, "set": {"eq": {"hue": 40}}}',
                                  '{"frame": 5, "t": 0.1, "audio": [2]}'])
    auto = load_automation(path)
    replay = auto.frames()
    assert next(replay)[0] == 2
    replay.close()   # a caller stopped reading (a render's break, an error in its loop)
    assert auto.at(5) == {"audio": [1.0]} and auto.at(2) == {"set": {"eq": {"hue": 40.0}}}


@pytest.mark.parametrize("head, key", [
    (header(store=[1, 2]), "line 1.state.store"),
    (header(walk={"eq": {}}), "line 1.state.walk.eq.phase"),
    (header(walk={"eq": 5}), "line 1.state.walk.eq"),
    (header(scene__current="x"), "line 1.state.scene.current"),
    (header(store__last_now="abc"), "line 1.state.store.last_now"),
    (header(walk__eq__phase=float("nan")), "line 1.state.walk.eq.phase"),
    (header(store__target={"eq/hue": "loud"}), "line 1.state.store.target.eq/hue"),
    (header(scene__fade_len=-1), "line 1.state.scene.fade_len"),
    ({"automation": 1, "fps": "0", "start_frame": 0, "state": STATE}, "line 1.fps"),
    ({"automation": 1, "fps": "30", "start_frame": "0", "state": STATE}, "line 1.start_frame"),
    ({"automation": 1, "fps": "30", "start_frame": 0, "state": 7}, "line 1.state"),
])
def test_each_lying_header_field_is_one_line_naming_it(tmp_path, head, key):
    path = write(tmp_path, head)
    with pytest.raises(ConfigError) as info:
        load_automation(path)
    text = str(info.value)
    assert str(path) in text and key in text and "\n" not in text, text


@pytest.mark.parametrize("line, key", [
    ('{"frame": 3, "set": {"eq": {"hue": ' + "9" * 400 + '}}}', "line 2.set.eq.hue"),
    ('{"frame": 3, "set": {"eq": {"hue": ' + "9" * 5000 + '}}}', "line 2"),
    ('{"frame": 3, "set": {"eq": {"hue": NaN}}}', "line 2.set.eq.hue"),
    ('{"frame": 3, "set": {"eq": 4}}', "line 2.set.eq"),
    ('{"frame": 3, "scenes": ["a"]}', "line 2.scenes"),
    ('{"frame": 3, "audio": [1e999]}', "line 2.audio"),
])
def test_bad_values_are_one_line_naming_line_and_key(tmp_path, line, key):
    path = write(tmp_path, lines=[line])
    with pytest.raises(ConfigError) as info:
        load_automation(path)
    assert key in str(info.value) and str(path) in str(info.value), str(info.value)


def test_bytes_that_are_not_utf8_are_one_line(tmp_path):
    good = write(tmp_path).read_bytes()
    path = write(tmp_path, raw=good + b'{"frame": 1, "t": 0.1}\n{"frame": 2, "x": "\xff\xfe"}\n')
    with pytest.raises(ConfigError, match="line 3.*not UTF-8"):
        load_automation(path)
    path = write(tmp_path, raw=b"\x89PNG\r\n\x1a\n\x00\x00")
    with pytest.raises(ConfigError, match="line 1"):
        load_automation(path)


def test_an_overlong_line_is_refused_without_reading_it_whole(tmp_path):
    good = write(tmp_path).read_bytes()
    path = write(tmp_path, raw=good + b'{"frame": 1, "x": "' + b"a" * (2 << 20) + b'"}\n')
    with pytest.raises(ConfigError, match="line 2.*longer than"):
        load_automation(path)


def test_a_200_mb_file_is_checked_and_replayed_in_bounded_memory(tmp_path):
    path = tmp_path / "big.automation.jsonl"
    pad = "a" * 4000  # unknown keys are allowed (and skipped): a file of long lines
    with open(path, "w") as f:
        f.write(json.dumps({"automation": 1, "show": "demo", "fps": "30", "start_frame": 0, "state": STATE}) + "\n")
        for n in range(50_000):
            f.write(f'{{"frame": {n}, "t": {n / 30}, "set": {{"eq": {{"hue": {n % 360}}}}}, "x": "{pad}"}}\n')
    assert path.stat().st_size > 200e6
    child = textwrap.dedent(f"""
        import resource, sys
        from unstable.frame.automation import load_automation
        vm = int([l for l in open("/proc/self/status") if l.startswith("VmSize")][0].split()[1]) * 1024
        limit = vm + 120 * 2**20  # far below the file's 200 MB
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        auto = load_automation({str(path)!r})
        assert auto.last_frame == 49_999, auto.last_frame
        got = [auto.at(n)["set"]["eq"]["hue"] for n in range(0, 50_000, 997)]
        assert got == [float(n % 360) for n in range(0, 50_000, 997)], got
        assert auto.at(3)["set"]["eq"]["hue"] == 3.0  # a jump back
        print("ok")
    """)
    r = subprocess.run([sys.executable, "-c", child], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]


def _recorder(path, **bounds):
    from fractions import Fraction
    from unstable.frame.automation import AutomationRecorder
    return AutomationRecorder(path, show="demo", fps=Fraction(30), start_frame=0, state=STATE,
                              targets={"eq": {"hue": 0.0}}, **bounds)


def test_live_automation_stops_at_its_cap_and_still_replays(tmp_path, caplog):
    path = tmp_path / "live.automation.jsonl"
    rec = _recorder(path, max_bytes=20_000)
    for n in range(5000):  # a show moving a parameter every frame
        rec.capture(n, n / 30, {"eq": {"hue": float(n % 360)}}, [])
    assert rec.close(quiet=True) is not None and "cap" in rec.failed
    assert path.stat().st_size <= 20_000
    assert "automation stopped" in caplog.text and caplog.text.count("automation stopped") == 1
    auto = load_automation(path)  # what was written is a whole, replayable file
    assert 100 < auto.last_frame < 5000 and auto.at(7)["set"]["eq"]["hue"] == 7.0


def test_live_automation_stops_at_the_disk_floor(tmp_path, small_fs):
    disk = small_fs(512)  # a real 512 KiB filesystem
    path = disk / "live.automation.jsonl"
    rec = _recorder(path, min_free=256 << 10, max_bytes=0)
    for n in range(20_000):
        rec.capture(n, n / 30, {"eq": {"hue": float(n % 360) + 0.123456789}}, [])
    assert rec.close(quiet=True) is not None and "floor" in rec.failed, rec.failed
    import shutil
    # Stopped near the floor, not at a full disk: past it by at most the write buffer and one check.
    assert shutil.disk_usage(disk).free >= (256 << 10) - (64 << 10) - (32 << 10)
    load_automation(path)


CAPPED_SHOW = """\
size = [32, 16]
fps = 10
[pieces.eq]
piece = "pieces/eq.toml"
[layout]
panels = ["eq/g0"]
[disk]
automation_max_mb = {cap}
"""


@pytest.mark.parametrize("value, expected", [("-1", "-1.0 is out of range, expected >= 0"),
                                             ('"big"', "'big' is str, expected a number"),
                                             ("nan", "nan is not a finite number")])
def test_a_bad_automation_cap_is_one_line_naming_the_file_and_key(tmp_path, value, expected):
    from click.testing import CliRunner
    from test_show import write_show

    from unstable.cli import main
    path = write_show(tmp_path, CAPPED_SHOW.format(cap=value))
    r = CliRunner().invoke(main, ["live", str(path), "--headless", "--osc-port", "0", "--web-port", "0"])
    assert r.exit_code != 0
    assert f"{path}: disk.automation_max_mb: {expected}" in r.output, r.output


@pytest.mark.usefixtures("one_torch_thread")
def test_a_shows_automation_cap_stops_its_file_once_the_show_goes_on_and_the_file_renders(tmp_path, caplog,
                                                                                        gl_ctx):
    import numpy as np
    from test_show import write_show
    from tqdm import tqdm

    from unstable.live import Engine
    from unstable.probe import read_frames
    from unstable.render import render_show
    from unstable.show import load_show
    cap_mb = 0.01
    show_path = write_show(tmp_path, CAPPED_SHOW.format(cap=cap_mb))
    auto_path = tmp_path / "live.automation.jsonl"
    lines: list[str] = []
    eng = Engine(load_show(show_path), headless=True, osc_port=0, web_port=0, train=False, run_dir=tmp_path / "run",
                 automation=auto_path, echo=lines.append,
                 progress=lambda desc, total=None, **kw: tqdm(total=total, disable=True))
    live, stopped_at = [], None
    with eng:
        n = 0
        while stopped_at is None or n < stopped_at + 20:  # 20 frames past the cap: the show goes on
            assert n < 1000, "the automation never reached its cap"
            eng.params.update({"eq": {"hue": float(n % 360) - 180.0}})  # a change every frame
            eng.frame(number=n)
            live.append(eng.read().copy())
            if stopped_at is None and eng.timeline.recorder.failed is not None:
                stopped_at = n
            n += 1
    assert sum("automation files up to 0.01 MB" in l for l in lines) == 1, lines
    assert auto_path.stat().st_size <= cap_mb * 2**20
    assert caplog.text.count("automation stopped") == 1 and "reached its cap of 0.01 MB" in caplog.text
    assert caplog.text.count("reached its cap") == 1, caplog.text  # one line, not one more at the end
    assert not np.array_equal(live[-1], live[stopped_at])  # still drawing the hue it is given
    auto = load_automation(auto_path)
    assert 50 < auto.last_frame < stopped_at
    # What the file holds renders again, frame for frame.
    out = tmp_path / "again.mov"
    render_show(show_path, automation=auto_path, seconds=(auto.last_frame + 1) / 10, out=str(out), preset="ffv1",
                run=tmp_path / "run", ctx=gl_ctx, echo=lambda s: None, show_progress=False)
    rendered = list(read_frames(out))
    assert len(rendered) == auto.last_frame + 1
    for i, (a, b) in enumerate(zip(live, rendered)):
        assert np.array_equal(a, b), f"frame {i}"
