"""The websocket side of the OSCQuery server: LISTEN/IGNORE streaming as binary OSC, binary OSC from
clients into the same handlers as UDP, PATH_CHANGED and telemetry for the control page, and the
limits: per client (a message budget, a size limit), a client count, and budgets for all clients
together, in and out.

In: each client may send `rate` messages a second (burst 2 s; a client that keeps flooding is
closed, and its address put in the penalty box: `on_abuse`). All clients together may send
`total_rate` (600 by default: four performers dragging two faders each at 60 Hz, with room to
spare): half of it is shared evenly among the clients connected, so each always has its part, and
the other half is a pool for whoever asks first; what is over is dropped (without closing anyone:
they may all be legitimate, just many).

Out: LISTEN sends each change to every client listening to its path, so N clients multiply what
the show sends by N. Changes are gathered at most every `flush_interval` seconds (50 Hz: a fader
on a page needs no more), so a flood of changes is one pass over the clients per tick, not one per
change. Everything sent (LISTEN values, PATH_CHANGED, telemetry) draws from one budget of
`out_rate` messages a second (1,000 by default), granted to the writers in turn (OutBudget); a
writer waits for it, and meanwhile its pending values coalesce to the newest per path, so a budget
too small for everything loses only values a newer one replaced.

`WebsocketHub` lives in the web server's event loop (`loop`, set when the server runs); store
changes arrive from any thread through `on_change` and are coalesced per client.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
import math
import threading
import time
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

from .connections import address_key
from .dispatch import OscDispatcher
from .oscquery import AddressSpace
from .ws_admission import Admission, OutBudget
from .osclog import RateLimitedLog, shorten

log = logging.getLogger("unstable.web")

__all__ = ["WebsocketHub"]


class _Client:
    """One websocket client: what it listens to, its sender identity and its message budget."""

    __slots__ = ("ws", "origin", "address", "listens", "telemetry", "pending", "wake", "tokens", "stamp", "dropped",
                 "flooded", "share", "share_stamp")

    def __init__(self, ws, origin, rate: float, address: str = ""):
        self.ws = ws
        self.origin = origin
        self.address = address   # what the per-address count goes by (connections.address_key)
        self.listens: set[str] = set()
        self.telemetry = False
        self.pending: dict[str, bytes | str] = {}   # newest value of each path: bursts coalesce
        self.wake = asyncio.Event()
        self.tokens = rate * 2.0
        self.stamp = time.monotonic()
        self.dropped = 0
        self.flooded = False
        self.share = 0.0              # its part of the total budget (Admission.total_budget)
        self.share_stamp = self.stamp


class WebsocketHub:
    """Every websocket client of one show: what each LISTENs to, its budget, its writer.

    `stats` and `warn` are the web server's (one set of counters and one log limit for both);
    `dispatcher` applies the binary OSC clients send, exactly as UDP OSC is applied.
    """

    def __init__(self, space: AddressSpace, dispatcher: OscDispatcher, stats: dict, warn: RateLimitedLog, *,
                 max_message: int, rate: float, max_clients: int, total_rate: float = 600.0,
                 out_rate: float = 1000.0, flush_interval: float = 0.02):
        self.space = space
        self.dispatcher = dispatcher
        self.stats = stats
        self.warn = warn
        self.max_message = int(max_message)
        self.rate = float(rate)
        self.max_clients = int(max_clients)
        self.total_rate = float(total_rate)
        self._out = OutBudget(float(out_rate))
        self.flush_interval = float(flush_interval)
        # Called (address key, peer, why) when a client is closed for abuse: the penalty box.
        self.on_abuse: Callable[[str, str, str], None] | None = None
        for k in ("ws_over_total", "ws_out_waits", "ws_flushes"):
            stats.setdefault(k, 0)
        self.clients: set[_Client] = set()
        self.admission = Admission(self.clients, stats, warn, max_clients=max_clients, rate=rate,
                                   total_rate=total_rate)
        self.loop: asyncio.AbstractEventLoop | None = None  # the web server's, while it runs
        self._next_id = 0
        self._pending: dict[tuple[str, str], Any] = {}
        self._pending_lock = threading.Lock()
        self._flush_due = False
        self._last_flush = -math.inf

    async def close_all(self) -> None:
        """Close every client's websocket (the server is stopping)."""
        for c in list(self.clients):
            with contextlib.suppress(Exception):
                await c.ws.close()


    async def handle(self, request):
        """Serve one websocket connection (an upgraded request) until it closes."""
        from aiohttp import WSCloseCode, WSMsgType, web
        origin = request.headers.get("Origin")
        # The Host header itself (request.host would look up this machine's name when it is missing).
        if origin is not None and urlsplit(origin).netloc != request.headers.get("Host", ""):
            # A page from another site open in a browser on this machine would otherwise reach the
            # show through loopback: only our own page (and tools that send no Origin) may connect.
            self.stats["refused"] += 1
            self.warn.warning(("origin", request.remote), "web: websocket from %s refused: opened by a page "
                              "from %s, not this show's page", request.remote, shorten(origin))
            return web.Response(status=403, text="403: websockets are for this show's own page\n")
        address = address_key(request.remote or "")
        victim = None
        if self.admission.taken() >= self.max_clients:
            victim = self.admission.make_room(address)
            if victim is None:
                taken = self.admission.taken()
                self.warn.warning("full", "web: websocket from %s refused: %d clients already", request.remote,
                                  taken)
                return web.Response(status=503, text=f"503: {taken} websocket clients already\n")
        # The place is this newcomer's from here on: closing the client it displaces and the
        # handshake both wait on the network, and a newcomer arriving meanwhile must find it taken.
        joining = self.admission.joining
        joining[address] = joining.get(address, 0) + 1
        try:
            if victim is not None:
                with contextlib.suppress(Exception):
                    await victim.ws.close(code=1013, message=b"room made for another address")
            ws = web.WebSocketResponse(max_msg_size=self.max_message, heartbeat=30.0)
            await ws.prepare(request)
        finally:
            joining[address] -= 1
            if not joining[address]:
                del joining[address]
        self._next_id += 1
        client = _Client(ws, (f"web:{request.remote}", self._next_id), self.rate, address)
        client.share = self.total_rate / 2.0 / (len(self.clients) + 1)  # its part from the start
        self.clients.add(client)
        writer = asyncio.ensure_future(self._writer(client))
        oversize = False
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    # From the error, not ws.close_code: the close handshake replaces that with the
                    # code of the client's reply (1000 from aiohttp's client).
                    oversize = getattr(msg.data, "code", None) == WSCloseCode.MESSAGE_TOO_BIG
                    break
                if not self.admission.budget(client):
                    if client.flooded:
                        self.stats["ws_closed_flood"] += 1
                        # Rate-limited too: a client that floods, is closed and reconnects would
                        # otherwise write a line each time, hundreds a minute.
                        self.warn.warning(("flood_closed", client.origin[0]), "web: websocket %s closed: it "
                                          "kept sending more than %g messages/s", client.origin[0], self.rate)
                        await ws.close(code=1008, message=b"message flood", drain=False)
                        if self.on_abuse is not None:
                            self.on_abuse(address, request.remote or "", f"a websocket kept sending more "
                                          f"than {self.rate:g} messages/s")
                        break
                    continue
                if not self.admission.total_budget(client):
                    continue
                self.stats["ws_messages"] += 1
                if msg.type == WSMsgType.TEXT:
                    self._command(client, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.dispatcher.call_handlers_for_packet(msg.data, client.origin)
        finally:
            self.clients.discard(client)
            writer.cancel()
            with contextlib.suppress(BaseException):
                await writer
        if oversize:
            self.warn.warning("ws_size", "web: websocket from %s closed: a message over %d bytes",
                              request.remote, self.max_message)
        return ws

    def _command(self, client: _Client, text: str) -> None:
        try:
            msg = json.loads(text)
            command, data = msg["COMMAND"], msg.get("DATA")
            if not isinstance(command, str):
                raise TypeError("COMMAND is not a string")
        except (ValueError, KeyError, TypeError) as e:
            self.stats["malformed"] += 1
            self.warn.warning(("ws_json", client.origin[0]), "web: websocket %s sent a malformed command "
                              "(%s): %s", client.origin[0], e.__class__.__name__, shorten(text))
            return
        if command in ("LISTEN", "IGNORE"):
            if not isinstance(data, str) or data not in self.space.methods or self.space.methods[data].is_action:
                self.stats["unknown"] += 1
                self.warn.warning(("ws_listen", client.origin[0]), "web: websocket %s: %s %s is not a method "
                                  "with a value", client.origin[0], command, shorten(data))
                return
            if command == "LISTEN":
                client.listens.add(data)
            else:
                client.listens.discard(data)
                client.pending.pop(data, None)
        elif command == "TELEMETRY":
            client.telemetry = bool(data)
        else:
            self.stats["unknown"] += 1
            self.warn.warning(("ws_cmd", client.origin[0]), "web: websocket %s: unknown command %s",
                              client.origin[0], shorten(command))

    async def _writer(self, client: _Client) -> None:
        """Send a client its pending messages; a burst of changes coalesces to the newest values."""
        while not client.ws.closed:
            await client.wake.wait()
            client.wake.clear()
            while client.pending and not client.ws.closed:
                if not self._out.available():
                    self.stats["ws_out_waits"] += 1
                # What waits here keeps coalescing in `pending`: the newest value of each path goes.
                n = await self._out.acquire(len(client.pending))
                for key in list(itertools.islice(client.pending, n)):
                    item = client.pending.pop(key, None)  # None: IGNOREd while we sent the others
                    if client.ws.closed:
                        return
                    if item is None:
                        continue
                    try:
                        if isinstance(item, str):
                            await client.ws.send_str(item)
                        else:
                            await client.ws.send_bytes(item)
                    except (ConnectionError, RuntimeError):
                        return

    def _queue(self, client: _Client, key: str, item: bytes | str) -> None:
        client.pending[key] = item
        client.wake.set()

    # -- changes from the store (any thread) ----------------------------------------------------

    def on_change(self, keys, origin) -> None:
        """Store listener: the changed keys go to the clients LISTENing (any thread)."""
        with self._pending_lock:
            for k in keys:
                self._pending[k] = origin
            if self._flush_due or self.loop is None:
                return
            self._flush_due = True
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self.loop.call_soon_threadsafe(self._flush_soon)

    def _flush_soon(self) -> None:
        # At once after a quiet spell (a lone fader move goes out without delay), else at the next tick.
        wait = self._last_flush + self.flush_interval - self.loop.time()
        if wait <= 0:
            self._flush()
        else:
            self.loop.call_later(wait, self._flush)

    def _flush(self) -> None:
        self._last_flush = self.loop.time()
        self.stats["ws_flushes"] += 1
        with self._pending_lock:
            pending, self._pending = self._pending, {}
            self._flush_due = False
        if not self.clients:
            return
        for key, origin in pending.items():
            for path in self.space.paths([key]):
                data = None
                for c in self.clients:
                    if path in c.listens and c.origin != origin:  # never echo a client's own move
                        data = data or self.space.message(path)
                        self._queue(c, path, data)

    def _broadcast(self, key: str, text: str, only_telemetry: bool = False) -> None:
        for c in self.clients:
            if not only_telemetry or c.telemetry:
                self._queue(c, key, text)

    def path_changed(self, path: str = "/unstable") -> None:
        """Tell every websocket client that the address space under `path` changed (any thread)."""
        text = json.dumps({"COMMAND": "PATH_CHANGED", "DATA": path})
        if self.loop is not None:
            with contextlib.suppress(RuntimeError):
                self.loop.call_soon_threadsafe(self._broadcast, "\0path", text)

    def show_pieces(self, pieces: Iterable[str]) -> None:
        """The current scene shows these pieces: the tree follows, PATH_CHANGED if it changed."""
        if self.space.set_shown(pieces):
            self.path_changed("/unstable")

    def telemetry(self, line: dict) -> None:
        """One second's telemetry to the clients that asked for it (any thread; JSON-safe dict)."""
        if self.loop is None or not any(c.telemetry for c in list(self.clients)):
            return
        try:
            text = json.dumps({"COMMAND": "TELEMETRY", "DATA": _json_safe(line)})
        except (TypeError, ValueError) as e:  # a value JSON cannot hold: the page misses one second
            self.warn.warning("telemetry", "web: a telemetry line could not be sent to the page: %s", e)
            return
        with contextlib.suppress(RuntimeError):
            self.loop.call_soon_threadsafe(self._broadcast, "\0telemetry", text, True)


def _json_safe(value):
    """`value` with numpy scalars made floats and NaN/infinities made null (the page's JSON.parse
    refuses them)."""
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, (bool, str, int)) or value is None:
        return value
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value)
    return f if math.isfinite(f) else None
