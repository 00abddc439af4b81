"""The OSC server: controllers write into `Params`; every change is fed back to subscribers.

One python-osc UDP server runs in its own thread. It only ever validates a message and writes
into the parameter store (a dict write under a lock), so a burst of messages cannot stall a
frame, and nothing a controller sends is ever evaluated as code. Timetags are not slept on: a
bundle is applied when it arrives and the render loop reads the newest value at its next frame.

Address space (all generated from the schema, see `unstable.control.params.address`):

    /unstable/<piece>/<param>      f    0..1 fader position, mapped onto the parameter's range
    /unstable/<piece>/<param>/raw  f    value in the parameter's own units
    /unstable/subscribe            i    feedback to the sender's host at this port
    /unstable/unsubscribe          i    stop that feedback
    /unstable/sync                      send the full state to every subscriber
    /unstable/scene                i    go to scene n (same as /unstable/show/scene/raw n)
    /unstable/record               i    0|1 (same as /unstable/show/record/raw)
    /unstable/snapshot            [f]   save a still; an argument of 0 (a button's release) is ignored

Feedback: every change goes to every subscriber except the sender's own: the one at the sender's
exact (host, port), or the one that sender subscribed (a controller that sends from one port and
listens on another, as Max's udpsend/udpreceive and TouchOSC do), as the 0..1 value on the plain address and the own-units value on `/raw`, so faders
follow presets and scene changes without an echo of their own move. Changes the engine makes
(origin None) go to everyone. A separate thread sends feedback, coalescing bursts (the newest
value of each parameter, at most every `feedback_interval` seconds).

Bad input never raises: out-of-range values are clamped with a warning; a wrong type or count,
NaN or infinity is rejected with a line naming the address; unknown addresses, malformed or
oversized packets and senders outside the allow-list are counted in `stats` and logged,
rate-limited (one line per kind per `log_interval` seconds, with the number suppressed).
"""

from __future__ import annotations

import ipaddress
import logging
import math
import socket
import threading
import time
from typing import Callable, Iterable

from pythonosc import osc_packet, osc_server
from pythonosc.dispatcher import Dispatcher
from pythonosc.osc_message_builder import OscMessageBuilder

from ..errors import UnstableError
from .params import PREFIX, SHOW, Params, address

log = logging.getLogger("unstable.osc")

MiB = 1 << 20
_PATTERN_CHARS = frozenset("*?[]{}")


class RateLimitedLog:
    """Warnings that cannot flood the log: one line per key per `interval` seconds.

    The next line after a quiet spell says how many were suppressed. Keys are a kind of problem
    (and, for problems on known addresses, the address), so a flood of random addresses costs
    one line per interval, not one per packet.
    """

    def __init__(self, logger: logging.Logger, interval: float = 2.0, max_keys: int = 1024):
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self._last: dict[object, list] = {}  # key -> [time of last line, suppressed since]

    def warning(self, key, msg: str, *args, exc_info=False) -> None:
        """Log `msg % args` at WARNING unless `key` was logged less than `interval` ago."""
        now = time.monotonic()
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return
        suppressed = entry[1] if entry is not None else 0
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = [now, 0]
        if suppressed:
            msg += f" ({suppressed} similar suppressed)"
        self.logger.warning(msg, *args, exc_info=exc_info)


