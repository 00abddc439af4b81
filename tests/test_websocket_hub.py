"""The websocket hub's limits and log lines, pinned exactly (issue 22: the mutants of
control/websockets.py that test_oscquery.py let through): the counters `ws_dropped`,
`ws_over_total` and `ws_displaced`, the common pool's size, who makes room when every place is
taken, each warning's exact text and what it is rate-limited by (the client's address, not its
connection), and the flood close's code and reason.

Real aiohttp websocket clients on loopback against a real WebServer on its own loop; clients bind
127.0.0.x source addresses so the hub tells machines apart. Each server is started with a long
log interval, so a line missing here is a line grouped under the wrong key, never one that the
interval let through by chance on a slow machine. The budget tests run beside two busy processes:
what they check is counts (every message either counted or dropped), not speed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import subprocess
import sys
import threading
import time

import aiohttp
import pytest
from pythonosc.osc_message import OscMessage
from pythonosc.osc_message_builder import OscMessageBuilder

from helpers import wait_for
from unstable.control.oscquery import AddressSpace
from unstable.control.store import ParameterStore
from unstable.control.webserver import WebServer
from unstable.schema import ParamSpec, show_specs


@contextlib.contextmanager
def serve(**kw):
    store = ParameterStore({"eq": [ParamSpec("hue", -180, 180, 0), ParamSpec("fade", 0, 1, 1)],
                            "show": show_specs(scenes=2)})
    kw.setdefault("advertise", False)
    kw.setdefault("log_interval", 120.0)
    srv = WebServer(store, AddressSpace(store, name="t"), port=0, **kw).start()
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture
def hog():
    """Two busy processes beside the test, as on a loaded show machine."""
    procs = [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(2)]
    yield
    for p in procs:
        p.kill()
        p.wait()


def osc(addr, value) -> bytes:
    b = OscMessageBuilder(address=addr)
    b.add_arg(float(value))
    return b.build().dgram


def session(src: str) -> aiohttp.ClientSession:
    """A client on another machine: its connections come from `src`."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=(src, 0)))


# A websocket handshake's request, sent as a plain GET to read a refusal's body.
UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def web_lines(caplog, words: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "unstable.web" and words in r.getMessage()]


async def all_gone(srv) -> None:
    """Wait until the hub has handled every client's last message (its handler ends after them)."""
    assert await asyncio.to_thread(wait_for, lambda: not srv.hub.clients, 10.0), len(srv.hub.clients)


# -- in: each client's budget, and all clients' together ---------------------------------------------

def test_a_client_over_its_rate_has_the_rest_dropped_counted_and_said_once_per_address(caplog, hog):
    caplog.set_level(logging.WARNING, "unstable.web")
    n = 40  # twice the burst of 10 a second (2 s): drops, but fewer than the 50 that close a client
    with serve(rate=10) as srv:
        url = f"http://127.0.0.1:{srv.port}/"

        async def flood(s):
            ws = await s.ws_connect(url)
            for i in range(n):
                await ws.send_bytes(osc("/unstable/eq/hue", i))
            return ws

        async def main():
            a, b = session("127.0.0.2"), session("127.0.0.3")
            try:
                # two connections from one machine, one from another
                opened = [await flood(a), await flood(a), await flood(b)]
                for ws in opened:
                    await ws.close()
                    assert ws.close_code == 1000  # dropped, not closed for flooding
                await all_gone(srv)
            finally:
                await a.close()
                await b.close()

        asyncio.run(main())
        st = srv.stats
    assert st["ws_dropped"] > 0 and st["ws_messages"] > 0
    assert st["ws_messages"] + st["ws_dropped"] == 3 * n, st  # every message counted once
    assert st["ws_over_total"] == 0 and st["ws_closed_flood"] == 0
    # One line per address: the second connection from 127.0.0.2 adds none, 127.0.0.3 has its own.
    assert sorted(web_lines(caplog, "messages/s")) == [
        f"web: websocket web:127.0.0.{k} sends more than 10 messages/s; dropping the rest" for k in (2, 3)]


