"""What the mutation run of frame/timers.py and frame/automation.py found unpinned by the frame
tests: the live timer's counters and restart, and the automation file's writer and reader in
detail (each test drives the real class on a simulated clock or a real file in tmp_path)."""

from __future__ import annotations

import json
import logging
from fractions import Fraction
from pathlib import Path

import pytest

from unstable.errors import ConfigError
from unstable.frame.automation import Automation, AutomationRecorder, automation_path, load_automation
from unstable.frame.timers import FrameTimer, WallTimer


def sim_timer(fps=10, catch_up=0.5):
    """A WallTimer on a simulated clock: `now[0]` is the time, `sleeps` every sleep asked for."""
    now, sleeps = [0.0], []

    def sleep(s):
        sleeps.append(s)
        now[0] += s

    return WallTimer(fps, time_source=lambda: now[0], sleep=sleep, catch_up=catch_up), now, sleeps


def test_bad_rates_and_catch_ups_name_the_value_and_what_was_expected():
    for fps in (0, -30, "0"):
        with pytest.raises(ValueError, match=r"fps .*expected a positive frame rate"):
            FrameTimer(fps)
    for catch_up in (1.0, -0.1, 2):
        with pytest.raises(ValueError, match=r"catch_up .*expected a fraction of a slot in \[0, 1\)"):
            WallTimer(10, catch_up=catch_up)
    assert FrameTimer(30).fps == Fraction(30) and FrameTimer("30000/1001").fps == Fraction(30000, 1001)
    assert FrameTimer(24).time_of(1) == float(Fraction(1, 24)) and FrameTimer(24).time_of(48) == 2.0
    # Slow rates are rates: a timelapse at 1 fps or one frame every two seconds.
    assert FrameTimer(1).time_of(3) == 3.0 and FrameTimer("1/2").time_of(3) == 6.0


def test_a_new_timer_has_dropped_nothing_and_restart_starts_the_grid_again():
    timer, now, sleeps = sim_timer()
    assert (timer.late, timer.dropped) == (0, 0)
    now[0] = 0.36                      # frame 0 overran slots 1..3
    assert timer.next_after(0) == 4 and (timer.late, timer.dropped) == (1, 3)
    now[0] = 10.0
    timer.restart()
    assert timer.start == 10.0 and timer.elapsed() == 0.0
    assert (timer.late, timer.dropped) == (0, 0)
    timer.wait(2)                      # frame 2 of the new grid is 0.2 s after the restart
    assert sleeps == [pytest.approx(0.2)] and now[0] == pytest.approx(10.2)


def test_wait_does_not_sleep_for_a_frame_that_is_due_now():
    timer, now, sleeps = sim_timer()
    now[0] = 0.5                       # exactly frame 5's time
    timer.wait(5)
    timer.wait(3)                      # already past
    assert sleeps == []


def test_late_frames_and_dropped_slots_add_up_over_several_hiccups():
    timer, now, _ = sim_timer()
    now[0] = 0.36                      # frame 0 ends in slot 3 past its half: slots 1, 2, 3 dropped
    assert timer.next_after(0) == 4 and (timer.late, timer.dropped) == (1, 3)
    now[0] = 0.66                      # frame 4 ends past half of slot 6: slots 5, 6 dropped
    assert timer.next_after(4) == 7 and (timer.late, timer.dropped) == (2, 5)
    now[0] = 0.71                      # frame 7 on time
    assert timer.next_after(7) == 8 and (timer.late, timer.dropped) == (2, 5)
    now[0] = 1.0                       # frame 8 ends at slot 10 exactly: 9 dropped, 10 next
    assert timer.next_after(8) == 10 and (timer.late, timer.dropped) == (3, 6)


# -- the automation writer ----------------------------------------------------------------------

STATE = {"store": {"last_now": 0.0, "target": {"eq/hue": 0.0}, "current": {"eq/hue": 0.0}},
         "scene": {"current": 0, "previous": None, "started": 0.0, "fade_len": 0.0},
         "walk": {"eq": {"phase": 0.0, "speed": 1.0, "at": 0.0}}}


def writer(path, targets=None, **kw) -> AutomationRecorder:
    return AutomationRecorder(path, show="demo", fps=Fraction(30), start_frame=3, state=STATE,
                              targets={"eq": {"hue": 0.0, "sat": 1.0}} if targets is None else targets, **kw)


def lines(path: Path) -> list[dict]:
    return [json.loads(x) for x in path.read_text().splitlines()]