def _show(value, limit: int = 60) -> str:
    """A short, escaped rendering of untrusted input for a log line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _parse_allow(allow: Iterable[str] | None):
    if allow is None:
        return None
    nets = []
    for entry in allow:
        try:
            nets.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise UnstableError(f"OSC allow-list entry {entry!r} is not an IP address or network "
                                "(e.g. '192.168.1.20' or '192.168.1.0/24')") from None
    return tuple(nets)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class _Dispatcher(Dispatcher):
    """python-osc's dispatcher with an exact-match fast path.

    The stock one compiles the incoming address to a regex and tries it against every mapped
    address; ours are plain strings, so a dict lookup answers nearly every message. Incoming OSC
    patterns (`/unstable/*/hue`) still go through python-osc's matcher.
    """

    def __init__(self):
        super().__init__(strict_timing=False)  # never sleep on a timetag inside the handler

    def handlers_for_address(self, address_pattern: str):  # type: ignore[override]
        handlers = self._map.get(address_pattern)
        if handlers:
            return handlers
        if _PATTERN_CHARS.intersection(address_pattern):
            # Patterns fan out over parameters only: `/unstable/*` must not also subscribe, sync
            # and take a snapshot.
            return [h for h in super().handlers_for_address(address_pattern)
                    if getattr(h.callback, "is_param", False)]
        return []


class _UDPServer(osc_server.BlockingOSCUDPServer):
    """python-osc's blocking UDP server with a big receive buffer and our datagram entry point."""

    def __init__(self, server_address, dispatcher, owner: "OscServer"):
        self._owner = owner
        # One byte more than the limit, so an oversized datagram is seen as such, not truncated.
        self.max_packet_size = owner.max_packet + 1
        super().__init__(server_address, dispatcher)

    def server_bind(self):
        # Before bind: the default ~200 KiB buffer drops hundreds of messages in a burst.
        want = self._owner.rcvbuf
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want)
            force = getattr(socket, "SO_RCVBUFFORCE", None)
            if force is not None and self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < want:
                # Capped by net.core.rmem_max; a privileged process may go past the cap.
                try:
                    self.socket.setsockopt(socket.SOL_SOCKET, force, want)
                except OSError:
                    pass
        except OSError as e:
            log.warning("could not set the OSC receive buffer to %d bytes: %s", want, e)
        super().server_bind()

    def verify_request(self, request, client_address) -> bool:
        return True  # every check (and its count) happens in OscServer._on_datagram

    def process_request(self, request, client_address) -> None:
        self._owner._on_datagram(request[0], client_address)


