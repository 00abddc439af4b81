"""The OSC server: controllers write into the `ParameterStore`; every change is fed back to subscribers.

One python-osc UDP server runs in its own thread. It only ever validates a message and writes
into the parameter store (a dict write under a lock), so a burst of messages cannot stall a
frame, and nothing a controller sends is ever evaluated as code. Timetags are not slept on: a
bundle is applied when it arrives and the render loop reads the newest value at its next frame.

The checks live in python-osc's layers, one module each, and this class only wires them up:

    transport.py   OscUDPServer.verify_request: allow-list, datagram size (+ receive buffer)
    dispatch.py    OscDispatcher.call_handlers_for_packet: malformed packets, bundles, address
                   and string sizes, unknown addresses, handler isolation
    handlers.py    OscHandlers: argument checks, clamping, writes into the store
    feedback.py    Feedback: subscribers and the thread that sends them changes

Address space (all generated from the schema, see `unstable.schema.address`):

    /unstable/<piece>/<param>      f    0..1 fader position, mapped onto the parameter's range
                                        (own units for a spec with `osc_units`: show/tempo in BPM)
    /unstable/<piece>/<param>/raw  f    value in the parameter's own units
    /unstable/subscribe            i    feedback to the sender's host at this port
    /unstable/unsubscribe          i    stop that feedback
    /unstable/sync                      send the full state to the sender host's subscriptions
    /unstable/scene                i    go to scene n (same as /unstable/show/scene/raw n)
    /unstable/record               i    0|1 (same as /unstable/show/record/raw)
    /unstable/still               [f]   save a PNG still; an argument of 0 (a button's release) is ignored

Feedback: every change goes to every subscriber except the one at the sender's exact
(host, port), as the 0..1 value on the plain address and the own-units value on `/raw`, so faders
follow presets and scene changes without an echo of their own move. Changes the engine makes
(origin None) go to everyone. A separate thread sends feedback, coalescing bursts (the newest
value of each parameter, at most every `feedback_interval` seconds).

Bad input never raises: out-of-range values are clamped with a warning; a wrong type or count,
NaN or infinity is rejected with a line naming the address; unknown addresses, malformed or
oversized packets and senders outside the allow-list are counted in `stats` and logged,
rate-limited (one line per kind per `log_interval` seconds, with the number suppressed, and at most
`log_per_minute` lines a minute in all).
"""

from __future__ import annotations

import socket
import threading
from typing import Callable, Iterable

from ..errors import UnstableError
from .dispatch import OscDispatcher
from .feedback import Feedback
from .handlers import OscHandlers
from .osclog import RateLimitedLog, install_library_log_limit, log
from .store import ParameterStore
from .transport import MiB, AllowList, OscUDPServer, is_loopback, parse_allow

__all__ = ["OscServer"]


