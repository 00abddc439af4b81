"""The show's web server in a process of its own (`[web] process = true`), over real sockets on
loopback: what a browser moves reaches the show's store with its web origin (automation and OSC
feedback see it), what OSC moves reaches a LISTENing websocket in the web process, scenes change the
tree, the page and the preview are served, a rebinding Host is refused, a port in use is one line,
a killed web process is replaced while the frames go on, a killed show takes its web process with
it, and `process = false` keeps the thread.

The show is test_show's (two tiny equilibrium pieces; scene 1 shows only eq2).
"""

import asyncio
import json
import multiprocessing
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import pytest
from helpers import ROOT, Client, wait_for
from pythonosc.osc_message_builder import OscMessageBuilder
from test_engine import make_engine, silent
from test_oscquery import _handled, _next_binary, _ws
from test_show import SHOW, write_show

pytestmark = pytest.mark.usefixtures("one_torch_thread")

IN_PROCESS = SHOW.replace("[layout]", "[web]\nprocess = true\n[layout]")


def osc(addr, *args) -> bytes:
    b = OscMessageBuilder(address=addr)
    for a in args:
        b.add_arg(a)
    return b.build().dgram


def get(port, path, host="127.0.0.1"):
    """(status, body) of GET `path`, with `host` as the Host header."""
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host})
    try:
        with urllib.request.urlopen(req, timeout=5) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def web_pid(eng) -> int:
    return eng.web._child.process.pid


@pytest.fixture
def show(tmp_path):
    eng = make_engine(tmp_path, IN_PROCESS, automation=tmp_path / "live.automation.jsonl")
    with eng:
        eng.frame(number=0)
        yield eng




def test_the_server_runs_in_a_niced_process_and_the_show_has_no_web_thread(show):
    from unstable.live.web_process import WebProcess
    assert isinstance(show.web, WebProcess) and show.web.running
    assert "unstable-web" not in {t.name for t in threading.enumerate()}
    pid = web_pid(show)
    here = os.getpriority(os.PRIO_PROCESS, 0)
    assert os.getpriority(os.PRIO_PROCESS, pid) == min(19, here + 5)  # under `nice -n 19`: 19 already
    assert get(show.web.port, "/unstable/eq/hue?VALUE") == (200, b'{"VALUE": [0.5]}')


def test_a_browser_move_reaches_the_show_with_its_origin_and_feedback_and_automation_see_it(show, tmp_path):
    heard = []
    show.params.add_listener(lambda keys, origin: heard.append((list(keys), origin)))
    udp = Client(show.osc.port)
    udp.send("/unstable/subscribe", udp.port)
    assert wait_for(lambda: show.osc.server.subscribers)
    udp.received(quiet=0.3)  # the state sent on subscribing

    async def run():
        s, ws = await _ws(show.web.port)
        await ws.send_bytes(osc("/unstable/eq/hue", 0.25))
        assert await asyncio.get_running_loop().run_in_executor(
            None, wait_for, lambda: show.params.get("eq", "hue") == -90.0)
        await ws.send_bytes(osc("/unstable/scene", 1))
        await ws.send_bytes(osc("/unstable/still"))
        await asyncio.sleep(0.5)
        await ws.close()
        await s.close()

    asyncio.run(run())
    origins = [o for keys, o in heard if ("eq", "hue") in keys]
    assert len(origins) == 1 and origins[0][0] == "web:127.0.0.1"  # once, with the client's origin
    assert ("/unstable/eq/hue", pytest.approx(0.25)) in udp.received(quiet=0.3)  # OSC feedback follows
    events = show.params.drain_events()
    assert [(e.kind, e.value, e.origin[0]) for e in events] == [("scene", 1.0, "web:127.0.0.1"),
                                                               ("still", None, "web:127.0.0.1")]
    assert show.params.get("show", "scene") == 1.0
    show.frame(number=1)
    show.close()
    from unstable.frame.automation import load_automation
    assert load_automation(tmp_path / "live.automation.jsonl").at(1)["set"]["eq"]["hue"] == -90.0


def test_an_osc_move_reaches_a_listening_websocket_in_the_web_process_and_is_not_echoed(show):
    port = show.web.port

    async def run():
        s, ws = await _ws(port)
        await _handled(show.web, ws, "LISTEN", "/unstable/eq/hue")
        Client(show.osc.port).send("/unstable/eq/hue", 0.75)
        assert await _next_binary(ws) == ("/unstable/eq/hue", [pytest.approx(0.75)])
        # The engine's own write (a preset, a scene) too; the replica is never sent its own moves.
        show.params.set("eq", "hue", 45.0)
        assert await _next_binary(ws) == ("/unstable/eq/hue", [pytest.approx(0.625)])
        await ws.close()
        await s.close()

    asyncio.run(run())
    assert get(port, "/unstable/eq/raw/hue?VALUE") == (200, b'{"VALUE": [45.0]}')


