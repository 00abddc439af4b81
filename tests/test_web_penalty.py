"""The web server under attack traffic spends little of the show's interpreter on it (issue 23's
soak: the web thread took 745 CPU seconds in 30 minutes and the render thread lost its GIL):

- the penalty box: an address that floods (over its per-address cap, a request begun and never
  finished, a websocket closed for flooding) is closed at accept for `penalty` seconds, before
  aiohttp parses a byte, with one log line; other addresses and loopback are served meanwhile;
- LISTEN fan-out: store changes are gathered into one pass over the clients per tick (50 Hz), not
  one per change, the writers are granted the out-budget in turn (no polling), and what a small
  budget drops is only values a newer one replaced.

Real sockets on loopback; 127.0.0.2 and 127.0.0.3 stand for LAN machines (the box exempts only
127.0.0.1 here, where a show exempts all of loopback)."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time

import aiohttp
import pytest
from pythonosc.osc_message import OscMessage

from helpers import wait_for
from unstable.control.penalty import PenaltyBox
from test_web_hardening import closed, connect, get, osc, serve, web_lines


def _lan(srv):
    """Treat every address but 127.0.0.1 as another machine's."""
    srv.guard.box.exempt = lambda peer: peer == "127.0.0.1"
    return srv


def _refused_at_accept(port, src) -> bool:
    """Whether a connection from `src` is closed without a byte of answer (a request sent on it)."""
    s = connect(port, src)
    try:
        s.sendall(f"GET /control/show.json HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n\r\n".encode())
    except OSError:
        return True
    try:
        return s.recv(65536) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    finally:
        s.close()


class _Clock:
    """The penalty box's clock, moved by the test: how long the 20 refusals below take on a busy
    machine cannot end the box early."""

    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_an_address_over_its_cap_is_refused_at_accept_for_a_while_and_others_are_served(caplog):
    caplog.set_level(logging.WARNING, "unstable.web")
    with serve(max_per_address=4, idle_timeout=30.0, penalty=1.5) as srv:
        clock, box = _Clock(), srv.guard.box
        srv.guard.box = PenaltyBox(box.warn, box.stats, box.seconds, box.exempt, clock=clock)
        p = _lan(srv).port
        flood = [connect(p, "127.0.0.2") for _ in range(5)]  # the fifth is over the cap: boxed
        assert wait_for(lambda: srv.stats["boxed_addresses"] == 1, 30.0)
        assert all(closed(s, 5.0) for s in flood)  # what it held is closed too
        attempts = [_refused_at_accept(p, "127.0.0.2") for _ in range(20)]
        assert all(attempts) and srv.stats["conn_boxed"] >= 20
        assert get(p, "/control/show.json", src="127.0.0.3")[0] == 200   # another machine
        assert get(p, "/control/show.json")[0] == 200                     # the show's own machine
        clock.now += 1.4
        assert _refused_at_accept(p, "127.0.0.2")                        # still in the box
        clock.now += 0.2
        assert get(p, "/control/show.json", src="127.0.0.2")[0] == 200   # out of the box after 1.5 s
        for s in flood:
            s.close()
    assert len(web_lines(caplog, "127.0.0.2 refused for 1.5s")) == 1


def test_loopback_is_never_boxed():
    with serve(max_per_address=4, idle_timeout=30.0, penalty=30.0) as srv:
        p = srv.port
        flood = [connect(p, "127.0.0.2") for _ in range(5)]
        wait_for(lambda: srv.stats["conn_refused"] == 1)
        assert srv.stats["boxed_addresses"] == 0
        assert not any(closed(s, 0.3) for s in flood[:4])  # the four within the cap stay
        for s in flood:
            s.close()
        wait_for(lambda: srv.guard.open == 0)
        assert get(p, "/control/show.json", src="127.0.0.2")[0] == 200


def test_a_request_begun_and_never_finished_boxes_its_address_a_silent_connection_does_not():
    with serve(idle_timeout=0.5, penalty=30.0) as srv:
        p = _lan(srv).port
        slow = connect(p, "127.0.0.2")
        slow.sendall(b"GET /control/show.json HTTP/1.1\r\nHost: x\r\n")  # slowloris: and nothing more
        silent = connect(p, "127.0.0.3")  # a browser's preconnect looks like this
        assert closed(slow, 3.0) and closed(silent, 3.0)
        assert _refused_at_accept(p, "127.0.0.2")
        assert get(p, "/control/show.json", src="127.0.0.3")[0] == 200
        assert srv.stats["boxed_addresses"] == 1
        slow.close()
        silent.close()


def test_a_websocket_closed_for_flooding_boxes_its_address_and_a_page_elsewhere_follows_on():
    async def scenario(srv):
        p = srv.port
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as bad, \
                aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))) as good:
            page = await good.ws_connect(f"http://127.0.0.1:{p}/")
            await page.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": "/unstable/eq/hue"}))
            ws = await bad.ws_connect(f"http://127.0.0.1:{p}/")
            for _ in range(2000):
                if ws.closed:
                    break
                await ws.send_bytes(osc("/unstable/eq/fade", 0.5))
                await asyncio.sleep(0)
            await asyncio.wait_for(ws.receive(), 5.0)
            assert ws.closed and srv.stats["ws_closed_flood"] == 1
            with pytest.raises((aiohttp.ClientError, ConnectionError, asyncio.TimeoutError)):
                again = await bad.ws_connect(f"http://127.0.0.1:{p}/", timeout=aiohttp.ClientWSTimeout(ws_close=2))
                await again.close()
            srv.store.set("eq", "hue", 42.0)
            msg = await page.receive(timeout=5.0)
            await page.close()
            return msg

    with serve(rate=50.0, penalty=30.0) as srv:
        msg = asyncio.run(scenario(_lan(srv)))
        assert OscMessage(msg.data).params == OscMessage(srv.space.message("/unstable/eq/hue")).params
        assert srv.store.get("eq", "hue") == 42.0
        assert srv.stats["boxed_addresses"] == 1 and srv.stats["conn_boxed"] >= 1


