"""HTTP and websocket on one port: the OSCQuery server and the control page of a live show.

One aiohttp server runs its own asyncio loop in its own thread, beside the OSC server. Like the
OSC handlers it only ever writes into the `ParameterStore` (through the same handlers, see
`OscHandlers.map_controls`), so a browser's fader lands in the automation record exactly as a
TouchOSC fader does, and nothing here touches a model or GL.

    GET /                     the OSCQuery tree (JSON); /unstable/eq/hue the node, ?VALUE one attribute
    GET /?HOST_INFO           NAME, OSC_IP, OSC_PORT, OSC_TRANSPORT, WS_IP, WS_PORT, EXTENSIONS
    websocket on any path     OSCQuery streaming: {"COMMAND": "LISTEN"|"IGNORE", "DATA": path} as text,
                              OSC packets as binary, both ways; PATH_CHANGED when a scene changes
                              the address space; {"COMMAND": "TELEMETRY", "DATA": true} (ours) adds
                              one telemetry message a second
    GET /control              the control page (its assets under /control/, shipped in the package)
    GET /control/show.json    what the page draws (unstable.control.oscquery.AddressSpace.page_schema)
    GET /control/preview.jpg  the newest composed frame, small, a few times a second

Access: a client on this machine (loopback) needs nothing; any other needs the show's token
(`?token=` once, then a cookie), or an address on the `[web] allow` list (OSCQuery tools such as
Chataigne cannot send a token). Without it: 403 and one log line, nothing served, nothing changed.
A websocket opened by a web page from another site (its Origin is not this server) is refused
too: browsers let any page connect to ws://127.0.0.1, and loopback needs no token.

Bad input: HTTP the parser refuses is answered 400 by aiohttp; unknown paths 404, unknown
attributes 400, other methods 405, bodies over `max_body` 413, websocket messages over
`max_message` close the socket (1009), a client sending more than `rate` messages a second is
dropped past its burst and closed when it keeps on (1008). Every line a client can provoke is
rate-limited; the show's frames never wait on this thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import ipaddress
import json
import logging
import math
import secrets
import socket
import threading
import time
from importlib import resources
from typing import Any, Callable, Iterable
from urllib.parse import urlsplit

import numpy as np

from ..errors import UnstableError
from .dispatch import OscDispatcher
from .handlers import OscHandlers
from .oscquery import EXTENSIONS, AddressSpace
from .osclog import RateLimitedLog, RateLimitFilter, shorten
from .store import ParameterStore
from .transport import AllowList, is_loopback, parse_allow

log = logging.getLogger("unstable.web")

__all__ = ["WebServer", "PreviewSink", "lan_addresses"]

KiB = 1024
_ASSETS = {"index.html": "text/html", "page.js": "text/javascript", "page.css": "text/css"}
COOKIE = "unstable_token"


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (for the printed URL and zeroconf)."""
    import ifaddr
    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback:
                out.append(ip.ip)
    return out


