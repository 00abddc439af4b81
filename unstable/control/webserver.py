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

Access (access.py): a client on this machine (loopback) needs nothing; any other needs the
show's token (`?token=` once, then a cookie), or an address on the `[web] allow` list (OSCQuery
tools such as Chataigne cannot send a token). Without it: 403 and one log line, nothing served,
nothing changed. A websocket opened by a web page from another site (its Origin is not this
server) is refused too (websockets.py): browsers let any page connect to ws://127.0.0.1, and
loopback needs no token. A request that calls this server by a name that is not its own (Host
header; DNS rebinding) is refused 403 (access.py). Zeroconf adverts: adverts.py.

Connections (connections.py): at most `max_per_address` from one address and `max_connections` in
all, none within a reserve of the process's file-descriptor limit, and one that sends no request
within `idle_timeout` seconds is closed. An address that floods (over its cap, a request begun
and never finished, a websocket closed for flooding) is refused at accept for `penalty` seconds
(penalty.py; never loopback). Websockets (websockets.py): a message budget per client and one for
all clients together, and a budget for what LISTEN sends out.

Bad input: HTTP the parser refuses is answered 400 by aiohttp; unknown paths 404, unknown
attributes 400, other methods 405, bodies over `max_body` 413, websocket messages over
`max_message` close the socket (1009), a client sending more than `rate` messages a second is
dropped past its burst and closed when it keeps on (1008). Every line a client can provoke is
rate-limited; the show's frames never wait on this thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
from typing import Callable, Iterable


from .dispatch import OscDispatcher
from .handlers import OscHandlers
from .oscquery import AddressSpace
from .osclog import RateLimitedLog, RateLimitFilter
from .access import HostCheck, TokenGate
from .connections import ConnectionGuard
from .adverts import advertise
from .store import ParameterStore
from .serving import serve_in_thread
from .websockets import WebsocketHub
from .routes import ControlRoutes
from .transport import AllowList, is_loopback, parse_allow

log = logging.getLogger("unstable.web")

__all__ = ["WebServer", "page_url"]

KiB = 1024


