"""Isolation and safety of a live show, through the engine (headless EGL, real UDP, real training):
a piece that raises holds its panels while the others carry on; a piece whose training keeps failing
stops training alone; a dead OSC thread is restarted on the same port; SIGINT stops cleanly with
final checkpoints; OSC stays on loopback unless opened with an allow-list, and hostile messages
change nothing and run nothing."""

import os
import signal
import threading

import numpy as np
import pytest
from helpers import Client, wait_for
from test_engine import CELLS, make_engine
from test_show import SHOW

from unstable.checkpoint import load_checkpoint
from unstable.errors import ConfigError, UnstableError


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def broken(*args, **kwargs):
    raise RuntimeError("injected: this piece's sampling fails")


def test_a_raising_piece_holds_its_last_frame_and_the_others_carry_on(tmp_path):
    eng = make_engine(tmp_path)
    with eng:
        eng.frame(0.0)
        first = eng.read().copy()
        eng.pieces["eq"].mirror.system.sample = broken  # eq fails from now on, in the render thread
        for t in (0.5, 1.0, 2.0):
            eng.frame(t)
        later = eng.read().copy()
        for panel in ("eq/g0", "eq/g1"):  # held: exactly the last good frame
            assert np.array_equal(later[:, CELLS[panel]], first[:, CELLS[panel]])
        assert not np.array_equal(later[:, CELLS["eq2/g0"]], first[:, CELLS["eq2/g0"]])  # eq2 walks on
        # The frame call says which piece failed, and the telemetry line names it, while it fails.
        assert list(eng.last_result.errors) == ["eq"] and "injected" in eng.last_result.errors["eq"]
        assert "injected" in eng.reporter.line(2.0)["errors"]["eq (display)"]
        del eng.pieces["eq"].mirror.system.sample  # it recovers: the next frame samples it again
        eng.frame(3.0)
        assert eng.last_result.errors == {} and "errors" not in eng.reporter.line(3.0)
        assert not np.array_equal(eng.read()[:, CELLS["eq/g0"]], first[:, CELLS["eq/g0"]])
        assert not np.array_equal(eng.read()[:, CELLS["eq/g0"]], first[:, CELLS["eq/g0"]])


def test_a_piece_failing_from_the_first_frame_shows_black(tmp_path):
    eng = make_engine(tmp_path)
    with eng:
        eng.pieces["eq2"].mirror.system.sample = broken
        eng.frame(0.0)
        f = eng.read()
        assert f[:, CELLS["eq2/g0"]].max() == 0 and f[:, CELLS["eq/g0"]].max() > 0


def test_a_piece_whose_training_keeps_raising_stops_alone(tmp_path):
    text = SHOW.replace("[layout]", "[training]\nprocess = false\n[guard]\nmax_failures = 3\n[layout]")
    # The hooks run in the training thread (test_train_process injects faults into the process).
    eng = make_engine(tmp_path, text, train=True)
    with eng:
        eq, eq2 = eng.pieces["eq"], eng.pieces["eq2"]

        def fail(system):
            raise RuntimeError("injected: a raising step")

        eq.guard.before_step.append(fail)
        assert wait_for(lambda: eq.error is not None, 20)
        assert "3 failed steps in a row" in eq.error and eq.guard.exceptions == 3
        steps = eq2.steps
        assert wait_for(lambda: eq2.steps >= steps + 3, 20)  # the other piece trains on
        assert eng.trainer.alive
        eng.frame(0.0)
        assert eng.read()[:, CELLS["eq/g0"]].max() > 0  # and eq is still on the wall


def test_a_dead_osc_thread_is_restarted_on_the_same_port(tmp_path):
    eng = make_engine(tmp_path)
    with eng:
        port = eng.osc.port
        client = Client(port)
        client.send("/unstable/eq/hue/raw", 10.0)
        assert wait_for(lambda: eng.params.get("eq", "hue") == 10.0)
        eng.osc.server._server.shutdown()  # the receive loop ends, as a crashed thread would
        assert wait_for(lambda: not eng.osc.server.running)
        eng.osc.watch()
        assert eng.osc.server.running and eng.osc.port == port and eng.osc.restarts == 1
        client.send("/unstable/eq/hue/raw", 45.0)
        assert wait_for(lambda: eng.params.get("eq", "hue") == 45.0)
        assert wait_for(lambda: eng.osc.stats()["messages"] == 2)  # counted across the restart
        client.close()
        eng.osc.watch()  # a healthy server is left alone
        assert eng.osc.restarts == 1