class PreviewSink:
    """A frame-pipeline sink that keeps a small copy of the composed frame for the page.

    It reads pixels back only while a browser is watching (a preview fetched in the last
    `idle` seconds) and at most `fps` times a second, so a show nobody watches pays nothing.
    The render thread only copies a strided, downscaled array; JPEG encoding happens in the
    web thread when a browser asks.
    """

    def __init__(self, fps: float = 4.0, width: int = 320, idle: float = 3.0,
                 clock: Callable[[], float] = time.monotonic):
        self.interval = 1.0 / max(fps, 0.1)
        self.width = int(width)
        self.idle = float(idle)
        self._clock = clock
        self._lock = threading.Lock()
        self._frame: np.ndarray | None = None
        self._number = -1
        self._taken = -float("inf")
        self._asked = -float("inf")
        self._jpeg: tuple[int, bytes] | None = None
        self.reads = 0  # readbacks made for the preview (tests and benchmarks check it stays 0 unwatched)

    @property
    def watched(self) -> bool:
        return self._clock() - self._asked < self.idle

    def put(self, frame: int, compositor) -> None:
        now = self._clock()
        if now - self._asked >= self.idle or now - self._taken < self.interval:
            return
        self._taken = now
        rgb = compositor.read()  # [H, W, 3] uint8, a reused buffer
        step = max(1, -(-rgb.shape[1] // self.width))
        small = np.ascontiguousarray(rgb[::step, ::step])
        self.reads += 1
        with self._lock:
            self._frame, self._number = small, frame

    def jpeg(self) -> tuple[int, bytes] | None:
        """(frame number, JPEG bytes) of the newest preview, or None before the first; marks the
        preview as watched."""
        self._asked = self._clock()
        with self._lock:
            frame, number = self._frame, self._number
        if frame is None:
            return None
        if self._jpeg is not None and self._jpeg[0] == number:
            return self._jpeg
        from PIL import Image
        buf = io.BytesIO()
        Image.fromarray(frame).save(buf, format="JPEG", quality=80)
        self._jpeg = (number, buf.getvalue())
        return self._jpeg

    def close(self) -> None:
        pass


class _Client:
    """One websocket client: what it listens to, its sender identity and its message budget."""

    __slots__ = ("ws", "origin", "listens", "telemetry", "pending", "wake", "tokens", "stamp", "dropped", "flooded")

    def __init__(self, ws, origin, rate: float):
        self.ws = ws
        self.origin = origin
        self.listens: set[str] = set()
        self.telemetry = False
        self.pending: dict[str, bytes | str] = {}   # newest value of each path: bursts coalesce
        self.wake = asyncio.Event()
        self.tokens = rate * 2.0
        self.stamp = time.monotonic()
        self.dropped = 0
        self.flooded = False


class WebServer:
    """The OSCQuery server and control page of a show, over its `ParameterStore`.

    host/port: where to listen (127.0.0.1 by default; 0: any free port). token: what clients from
    other machines must show (None: a random one). allow: hosts or networks that need no token.
    osc_host/osc_port: the show's OSC server, for HOST_INFO. scenes: scene names for the page.
    preview: the PreviewSink the show feeds (None: no preview). advertise: announce over
    zeroconf (`_oscjson._tcp`, `_osc._udp`) when listening beyond loopback.
    """

    def __init__(self, store: ParameterStore, space: AddressSpace, *, host: str = "127.0.0.1",
                 port: int = 9080, token: str | None = None, allow: Iterable[str] | None = None,
                 osc_host: str = "127.0.0.1", osc_port: int | None = None, scenes: Iterable[str] = (),
                 preview: PreviewSink | None = None, advertise: bool = True, max_body: int = 16 * KiB,
                 max_message: int = 16 * KiB, rate: float = 400.0, max_clients: int = 64,
                 log_interval: float = 2.0):
        self.store = store
        self.space = space
        self.host = host
        self.requested_port = int(port)
        self.token = token or secrets.token_urlsafe(12)
        self.allow = AllowList(parse_allow(allow) or ())
        self.osc_host = osc_host
        self.osc_port = osc_port
        self.scenes = list(scenes)
        self.preview = preview
        self.advertise = advertise and not is_loopback(host)
        self.max_body = int(max_body)
        self.max_message = int(max_message)
        self.rate = float(rate)
        self.max_clients = int(max_clients)
        self.warn = RateLimitedLog(log, log_interval)
        self.stats = dict.fromkeys(("requests", "refused", "not_found", "bad_request", "ws_messages",
                                    "ws_dropped", "ws_closed_flood", "applied", "rejected", "unknown",
                                    "malformed", "messages", "errors", "clamped", "oversize"), 0)
        self.dispatcher = OscDispatcher(self.stats, self.warn)
        OscHandlers(store, None, self.stats, self.warn).map_controls(self.dispatcher)
        self.clients: set[_Client] = set()
        self._next_id = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None
        self._port: int | None = None
        self._pending: dict[tuple[str, str], Any] = {}
        self._pending_lock = threading.Lock()
        self._flush_due = False
        self._zeroconf = None
        _limit_aiohttp_logs(log_interval)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (useful with port=0)."""
        return self._port if self._port is not None else self.requested_port

    def url(self, host: str | None = None) -> str:
        """The control page's URL; with the token when the server listens beyond loopback."""
        if host is None:
            host = "127.0.0.1" if self.host in ("0.0.0.0", "::", "") else self.host
        shown = f"[{host}]" if ":" in host else host
        tail = "" if is_loopback(host) else f"?token={self.token}"
        return f"http://{shown}:{self.port}/control{tail}"

    def start(self) -> "WebServer":
        """Bind and serve in a thread of its own; a port in use is an UnstableError."""
        if self._thread is not None:
            return self
        ready = threading.Event()
        failure: list[BaseException] = []

        def run():
            loop = asyncio.new_event_loop()
            self._loop = loop
            asyncio.set_event_loop(loop)
            try:
                loop.run_until_complete(self._serve())
            except BaseException as e:
                failure.append(e)
                ready.set()
                loop.close()
                return
            ready.set()
            try:
                loop.run_forever()
            finally:
                loop.run_until_complete(self._shutdown())
                # Connections the cleanup did not end (a client that stopped mid-request): cancel
                # their handlers so closing the loop leaves nothing pending.
                rest = [t for t in asyncio.all_tasks(loop) if not t.done()]
                for t in rest:
                    t.cancel()
                loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
                loop.close()

        self._thread = threading.Thread(target=run, name="unstable-web", daemon=True)
        self._thread.start()
        ready.wait(30.0)
        if failure:
            self._thread.join(timeout=5.0)
            self._thread = None
            e = failure[0]
            why = e.strerror if isinstance(e, OSError) and e.strerror else e
            raise UnstableError(f"cannot serve the control page on {self.host}:{self.requested_port}: {why}")
        self.store.add_listener(self._on_change)
        if self.advertise:
            self._advertise()
        log.info("OSCQuery and control page on %s", self.url())
        return self

    async def _serve(self) -> None:
        from aiohttp import web
        app = web.Application(middlewares=[self._middleware()], client_max_size=self.max_body)
        app.router.add_get("/control", self._page)
        app.router.add_get("/control/", self._page)
        app.router.add_get("/control/show.json", self._show_json)
        app.router.add_get("/control/preview.jpg", self._preview)
        app.router.add_get("/control/{name}", self._asset)
        app.router.add_get("/favicon.ico", self._no_icon)
        app.router.add_get("/{path:.*}", self._root)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None,
                                     max_line_size=4 * KiB, max_field_size=4 * KiB)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.requested_port, reuse_address=True)
        await site.start()
        self._port = self._runner.addresses[0][1]

    async def _shutdown(self) -> None:
        for c in list(self.clients):
            with contextlib.suppress(Exception):
                await c.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop serving, close every websocket, withdraw the zeroconf adverts."""
        if self._thread is None:
            return
        self.store.remove_listener(self._on_change)
        if self._zeroconf is not None:
            with contextlib.suppress(Exception):
                self._zeroconf.unregister_all_services()
                self._zeroconf.close()
            self._zeroconf = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10.0)
        self._thread = None

    def __enter__(self) -> "WebServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _advertise(self) -> None:
        """Announce `_oscjson._tcp` (this server) and `_osc._udp` (the OSC server) over mDNS, on the
        interfaces this server listens on."""
        from zeroconf import InterfaceChoice, ServiceInfo, Zeroconf
        wildcard = self.host in ("0.0.0.0", "::", "")
        addrs = lan_addresses() if wildcard else [self.host]
        if not addrs:
            return
        try:
            zc = Zeroconf(interfaces=InterfaceChoice.All if wildcard else addrs)
            name = self.space.name
            packed = [socket.inet_aton(a) for a in addrs if ":" not in a]
            zc.register_service(ServiceInfo("_oscjson._tcp.local.", f"{name}._oscjson._tcp.local.",
                                            port=self.port, addresses=packed, server=f"{name}.local.",
                                            properties={"txtvers": "1"}))
            if self.osc_port and not is_loopback(self.osc_host):
                zc.register_service(ServiceInfo("_osc._udp.local.", f"{name}._osc._udp.local.",
                                                port=self.osc_port, addresses=packed, server=f"{name}.local.",
                                                properties={"txtvers": "1"}))
            self._zeroconf = zc
        except Exception as e:  # no multicast on this network: the URL still works
            log.warning("zeroconf advert failed (%s); clients can still connect to %s", e, self.url())

    # -- access ---------------------------------------------------------------------------------

    def _trusted(self, request) -> bool:
        peer = request.remote or ""
        if is_loopback(peer) or self.allow(peer):
            return True
        given = request.query.get("token") or request.cookies.get(COOKIE)
        return given is not None and secrets.compare_digest(given.encode(), self.token.encode())

    def _middleware(self):
        from aiohttp import web

        @web.middleware
        async def guard(request, handler):
            self.stats["requests"] += 1
            if not self._trusted(request):
                self.stats["refused"] += 1
                self.warn.warning(("refused", request.remote), "web: %s %s from %s refused: no valid token "
                                  "(open the URL `unstable live` printed, with ?token=)",
                                  request.method, shorten(request.path), request.remote)
                return web.Response(status=403, text="403: this show needs its token: open the URL that "
                                    "`unstable live` printed (…/control?token=…)\n")
            length = request.content_length
            if length is not None and length > self.max_body:
                self.stats["oversize"] += 1
                self.warn.warning("oversize", "web: %s %s from %s refused: a body of %d bytes (at most %d)",
                                  request.method, shorten(request.path), request.remote, length, self.max_body)
                return web.Response(status=413, text=f"413: a body of {length} bytes is over this server's "
                                    f"limit of {self.max_body}\n")
            if request.method not in ("GET", "HEAD"):
                self.stats["bad_request"] += 1
                self.warn.warning("method", "web: %s %s from %s refused: only GET is served",
                                  request.method, shorten(request.path), request.remote)
                return web.Response(status=405, text=f"405: {request.method} is not served here, only GET\n",
                                    headers={"Allow": "GET"})
            return await handler(request)

        return guard

    def _with_cookie(self, request, response):
        # The page's later requests (preview, websocket) carry the token as a cookie, not in URLs.
        if "token" in request.query and not is_loopback(request.remote or ""):
            response.set_cookie(COOKIE, self.token, httponly=True, samesite="Strict")
        return response

    # -- HTTP -----------------------------------------------------------------------------------

    async def _page(self, request):
        return self._with_cookie(request, self._file("index.html"))

    async def _asset(self, request):
        name = request.match_info["name"]
        if name not in _ASSETS:
            return self._not_found(request, f"no file {name!r} on the control page")
        return self._file(name)

    def _file(self, name: str):
        from aiohttp import web
        data = resources.files("unstable.control").joinpath("web", name).read_bytes()
        return web.Response(body=data, content_type=_ASSETS[name], charset="utf-8",
                            headers={"Cache-Control": "no-cache"})

    async def _no_icon(self, request):
        from aiohttp import web
        return web.Response(status=204)  # browsers ask for one on every page: not worth a log line

    async def _show_json(self, request):
        from aiohttp import web
        return web.json_response(self.space.page_schema(self.scenes))

    async def _preview(self, request):
        from aiohttp import web
        got = self.preview.jpeg() if self.preview is not None else None
        if got is None:
            return web.Response(status=503, text="503: no preview frame yet\n", headers={"Retry-After": "1"})
        number, data = got
        return web.Response(body=data, content_type="image/jpeg",
                            headers={"Cache-Control": "no-store", "X-Frame": str(number)})

    def _not_found(self, request, why: str):
        from aiohttp import web
        self.stats["not_found"] += 1
        self.warn.warning("not_found", "web: %s from %s: %s", shorten(request.path_qs), request.remote, why)
        return web.Response(status=404, text=f"404: {why}\n")

    async def _root(self, request):
        from aiohttp import web
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._websocket(request)
        path = "/" + request.match_info["path"]
        path = path.rstrip("/") or "/"
        attrs = [k for k in request.query if k != "token"]
        if len(attrs) > 1:
            self.stats["bad_request"] += 1
            return web.Response(status=400, text=f"400: ask for one attribute at a time, got {', '.join(attrs)}\n")
        if attrs and attrs[0] == "HOST_INFO":
            return web.json_response(self._host_info(request))
        if attrs:
            status, body = self.space.attribute(path, attrs[0])
            if status == 400:
                self.stats["bad_request"] += 1
                self.warn.warning("attribute", "web: %s from %s: unknown attribute %s", shorten(path),
                                  request.remote, shorten(attrs[0]))
                return web.Response(status=400, text=f"400: unknown attribute {attrs[0][:40]!r}\n")
            if status == 404:
                return self._not_found(request, f"no OSC node at {path[:80]}")
            if status == 204:
                return web.Response(status=204)
            return web.json_response(body)
        node = self.space.node(path)
        if node is None:
            return self._not_found(request, f"no OSC node at {path[:80]}")
        return web.json_response(node)

    def _host_info(self, request) -> dict:
        here = (request.transport.get_extra_info("sockname") or ("127.0.0.1",))[0] if request.transport else "127.0.0.1"
        osc_ip = here if self.osc_host in ("0.0.0.0", "::", "") else self.osc_host
        info = {"NAME": self.space.name, "OSC_TRANSPORT": "UDP", "WS_IP": here, "WS_PORT": self.port,
                "EXTENSIONS": dict(EXTENSIONS)}
        if self.osc_port is not None:
            info.update(OSC_IP=osc_ip, OSC_PORT=self.osc_port)
        return info

    # -- websocket ------------------------------------------------------------------------------

    async def _websocket(self, request):
        from aiohttp import WSMsgType, web
        origin = request.headers.get("Origin")
        if origin is not None and urlsplit(origin).netloc != request.host:
            # A page from another site open in a browser on this machine would otherwise reach the
            # show through loopback: only our own page (and tools that send no Origin) may connect.
            self.stats["refused"] += 1
            self.warn.warning(("origin", request.remote), "web: websocket from %s refused: opened by a page "
                              "from %s, not this show's page", request.remote, shorten(origin))
            return web.Response(status=403, text="403: websockets are for this show's own page\n")
        if len(self.clients) >= self.max_clients:
            self.warn.warning("full", "web: websocket from %s refused: %d clients already", request.remote,
                              len(self.clients))
            return web.Response(status=503, text=f"503: {len(self.clients)} websocket clients already\n")
        ws = web.WebSocketResponse(max_msg_size=self.max_message, heartbeat=30.0)
        await ws.prepare(request)
        self._next_id += 1
        client = _Client(ws, (f"web:{request.remote}", self._next_id), self.rate)
        self.clients.add(client)
        writer = asyncio.ensure_future(self._writer(client))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.ERROR:
                    break
                if not self._budget(client):
                    if client.flooded:
                        self.stats["ws_closed_flood"] += 1
                        log.warning("web: websocket %s closed: it kept sending more than %g messages/s",
                                    client.origin[0], self.rate)
                        await ws.close(code=1008, message=b"message flood", drain=False)
                        break
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
        if ws.close_code == 1009:
            self.warn.warning("ws_size", "web: websocket from %s closed: a message over %d bytes",
                              request.remote, self.max_message)
        return ws

    def _budget(self, client: _Client) -> bool:
        """A token bucket of `rate` messages a second, burst 2 s: past it messages are dropped, and a
        client that keeps flooding for 5 s worth of its budget is closed."""
        now = time.monotonic()
        client.tokens = min(self.rate * 2.0, client.tokens + (now - client.stamp) * self.rate)
        client.stamp = now
        if client.tokens >= 1.0:
            client.tokens -= 1.0
            return True
        client.dropped += 1
        self.stats["ws_dropped"] += 1
        self.warn.warning(("flood", client.origin[0]), "web: websocket %s sends more than %g messages/s; "
                          "dropping the rest", client.origin[0], self.rate)
        client.flooded = client.dropped > self.rate * 5
        return False

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
            batch, client.pending = client.pending, {}
            for item in batch.values():
                if client.ws.closed:
                    return
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

    def _on_change(self, keys, origin) -> None:
        with self._pending_lock:
            for k in keys:
                self._pending[k] = origin
            if self._flush_due or self._loop is None:
                return
            self._flush_due = True
        with contextlib.suppress(RuntimeError):  # the loop is closing
            self._loop.call_soon_threadsafe(self._flush)

    def _flush(self) -> None:
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
        if self._loop is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._broadcast, "\0path", text)

    def show_pieces(self, pieces: Iterable[str]) -> None:
        """The current scene shows these pieces: the tree follows, PATH_CHANGED if it changed."""
        if self.space.set_shown(pieces):
            self.path_changed("/unstable")

    def telemetry(self, line: dict) -> None:
        """One second's telemetry to the clients that asked for it (any thread; JSON-safe dict)."""
        if self._loop is None or not any(c.telemetry for c in list(self.clients)):
            return
        try:
            text = json.dumps({"COMMAND": "TELEMETRY", "DATA": _json_safe(line)})
        except (TypeError, ValueError) as e:  # a value JSON cannot hold: the page misses one second
            self.warn.warning("telemetry", "web: a telemetry line could not be sent to the page: %s", e)
            return
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._broadcast, "\0telemetry", text, True)


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


class _OneLine(logging.Filter):
    """aiohttp logs a request its parser refuses (a bad request line, a header too long) as an
    error with a traceback; it is the client's mistake, so make it one warning line that says
    what was wrong, from whom."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if exc is not None:
            why = " ".join(str(exc).split())
            why = why[:160] + ("..." if len(why) > 160 else "")
            record.msg = f"web: {record.getMessage()}: refused, {type(exc).__name__}: {why}"
            record.args = None
            record.exc_info = None
            record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


_aiohttp_filters: tuple | None = None


def _limit_aiohttp_logs(interval: float) -> None:
    """One line per request aiohttp's parser refuses, rate-limited (installed once per process)."""
    global _aiohttp_filters
    if _aiohttp_filters is None:
        _aiohttp_filters = (_OneLine(), RateLimitFilter(interval, match="aiohttp"))
        for name in ("aiohttp.server", "aiohttp.web", "aiohttp.access", "aiohttp.websocket"):
            for f in _aiohttp_filters:
                logging.getLogger(name).addFilter(f)