class OscServer:
    """The OSC input and feedback output of a live show, over a `ParameterStore`.

    host/port: where to listen (127.0.0.1 by default; anything else needs `allow`).
    allow: sender hosts or networks accepted (None: anyone who can reach a loopback socket).
    rcvbuf: requested SO_RCVBUF in bytes (Linux caps it at net.core.rmem_max).
    max_packet / max_string / max_address: size limits in bytes / characters.

    `stats` is one dict of counters that every layer bumps (the engine reads and carries it over
    a restart).
    """

    def __init__(self, store: ParameterStore, *, host: str = "127.0.0.1", port: int = 9000,
                 allow: Iterable[str] | None = None, rcvbuf: int = 4 * MiB, max_packet: int = 8192,
                 max_string: int = 256, max_address: int = 256, max_subscribers: int = 16,
                 feedback_interval: float = 0.01, log_interval: float = 2.0, log_per_minute: float = 30.0):
        self.store = store
        self.host = host
        self.requested_port = int(port)
        self.allow = parse_allow(allow)
        if not is_loopback(host) and not self.allow:
            raise UnstableError(f"OSC on {host!r} reaches beyond this machine: give an allow-list "
                                "of controller addresses (e.g. allow = ['192.168.1.20'])")
        self.rcvbuf = int(rcvbuf)
        self.max_packet = int(max_packet)
        self.max_string = int(max_string)
        self.max_address = int(max_address)
        self.max_subscribers = int(max_subscribers)
        self.feedback_interval = float(feedback_interval)
        # One line per kind of problem per `log_interval`, and `log_per_minute` lines in all: a
        # sender cannot fill the disk or the terminal through our warnings about it.
        self.warn = RateLimitedLog(log, log_interval, per_minute=log_per_minute)
        self.stats = dict.fromkeys(
            ("packets", "messages", "applied", "clamped", "rejected", "unknown", "malformed",
             "oversize", "foreign", "errors", "feedback_sent", "feedback_errors", "refused"), 0)
        self.feedback = Feedback(store, self.stats, self.warn, max_subscribers=max_subscribers,
                                 interval=feedback_interval)
        self.dispatcher = OscDispatcher(self.stats, self.warn, max_string=max_string,
                                        max_address=max_address)
        self.handlers = OscHandlers(store, self.feedback, self.stats, self.warn)
        self.handlers.map_onto(self.dispatcher)
        self._allowed = AllowList(self.allow)
        install_library_log_limit(log_interval)  # python-osc's own warnings, rate-limited too
        self._server: OscUDPServer | None = None
        self._thread: threading.Thread | None = None

    def map(self, addr: str, handler: Callable, needs_reply_address: bool = True) -> None:
        """Add a handler (python-osc signature: `handler(client, address, *args)` when
        `needs_reply_address`). It runs in the OSC thread and must not block; an exception in it
        is logged and counted, never fatal."""
        self.dispatcher.map(addr, handler, needs_reply_address=needs_reply_address)

    # -- subscribers ----------------------------------------------------------------------------

    def subscribe(self, host: str, port: int, pinned: bool = True) -> bool:
        """Send feedback to (host, port) from now on, starting with the full state. The show's own
        (`pinned`) subscribers are never evicted by subscriptions over OSC."""
        return self.feedback.subscribe(host, port, pinned=pinned)

    @property
    def subscribers(self) -> list[tuple[str, int]]:
        """The (host, port) feedback goes to, oldest first."""
        return self.feedback.subscribers

    def sync(self) -> None:
        """Send every parameter's value to every subscriber."""
        self.feedback.sync()

    @property
    def pinned(self) -> set[tuple[str, int]]:
        """The subscribers the show configured (never evicted)."""
        return self.feedback.pinned

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
            self._server = OscUDPServer((self.host, self.requested_port), self.dispatcher,
                                        allowed=self._allowed, max_packet=self.max_packet,
                                        rcvbuf=self.rcvbuf, stats=self.stats, warn=self.warn)
        except OSError as e:
            raise UnstableError(f"cannot listen for OSC on {self.host}:{self.requested_port}: "
                                f"{e.strerror or e}") from None
        got = self._server.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        if got < self.rcvbuf:  # Linux reports double the usable size; less means it was capped
            log.warning("OSC receive buffer is %d bytes, asked for %d: a burst of messages may "
                        "lose some (sysctl -w net.core.rmem_max=%d)", got, self.rcvbuf, self.rcvbuf)
        self.feedback.start(socket.AF_INET6 if ":" in self.host else socket.AF_INET)
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        kwargs={"poll_interval": 0.1}, name="osc-server", daemon=True)
        self._thread.start()
        log.info("OSC listening on %s:%d", self.host, self.port)
        return self

    @property
    def running(self) -> bool:
        """True while the receive and feedback threads are alive."""
        return self._thread is not None and self._thread.is_alive() and self.feedback.running

    def stop(self) -> None:
        """Stop both threads and close the sockets."""
        if self._server is None:
            return
        self._server.shutdown()
        self.feedback.stop()
        self._thread.join(timeout=2.0)
        self._server.server_close()
        self._server = None
        self._thread = None

    def __enter__(self) -> "OscServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
