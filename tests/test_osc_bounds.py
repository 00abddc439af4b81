"""OSC next to a hostile network (issue 13, items 2 and 3): a burst of record or still requests is one
action, stills force checkpoints at most every floor, temporary names are unique; log lines
(python-osc's own too), subscriptions and full-state replies are bounded. Real UDP on loopback;
other hosts are other 127.0.0.x addresses."""

import logging
import socket
import threading
import time

import numpy as np
import pytest
from helpers import Client, send_burst, wait_for
from pythonosc.osc_message_builder import OscMessageBuilder
from test_engine import make_engine
from test_show import SHOW

from unstable.control.osc import OscServer
from unstable.control.store import ParameterStore
from unstable.probe import probe
from unstable.schema import ParamSpec, show_specs

pytestmark = pytest.mark.usefixtures("one_torch_thread")


# -- 2. OSC actions bounded -----------------------------------------------------------------------

def draw(eng, seconds: float) -> list[float]:
    """Draw frames for `seconds` of wall time; returns each frame's duration."""
    times, end, n = [], time.monotonic() + seconds, eng.frames
    while time.monotonic() < end:
        t0 = time.monotonic()
        eng.frame(number=n)
        times.append(time.monotonic() - t0)
        n += 1
        time.sleep(0.01)
    return times


def test_a_burst_of_record_toggles_is_one_recording(tmp_path):
    text = SHOW.replace("[layout]", "[actions]\nrecord_min_interval = 0.5\n[layout]")
    with make_engine(tmp_path, text) as eng:
        eng.frame(number=0)
        client = Client(eng.osc.port)
        try:
            received = lambda: eng.osc.stats()["messages"]  # noqa: E731
            send_burst(client, [("/unstable/record", 1), ("/unstable/record", 0)] * 200 + [("/unstable/record", 1)],
                       received)
            assert wait_for(lambda: received() == 401, 30)
            times = draw(eng, 0.3)
            assert eng.recorder.recording
            # and the burst that stops it
            send_burst(client, [("/unstable/record", 0), ("/unstable/record", 1)] * 200 + [("/unstable/record", 0)],
                       received)
            assert wait_for(lambda: received() == 802, 30)
            times += draw(eng, 0.8)
        finally:
            client.close()
        assert not eng.recorder.recording
        assert max(times) < 1.0  # no freeze
    files = sorted((tmp_path / "run").glob("record-*.mp4"))
    assert len(files) == 1, files
    assert probe(files[0]).frames > 0


def test_a_burst_of_stills_is_one_still_and_stills_force_checkpoints_at_most_every_floor(tmp_path):
    text = SHOW.replace("[layout]", "[actions]\nstill_min_interval = 0.5\nstill_checkpoint_every = 60\n[layout]")
    with make_engine(tmp_path, text) as eng:
        eng.frame(number=0)
        client = Client(eng.osc.port)
        try:
            received = lambda: eng.osc.stats()["messages"]  # noqa: E731
            send_burst(client, [("/unstable/still",)] * 1000, received)
            assert wait_for(lambda: received() == 1000, 30)
            times = draw(eng, 0.3)
            # a second burst, after the interval: a still, no checkpoint
            send_burst(client, [("/unstable/still",)] * 100, received)
            assert wait_for(lambda: received() == 1100, 30)
            time.sleep(0.3)
            times += draw(eng, 0.3)
        finally:
            client.close()
        assert max(times) < 1.0
        assert wait_for(lambda: len(list((tmp_path / "run" / "stills").glob("*.png"))) == 2)
        # Nothing trains here: the checkpoint is written on a thread of its own, beside the frames.
        assert wait_for(lambda: [p.checkpoints for p in eng.pieces.values()] == [1, 1])
        time.sleep(0.3)
        assert [p.checkpoints for p in eng.pieces.values()] == [1, 1]
    assert not list((tmp_path / "run" / "stills").glob(".*.tmp"))


