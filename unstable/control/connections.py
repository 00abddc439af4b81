"""Who gets a TCP connection to the web server, and for how long.

asyncio's own accept loop takes every connection the kernel queues until the process runs out of
file descriptors, then logs a traceback per failed accept and retries every second; connections
that never send a request stay open for aiohttp's keep-alive time (an hour). Against a flood from
the LAN that meant no fds left for the final checkpoints. `ConnectionGuard` accepts instead:

- at most `max_per_address` connections from one address (an IPv6 /64 counts as one address:
  a single host usually holds the whole prefix) and `max_connections` in all; when all are taken,
  a connection from an address that holds fewer takes the place of the oldest connection without a
  request from the heaviest address that has one (so a flood from a few addresses cannot lock out a
  phone that arrives after it, even when the heaviest address holds only served websockets); one
  that has sent part of a request is left alone for `evict_grace` seconds (a page whose request or
  websocket upgrade is still arriving on a busy machine);
- never a connection whose descriptor lands within `fd_reserve` of the process's limit, so the
  show can always open its checkpoints, recordings and stills (descriptors are allocated lowest
  first: an accepted socket numbered n means n descriptors are already in use);
- when accept itself fails for lack of descriptors, listening pauses for a moment (one log line),
  instead of spinning on a socket that stays readable;
- a connection that has not sent a whole request `idle_timeout` seconds after it opened is closed
  (aiohttp's keep-alive timeout, set to the same value, closes idle ones between requests);
- an address that went over its cap, or started a request and did not finish it in time
  (slowloris), or whose websocket was closed for flooding, is in the penalty box (penalty.py) for
  `penalty` seconds: its connections are closed, and new ones closed as soon as they are accepted.

A refused connection gets a short 503 and is closed at once. Every line here is rate-limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import logging
import socket

try:
    import resource
except ImportError:  # not on this platform: only the explicit caps apply
    resource = None

from .osclog import RateLimitedLog
from .penalty import PenaltyBox
from .transport import is_loopback

log = logging.getLogger("unstable.web")

__all__ = ["ConnectionGuard", "address_key", "loop_error_handler"]

_OUT_OF_FDS = {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
_REFUSED = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nConnection: close\r\n"
            b"Retry-After: 5\r\nContent-Length: 40\r\n\r\n503: too many connections; try again.\n\n")


def address_key(peer: str) -> str:
    """What the per-address cap counts by: the address, or an IPv6 address's /64 network."""
    try:
        ip = ipaddress.ip_address(peer.split("%", 1)[0])
    except ValueError:
        return peer
    if ip.version == 4:
        return str(ip)
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.ip_network(f"{ip}/64", strict=False))


def fd_limit() -> int:
    """The process's soft limit of open file descriptors (a large number when unlimited)."""
    if resource is None:
        return 1 << 20
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 1 << 20 if soft == resource.RLIM_INFINITY else int(soft)


class _Conn:
    """One admitted connection: its address key, transport (once connected) and whether a request
    has reached the server on it."""

    __slots__ = ("key", "transport", "served", "heard", "timer", "born")

    def __init__(self, key: str, born: float):
        self.key = key
        self.transport = None
        self.served = False
        self.heard = False  # any bytes received: a request (or a websocket upgrade) may be on its way
        self.timer = None
        self.born = born


class _Counted(asyncio.Protocol):
    """aiohttp's protocol for one connection, forwarded to unchanged; tells the guard when the
    connection ends (aiohttp's handler has __slots__, so it cannot be hooked directly)."""

    __slots__ = ("inner", "guard", "conn")

    def __init__(self, inner, guard: "ConnectionGuard", conn: _Conn):
        self.inner = inner
        self.guard = guard
        self.conn = conn

    def connection_made(self, transport):
        self.conn.transport = transport
        self.guard._by_transport[transport] = self.conn
        self.inner.connection_made(transport)
        if self.conn.key in self.guard.box:  # boxed between its accept and now (the same batch)
            transport.abort()

    def data_received(self, data):
        self.conn.heard = True
        self.inner.data_received(data)

    def eof_received(self):
        return self.inner.eof_received()

    def pause_writing(self):
        self.inner.pause_writing()

    def resume_writing(self):
        self.inner.resume_writing()

    def connection_lost(self, exc):
        try:
            self.inner.connection_lost(exc)
        finally:
            self.guard._gone(self.conn)