def test_automation_sits_beside_its_recording():
    assert automation_path("run/show.mp4") == Path("run/show.mp4.automation.jsonl")
    assert automation_path(Path("/a/b.c/r.mkv")) == Path("/a/b.c/r.mkv.automation.jsonl")


def test_only_changed_values_are_written_once_each_in_compact_lines(tmp_path):
    path = tmp_path / "new" / "folders" / "a.automation.jsonl"   # folders made as needed
    rec = writer(path)
    assert rec.max_bytes == AutomationRecorder.MAX_BYTES and rec.min_free == AutomationRecorder.MIN_FREE
    rec.capture(3, 0.1, {"eq": {"hue": 0.0, "sat": 1.0}}, [])                     # nothing moved
    rec.capture(4, 0.2, {"eq": {"hue": 40.0, "sat": 1.0}}, [])                    # hue only
    rec.capture(5, 0.3, {"eq": {"hue": 40.0, "sat": 1.0}, "bd": {"x": 2.0}}, [])  # a group not seen before
    rec.capture(6, 0.4, {"eq": {"hue": 40.0, "sat": 1.0}, "bd": {"x": 2.0}}, [2])  # a scene jump alone
    rec.capture(7, 0.5, {"eq": {"hue": 40.0, "sat": 1.0}, "bd": {"x": 2.0}}, [])  # nothing again
    assert rec.close() is None and rec.failed is None
    text = path.read_text()
    assert text.splitlines()[1:] == ['{"frame":4,"t":0.2,"set":{"eq":{"hue":40.0}}}',
                                     '{"frame":5,"t":0.3,"set":{"bd":{"x":2.0}}}',
                                     '{"frame":6,"t":0.4,"scenes":[2]}']
    assert rec.lines == 4 and rec.bytes == len(text.encode())
    auto = load_automation(path)
    assert (auto.show, auto.fps, auto.start_frame, auto.last_frame) == ("demo", Fraction(30), 3, 6)


def test_audio_levels_are_written_when_they_change(tmp_path):
    path = tmp_path / "a.automation.jsonl"
    rec = writer(path, targets={})
    for frame, levels in enumerate([[0.5, 0], [0.5, 0.0], [0.25, 0.0], [0.25, 0.0], [], []]):
        rec.capture(frame, frame / 30, {}, [], levels)
    rec.capture(9, 0.3, {}, [])  # no audio maps: no levels, no line
    rec.close()
    assert [(x["frame"], x["audio"]) for x in lines(path)[1:]] == [(0, [0.5, 0.0]), (2, [0.25, 0.0]), (4, [])]
    assert all(set(x) == {"frame", "t", "audio"} for x in lines(path)[1:])


def test_the_cap_counts_the_header_and_stops_at_the_first_line_past_it(tmp_path, caplog):
    path = tmp_path / "a.automation.jsonl"
    head = len(json.dumps({"automation": 1, "show": "demo", "fps": "30", "start_frame": 3, "state": STATE},
                          separators=(",", ":"))) + 1
    line = len('{"frame":4,"t":0.1,"set":{"eq":{"hue":1.0}}}\n')
    rec = writer(path, max_bytes=head + line)     # room for exactly one line after the header
    rec.capture(4, 0.1, {"eq": {"hue": 1.0}}, [])
    assert rec.failed is None and rec.lines == 2
    with caplog.at_level(logging.ERROR, logger="unstable.automation"):
        rec.capture(5, 0.1, {"eq": {"hue": 2.0}}, [])
        rec.capture(6, 0.1, {"eq": {"hue": 3.0}}, [])   # stopped: nothing more, nothing said
    assert rec.failed == f"{path}: reached its cap of {round((head + line) / (1 << 20), 3):g} MB"
    assert [r.getMessage() for r in caplog.records] == [
        f"automation stopped: {rec.failed} (the show goes on; the file replays up to here)"]
    assert rec.close() == rec.failed and load_automation(path).last_frame == 4
    tiny = writer(tmp_path / "b.automation.jsonl", max_bytes=3000)  # the header always goes in
    assert tiny.lines == 1 and tiny.failed is None
    tiny.capture(4, 0.1, {"eq": {"hue": 1.0}}, [])
    tiny.capture(5, 0.1, {"eq": {"hue": 2.0}, "x": {str(i): float(i) for i in range(400)}}, [])
    assert tiny.failed.endswith("reached its cap of 0.003 MB")


