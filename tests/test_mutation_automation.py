"""What the mutation run of frame/timers.py and frame/automation.py found unpinned by the frame
tests: the live timer's counters and restart, and the automation file's writer and reader in
detail (each test drives the real class on a simulated clock or a real file in tmp_path)."""

from __future__ import annotations

from fractions import Fraction

import pytest

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