class ConnectionGuard:
    """Listens for the web server and admits connections within its caps (see the module doc).

    `factory` makes aiohttp's protocol for a connection (`AppRunner.server`); `warn` and `stats` are
    the web server's. Lives in the server's event loop: `listen` there, `close` there.
    """

    def __init__(self, factory, warn: RateLimitedLog, stats: dict, *, max_connections: int = 256,
                 max_per_address: int = 32, idle_timeout: float = 5.0, fd_reserve: int | None = None,
                 pause: float = 1.0, evict_grace: float | None = None, penalty: float = 30.0,
                 exempt=is_loopback):
        self.factory = factory
        self.warn = warn
        self.stats = stats
        limit = fd_limit()
        # The web server never takes more than half the process's descriptors, whatever is asked.
        self.max_connections = max(1, min(int(max_connections), limit // 2))
        self.max_per_address = max(1, int(max_per_address))
        self.idle_timeout = float(idle_timeout)
        # Long enough for a page's request (or websocket upgrade) to arrive on a busy machine, short
        # enough that a phone arriving just after a flood finds an old flood connection to take.
        self.evict_grace = float(evict_grace) if evict_grace is not None else min(1.0, self.idle_timeout / 5)
        self.fd_reserve = int(fd_reserve) if fd_reserve is not None else max(64, limit // 16)
        self.fd_ceiling = limit - self.fd_reserve
        self.pause = float(pause)
        self.box = PenaltyBox(warn, stats, penalty, exempt)
        self.sockets: list[socket.socket] = []
        self._loop: asyncio.AbstractEventLoop | None = None
        self._per_key: dict[str, dict[_Conn, None]] = {}  # oldest first
        self._conns: set[_Conn] = set()
        self._by_transport: dict = {}
        for k in ("conn_accepted", "conn_refused", "conn_evicted", "conn_idle_closed", "conn_paused"):
            stats.setdefault(k, 0)

    @property
    def open(self) -> int:
        """Connections admitted and not yet closed."""
        return len(self._conns)

    def listen(self, host: str, port: int) -> int:
        """Bind `host:port` ('' or '::' or '0.0.0.0' for every interface) and start admitting;
        returns the bound port. An address in use is an OSError."""
        self._loop = asyncio.get_running_loop()
        infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        seen = set()
        try:
            for family, kind, proto, _, addr in infos:
                if (family, addr[0]) in seen:
                    continue
                seen.add((family, addr[0]))
                s = socket.socket(family, kind, proto)
                self.sockets.append(s)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6 and len(infos) > 1:
                    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if port == 0 and len(self.sockets) > 1:  # one port for every interface
                    addr = (addr[0], self.sockets[0].getsockname()[1], *addr[2:])
                s.bind(addr)
                s.listen(128)
                s.setblocking(False)
        except OSError:
            self.close()
            raise
        for s in self.sockets:
            self._loop.add_reader(s.fileno(), self._accept, s)
        return self.sockets[0].getsockname()[1]

    def close(self) -> None:
        """Stop listening (the connections themselves end with the server)."""
        for s in self.sockets:
            if self._loop is not None and s.fileno() >= 0:
                self._loop.remove_reader(s.fileno())
            s.close()
        self.sockets = []
        for c in list(self._conns):
            if c.timer is not None:
                c.timer.cancel()

    def served(self, transport) -> None:
        """A request arrived on `transport`: its connection is past the first-request timeout."""
        conn = self._by_transport.get(transport)
        if conn is not None and not conn.served:
            conn.served = True
            if conn.timer is not None:
                conn.timer.cancel()
                conn.timer = None

    @staticmethod
    def middleware(guard):
        """The aiohttp middleware that tells the guard (`guard()`, made once the server runs) which
        connections have sent a request: those are past the first-request timeout."""
        from aiohttp import web

        @web.middleware
        async def seen(request, handler):
            guard().served(request.transport)
            return await handler(request)

        return seen

    # -- the accept loop ------------------------------------------------------------------------

    def _accept(self, sock: socket.socket) -> None:
        for _ in range(64):  # a batch per wake-up, as asyncio does; the next comes with the next event
            try:
                conn, addr = sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in _OUT_OF_FDS:
                    self._pause_listening(sock, e)
                    return
                if e.errno in (errno.ECONNABORTED, errno.EPROTO, errno.EPERM):
                    continue  # that client gave up before we took it
                self.warn.warning("accept", "web: accept failed: %s", e)
                return
            if self.box.holds(address_key(addr[0])):
                conn.close()  # before aiohttp sees a byte: this is all a boxed address costs
                continue
            try:
                self._admit(conn, addr[0])
            except Exception as e:  # never leave a socket behind, nor the listener without its reader
                conn.close()
                self.warn.warning("admit", "web: a connection from %s failed: %s: %s", addr[0], type(e).__name__, e)

    def _pause_listening(self, sock: socket.socket, e: OSError) -> None:
        # The pending connection stays queued, so the socket stays readable: without a pause this
        # would spin (asyncio's own loop logged a traceback per try).
        self.stats["conn_paused"] += 1
        self.warn.warning("out_of_fds", "web: out of file descriptors (%s, %d connections open); not "
                          "accepting for %gs", e.strerror, len(self._conns), self.pause)
        fd = sock.fileno()
        self._loop.remove_reader(fd)

        def resume():
            if sock.fileno() >= 0:
                self._loop.add_reader(sock.fileno(), self._accept, sock)

        self._loop.call_later(self.pause, resume)

    def _admit(self, conn: socket.socket, peer: str) -> None:
        key = address_key(peer)
        held = len(self._per_key.get(key, ()))
        why = None
        if held >= self.max_per_address:
            why = f"{held} connections open from {key}, the most from one address"
        elif conn.fileno() >= self.fd_ceiling and not self._evict_for(held):
            # An eviction frees a descriptor for the one taken: the reserve stays whole.
            why = (f"the process has {conn.fileno()} files open, within {self.fd_reserve} of its limit "
                   f"(kept for checkpoints and recordings)")
        elif len(self._conns) >= self.max_connections and not self._evict_for(held):
            why = f"{len(self._conns)} connections open, the most this server takes"
        if why is not None:
            self.stats["conn_refused"] += 1
            self.warn.warning(("conn_refused", key), "web: connection from %s refused: %s", peer, why)
            try:
                conn.send(_REFUSED)
            except OSError:
                pass
            conn.close()
            if held >= self.max_per_address:  # no browser holds that many: a flood
                self.punish(key, peer, why)
            return
        self.stats["conn_accepted"] += 1
        c = _Conn(key, self._loop.time())
        self._conns.add(c)
        self._per_key.setdefault(key, {})[c] = None
        c.timer = self._loop.call_later(self.idle_timeout, self._first_request_due, c, peer)
        conn.setblocking(False)
        with contextlib.suppress(OSError):
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = self._loop.create_task(self._connect(conn, c))
        task.add_done_callback(_quiet)

    async def _connect(self, conn: socket.socket, c: _Conn) -> None:
        try:
            await self._loop.connect_accepted_socket(lambda: _Counted(self.factory(), self, c), conn)
        except OSError:  # the client went away while we set it up
            conn.close()
            self._gone(c)

    def _evict_for(self, held: int) -> bool:
        """Make room for a connection from an address that holds `held`: close the oldest connection
        without a request (silent, or talking for `evict_grace` seconds) from the heaviest address
        holding at least two more than `held` that has one."""
        now = self._loop.time()
        for key, conns in sorted(self._per_key.items(), key=lambda kv: -len(kv[1])):
            if len(conns) < held + 2:
                return False
            victim = next((c for c in conns if not c.served and c.transport is not None
                           and (not c.heard or now - c.born >= self.evict_grace)), None)
            if victim is None:
                continue
            self.stats["conn_evicted"] += 1
            self.warn.warning(("conn_evicted", key), "web: a connection from %s without a request closed to "
                              "make room (%d open from there)", key, len(conns))
            victim.transport.abort()
            self._gone(victim)
            return True
        return False

    def _first_request_due(self, c: _Conn, peer: str) -> None:
        c.timer = None
        if c.served or c not in self._conns or c.transport is None:
            return
        self.stats["conn_idle_closed"] += 1
        self.warn.warning(("conn_idle", c.key), "web: connection from %s closed: no request within %gs",
                          peer, self.idle_timeout)
        c.transport.abort()
        if c.heard:  # a request begun and never finished (a silent one may be a browser's preconnect)
            self.punish(c.key, peer, f"a request begun and not finished within {self.idle_timeout:g}s")

    def punish(self, key: str, peer: str, why: str) -> None:
        """Put address `key` (of `peer`) in the penalty box for abuse (`why`, for the log line) and
        close every connection it holds, websockets included (none where it is exempt: loopback)."""
        if self.box.put(key, peer, why):
            for c in list(self._per_key.get(key, ())):
                if c.transport is not None:
                    c.transport.abort()

    def _gone(self, c: _Conn) -> None:
        if c not in self._conns:
            return
        self._conns.discard(c)
        if c.timer is not None:
            c.timer.cancel()
            c.timer = None
        if c.transport is not None:
            self._by_transport.pop(c.transport, None)
        conns = self._per_key.get(c.key)
        if conns is not None:
            conns.pop(c, None)
            if not conns:
                del self._per_key[c.key]


def loop_error_handler(warn: RateLimitedLog):
    """An event loop exception handler: one rate-limited line per kind of error, no traceback.

    asyncio's default handler logs a traceback per event, and a client can provoke some (a
    connection reset mid-write); the loop goes on either way."""
    def handle(loop, context: dict) -> None:
        e = context.get("exception")
        what = f"{type(e).__name__}: {e}" if e is not None else str(context.get("message", "?"))
        what = what if len(what) <= 200 else what[:197] + "..."
        warn.warning(("loop", type(e).__name__ if e is not None else what[:40]), "web: %s", what)

    return handle


def _quiet(task: asyncio.Task) -> None:
    """Retrieve a connection task's outcome, so nothing is logged as 'never retrieved'."""
    if not task.cancelled():
        e = task.exception()
        if e is not None:
            log.debug("web: a connection failed to start: %r", e)