def test_sigint_stops_the_show_cleanly_with_final_checkpoints(tmp_path):
    eng = make_engine(tmp_path, train=True)
    eng.frame_hooks.append(lambda e: e.frames == 3 and os.kill(os.getpid(), signal.SIGINT))
    assert threading.current_thread() is threading.main_thread()
    report = eng.run()  # returns instead of raising KeyboardInterrupt
    assert 3 <= report.frames <= 5
    for name in ("eq", "eq2"):
        assert load_checkpoint(tmp_path / "run" / name / "checkpoint.pt")["step"] == eng.pieces[name].system.step_count
    assert not eng.osc.server.running if eng.osc is not None else True


def test_osc_listens_on_loopback_unless_opened_with_an_allow_list(tmp_path):
    eng = make_engine(tmp_path)
    with eng:
        assert eng.osc.host == "127.0.0.1"
    opened = SHOW.replace("[layout]", "[osc]\nhost = \"0.0.0.0\"\n[layout]")
    with pytest.raises(UnstableError, match="allow-list"):
        make_engine(tmp_path, opened).open()
    bad_allow = SHOW.replace("[layout]", "[osc]\nallow = [\"__import__('os')\"]\n[layout]")
    with pytest.raises(ConfigError, match="not an IP address"):
        make_engine(tmp_path, bad_allow)
    # Opened to a network this sender is not in: its messages are ignored.
    others = SHOW.replace("[layout]", "[osc]\nhost = \"0.0.0.0\"\nallow = [\"10.9.8.0/24\"]\n[layout]")
    eng = make_engine(tmp_path, others)
    with eng:
        client = Client(eng.osc.port)
        client.send("/unstable/eq/hue/raw", 45.0)
        assert wait_for(lambda: eng.osc.stats()["foreign"] >= 1)
        assert eng.params.get("eq", "hue") == 0.0
        client.close()


def test_hostile_messages_change_nothing_and_run_nothing(tmp_path):
    marker = tmp_path / "pwned"
    eng = make_engine(tmp_path)
    with eng:
        client = Client(eng.osc.port)
        code = f"__import__('os').system('touch {marker}')"
        client.send("/unstable/eq/hue", code)                 # code as a value
        client.send(f"/unstable/eq/{code}", 1.0)              # code as an address
        client.send("/unstable/eq/hue", "9" * 1000)           # an overlong string
        client.sock.sendto(b"garbage!", client.target)       # not OSC at all
        client.sock.sendto(b"\x00" * 9000, client.target)    # oversize
        client.send("/unstable/eq/hue/raw", 30.0)             # and one good one, to know all arrived
        assert wait_for(lambda: eng.params.get("eq", "hue") == 30.0)
        s = eng.osc.server.stats
        assert wait_for(lambda: s["rejected"] >= 2 and s["malformed"] >= 1 and s["oversize"] >= 1 and s["unknown"] >= 1)
        client.close()
        eng.frame(0.0)
    assert not marker.exists()


def test_a_running_show_keeps_its_startup_objects_out_of_the_collectors_walks(tmp_path):
    # A full collection walks every tracked object with the GIL held (~150 ms for the demo's
    # ~300,000 on a 2-core CPU: five dropped frames). While the show runs, what existed when it
    # started is frozen out of those walks; closing the show gives it back to the collector.
    import gc
    gc.unfreeze()  # a clean start, whatever ran before in this process
    eng = make_engine(tmp_path)
    seen = []
    eng.frame_hooks.append(lambda e: seen.append(gc.get_freeze_count()))
    eng.frame_hooks.append(lambda e: e.frames == 3 and e.request_stop())
    eng.run()
    assert len(seen) >= 3 and min(seen) > 10_000  # torch, numpy and the pieces at least
    assert gc.get_freeze_count() == 0