def test_a_client_that_keeps_flooding_is_closed_with_1008_message_flood_and_a_line_naming_it(caplog, hog):
    caplog.set_level(logging.WARNING, "unstable.web")
    with serve(rate=10) as srv:
        async def main():
            async with aiohttp.ClientSession() as s:
                ws = await s.ws_connect(f"http://127.0.0.1:{srv.port}/")
                with contextlib.suppress(ConnectionError, RuntimeError):
                    for i in range(200):  # past 5 s of its budget dropped (50)
                        await ws.send_bytes(osc("/unstable/eq/hue", i % 90))
                msg = await ws.receive(timeout=10.0)
                while msg.type not in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                    msg = await ws.receive(timeout=10.0)
                return msg, ws.close_code

        for _ in range(2):  # closed, it comes back and floods again: closed again, no second line
            msg, code = asyncio.run(main())
            assert code == 1008
            assert msg.type == aiohttp.WSMsgType.CLOSE and msg.extra == "message flood", msg
        assert srv.stats["ws_closed_flood"] == 2
    assert web_lines(caplog, "closed: it") == [
        "web: websocket web:127.0.0.1 closed: it kept sending more than 10 messages/s"]


def test_bursts_over_the_rate_with_pauses_between_drop_their_excess_but_never_close_the_client(hog):
    """A page that now and then sends a burst over its rate (a preset's many moves at once) loses
    each burst's excess, and is not a flood: its drops must not add up, burst after burst, to the
    count that closes a client that keeps flooding (5 s of its rate: 50 here)."""
    n = 60  # 40 over the 2 s burst of 10 a second (under the 50 that close a client), 80 in two
    with serve(rate=10) as srv:
        async def main():
            async with aiohttp.ClientSession() as s:
                ws = await s.ws_connect(f"http://127.0.0.1:{srv.port}/")
                for burst in range(3):
                    if burst:
                        await asyncio.sleep(2.2)  # the budget refills: the burst is over
                    for i in range(n):
                        await ws.send_bytes(osc("/unstable/eq/hue", i))
                await asyncio.sleep(2.2)
                await ws.send_bytes(osc("/unstable/eq/fade", 0.5))  # still served after the last burst
                assert await asyncio.to_thread(wait_for, lambda: abs(srv.store.get("eq", "fade") - 0.5) < 1e-6)
                await ws.close()
                await all_gone(srv)
                return ws.close_code

        assert asyncio.run(main()) == 1000
        st = srv.stats
    assert st["ws_closed_flood"] == 0
    assert st["ws_dropped"] > 50 and st["ws_messages"] + st["ws_dropped"] == 3 * n + 1, st


def test_clients_together_stay_within_the_total_and_what_is_over_is_counted_and_said(caplog, hog):
    """A total of 40 a second: each client's share is half of it split among the clients (20 a
    second, at most 20 held), the common pool the other half (20 a second, at most 20 held)."""
    caplog.set_level(logging.WARNING, "unstable.web")
    n = 200
    with serve(rate=1000, ws_total_rate=40) as srv:
        async def main():
            async with aiohttp.ClientSession() as s:
                start = time.monotonic()
                ws = await s.ws_connect(f"http://127.0.0.1:{srv.port}/")
                for i in range(n):
                    await ws.send_bytes(osc("/unstable/eq/fade", i / n))
                await ws.close()
                await all_gone(srv)
                return time.monotonic() - start

        elapsed = asyncio.run(main())
        st = srv.stats
    # The share's 20 and the pool's 20 held at the start all get through, and 20 + 20 a second
    # after (a pool of the whole total instead of its half lets 100 through, and 100 a second; a
    # pool taking two tokens a message lets only 10 of its 20 through).
    assert 40 <= st["ws_messages"] <= 40 + 40 * elapsed + 1, (st["ws_messages"], elapsed)
    assert st["ws_over_total"] == n - st["ws_messages"], st
    assert st["ws_dropped"] == st["ws_over_total"], st  # nothing was over its own rate
    assert web_lines(caplog, "together") == [
        "web: websocket clients together send more than 40 messages/s; dropping the rest (1 clients)"]


# -- room for a newcomer ---------------------------------------------------------------------------