class WebServer:
    """The OSCQuery server and control page of a show, over its `ParameterStore`.

    host/port: where to listen (127.0.0.1 by default; 0: any free port). token: what clients from
    other machines must show (None: a random one). allow: hosts or networks that need no token.
    osc_host/osc_port: the show's OSC server, for HOST_INFO. scenes: scene names for the page.
    preview: called for each /control/preview.jpg, returns (frame number, JPEG bytes) or None
    before the first frame (the show passes its PreviewSink's `jpeg`; None: no preview). A callable,
    not the sink, so that control/ never imports the frame pipeline above it. advertise: announce over
    zeroconf (`_oscjson._tcp`, `_osc._udp`) when listening beyond loopback. hosts: names this
    server answers to besides its machine's own (the Host check). idle_timeout, max_connections,
    max_per_address, penalty: see connections.py. rate, ws_total_rate, ws_out_rate: websocket
    messages a second per client, from all clients together, and to all clients together
    (websockets.py).
    """

    def __init__(self, store: ParameterStore, space: AddressSpace, *, host: str = "127.0.0.1",
                 port: int = 9080, token: str | None = None, allow: Iterable[str] | None = None,
                 osc_host: str = "127.0.0.1", osc_port: int | None = None, scenes: Iterable[str] = (),
                 preview: Callable[[], tuple[int, bytes] | None] | None = None, advertise: bool = True,
                 max_body: int = 16 * KiB,
                 max_message: int = 16 * KiB, rate: float = 400.0, max_clients: int = 64,
                 log_interval: float = 2.0, hosts: Iterable[str] = (), idle_timeout: float = 5.0,
                 max_connections: int = 256, max_per_address: int = 32, ws_total_rate: float = 600.0,
                 ws_out_rate: float = 1000.0, penalty: float = 30.0):
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
        self.idle_timeout = float(idle_timeout)
        self._caps = dict(max_connections=int(max_connections), max_per_address=int(max_per_address),
                          penalty=float(penalty))
        # Keys name the client, so a sender with many addresses could vary them: a total too.
        self.warn = RateLimitedLog(log, log_interval, per_minute=60)
        self.stats = dict.fromkeys(("requests", "refused", "not_found", "bad_request", "ws_messages",
                                    "ws_dropped", "ws_closed_flood", "applied", "rejected", "unknown",
                                    "malformed", "messages", "errors", "clamped", "oversize"), 0)
        names = [*hosts, f"{space.name}.local"] + ([] if host in ("0.0.0.0", "::", "") else [host])
        self.gate = TokenGate(self.token, self.allow, self.max_body, self.stats, self.warn, HostCheck(names))
        self.dispatcher = OscDispatcher(self.stats, self.warn)
        OscHandlers(store, None, self.stats, self.warn).map_controls(self.dispatcher)
        self.hub = WebsocketHub(space, self.dispatcher, self.stats, self.warn, max_message=max_message,
                                rate=rate, max_clients=max_clients, total_rate=ws_total_rate,
                                out_rate=ws_out_rate)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._runner = None
        self.guard: ConnectionGuard | None = None
        self._port: int | None = None
        self._zeroconf = None
        _limit_aiohttp_logs(log_interval)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (useful with port=0)."""
        return self._port if self._port is not None else self.requested_port

    def url(self, host: str | None = None) -> str:
        """The control page's URL; with the token when the server listens beyond loopback."""
        return page_url(self.host, self.port, self.token, host)

    def start(self) -> "WebServer":
        """Bind and serve in a thread of its own; a port in use is an UnstableError."""
        if self._thread is not None:
            return self

        def took(loop):
            self._loop = self.hub.loop = loop

        self._thread = serve_in_thread("unstable-web", f"the control page on {self.host}:{self.requested_port}",
                                       self._serve, self._shutdown, self.warn, took)
        self.store.add_listener(self.hub.on_change)
        if self.advertise:
            self._zeroconf = advertise(self.space.name, self.host, self.port, self.osc_host, self.osc_port, self.url())
        log.info("OSCQuery and control page on %s", self.url())
        return self

    async def _serve(self) -> None:
        from aiohttp import web
        app = web.Application(middlewares=[ConnectionGuard.middleware(lambda: self.guard), self.gate.middleware()],
                              client_max_size=self.max_body)
        ControlRoutes(self).add_to(app)
        # keepalive_timeout: an idle connection between requests is closed as soon as one that never
        # sent its first (the guard's timer), not after aiohttp's default hour.
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, keepalive_timeout=self.idle_timeout,
                                     max_line_size=4 * KiB, max_field_size=4 * KiB)
        await self._runner.setup()
        self.guard = ConnectionGuard(self._runner.server, self.warn, self.stats, idle_timeout=self.idle_timeout,
                                     **self._caps)
        self.hub.on_abuse = self.guard.punish
        self._port = self.guard.listen(self.host, self.requested_port)

    async def _shutdown(self) -> None:
        if self.guard is not None:
            self.guard.close()
        await self.hub.close_all()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop serving, close every websocket, withdraw the zeroconf adverts."""
        if self._thread is None:
            return
        self.store.remove_listener(self.hub.on_change)
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

    # -- pushes to the websocket clients (any thread) --------------------------------------------

    def path_changed(self, path: str = "/unstable") -> None:
        """Tell every websocket client that the address space under `path` changed."""
        self.hub.path_changed(path)

    def show_pieces(self, pieces: Iterable[str]) -> None:
        """The current scene shows these pieces: the tree follows, PATH_CHANGED if it changed."""
        self.hub.show_pieces(pieces)

    def sync(self, timeout: float = 5.0) -> bool:
        """Nothing to wait for: this server reads the show's own store (WebProcess.sync waits for its
        replica)."""
        return True

    def telemetry(self, line: dict) -> None:
        """One second's telemetry to the clients that asked for it (JSON-safe dict)."""
        self.hub.telemetry(line)


def page_url(listen: str, port: int, token: str, host: str | None = None) -> str:
    """The control page's URL on a server listening on `listen`:`port`, as reached by `host` (None:
    loopback when it listens everywhere, else its own address); with the token beyond loopback."""
    if host is None:
        host = "127.0.0.1" if listen in ("0.0.0.0", "::", "") else listen
    shown = f"[{host}]" if ":" in host else host
    tail = "" if is_loopback(host) else f"?token={token}"
    return f"http://{shown}:{port}/control{tail}"


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