def test_sync_waits_until_the_replica_has_every_change_even_one_held_for_the_next_batch(show):
    """The page answers from a replica a batch behind; sync() is the barrier a tool or a test uses
    between setting a value in the show and reading it over HTTP."""
    port = show.web.port
    show.web.feed.VALUES_EVERY = 30.0  # a second change within the batch time waits for the feed thread
    show.params.set("eq", "fade", 0.5)
    show.params.set("eq", "fade", 0.25)  # held for the next batch, 30 s away
    assert show.web.sync(timeout=10.0)
    assert get(port, "/unstable/eq/fade?VALUE") == (200, b'{"VALUE": [0.25]}')


def test_a_move_the_show_had_not_applied_when_it_sent_its_values_is_kept(show):
    """Both at once: a browser sets hue while OSC sets it; the replica ends where the show ends."""
    port = show.web.port
    udp = Client(show.osc.port)

    def replica():
        return json.loads(get(port, "/unstable/eq/hue?VALUE")[1])["VALUE"][0]

    async def run():
        s, ws = await _ws(port)
        for rnd in range(20):
            for i in range(20):
                await ws.send_bytes(osc("/unstable/eq/hue", (i % 10) / 10))
                udp.send("/unstable/eq/hue", ((i + rnd + 5) % 10) / 10)
            # The last word the browser's, just after an OSC move the show is sending on.
            udp.send("/unstable/eq/hue", 0.05)
            await asyncio.sleep(0.001 * (rnd % 4))
            await ws.send_bytes(osc("/unstable/eq/hue", 0.95 - 0.01 * rnd))
            # Then a move of another parameter each way: each way is in order (one UDP socket read
            # by one thread; one websocket, one queue to the show), so once the show has both, it
            # has every hue move of the round, and sync() brings the replica up to the show.
            udp.send("/unstable/eq2/hue", (rnd + 1) / 50)
            await ws.send_bytes(osc("/unstable/eq/fade", (rnd + 1) / 50))
            settled = await asyncio.to_thread(wait_for, lambda: show.params.get_unit("eq2", "hue") == pytest.approx(
                (rnd + 1) / 50) and show.params.get_unit("eq", "fade") == pytest.approx((rnd + 1) / 50), 30.0)
            assert settled and await asyncio.to_thread(show.web.sync, 30.0), rnd
            here = show.params.get_unit("eq", "hue")
            assert await asyncio.to_thread(replica) == pytest.approx(here), (rnd, here)
        await ws.close()
        await s.close()

    asyncio.run(run())


def test_a_scene_change_sends_path_changed_and_the_tree_follows(show):
    port = show.web.port

    async def run():
        s, ws = await _ws(port)
        await _handled(show.web, ws, "IGNORE", "/unstable/eq/hue")  # the server reads this socket: it is a client
        Client(show.osc.port).send("/unstable/scene", 1)
        assert await asyncio.get_running_loop().run_in_executor(
            None, wait_for, lambda: show.params.get("show", "scene") == 1.0)
        await asyncio.get_running_loop().run_in_executor(None, show.frame, 1.0)
        msg = await ws.receive(timeout=5.0)
        assert json.loads(msg.data) == {"COMMAND": "PATH_CHANGED", "DATA": "/unstable"}
        await ws.close()
        await s.close()

    asyncio.run(run())
    tree = json.loads(get(port, "/")[1])
    assert "eq2" in tree["CONTENTS"]["unstable"]["CONTENTS"] and "eq" not in tree["CONTENTS"]["unstable"]["CONTENTS"]
    assert get(port, "/unstable/eq/hue")[0] == 404


def test_the_page_its_schema_presets_and_the_preview_are_served(show):
    port = show.web.port
    status, body = get(port, "/control/show.json")
    page = json.loads(body)
    assert status == 200 and page["name"] == "show" and {g["piece"] for g in page["groups"]} >= {"eq", "eq2", "show"}
    assert page["presets"]["names"] == []  # the engine listed its presets
    show.presets.save("dusk")
    assert json.loads(get(port, "/unstable/preset/recall")[1])["RANGE"][0]["VALS"] == ["dusk"]
    assert get(port, "/control")[0] == 200
    asks = []
    sink = show.web.preview
    show.web.preview = lambda: asks.append(1) or sink()
    assert get(port, "/control/preview.jpg")[0] == 503  # asked, no frame taken yet
    show.frame(number=1)
    status, body = get(port, "/control/preview.jpg")
    assert status == 200 and body[:2] == b"\xff\xd8"
    # A flood of requests asks the show at most at the preview's rate (4 a second).
    t0, n = time.monotonic(), 2
    while time.monotonic() - t0 < 1.0:
        show.frame(number=n)
        n += 1
        assert get(port, "/control/preview.jpg")[0] == 200
    assert len(asks) <= 2 + 1 + 4 + 1, len(asks)