def test_when_every_place_is_taken_the_oldest_client_of_the_heaviest_address_makes_room(caplog):
    caplog.set_level(logging.WARNING, "unstable.web")
    with serve(max_clients=3) as srv:
        url = f"http://127.0.0.1:{srv.port}/"

        async def still_open(ws) -> bool:
            with contextlib.suppress(asyncio.TimeoutError):
                await ws.receive(timeout=0.3)
                return False
            return not ws.closed

        async def main():
            flood, phone, other = session("127.0.0.2"), session("127.0.0.3"), session("127.0.0.4")
            try:
                held = [await flood.ws_connect(url) for _ in range(3)]
                mine = await phone.ws_connect(url)
                msg = await held[0].receive(timeout=5)  # the oldest of the three went, not the others
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1013, msg
                assert msg.extra == "room made for another address"
                assert await still_open(held[1]) and await still_open(held[2])
                assert srv.stats["ws_displaced"] == 1
                # 2 from .2, 1 from .3: the phone's second would leave .2 only one more: refused
                async with phone.get(url, headers=UPGRADE) as refused:
                    assert (refused.status, await refused.text()) == (503, "503: 3 websocket clients already\n")
                # a third machine with none: .2's oldest left (held[1]), the phone keeps its place
                third = await other.ws_connect(url)
                msg = await held[1].receive(timeout=5)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1013, msg
                assert await still_open(held[2]) and await still_open(mine)
                assert srv.stats["ws_displaced"] == 2
                await mine.send_bytes(osc("/unstable/eq/fade", 0.25))  # the newcomer is served
                assert await asyncio.to_thread(wait_for, lambda: abs(srv.store.get("eq", "fade") - 0.25) < 1e-6)
                for ws in (*held, mine, third):
                    await ws.close()
            finally:
                for s in (flood, phone, other):
                    await s.close()

        asyncio.run(main())
    assert web_lines(caplog, "to make room") == [
        "web: websocket web:127.0.0.2 closed to make room for 127.0.0.3 (127.0.0.2 holds 3 of the 3 places)"]
    assert web_lines(caplog, "refused") == ["web: websocket from 127.0.0.3 refused: 3 clients already"]


def test_newcomers_arriving_at_once_never_take_more_than_every_place(hog):
    """Making room closes the displaced client, and the newcomer's handshake follows: both wait on
    the network. Newcomers arriving meanwhile must find that place taken (4 places once ended with
    7 clients: each found the place another had just made and took it too)."""
    with serve(max_clients=4) as srv:
        url = f"http://127.0.0.1:{srv.port}/"
        peak, watching = [0], threading.Event()

        def watch():  # the hub's count, as often as this thread runs, until the clients are closed
            while not watching.is_set():
                peak[0] = max(peak[0], len(srv.hub.clients))
                time.sleep(0.0002)

        async def one(s):
            with contextlib.suppress(aiohttp.WSServerHandshakeError):
                return await s.ws_connect(url)

        async def main():
            sessions = [session(f"127.0.0.{k}") for k in range(2, 9)]
            try:
                held = [await sessions[0].ws_connect(url) for _ in range(4)]
                came = await asyncio.gather(*(one(s) for s in sessions[1:] for _ in range(3)))
                got_in = [ws for ws in came if ws is not None]
                await asyncio.sleep(0.3)
                served = len(srv.hub.clients)
                for ws in (*held, *got_in):
                    await ws.close()
                return got_in, served
            finally:
                for s in sessions:
                    await s.close()

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            got_in, served = asyncio.run(main())
        finally:
            watching.set()
            watcher.join()
    assert got_in and peak[0] <= 4 and served <= 4, (len(got_in), peak[0], served)


# -- refused and closed ----------------------------------------------------------------------------

def test_a_message_over_the_size_limit_closes_with_1009_and_a_foreign_page_is_refused_each_with_a_line(caplog):
    caplog.set_level(logging.WARNING, "unstable.web")
    with serve(max_message=1024) as srv:
        url = f"http://127.0.0.1:{srv.port}/"

        async def main():
            async with session("127.0.0.2") as s:
                ws = await s.ws_connect(url)
                await ws.send_bytes(b"\0" * 2000)
                msg = await ws.receive(timeout=5.0)
                assert msg.type == aiohttp.WSMsgType.CLOSE and msg.data == 1009, msg
                await all_gone(srv)  # its handler has ended (and said why)
                with pytest.raises(aiohttp.WSServerHandshakeError) as foreign:
                    await s.ws_connect(url, origin="http://evil.example")
                assert foreign.value.status == 403
                own = await s.ws_connect(url, origin=f"http://127.0.0.1:{srv.port}")  # the show's page
                await own.close()

        asyncio.run(main())
        assert srv.stats["refused"] == 1
    assert web_lines(caplog, "web: websocket from") == [
        "web: websocket from 127.0.0.2 closed: a message over 1024 bytes",
        "web: websocket from 127.0.0.2 refused: opened by a page from 'http://evil.example', not this show's page"]