def test_the_disk_floor_is_checked_every_256_lines_of_the_recordings_own_disk(tmp_path, caplog):
    folder = tmp_path / "disk"
    asked = []

    def free(p):
        asked.append(p)
        return 1.5 * (1 << 20) if p == folder else 1 << 40

    rec = writer(folder / "a.automation.jsonl", min_free=2 << 20, free=free)
    with caplog.at_level(logging.ERROR, logger="unstable.automation"):
        for n in range(300):
            rec.capture(4 + n, n / 30, {"eq": {"hue": float(n + 1)}}, [])
    assert asked == [folder] and rec.lines == 256     # checked once, before line 257
    assert rec.failed == f"{folder / 'a.automation.jsonl'}: 1.50 MB left on its disk, below the 2 MB floor"
    assert len(caplog.records) == 1
    assert load_automation(folder / "a.automation.jsonl").last_frame == 4 + 254


@pytest.mark.parametrize("free, goes_on", [(lambda p: 2 << 20, True), (lambda p: (2 << 20) - 1, False),
                                           (None, True)])
def test_a_disk_exactly_at_the_floor_or_unreadable_goes_on(tmp_path, free, goes_on):
    def unreadable(p):
        raise OSError(5, "Input/output error")

    rec = writer(tmp_path / "a.automation.jsonl", min_free=2 << 20, free=free or unreadable)
    for n in range(600):
        rec.capture(4 + n, n / 30, {"eq": {"hue": float(n + 1)}}, [])
    assert (rec.failed is None) is goes_on and rec.lines == (601 if goes_on else 256)


def test_without_a_free_function_the_real_disk_is_asked(tmp_path):
    # This disk has more than a byte free and less than an exabyte: a floor of 1 byte lets the file
    # go on, one of an exabyte stops it at the first check.
    ok = writer(tmp_path / "a.automation.jsonl", min_free=1)
    full = writer(tmp_path / "b.automation.jsonl", min_free=1 << 60)
    for rec in (ok, full):
        for n in range(300):
            rec.capture(4 + n, n / 30, {"eq": {"hue": float(n + 1)}}, [])
    assert ok.failed is None and ok.lines == 301
    assert "below the 1.09951e+12 MB floor" in full.failed and full.lines == 256


def test_a_file_that_cannot_be_written_stops_with_the_os_error_and_close_says_it(tmp_path, caplog):
    # /dev/full: every write that reaches the device fails with ENOSPC, as on a full disk.
    rec = writer(Path("/dev/full"))
    f = rec._file
    with caplog.at_level(logging.ERROR, logger="unstable.automation"):
        for n in range(4000):   # more than the write buffer holds
            rec.capture(4 + n, n / 30, {"eq": {"hue": float(n + 1) + 0.123456789}}, [])
            if rec.failed:
                break
    assert rec.failed == "/dev/full: [Errno 28] No space left on device"
    assert [r.getMessage() for r in caplog.records] == [
        "automation stopped: /dev/full: [Errno 28] No space left on device (the show goes on; the file "
        "replays up to here)"]
    assert f.closed and rec.close() == rec.failed


@pytest.mark.parametrize("quiet", [False, True])
def test_a_flush_that_fails_at_close_is_returned_and_logged_unless_quiet(caplog, quiet):
    rec = writer(Path("/dev/full"))     # the header waits in the buffer: the flush at close fails
    f = rec._file
    with caplog.at_level(logging.ERROR, logger="unstable.automation"):
        why = rec.close(quiet=quiet) if quiet else rec.close()
    assert why == rec.failed == "/dev/full: [Errno 28] No space left on device" and f.closed
    assert [r.getMessage() for r in caplog.records] == ([] if quiet else [f"automation {why}"])


def test_a_closed_file_is_closed(tmp_path):
    rec = writer(tmp_path / "a.automation.jsonl")
    f = rec._file
    assert rec.close() is None and f.closed and rec.close() is None


# -- the automation reader ----------------------------------------------------------------------

def test_a_file_of_a_header_alone_replays_nothing(tmp_path):
    path = tmp_path / "a.automation.jsonl"
    writer(path).close()
    auto = load_automation(path)
    assert auto.last_frame == 3 and auto.at(3) is None and auto.at(4) is None and auto.changes == {}


def test_the_same_frame_asked_twice_gets_the_same_changes(tmp_path):
    path = tmp_path / "a.automation.jsonl"
    rec = writer(path)
    for n in range(3, 12):
        rec.capture(n, n / 30, {"eq": {"hue": float(n)}}, [1] if n == 6 else [])
    rec.close()
    auto = load_automation(path)
    assert auto.at(6) == {"set": {"eq": {"hue": 6.0}}, "scenes": [1]}
    assert auto.at(6) == {"set": {"eq": {"hue": 6.0}}, "scenes": [1]}   # a frame rendered again
    assert auto.at(7) == {"set": {"eq": {"hue": 7.0}}}
    assert [f for f, _ in auto.frames()] == list(range(3, 12))
    assert auto.at(5) == {"set": {"eq": {"hue": 5.0}}}                    # at() after frames()


