"""The network half of issue 23's soak: a show open to a LAN, attacked from it and from loopback.

`soak.py --show shows/demo.toml --attack-only --network` runs it beside the OSC attack and the
faults. The "LAN" is a network namespace joined to this one by a veth pair (nothing reaches a real
network): the show listens on 0.0.0.0 and serves its page and OSCQuery to addresses in the
namespace with its token. Three processes of their own (an attacker's Python must not compete for
the show's GIL):

- `lan-attack`, in the namespace, from 32 addresses: connection floods up to the show's file
  descriptor limit (half of them sending a partial request and nothing more, the rest nothing at
  all), held and dropped in rounds, and 64 websocket clients with the token that LISTEN to eight
  addresses each and send binary OSC as fast as `--ws-rate` allows, reconnecting when closed;
- `loop-attack`, on loopback: DNS-rebinding attempts (HTTP and websocket requests with a foreign
  Host and Origin, as a page whose name rebinds to 127.0.0.1 makes; every one must be refused) and
  refresh floods over OSC (`directions/refresh` 100 a second, `clusters/refresh` 3 a second);
- `legit`, twice (in the namespace from an address the attack does not use, with the token; and on
  loopback): the page every 2 s, which must answer within 3 s, and one websocket that LISTENs to
  `/unstable/show/master_fade`, which the soak changes every 10 s, so its messages must never stop
  for long.

Each process runs for `--seconds` and writes a JSON summary; `NetworkAttack.checks` turns them into
the soak's pass/fail lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve()
FADE = "/unstable/show/master_fade"


# ------------------------------------------------------------------------------------ the LAN

@dataclass(frozen=True)
class Lan:
    """A network namespace joined to this one: our address, the attackers' and the legitimate client's."""
    ns: str
    here: str
    attackers: tuple[str, ...]
    legit: str


def _ip(*args: str, ns: str | None = None) -> subprocess.CompletedProcess:
    cmd = (["ip", "netns", "exec", ns] if ns else []) + ["ip", *args]
    return subprocess.run(cmd, capture_output=True, text=True)


@contextlib.contextmanager
def lan(attackers: int = 32):
    """Make the namespace (root and iproute2 needed); remove it on exit."""
    if os.geteuid() != 0 or shutil.which("ip") is None:
        raise SystemExit("soak --network: making a network namespace needs root and iproute2")
    n = os.getpid() % 250 + 1
    ns, host_if, ns_if = f"usoak-{os.getpid()}", f"ush{os.getpid() % 100000}", f"usn{os.getpid() % 100000}"
    here, addrs, legit = f"10.232.{n}.1", tuple(f"10.232.{n}.{i}" for i in range(2, 2 + attackers)), f"10.232.{n}.200"
    if _ip("netns", "add", ns).returncode != 0:
        raise SystemExit("soak --network: cannot make a network namespace here")
    try:
        steps = [_ip("link", "add", host_if, "type", "veth", "peer", "name", ns_if),
                 _ip("link", "set", ns_if, "netns", ns),
                 _ip("addr", "add", f"{here}/24", "dev", host_if),
                 _ip("link", "set", host_if, "up"),
                 *[_ip("addr", "add", f"{a}/24", "dev", ns_if, ns=ns) for a in (*addrs, legit)],
                 _ip("link", "set", ns_if, "up", ns=ns),
                 _ip("link", "set", "lo", "up", ns=ns)]
        bad = [s for s in steps if s.returncode != 0]
        if bad:
            raise SystemExit(f"soak --network: cannot wire the namespace: {bad[0].stderr.strip()}")
        yield Lan(ns, here, addrs, legit)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


def network_show(show_path: Path, out: Path, token: str) -> Path:
    """The show opened to the LAN, with latent directions and a bent layer on its `eq` piece (so
    the refresh floods have something to refresh); paths made absolute. Written into OUT."""
    base = show_path.resolve().parent
    text = show_path.read_text()
    text = text.replace('piece = "../', f'piece = "{base.parent}/').replace('start = "', f'start = "{base}/')
    lines, out_lines, section = text.splitlines(), [], None
    for line in lines:
        stripped = line.split("#")[0].strip()
        if stripped.startswith("["):
            section = stripped
        if section == "[web]" and stripped.split("=")[0].strip() in ("host", "token"):
            continue
        out_lines.append(line)
        if stripped == "[web]":
            out_lines += ['host = "0.0.0.0"', f'token = "{token}"']
    out_lines += ["", "[pieces.eq.directions]", "count = 4",
                  "", "[[pieces.eq.bend]]", 'name = "cut"', 'layer = "b8.1"', 'op = "ablate"',
                  'channels = "cluster"', "clusters = 4", "cluster = 1"]
    path = out / "network-show.toml"
    path.write_text("\n".join(out_lines) + "\n")
    return path


class NetworkAttack:
    """The three kinds of process, started and judged together."""

    def __init__(self, lan_: Lan, web_port: int, osc_port: int, token: str, seconds: float, out: Path,
                 fd_limit: int, ws_rate: float, nice: int = 0):
        self.lan, self.out, self.nice = lan_, out, nice
        py, me = sys.executable, str(HERE)
        common = ["--port", str(web_port), "--seconds", str(seconds)]
        ns = ["ip", "netns", "exec", lan_.ns]
        self.commands = {
            "lan-attack": ns + [py, me, "lan-attack", "--host", lan_.here, "--token", token, "--bind",
                                ",".join(lan_.attackers), "--connections", str(fd_limit + 100),
                                "--ws-rate", str(ws_rate), *common],
            "loop-attack": [py, me, "loop-attack", "--host", "127.0.0.1", "--osc-port", str(osc_port), *common],
            "legit-lan": ns + [py, me, "legit", "--host", lan_.here, "--bind", lan_.legit, "--token", token, *common],
            "legit-loopback": [py, me, "legit", "--host", "127.0.0.1", *common],
        }
        self.procs: dict[str, subprocess.Popen] = {}

    def start(self) -> None:
        for name, cmd in self.commands.items():
            # The attackers stand for other machines: below the show's priority (see --attacker-nice);
            # the legitimate clients, a phone or a laptop beside it, at its own.
            nice = self.nice if "attack" in name else 0
            self.procs[name] = subprocess.Popen(["nice", "-n", str(nice), *cmd, "--json", str(self.out / f"{name}.json")],
                                                stdout=subprocess.DEVNULL, stderr=open(self.out / f"{name}.err", "w"))

    def join(self, timeout: float = 60.0) -> None:
        end = time.monotonic() + timeout
        for p in self.procs.values():
            try:
                p.wait(max(0.1, end - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()

    def results(self) -> dict:
        res = {}
        for name in self.commands:
            f = self.out / f"{name}.json"
            res[name] = json.loads(f.read_text()) if f.exists() else {"missing": True}
        return res

    @staticmethod
    def checks(res: dict) -> dict[str, bool]:
        loop, lan_, legit = res["loop-attack"], res["lan-attack"], (res["legit-lan"], res["legit-loopback"])
        return {
            "rebinding never served (HTTP and websocket)": not loop.get("missing") and loop["rebind_tries"] > 0
            and loop["rebind_served"] == 0 and loop["rebind_ws_upgraded"] == 0,
            "refresh floods sent": not loop.get("missing") and loop["refresh_sent"] > 0,
            "connection floods reached the fd limit's worth": not lan_.get("missing") and lan_["rounds"] > 0,
            # 64 attackers; the legitimate followers may displace two of them (fair places per address)
            "the 64 websocket attackers ran (62 or more at once)": not lan_.get("missing")
            and lan_["ws_clients_max"] >= 62,
            "legitimate page served throughout (LAN and loopback)": all(
                not g.get("missing") and g["http_ok"] > 0 and g["http_failed"] == 0 for g in legit),
            "legitimate websocket followed throughout (LAN and loopback)": all(
                not g.get("missing") and g["ws_messages"] > 0 and g["ws_longest_gap_s"] < 25 for g in legit),
        }


# ------------------------------------------------------------------------------------ the processes

def _osc(addr: str, *floats: float) -> bytes:
    """One OSC message of floats, built by python-osc as every other OSC sender here is."""
    from pythonosc.osc_message_builder import OscMessageBuilder
    b = OscMessageBuilder(address=addr)
    for f in floats:
        b.add_arg(float(f))
    return b.build().dgram


def _flood_connections(host: str, port: int, binds: list[str], total: int, deadline: float, stats: dict) -> None:
    """Rounds of `total` connections spread over the bound addresses: held 20 s, then dropped."""
    while time.monotonic() < deadline - 25:
        held, failures = [], 0
        for i in range(total):
            if time.monotonic() > deadline - 25 or failures > 50:
                break
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.settimeout(1.0)
            try:
                s.bind((binds[i % len(binds)], 0))
                s.connect((host, port))
                if i % 2:  # slowloris: a request line and one header, then nothing
                    s.send(b"GET /control HTTP/1.1\r\nHost: x\r\n")
                held.append(s)
            except OSError:
                failures += 1
                s.close()
        stats["rounds"] += 1
        stats["opened"] += len(held)
        stats["open_failures"] += failures
        time.sleep(20)
        closed_by_show = 0
        for s in held:
            try:
                s.setblocking(False)
                if s.recv(1 << 16) == b"":
                    closed_by_show += 1
            except BlockingIOError:
                pass
            except OSError:
                closed_by_show += 1
            s.close()
        stats["closed_by_show_within_20s"] += closed_by_show
        time.sleep(5)


async def _ws_client(session, url: str, i: int, rate: float, deadline: float, stats: dict) -> None:
    import aiohttp
    addrs = ["/unstable/eq/hue", "/unstable/eq/saturation", "/unstable/eq/fade", "/unstable/bad/hue",
             "/unstable/bad/fade", FADE, "/unstable/eq/walk_speed", "/unstable/bad/saturation"]
    rng = random.Random(i)
    while time.monotonic() < deadline:
        try:
            async with session.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=2)) as ws:
                stats["ws_connected"] += 1
                stats["_live"] += 1
                stats["ws_clients_max"] = max(stats["ws_clients_max"], stats["_live"])
                for a in addrs:
                    await ws.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": a}))

                async def read():
                    async for msg in ws:
                        stats["ws_received"] += 1

                reader = asyncio.ensure_future(read())
                try:
                    while time.monotonic() < deadline and not ws.closed:
                        # eq's own faders only (never master_fade: the legitimate clients follow it)
                        await ws.send_bytes(_osc(rng.choice(addrs[:5]), rng.random()))
                        stats["ws_sent"] += 1
                        await asyncio.sleep(1.0 / rate)
                finally:
                    reader.cancel()
                    stats["_live"] -= 1
                stats["ws_closed_by_show"] += 1
        except Exception:
            stats["ws_connect_failures"] += 1
            await asyncio.sleep(1.0)


def lan_attack(a) -> dict:
    import resource

    import aiohttp
    # The soak lowered its own limit to the show's (--nofile) before starting us: an attacker has its own.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 65536)), hard))
    deadline = time.monotonic() + a.seconds
    stats = {"rounds": 0, "opened": 0, "open_failures": 0, "closed_by_show_within_20s": 0, "ws_connected": 0,
             "ws_clients_max": 0, "_live": 0, "ws_sent": 0, "ws_received": 0, "ws_closed_by_show": 0,
             "ws_connect_failures": 0}
    binds = a.bind.split(",")
    flood = threading.Thread(target=_flood_connections, args=(a.host, a.port, binds, a.connections, deadline, stats),
                             daemon=True)
    flood.start()

    async def clients():
        url = f"http://{a.host}:{a.port}/?token={a.token}"
        conns = [aiohttp.TCPConnector(local_addr=(b, 0), limit=0) for b in binds[:8]]
        sessions = [aiohttp.ClientSession(connector=c) for c in conns]
        try:
            await asyncio.gather(*(_ws_client(sessions[i % len(sessions)], url, i, a.ws_rate / 64, deadline, stats)
                                   for i in range(64)))
        finally:
            for s in sessions:
                await s.close()

    asyncio.run(clients())
    flood.join(30)
    stats.pop("_live")
    return stats


def loop_attack(a) -> dict:
    """Rebinding attempts over HTTP and websocket, and OSC refresh floods, from loopback."""
    import http.client
    stats = {"rebind_tries": 0, "rebind_served": 0, "rebind_statuses": {}, "rebind_ws_tries": 0,
             "rebind_ws_upgraded": 0, "refresh_sent": 0}
    deadline = time.monotonic() + a.seconds
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)

    def refresh():
        n = 0
        while time.monotonic() < deadline:
            udp.sendto(_osc("/unstable/eq/directions/refresh", 1.0), ("127.0.0.1", a.osc_port))
            if n % 33 == 0:
                udp.sendto(_osc("/unstable/eq/clusters/refresh", 1.0), ("127.0.0.1", a.osc_port))
            stats["refresh_sent"] += 1
            n += 1
            time.sleep(0.01)

    threading.Thread(target=refresh, daemon=True).start()
    foreign = f"attacker.example:{a.port}"
    while time.monotonic() < deadline:
        try:
            c = http.client.HTTPConnection("127.0.0.1", a.port, timeout=3)
            c.request("GET", "/control/show.json", headers={"Host": foreign})
            status = c.getresponse().status
            stats["rebind_tries"] += 1
            stats["rebind_served"] += status == 200
            stats["rebind_statuses"][str(status)] = stats["rebind_statuses"].get(str(status), 0) + 1
            c.close()
            s = socket.create_connection(("127.0.0.1", a.port), timeout=3)
            s.sendall((f"GET / HTTP/1.1\r\nHost: {foreign}\r\nOrigin: http://{foreign}\r\nUpgrade: websocket\r\n"
                       "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                       "Sec-WebSocket-Version: 13\r\n\r\n").encode())
            head = s.recv(4096)
            stats["rebind_ws_tries"] += 1
            stats["rebind_ws_upgraded"] += head.startswith(b"HTTP/1.1 101")
            s.close()
        except OSError:
            pass
        time.sleep(0.25)
    return stats


def legit(a) -> dict:
    """A legitimate page visitor and a websocket follower; every failure counted with its time."""
    import http.client

    import aiohttp
    stats = {"http_ok": 0, "http_failed": 0, "failures": [], "http_ms": [], "ws_messages": 0,
             "ws_longest_gap_s": 0.0, "ws_reconnects": 0}
    t0 = time.monotonic()
    deadline = t0 + a.seconds
    query = f"?token={a.token}" if a.token else ""

    def page():
        while time.monotonic() < deadline:
            t = time.monotonic()
            try:
                c = http.client.HTTPConnection(a.host, a.port, timeout=3,
                                               source_address=(a.bind, 0) if a.bind else None)
                c.request("GET", "/control" + query)
                r = c.getresponse()
                r.read()
                c.close()
                if r.status != 200:
                    raise OSError(f"status {r.status}")
                stats["http_ok"] += 1
                stats["http_ms"].append(round(1000 * (time.monotonic() - t), 1))
            except OSError as e:
                stats["http_failed"] += 1
                stats["failures"].append([round(t - t0, 1), str(e)[:80]])
            time.sleep(max(0.0, 2.0 - (time.monotonic() - t)))

    th = threading.Thread(target=page, daemon=True)
    th.start()

    async def follow():
        conn = aiohttp.TCPConnector(local_addr=(a.bind, 0)) if a.bind else aiohttp.TCPConnector()
        async with aiohttp.ClientSession(connector=conn) as session:
            last = time.monotonic()
            while time.monotonic() < deadline:
                try:
                    async with session.ws_connect(f"http://{a.host}:{a.port}/{query}") as ws:
                        await ws.send_str(json.dumps({"COMMAND": "LISTEN", "DATA": FADE}))
                        while time.monotonic() < deadline:
                            try:
                                msg = await ws.receive(timeout=1.0)
                            except asyncio.TimeoutError:
                                stats["ws_longest_gap_s"] = max(stats["ws_longest_gap_s"], time.monotonic() - last)
                                continue
                            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                                break
                            now = time.monotonic()
                            stats["ws_longest_gap_s"] = max(stats["ws_longest_gap_s"], now - last)
                            last = now
                            stats["ws_messages"] += 1
                except Exception as e:
                    stats["failures"].append([round(time.monotonic() - t0, 1), f"websocket: {e}"[:80]])
                stats["ws_reconnects"] += 1
                await asyncio.sleep(1.0)

    asyncio.run(follow())
    th.join(5)
    ms = sorted(stats.pop("http_ms"))
    stats["http_p50_ms"] = ms[len(ms) // 2] if ms else None
    stats["http_p99_ms"] = ms[min(len(ms) - 1, int(0.99 * len(ms)))] if ms else None
    stats["ws_longest_gap_s"] = round(stats["ws_longest_gap_s"], 2)
    stats["failures"] = stats["failures"][:50]
    return stats


def main() -> int:
    ap = argparse.ArgumentParser(description="one process of the network soak (see the module's docstring)")
    ap.add_argument("mode", choices=["lan-attack", "loop-attack", "legit"])
    ap.add_argument("--host", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--osc-port", type=int, default=None)
    ap.add_argument("--token", default="")
    ap.add_argument("--bind", default="")
    ap.add_argument("--connections", type=int, default=1100)
    ap.add_argument("--ws-rate", type=float, default=1000.0, help="binary OSC messages a second, all 64 clients")
    ap.add_argument("--seconds", type=float, required=True)
    ap.add_argument("--json", type=Path, required=True)
    a = ap.parse_args()
    res = {"lan-attack": lan_attack, "loop-attack": loop_attack, "legit": legit}[a.mode](a)
    a.json.write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