@pytest.mark.parametrize("load", ["idle", "cpu_hogs"])
def test_a_flood_of_changes_is_one_pass_per_tick_and_every_listener_ends_on_the_newest_values(request, load):
    if load == "cpu_hogs":
        request.getfixturevalue("cpu_hogs")
    out_rate, seconds = 300.0, 1.0
    with serve(ws_out_rate=out_rate) as srv:
        flushes = []
        flush = srv.hub._flush
        srv.hub._flush = lambda: (flushes.append(1), flush())[1]

        async def scenario():
            async with aiohttp.ClientSession() as s:
                pages = [await s.ws_connect(f"http://127.0.0.1:{srv.port}/") for _ in range(8)]
                for ws in pages:
                    for path in ("/unstable/eq/hue", "/unstable/eq/fade"):
                        await ws.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": path}))
                await asyncio.sleep(0.3)
                last = [{} for _ in pages]
                got = [0]

                async def read(i, ws):
                    async for m in ws:
                        o = OscMessage(m.data)
                        last[i][o.address] = o.params[0]
                        got[0] += 1

                readers = [asyncio.ensure_future(read(i, ws)) for i, ws in enumerate(pages)]
                flushes.clear()

                def changes():  # 4,000 changes a second, from another thread, as the render's are
                    end, i = time.monotonic() + seconds, 0
                    while time.monotonic() < end:
                        srv.store.set("eq", "hue", float(i % 170))
                        srv.store.set("eq", "fade", (i % 100) / 100)
                        i += 1
                        time.sleep(0.0005)
                    srv.store.set("eq", "hue", 171.0)
                    srv.store.set("eq", "fade", 0.25)
                    return i

                n = await asyncio.to_thread(changes)  # then what each page must end on:
                begun = time.monotonic()
                final.update({p: OscMessage(srv.space.message(p)).params[0] for p in final})
                while any(l != final for l in last) and time.monotonic() - begun < 10:
                    await asyncio.sleep(0.05)
                elapsed = time.monotonic() - begun + seconds
                for r in readers:
                    r.cancel()
                for ws in pages:
                    await ws.close()
                return n, last, got[0], elapsed

        final = {"/unstable/eq/hue": None, "/unstable/eq/fade": None}
        n, last, got, elapsed = asyncio.run(scenario())
    assert n > 200, n
    assert all(l == final for l in last), (last, final)  # the newest values reach every page
    assert got <= out_rate * (1.0 + elapsed) + 16, (got, elapsed)  # within the out-budget
    # One pass over the clients per 20 ms tick (and one more at the end), not one per change.
    assert len(flushes) <= elapsed / 0.02 + 5, (len(flushes), n, elapsed)


def test_the_out_budget_grants_waiting_writers_in_turn_and_skips_one_that_left():
    from unstable.control.ws_admission import OutBudget

    async def scenario():
        budget = OutBudget(100.0)   # 100 a second, 2 per grant (20 ms of the rate)
        assert await budget.acquire(1000) == 100   # the first second's burst, at once
        order: list[tuple[str, int]] = []

        async def writer(name, want):
            order.append((name, await budget.acquire(want)))

        tasks = [asyncio.ensure_future(writer(n, 2)) for n in "abc"]
        leaver = asyncio.ensure_future(writer("gone", 2))
        late = asyncio.ensure_future(writer("d", 2))
        await asyncio.sleep(0)
        leaver.cancel()
        t0 = time.monotonic()
        await asyncio.gather(*tasks, late)
        return order, time.monotonic() - t0, budget.grants

    order, took, grants = asyncio.run(scenario())
    assert [n for n, _ in order] == ["a", "b", "c", "d"] and all(k >= 1 for _, k in order), order
    assert sum(k for _, k in order) <= 2 + 100 * took + 1, (order, took)
    assert grants == 4


def test_the_penalty_is_a_show_setting_thirty_seconds_by_default(tmp_path):
    from test_actions_offthread import PIECE, SHOW
    from unstable.errors import ConfigError
    from unstable.show import load_show
    (tmp_path / "pieces").mkdir()
    (tmp_path / "pieces" / "eq.toml").write_text(PIECE)
    (tmp_path / "show.toml").write_text(SHOW)
    assert load_show(tmp_path / "show.toml").settings.web.penalty == 30.0
    (tmp_path / "show.toml").write_text(SHOW + "[web]\npenalty = -5\n")
    with pytest.raises(ConfigError) as e:
        load_show(tmp_path / "show.toml")
    assert "show.toml" in str(e.value) and "penalty" in str(e.value) and "\n" not in str(e.value)