def test_a_line_spoilt_after_loading_is_one_error_naming_the_file_and_its_line(tmp_path):
    path = tmp_path / "a.automation.jsonl"
    rec = writer(path)
    rec.capture(4, 0.1, {"eq": {"hue": 1.0}}, [])
    rec.close()
    auto = load_automation(path)
    with open(path, "a") as f:          # the file changed under the replay
        f.write('{"frame": 5, "set": 7}\n')
    with pytest.raises(ConfigError, match=rf"{path}.*line 3\.set"):
        dict(auto.frames())
    auto.close()                        # a replay stops at its first error
    path.write_text(path.read_text().replace('"set": 7', '"set": 7,'))
    with pytest.raises(ConfigError, match=rf"{path}.*line 3.*not JSON"):
        auto.at(5)
    with open(path, "ab") as f:
        f.write(b"\n\xff\n")
    path.write_bytes(path.read_bytes().replace(b'{"frame": 5, "set": 7,}\n', b""))
    auto.close()
    with pytest.raises(ConfigError, match=rf"{path}.*line 4.*not UTF-8"):
        dict(auto.frames())             # the blank line 3 counted too


def test_a_line_spoilt_far_into_a_long_file_is_named_by_its_number_in_the_file(tmp_path):
    path = tmp_path / "a.automation.jsonl"
    rec = writer(path)
    for n in range(5000):               # past Automation.INDEX_EVERY lines: a replay seeks by index
        rec.capture(10 + n, n / 30, {"eq": {"hue": float(n)}}, [])
    rec.close()
    auto = load_automation(path)
    # The index stays sparse (it is what a replay holds of a long file): an entry every 4096 lines.
    assert [line for _, _, line in auto._index] == [2, 2 + Automation.INDEX_EVERY]
    assert auto.at(4600) == {"set": {"eq": {"hue": 4590.0}}}
    data = path.read_bytes().split(b"\n")
    data[4599] = b"x" * len(data[4599])  # line 4600 of the file (frame 4609), its length kept
    data[99] = b"x" * len(data[99])      # line 100, before the index entry at line 4098
    path.write_bytes(b"\n".join(data))
    # Back in time: read from the index entry at line 4098 on, never from the start (line 100).
    assert auto.at(4590) == {"set": {"eq": {"hue": 4580.0}}}
    with pytest.raises(ConfigError, match=rf"{path}.*line 4600.*not JSON"):
        auto.at(4609)


def test_lines_of_one_frame_merge_the_newest_audio_levels_winning(tmp_path):
    path = tmp_path / "a.automation.jsonl"
    writer(path).close()
    with open(path, "a") as f:
        f.write('{"frame": 4, "t": 0.1, "set": {"eq": {"hue": 1.0}}}\n{"frame": 4, "t": 0.1, "audio": [0.1]}\n'
                '{"frame": 4, "t": 0.1, "scenes": [1]}\n{"frame": 4, "t": 0.1, "audio": [0.3, 0.2]}\n'
                '{"frame": 4, "t": 0.1, "set": {"eq": {"sat": 2.0}}}\n{"frame": 6, "t": 0.2, "scenes": [0]}\n')
    both = {"set": {"eq": {"hue": 1.0, "sat": 2.0}}, "audio": [0.3, 0.2], "scenes": [1]}
    auto = load_automation(path)
    assert auto.changes == {4: both, 6: {"scenes": [0]}}
    assert auto.at(4) == both and auto.at(5) is None and auto.at(6) == {"scenes": [0]}


FORMAT_LINE = "not an automation file of format 1 (written by `unstable live --record` or `--automation`)"


@pytest.mark.parametrize("raw, message", [
    (None, "cannot read it (No such file or directory)"),
    (b"", "line 1: empty, expected an automation header"),
    (b"  \n{}\n", "line 1: empty, expected an automation header"),
    (b"[1]\n", f"line 1: {FORMAT_LINE}"),
    (json.dumps({"automation": 2, "show": "demo", "fps": "30", "start_frame": 0, "state": STATE}).encode(),
     f"line 1: {FORMAT_LINE}"),
    (b"{nope\n", "line 1: not JSON ("),
    (b"\xff{}\n", "line 1: not UTF-8 text (byte 0xff at column 1)"),
])
def test_each_bad_header_is_one_line_naming_the_file_and_line_1(tmp_path, raw, message):
    path = tmp_path / "a.automation.jsonl"
    if raw is not None:
        path.write_bytes(raw)
    with pytest.raises(ConfigError) as e:
        load_automation(path)
    assert str(e.value).startswith(f"{path}: {message}"), str(e.value)


