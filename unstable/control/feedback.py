"""OSC feedback: the current value of every changed parameter, sent to every subscriber.

Every change goes to every subscriber except the one at the sender's exact (host, port), as the
0..1 value on the plain address and the own-units value on `/raw`, so faders follow presets and
scene changes without an echo of their own move. Changes the engine makes (origin None) go to
everyone. A thread of its own sends, coalescing bursts (the newest value of each parameter, at
most every `interval` seconds), from a non-blocking socket: a slow controller is dropped from,
never waited on.
"""

from __future__ import annotations

import socket
import threading
import time

from pythonosc.osc_message_builder import OscMessageBuilder

from ..schema import address
from .osclog import RateLimitedLog, log
from .store import ParameterStore


class Feedback:
    """Subscribers of a `ParameterStore` and the thread that keeps them in step.

    `stats` is the server's shared counter dict ("feedback_sent", "feedback_errors", "errors").
    """

    def __init__(self, params: ParameterStore, stats: dict, warn: RateLimitedLog, *,
                 max_subscribers: int = 16, interval: float = 0.01):
        self.params = params
        self.stats = stats
        self.warn = warn
        self.max_subscribers = int(max_subscribers)
        self.interval = float(interval)
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
        self._thread: threading.Thread | None = None
        self._out: socket.socket | None = None

    # -- subscribers ----------------------------------------------------------------------------

    def subscribe(self, host: str, port: int, sender: tuple[str, int] | None = None) -> None:
        """Send feedback to (host, port) from now on, starting with the full state. Changes that
        come from `sender` (the controller's sending address) are not sent back to it."""
        key = (host, int(port))
        with self._sub_lock:
            self._subscribers.pop(key, None)
            self._subscribers[key] = time.monotonic()
            if sender is not None and tuple(sender) != key:
                senders = [x for x in self._senders.get(key, []) if x != tuple(sender)]
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

    def unsubscribe(self, host: str, port: int) -> None:
        """Stop feedback to (host, port)."""
        with self._sub_lock:
            self._subscribers.pop((host, int(port)), None)
            self._senders.pop((host, int(port)), None)

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

    def on_change(self, keys, origin) -> None:
        """The store's listener. Runs in the writer's thread (OSC or engine): record, wake the
        sender, nothing more."""
        if not self._subscribers:
            return
        with self._pending_lock:
            for key in keys:
                self._pending[key] = origin
        self._wake.set()

    # -- sending --------------------------------------------------------------------------------

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

    def _loop(self) -> None:
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
                            # no echo to the controller that moved it, whichever port it sends from
                            if target != origin and origin not in senders.get(target, ()):
                                self._send(dgrams, target)
            except Exception:
                self.warn.warning("feedback-loop", "OSC feedback failed", exc_info=True)
                self.stats["errors"] += 1
            # Coalesce: changes arriving meanwhile go out together in the next batch.
            self._stopping.wait(self.interval)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self, family: int = socket.AF_INET) -> None:
        """Open the sending socket, listen to the store and start the sender thread."""
        self._out = socket.socket(family, socket.SOCK_DGRAM)
        self._out.setblocking(False)
        self._stopping.clear()
        self.params.add_listener(self.on_change)
        self._thread = threading.Thread(target=self._loop, name="osc-feedback", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """True while the sender thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    def stop(self) -> None:
        """Stop listening and sending; close the socket."""
        if self._thread is None:
            return
        self.params.remove_listener(self.on_change)
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=2.0)
        self._out.close()
        self._thread = None