# -- commands ----------------------------------------------------------------------------------------

def test_each_bad_command_is_one_exact_line_per_address_and_the_client_stays_served(caplog):
    caplog.set_level(logging.WARNING, "unstable.web")
    bad = ["not json", json.dumps({"COMMAND": "LISTEN", "DATA": "/unstable/eq/nope"}),
           json.dumps({"COMMAND": "FOO"})]
    with serve() as srv:
        url = f"http://127.0.0.1:{srv.port}/"

        async def main():
            a, b = session("127.0.0.2"), session("127.0.0.3")
            try:
                first, second = await a.ws_connect(url), await a.ws_connect(url)
                for ws in (first, second):  # the second connection of one machine: no new lines
                    for text in bad:
                        await ws.send_str(text)
                theirs = await b.ws_connect(url)
                await theirs.send_str(json.dumps({"COMMAND": "IGNORE", "DATA": 5}))
                await theirs.send_str(json.dumps({"COMMAND": "FOO"}))
                await first.send_bytes(osc("/unstable/eq/fade", 0.5))  # still served after bad input
                assert await asyncio.to_thread(wait_for, lambda: abs(srv.store.get("eq", "fade") - 0.5) < 1e-6)
                for ws in (first, second, theirs):
                    await ws.close()
                await all_gone(srv)
            finally:
                await a.close()
                await b.close()

        asyncio.run(main())
        assert srv.stats["malformed"] == 2 and srv.stats["unknown"] == 6, srv.stats
    assert web_lines(caplog, "web: websocket web:") == [
        "web: websocket web:127.0.0.2 sent a malformed command (JSONDecodeError): 'not json'",
        "web: websocket web:127.0.0.2: LISTEN '/unstable/eq/nope' is not a method with a value",
        "web: websocket web:127.0.0.2: unknown command 'FOO'",
        "web: websocket web:127.0.0.3: IGNORE 5 is not a method with a value",
        "web: websocket web:127.0.0.3: unknown command 'FOO'",
    ]


# -- out: the budget for everything sent ------------------------------------------------------------

def test_past_the_out_budget_a_listener_waits_and_ends_on_the_newest_value():
    with serve(ws_out_rate=2) as srv:  # 2 a second, 2 held: the third change waits for a token
        async def main():
            async with aiohttp.ClientSession() as s:
                ws = await s.ws_connect(f"http://127.0.0.1:{srv.port}/")
                await ws.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": "/unstable/eq/hue"}))
                assert await asyncio.to_thread(wait_for, lambda: any(c.listens for c in list(srv.hub.clients)))
                for v in (10.0, 20.0, 30.0, 40.0, 50.0):
                    srv.store.set("eq", "hue", v)
                    await asyncio.sleep(0.05)
                newest, last = OscMessage(srv.space.message("/unstable/eq/hue")).params[0], None
                while last != newest:  # whatever coalesced on the way, the newest value arrives
                    msg = await ws.receive(timeout=5.0)
                    assert msg.type == aiohttp.WSMsgType.BINARY, msg
                    last = OscMessage(msg.data).params[0]
                await ws.close()

        asyncio.run(main())
        assert srv.stats["ws_out_waits"] > 0


# -- telemetry -------------------------------------------------------------------------------------

def test_a_telemetry_line_json_cannot_hold_is_one_line_naming_why_and_the_next_line_arrives(caplog):
    caplog.set_level(logging.WARNING, "unstable.web")
    huge = 10 ** 5000  # an int json.dumps refuses (past Python's digit limit for int -> str)
    with pytest.raises(ValueError) as why:
        json.dumps(huge)
    with serve() as srv:
        async def main():
            async with aiohttp.ClientSession() as s:
                ws = await s.ws_connect(f"http://127.0.0.1:{srv.port}/")
                await ws.send_str(json.dumps({"COMMAND": "TELEMETRY", "DATA": True}))
                assert await asyncio.to_thread(wait_for, lambda: any(c.telemetry for c in list(srv.hub.clients)))
                srv.hub.telemetry({"fps": huge})
                srv.hub.telemetry({"fps": 30.0})
                msg = await ws.receive(timeout=5.0)
                await ws.close()
                return json.loads(msg.data)

        assert asyncio.run(main()) == {"COMMAND": "TELEMETRY", "DATA": {"fps": 30.0}}
    assert web_lines(caplog, "telemetry") == [f"web: a telemetry line could not be sent to the page: {why.value}"]