class OscServer:
    """The OSC input and feedback output of a live show, over a `Params` store.

    host/port: where to listen (127.0.0.1 by default; anything else needs `allow`).
    allow: sender hosts or networks accepted (None: anyone who can reach a loopback socket).
    rcvbuf: requested SO_RCVBUF in bytes (Linux caps it at net.core.rmem_max).
    max_packet / max_string / max_address: size limits in bytes / characters.
    """

    def __init__(self, params: Params, *, host: str = "127.0.0.1", port: int = 9000,
                 allow: Iterable[str] | None = None, rcvbuf: int = 4 * MiB, max_packet: int = 8192,
                 max_string: int = 256, max_address: int = 256, max_subscribers: int = 16,
                 feedback_interval: float = 0.01, log_interval: float = 2.0):
        self.params = params
        self.host = host
        self.requested_port = int(port)
        self.allow = _parse_allow(allow)
        if not _is_loopback(host) and not self.allow:
            raise UnstableError(f"OSC on {host!r} reaches beyond this machine: give an allow-list "
                                "of controller addresses (e.g. allow = ['192.168.1.20'])")
        self.rcvbuf = int(rcvbuf)
        self.max_packet = int(max_packet)
        self.max_string = int(max_string)
        self.max_address = int(max_address)
        self.max_subscribers = int(max_subscribers)
        self.feedback_interval = float(feedback_interval)
        self.warn = RateLimitedLog(log, log_interval)
        self.stats = dict.fromkeys(
            ("packets", "messages", "applied", "clamped", "rejected", "unknown", "malformed",
             "oversize", "foreign", "errors", "feedback_sent", "feedback_errors"), 0)
        self.dispatcher = _Dispatcher()
        self._allowed_hosts: dict[str, bool] = {}
        self._subscribers: dict[tuple[str, int], float] = {}  # (host, port) -> when subscribed
        # subscriber -> the (host, port)s that subscribed it: that controller's own changes are
        # not echoed to it even when it sends from another port than it listens on.
        self._senders: dict[tuple[str, int], list[tuple[str, int]]] = {}
        self._sub_lock = threading.Lock()
        self._pending: dict[tuple[str, str], tuple | None] = {}  # key -> origin of newest change
        self._sync_to: list[tuple[str, int]] = []
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._server: _UDPServer | None = None
        self._threads: list[threading.Thread] = []
        self._out: socket.socket | None = None
        self._map_schema()

    # -- address space --------------------------------------------------------------------------

    def _map_schema(self) -> None:
        for piece, name in self.params.keys():
            self.dispatcher.map(address(piece, name), self._param_handler(piece, name, unit=True),
                                needs_reply_address=True)
            self.dispatcher.map(address(piece, name, raw=True),
                                self._param_handler(piece, name, unit=False), needs_reply_address=True)
        self.dispatcher.map(f"{PREFIX}/subscribe", self._on_subscribe, needs_reply_address=True)
        self.dispatcher.map(f"{PREFIX}/unsubscribe", self._on_unsubscribe, needs_reply_address=True)
        self.dispatcher.map(f"{PREFIX}/sync", self._on_sync, needs_reply_address=True)
        self.dispatcher.map(f"{PREFIX}/snapshot", self._on_snapshot, needs_reply_address=True)
        for name in ("scene", "record"):
            if (SHOW, name) in self.params:
                self.dispatcher.map(f"{PREFIX}/{name}",
                                    self._param_handler(SHOW, name, unit=False, pattern_ok=False),
                                    needs_reply_address=True)

    def map(self, addr: str, handler: Callable, needs_reply_address: bool = True) -> None:
        """Add a handler (python-osc signature: `handler(client, address, *args)` when
        `needs_reply_address`). It runs in the OSC thread and must not block; an exception in it
        is logged and counted, never fatal."""
        self.dispatcher.map(addr, handler, needs_reply_address=needs_reply_address)

    def _number(self, addr: str, origin, args) -> float | None:
        """The single finite number in `args`, or None after logging why not."""
        if len(args) != 1:
            self._reject(addr, origin, f"expected one number, got {len(args)} arguments")
            return None
        v = args[0]
        if isinstance(v, bool):
            v = float(v)
        if not isinstance(v, (int, float)):
            self._reject(addr, origin, f"expected a number, got {type(v).__name__} {_show(v)}")
            return None
        v = float(v)
        if not math.isfinite(v):
            self._reject(addr, origin, f"{v!r} is not a finite number")
            return None
        return v

    def _reject(self, addr: str, origin, why: str) -> None:
        self.warn.warning(("rejected", addr, why.split(" ")[0]), "OSC %s from %s:%s rejected: %s",
                          addr, origin[0], origin[1], why)
        self.stats["rejected"] += 1

    def _param_handler(self, piece: str, name: str, unit: bool, pattern_ok: bool = True):
        spec = self.params.spec(piece, name)
        lo, hi = (0.0, 1.0) if unit else (spec.lo, spec.hi)

        def handle(origin, addr, *args):
            v = self._number(addr, origin, args)
            if v is None:
                return
            if not lo <= v <= hi:
                self.warn.warning(("clamped", addr), "OSC %s from %s:%s: %r is outside [%g, %g], "
                                  "clamped", addr, origin[0], origin[1], v, lo, hi)
                self.stats["clamped"] += 1
            if unit:
                self.params.set_unit(piece, name, v, origin)
            else:
                self.params.set(piece, name, v, origin)
            self.stats["applied"] += 1

        handle.is_param = pattern_ok
        return handle

    def _port_arg(self, addr: str, origin, args) -> int | None:
        v = self._number(addr, origin, args)
        if v is None:
            return None
        if v != int(v) or not 1 <= v <= 65535:
            self._reject(addr, origin, f"expected a port 1..65535, got {v!r}")
            return None
        return int(v)

    def _on_subscribe(self, origin, addr, *args) -> None:
        port = self._port_arg(addr, origin, args)
        if port is not None:
            self.subscribe(origin[0], port, sender=origin)

    def _on_unsubscribe(self, origin, addr, *args) -> None:
        port = self._port_arg(addr, origin, args)
        if port is not None:
            with self._sub_lock:
                self._subscribers.pop((origin[0], port), None)
                self._senders.pop((origin[0], port), None)

    def _on_sync(self, origin, addr, *args) -> None:
        self.sync()

    def _on_snapshot(self, origin, addr, *args) -> None:
        if args:
            v = self._number(addr, origin, args)
            if v is None or v == 0.0:  # a TouchOSC button sends 1 on press and 0 on release
                return
        self.params.post_event("snapshot", None, origin)
        self.stats["applied"] += 1

    # -- subscribers ----------------------------------------------------------------------------

    def subscribe(self, host: str, port: int, sender: tuple[str, int] | None = None) -> None:
        """Send feedback to (host, port) from now on, starting with the full state. Changes that
        come from `sender` (the controller's sending address) are not sent back to it."""
        key = (host, int(port))
        with self._sub_lock:
            self._subscribers.pop(key, None)
            self._subscribers[key] = time.monotonic()
            if sender is not None and tuple(sender) != key:
                senders = [s for s in self._senders.get(key, []) if s != tuple(sender)]
                self._senders[key] = (senders + [tuple(sender)])[-8:]  # a restarted controller's new port
            while len(self._subscribers) > self.max_subscribers:
                oldest = next(iter(self._subscribers))
                del self._subscribers[oldest]
                self._senders.pop(oldest, None)
                log.warning("OSC: more than %d subscribers, dropped the oldest %s:%s",
                            self.max_subscribers, *oldest)
        with self._pending_lock:
            self._sync_to.append(key)
        self._wake.set()

    @property
    def subscribers(self) -> list[tuple[str, int]]:
        """The (host, port) feedback goes to, oldest first."""
        with self._sub_lock:
            return list(self._subscribers)

    def sync(self) -> None:
        """Send every parameter's value to every subscriber."""
        with self._pending_lock:
            for key in self.params.keys():
                self._pending[key] = None
        self._wake.set()

    def _on_change(self, keys, origin) -> None:
        # Runs in the writer's thread (OSC or engine): record, wake the sender, nothing more.
        if not self._subscribers:
            return
        with self._pending_lock:
            for key in keys:
                self._pending[key] = origin
        self._wake.set()

    # -- datagrams ------------------------------------------------------------------------------

    def _allowed(self, host: str) -> bool:
        if self.allow is None:
            return True
        ok = self._allowed_hosts.get(host)
        if ok is None:
            try:
                ip = ipaddress.ip_address(host)
                ok = any(ip in net for net in self.allow)
            except ValueError:
                ok = False
            if len(self._allowed_hosts) > 4096:
                self._allowed_hosts.clear()
            self._allowed_hosts[host] = ok
        return ok

    def _on_datagram(self, data: bytes, client) -> None:
        """One UDP datagram from `client` = (host, port), in the server thread. Never raises."""
        # Counters are bumped after the work (and its log line), so a reader who sees a count
        # also sees its effect.
        stats = self.stats
        try:
            if not self._allowed(client[0]):
                self.warn.warning("foreign", "OSC from %s:%s ignored: not in the allow-list", *client[:2])
                stats["foreign"] += 1
                return
            if len(data) > self.max_packet:
                self.warn.warning("oversize", "OSC packet of more than %d bytes from %s:%s ignored",
                                  self.max_packet, *client[:2])
                stats["oversize"] += 1
                return
            try:
                messages = osc_packet.OscPacket(data).messages
            except Exception as e:  # ParseError, and whatever else random bytes provoke
                self.warn.warning("malformed", "malformed OSC packet (%d bytes) from %s:%s ignored: %s",
                                  len(data), client[0], client[1], _show(str(e)))
                stats["malformed"] += 1
                return
            origin = (client[0], client[1])
            for timed in messages:  # timetags ignored on purpose: newest value wins at next frame
                self._on_message(timed.message, origin)
        except Exception:
            self.warn.warning("error", "OSC packet from %s:%s failed", *client[:2], exc_info=True)
            stats["errors"] += 1
        finally:
            stats["packets"] += 1

    def _on_message(self, message, origin) -> None:
        try:
            self._dispatch(message, origin)
        finally:
            self.stats["messages"] += 1

    def _dispatch(self, message, origin) -> None:
        addr = message.address
        if len(addr) > self.max_address:
            self._reject(_show(addr), origin, f"address longer than {self.max_address} characters")
            return
        if not addr.isprintable():  # keeps control characters out of handlers and log lines
            self._reject(_show(addr), origin, "address has unprintable characters")
            return
        args = message.params
        for a in args:
            if isinstance(a, (str, bytes)) and len(a) > self.max_string:
                self._reject(addr, origin, f"string argument longer than {self.max_string} characters")
                return
        if sum(addr.count(c) for c in "*?[{") > 8:
            # python-osc turns patterns into regexes; many wildcards could backtrack for long.
            self._reject(_show(addr), origin, "too many pattern wildcards")
            return
        handlers = self.dispatcher.handlers_for_address(addr)
        if not handlers:
            self.warn.warning("unknown", "OSC address %s from %s:%s is not in the schema, ignored",
                              _show(addr), origin[0], origin[1])
            self.stats["unknown"] += 1
            return
        for handler in handlers:
            try:
                handler.invoke(origin, message)
            except Exception:
                self.warn.warning(("error", addr), "OSC handler for %s failed", addr, exc_info=True)
                self.stats["errors"] += 1

    # -- feedback -------------------------------------------------------------------------------

    def _messages_for(self, keys) -> list[bytes]:
        out = []
        for piece, name in keys:
            spec = self.params.spec(piece, name)
            value = self.params.get(piece, name)
            for addr, v in ((address(piece, name), spec.to_unit(value)),
                            (address(piece, name, raw=True), value)):
                b = OscMessageBuilder(address=addr)
                b.add_arg(float(v), OscMessageBuilder.ARG_TYPE_FLOAT)
                out.append(b.build().dgram)
        return out

    def _send(self, dgrams, target) -> None:
        for d in dgrams:
            try:
                self._out.sendto(d, target)
                self.stats["feedback_sent"] += 1
            except OSError as e:  # a full buffer or an unreachable controller: drop, never block
                self.warn.warning(("feedback", target), "OSC feedback to %s:%s failed: %s",
                                  target[0], target[1], e)
                self.stats["feedback_errors"] += 1
                break

    def _feedback_loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(0.25)
            if self._stopping.is_set():
                return
            self._wake.clear()
            try:
                with self._pending_lock:
                    pending, self._pending = self._pending, {}
                    sync_to, self._sync_to = self._sync_to, []
                with self._sub_lock:
                    subs = list(self._subscribers)
                    senders = {k: set(v) for k, v in self._senders.items()}
                if sync_to:
                    full = self._messages_for(self.params.keys())
                    for target in dict.fromkeys(sync_to):
                        if target in subs:
                            self._send(full, target)
                if pending and subs:
                    by_origin: dict = {}
                    for key, origin in pending.items():
                        by_origin.setdefault(origin, []).append(key)
                    for origin, keys in by_origin.items():
                        dgrams = self._messages_for(keys)
                        for target in subs:
                            # no echo to the controller that moved it
                            if target != origin and origin not in senders.get(target, ()):
                                self._send(dgrams, target)
            except Exception:
                self.warn.warning("feedback-loop", "OSC feedback failed", exc_info=True)
                self.stats["errors"] += 1
            # Coalesce: changes arriving meanwhile go out together in the next batch.
            self._stopping.wait(self.feedback_interval)

    # -- lifecycle ------------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The bound port (useful with port=0, which picks a free one)."""
        if self._server is None:
            return self.requested_port
        return self._server.server_address[1]

    def start(self) -> "OscServer":
        """Bind and start the receive and feedback threads. A port in use is an UnstableError."""
        if self._server is not None:
            return self
        try:
            self._server = _UDPServer((self.host, self.requested_port), self.dispatcher, self)
        except OSError as e:
            raise UnstableError(f"cannot listen for OSC on {self.host}:{self.requested_port}: "
                                f"{e.strerror or e}") from None
        got = self._server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if got < self.rcvbuf:  # Linux reports double the usable size; less means it was capped
            log.warning("OSC receive buffer is %d bytes, asked for %d: a burst of messages may "
                        "lose some (sysctl -w net.core.rmem_max=%d)", got, self.rcvbuf, self.rcvbuf)
        self._out = socket.socket(socket.AF_INET6 if ":" in self.host else socket.AF_INET,
                                  socket.SOCK_DGRAM)
        self._out.setblocking(False)
        self._stopping.clear()
        self.params.add_listener(self._on_change)
        self._threads = [
            threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                             name="osc-server", daemon=True),
            threading.Thread(target=self._feedback_loop, name="osc-feedback", daemon=True),
        ]
        for t in self._threads:
            t.start()
        log.info("OSC listening on %s:%d", self.host, self.port)
        return self

    @property
    def running(self) -> bool:
        """True while the receive and feedback threads are alive."""
        return len(self._threads) == 2 and all(t.is_alive() for t in self._threads)

    def stop(self) -> None:
        """Stop both threads and close the sockets."""
        if self._server is None:
            return
        self.params.remove_listener(self._on_change)
        self._server.shutdown()
        self._stopping.set()
        self._wake.set()
        for t in self._threads:
            t.join(timeout=2.0)
        self._server.server_close()
        self._out.close()
        self._server = None
        self._threads = []

    def __enter__(self) -> "OscServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