def test_a_rebinding_host_is_refused(show):
    assert get(show.web.port, "/unstable/eq/hue?VALUE", host="evil.example")[0] == 403
    assert wait_for(lambda: show.web.stats["refused"] >= 1)


def test_a_port_in_use_is_one_line_within_seconds(tmp_path):
    from unstable.errors import UnstableError
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    from unstable.live import Engine
    from unstable.show import load_show
    eng = Engine(load_show(write_show(tmp_path, IN_PROCESS)), headless=True, osc_port=0, web_port=port,
                 train=False, run_dir=tmp_path / "run", echo=lambda line: None, progress=silent)
    t0 = time.monotonic()
    try:
        with pytest.raises(UnstableError) as e:
            eng.open()
    finally:
        taken.close()
    assert time.monotonic() - t0 < 30
    line = str(e.value)
    assert "\n" not in line and f"cannot serve the control page on 127.0.0.1:{port}" in line, line
    assert not [p for p in multiprocessing.active_children() if p.name == "unstable-web"]


def test_a_killed_web_process_is_replaced_while_the_frames_go_on(tmp_path, cpu_hogs, caplog):
    eng = make_engine(tmp_path, IN_PROCESS, seconds=30.0)
    stamps, result = [], {}
    eng.frame_hooks.append(lambda e: stamps.append(time.monotonic()))
    t = threading.Thread(target=lambda: result.update(report=eng.run()))
    with caplog.at_level("INFO"):
        t.start()
        assert wait_for(lambda: len(stamps) >= 5, 120)
        port, pid = eng.web.port, web_pid(eng)
        # No new process until the frames have shown they go on without one (on a loaded machine
        # a new process can come sooner than five frames).
        eng.web.RESTART_EVERY = 3600.0
        try:
            os.kill(pid, signal.SIGKILL)
            killed = time.monotonic()
            assert wait_for(lambda: not eng.web.running, 60)
            gone = time.monotonic()
            went_on = wait_for(lambda: len([s for s in stamps if s > gone]) >= 5, 60)
        finally:
            del eng.web.RESTART_EVERY  # the class's again: the watcher starts the new one
        assert went_on, "the frames stopped while the web process was gone"
        assert wait_for(lambda: eng.web.running and web_pid(eng) != pid, 60)
        assert get(port, "/unstable/eq/hue?VALUE")[0] == 200  # the same page, again
        back = time.monotonic()
        during = [s for s in stamps if killed <= s <= back]
        eng.request_stop()
        t.join(60)
    assert len(during) >= 5, (len(during), back - killed)  # frames kept coming meanwhile
    ended = [r.getMessage() for r in caplog.records if "web process ended" in r.getMessage()]
    assert len(ended) == 1 and "exit code -9" in ended[0]
    assert eng.web.restarts == 1
    assert not [p for p in multiprocessing.active_children() if p.name == "unstable-web"]


KILLED_SHOW = """
import sys, time
sys.path.insert(0, {tests!r})
if __name__ == "__main__":
    from pathlib import Path
    from test_engine import make_engine
    from test_show import SHOW
    eng = make_engine(Path(sys.argv[1]), SHOW.replace("[layout]", "[web]\\nprocess = true\\n[layout]"))
    eng.open()
    print(eng.web._child.process.pid, flush=True)
    if sys.argv[2] == "close":
        eng.close()
        sys.exit(0)
    time.sleep(600)
"""


@pytest.mark.slow
def test_a_killed_show_takes_its_web_process_with_it(tmp_path):
    script = tmp_path / "show_then_killed.py"
    script.write_text(KILLED_SHOW.format(tests=str(ROOT / "tests")))
    (tmp_path / "show").mkdir()
    write_show(tmp_path / "show")
    proc = subprocess.Popen([sys.executable, str(script), str(tmp_path / "show"), "kill"], stdout=subprocess.PIPE,
                            text=True)
    try:
        pid = int(proc.stdout.readline())
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        assert wait_for(lambda: not _alive(pid), 10), "the web process outlived its show"
    finally:
        proc.kill()
    # A show that closes: its web process ends with it, nothing left behind (no leaked semaphores).
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "show"), "close"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and not _alive(int(done.stdout.split()[0])), done.stderr[-500:]
    assert "leaked" not in done.stderr and "Traceback" not in done.stderr, done.stderr[-500:]


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def test_stop_ends_the_process_and_process_false_keeps_the_thread(tmp_path):
    from unstable.control.webserver import WebServer
    eng = make_engine(tmp_path, IN_PROCESS)
    with eng:
        process = eng.web._child.process
    assert not process.is_alive() and process.exitcode == 0  # it stopped, it was not killed
    assert not eng.web.running
    (tmp_path / "thread").mkdir()
    eng = make_engine(tmp_path / "thread", IN_PROCESS.replace("process = true", "process = false"))
    with eng:
        assert type(eng.web) is WebServer and "unstable-web" in {t.name for t in threading.enumerate()}
        assert get(eng.web.port, "/unstable/eq/hue?VALUE")[0] == 200