def test_a_header_may_be_longer_than_a_line_may(tmp_path):
    # A long show's state (many parameters) is one header line of over 1 MB: allowed up to 16 MB.
    state = json.loads(json.dumps(STATE))
    state["store"]["target"] = {f"eq/p{i}": 0.5 for i in range(80_000)}
    path = tmp_path / "a.automation.jsonl"
    path.write_text(json.dumps({"automation": 1, "show": "demo", "fps": "30", "start_frame": 0, "state": state})
                    + '\n{"frame": 1, "t": 0.1, "scenes": [1]}\n')
    assert path.stat().st_size > 1 << 20
    auto = load_automation(path)
    assert len(auto.state["store"]["target"]) == 80_000 and auto.at(1) == {"scenes": [1]}


def head(**fields):
    out = {"automation": 1, "show": "demo", "fps": "30", "start_frame": 0, "state": STATE}
    out.update(fields)
    return {k: v for k, v in out.items() if v is not ...}


@pytest.mark.parametrize("header, message", [
    (head(fps="0"), """line 1.fps: '0' is not a frame rate > 0 (e.g. "30" or "30000/1001")"""),
    (head(fps=...), """line 1.fps: None is not a frame rate > 0 (e.g. "30" or "30000/1001")"""),
    (head(start_frame=...), "line 1.start_frame: missing"),
    (head(start_frame=-1), "line 1.start_frame: -1 is below 0"),
    (head(start_frame=2.5), "line 1.start_frame: 2.5 is not an integer"),
    (head(state=...), "line 1.state: missing"),
    (head(show=5), "line 1.show: 5 is not a show name"),
])
def test_each_bad_header_field_is_one_exact_line(tmp_path, header, message):
    path = tmp_path / "a.automation.jsonl"
    path.write_text(json.dumps(header) + "\n")
    with pytest.raises(ConfigError) as e:
        load_automation(path)
    assert str(e.value) == f"{path}: {message}"


def test_a_header_without_a_show_name_loads_with_an_empty_one(tmp_path):
    path = tmp_path / "a.automation.jsonl"
    path.write_text(json.dumps(head(show=..., start_frame=7)) + "\n")
    auto = load_automation(path)
    assert auto.show == "" and auto.start_frame == 7 and auto.last_frame == 7


@pytest.mark.parametrize("fps", ["1", "1/2"])
def test_an_automation_at_a_slow_rate_loads(tmp_path, fps):
    path = tmp_path / "a.automation.jsonl"
    path.write_text(json.dumps(head(fps=fps)) + "\n")
    assert load_automation(path).fps == Fraction(fps)


def test_bad_lines_in_the_body_are_one_exact_line_naming_the_file_and_line(tmp_path):
    path = tmp_path / "a.automation.jsonl"
    head_line = json.dumps(head()) + "\n"
    cases = [
        (b'{"frame": 5, "t": 0.1}\n{"frame": 4, "t": 0.1}\n', "line 3.frame: 4 goes back in time (after frame 5)"),
        (b'{"frame": 5, "t": 0.1}\n{"frame": 6, "t', "line 3: not JSON ("),
        (b'{"frame": 5, "t": 0.1}\n{"frame": 6, "x": "\xff"}\n', "line 3: not UTF-8 text (byte 0xff"),
    ]
    for body, message in cases:
        path.write_bytes(head_line.encode() + body)
        with pytest.raises(ConfigError) as e:
            load_automation(path)
        assert str(e.value).startswith(f"{path}: {message}"), str(e.value)
    path.write_bytes(head_line.encode() + cases[1][0])
    with pytest.raises(ConfigError, match=r"; a recording cut short loses at most its last line: delete it$"):
        load_automation(path)


def test_blank_lines_between_entries_are_skipped_not_the_end(tmp_path):
    path = tmp_path / "a.automation.jsonl"
    path.write_text(json.dumps(head()) + '\n{"frame": 2, "t": 0.1, "scenes": [1]}\n\n  \n'
                    '{"frame": 9, "t": 0.3, "scenes": [0]}\n')
    auto = load_automation(path)
    assert auto.last_frame == 9 and auto.changes == {2: {"scenes": [1]}, 9: {"scenes": [0]}}
