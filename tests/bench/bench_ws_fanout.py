"""The web thread's CPU for websocket traffic: what one inbound binary OSC message costs, and what
LISTEN fan-out costs when the show's values change fast (issue 23: the web thread held the GIL the
render thread needs).

    .venv/bin/python tests/bench/bench_ws_fanout.py [--clients 8 64] [--seconds 5] [--changes 2000]

A WebServer on loopback (no show); CPU seconds of its `unstable-web` thread from /proc. Inbound: one
client sends 20,000 messages to /unstable/eq/hue. Fan-out: N clients LISTEN to two paths that
another thread changes `--changes` times a second each; the clients read everything they get.
Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import aiohttp  # noqa: E402
from pythonosc.osc_message_builder import OscMessageBuilder  # noqa: E402

from unstable.control.oscquery import AddressSpace  # noqa: E402
from unstable.control.store import ParameterStore  # noqa: E402
from unstable.control.webserver import WebServer  # noqa: E402
from unstable.schema import ParamSpec, show_specs  # noqa: E402

PATHS = ("/unstable/eq/hue", "/unstable/eq/fade")


def thread_cpu(native_id: int) -> float:
    """CPU seconds so far of one thread of this process (Linux)."""
    fields = Path(f"/proc/self/task/{native_id}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def osc(address: str, value: float) -> bytes:
    b = OscMessageBuilder(address=address)
    b.add_arg(float(value))
    return b.build().dgram


async def inbound(srv, web: int, n: int = 20000) -> str:
    async with aiohttp.ClientSession() as s:
        ws = await s.ws_connect(f"http://127.0.0.1:{srv.port}/")
        msg = osc(PATHS[0], 0.5)
        c0 = thread_cpu(web)
        for i in range(n):
            await ws.send_bytes(msg)
            if i % 200 == 0:
                await asyncio.sleep(0.01)
        await asyncio.sleep(1.0)
        spent = thread_cpu(web) - c0
        await ws.close()
    return f"inbound: {n} messages, web thread {spent:.2f} CPU s, {1e6 * spent / n:.0f} us each"


async def fanout(srv, web: int, clients: int, seconds: float, changes: float) -> str:
    async with aiohttp.ClientSession() as s:
        pages = [await s.ws_connect(f"http://127.0.0.1:{srv.port}/") for _ in range(clients)]
        for ws in pages:
            for p in PATHS:
                await ws.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": p}))
        got = [0]

        async def read(ws):
            async for _ in ws:
                got[0] += 1

        readers = [asyncio.ensure_future(read(ws)) for ws in pages]
        await asyncio.sleep(0.5)
        stop = threading.Event()

        def change():
            i = 0
            while not stop.is_set():
                srv.store.set("eq", "hue", float(i % 300))
                srv.store.set("eq", "fade", (i % 100) / 100)
                i += 1
                time.sleep(1 / changes)

        th = threading.Thread(target=change)
        c0, g0 = thread_cpu(web), got[0]
        th.start()
        await asyncio.sleep(seconds)
        stop.set()
        th.join()
        spent, n = thread_cpu(web) - c0, got[0] - g0
        for r in readers:
            r.cancel()
        for ws in pages:
            await ws.close()
    return (f"fan-out: {clients} clients, {n / seconds:.0f} messages/s received, web thread "
            f"{100 * spent / seconds:.0f} % of a core")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, nargs="+", default=[8, 64])
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--changes", type=float, default=2000.0, help="changes a second of each path")
    a = ap.parse_args()
    store = ParameterStore({"eq": [ParamSpec("hue", -180, 180, 0), ParamSpec("fade", 0, 1, 1)],
                            "show": show_specs(scenes=2)})
    srv = WebServer(store, AddressSpace(store, name="bench"), port=0, advertise=False, rate=100000.0,
                    ws_total_rate=100000.0, max_per_address=max(a.clients) + 8, max_clients=max(a.clients)).start()
    try:
        web = next(t for t in threading.enumerate() if t.name == "unstable-web").native_id
        print(asyncio.run(inbound(srv, web)))
        for n in a.clients:
            print(asyncio.run(fanout(srv, web, n, a.seconds, a.changes)))
    finally:
        srv.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