def test_a_stills_checkpoint_without_training_is_written_beside_the_frames_not_in_one(tmp_path, monkeypatch):
    """With nothing training (`--no-train`), a still's checkpoint used to be written on the render
    thread (tens of ms at the shows' sizes: a dropped frame); now a thread of its own writes it,
    the frames go on, and the final checkpoint waits for it."""
    from unstable.live.training import LivePiece
    saves: list[str] = []
    real = LivePiece.save

    def slow_save(self, *a, **k):
        saves.append(threading.current_thread().name)
        time.sleep(0.5)
        return real(self, *a, **k)

    monkeypatch.setattr(LivePiece, "save", slow_save)
    with make_engine(tmp_path) as eng:
        eng.frame(number=0)
        client = Client(eng.osc.port)
        client.send("/unstable/still")
        assert wait_for(lambda: eng.osc.stats()["messages"] == 1, 10)
        client.close()
        t0 = time.perf_counter()
        for n in range(1, 6):                                 # frame 1 takes the still, starts the checkpoint
            eng.frame(number=n)
        assert time.perf_counter() - t0 < 0.5                 # the frames did not wait for 2 x 0.5 s
        assert wait_for(lambda: len(saves) >= 1) and "MainThread" not in saves
    # Closing waited for it, then wrote the final checkpoints on this thread.
    assert saves.count("unstable-still-checkpoint") == 2 and saves[-2:] == ["MainThread", "MainThread"]


def test_stills_of_one_frame_use_unique_temporary_names(tmp_path):
    from unstable.live.recorder import Recorder
    rec = Recorder(None, show="s", size=(8, 8), fps=10, run_dir=tmp_path, stills_keep=3)
    rec.stills.MAX_THREADS = 100
    frame = np.zeros((8, 8, 3), np.uint8)
    paths = [rec.still(frame, n % 2) for n in range(20)]  # 10 stills of each of two frames at once
    assert all(paths) and rec.close() == []
    assert sorted(p.name for p in (tmp_path / "stills").iterdir()) == ["s-0000000.png", "s-0000001.png"]
    for n in range(5, 10):
        rec.still(frame, n)
        rec.close()
    assert len(list((tmp_path / "stills").glob("*.png"))) == 3  # stills_keep: the newest three


# -- 3. logs and replies bounded ------------------------------------------------------------------

def groups():
    return {"eq": [ParamSpec("alpha", 0.0, 2.0, 1.0), ParamSpec("hue", -180, 180, 0)], "show": show_specs(2)}


class HostClient(Client):
    """A controller on another loopback address (127.0.0.x): another host, as far as OSC can tell."""

    def __init__(self, server_port, host):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.sock.settimeout(0.05)
        self.port = self.sock.getsockname()[1]
        self.target = ("127.0.0.1", server_port)


def test_a_flood_of_subscribes_evicts_no_configured_subscriber_and_logs_a_few_lines(caplog):
    params = ParameterStore(groups())
    server = OscServer(params, port=0, max_subscribers=8).start()
    configured = Client(server.port)
    server.subscribe("127.0.0.1", configured.port)  # as the show's osc.subscribe does
    clients = []
    try:
        with caplog.at_level(logging.WARNING):
            flood = Client(server.port)
            clients.append(flood)
            send_burst(flood, [("/unstable/subscribe", port) for port in range(20000, 30000)],
                       lambda: server.stats["messages"])
            for i in range(2, 12):  # ten other hosts
                c = HostClient(server.port, f"127.0.0.{i}")
                clients.append(c)
                c.send("/unstable/subscribe", c.port)
            assert wait_for(lambda: server.stats["messages"] == 10010, 30)
        subs = server.subscribers
        assert ("127.0.0.1", configured.port) in subs and len(subs) <= 8
        assert len([s for s in subs if s[0] == "127.0.0.1"]) <= 1 + 4  # the configured + this host's four
        assert server.stats["refused"] >= 1
        osc_lines = [r for r in caplog.records if r.name.startswith("unstable.osc")]
        assert len(osc_lines) <= 6, [r.getMessage() for r in osc_lines]
    finally:
        for c in clients + [configured]:
            c.close()
        server.stop()


def empty_element_bundle(n: int) -> bytes:
    """An OSC bundle of n empty elements: python-osc warns once per element."""
    return b"#bundle\0" + b"\0" * 8 + b"\0\0\0\0" * n


def test_bundles_of_empty_or_too_many_elements_are_refused_before_parsing(caplog, monkeypatch):
    # python-osc walks every element in Python and warns for each empty one (10 datagrams of 2,040
    # empty elements: 20,400 lines, and a show at 2 fps under a flood): refused on their sizes alone.
    from unstable.control.osclog import install_library_log_limit
    limit = install_library_log_limit()
    monkeypatch.setattr(limit, "_last", {})
    params = ParameterStore(groups())
    server = OscServer(params, port=0).start()
    client = Client(server.port)

    def bundle(messages):
        return b"#bundle\0" + b"\0" * 8 + b"".join(len(m).to_bytes(4, "big") + m for m in messages)

    def hue_msg(v):
        b = OscMessageBuilder(address="/unstable/eq/hue/raw")
        b.add_arg(float(v))
        return b.build().dgram
    try:
        with caplog.at_level(logging.WARNING):
            for _ in range(10):
                client.send_raw(empty_element_bundle(2040))
            client.send_raw(bundle([hue_msg(7.0)] * 65))   # one element past the limit
            client.send_raw(bundle([hue_msg(5.0)] * 64))   # at the limit: applied
            assert wait_for(lambda: params.get("eq", "hue") == 5.0, 10)
        assert server.stats["malformed"] == 11 and server.stats["messages"] == 64
        assert [r for r in caplog.records if "pythonosc" in r.pathname] == []  # never reached python-osc
        ours = [r.getMessage() for r in caplog.records if r.name.startswith("unstable.osc")]
        assert 1 <= len(ours) <= 2 and "impossible size (0 bytes)" in ours[0], ours
    finally:
        client.close()
        server.stop()


def test_sync_and_subscribe_replies_are_budgeted_per_subscriber():
    params = ParameterStore(groups())
    server = OscServer(params, port=0).start()
    a = Client(server.port)
    other = HostClient(server.port, "127.0.0.2")
    n = 2 * len(params.keys())  # one full state, in datagrams
    try:
        other.send("/unstable/subscribe", other.port)
        assert len(other.recv_all(n)) == n
        for _ in range(100):  # a 28-byte subscribe, again and again
            a.send("/unstable/subscribe", a.port)
        for _ in range(100):
            a.send("/unstable/sync")
        got = a.received(quiet=1.5, limit=4.0)
        assert n <= len(got) <= 2 * n  # the first full state, and at most one more a second later
        assert other.received(quiet=0.5, limit=2.0) == []  # another host's sync is not sent to it
    finally:
        a.close()
        other.close()
        server.stop()


def test_a_sender_varying_the_problem_still_gets_a_bounded_log(caplog, monkeypatch):
    # Every parameter x every kind of bad value is its own key: the total budget still holds.
    import unstable.control.osclog as osclog
    now = [100.0]
    monkeypatch.setattr(osclog.time, "monotonic", lambda: now[0])
    warn = osclog.RateLimitedLog(logging.getLogger("unstable.osc"), 2.0, per_minute=5)
    with caplog.at_level(logging.WARNING, logger="unstable.osc"):
        for i in range(100):
            warn.warning(("rejected", i), "problem %d", i)
        assert [r.getMessage() for r in caplog.records] == [f"problem {i}" for i in range(5)]
        now[0] += 12.0  # a minute's budget of 5 refills one line every 12 s
        warn.warning(("rejected", 500), "problem %d", 500)
    last = caplog.records[-1].getMessage()
    assert len(caplog.records) == 6 and last.startswith("problem 500")
    assert "(95 other lines held back by the log's limit of 5 a minute)" in last
