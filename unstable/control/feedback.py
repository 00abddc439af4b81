"""OSC feedback: the current value of every changed parameter, sent to every subscriber.

Every change goes to every subscriber except the one at the sender's exact (host, port), as the
0..1 value on the plain address (own units for an `osc_units` spec: the tempo in BPM) and the
own-units value on `/raw`, so faders follow presets and
scene changes without an echo of their own move. Changes the engine makes (origin None) go to
everyone. A thread of its own sends, coalescing bursts (the newest value of each parameter, at
most every `interval` seconds), from a non-blocking socket: a slow controller is dropped from,
never waited on.

Bounded against a hostile network: the subscribers a show configures are pinned (never evicted);
a subscription over OSC is refused past `max_subscribers` in all, and each host keeps at most
`max_per_host` (its own oldest goes: a restarted controller's old port), so a flood of subscribes
evicts nobody else. A full state (the reply to a subscribe or a sync) goes to one subscriber at
most once per `sync_interval`; requests meanwhile are coalesced into one, sent when it is over.
"""

from __future__ import annotations

import socket
import threading
import time

from pythonosc.osc_message_builder import OscMessageBuilder

from ..schema import address
from .osclog import RateLimitedLog
from .store import ParameterStore


class Feedback:
    """Subscribers of a `ParameterStore` and the thread that keeps them in step.

    `stats` is the server's shared counter dict ("feedback_sent", "feedback_errors", "errors").
    """

    def __init__(self, store: ParameterStore, stats: dict, warn: RateLimitedLog, *,
                 max_subscribers: int = 16, interval: float = 0.01, max_per_host: int = 4,
                 sync_interval: float = 1.0):
        self.store = store
        self.stats = stats
        self.warn = warn
        self.max_subscribers = int(max_subscribers)
        self.max_per_host = int(max_per_host)
        self.sync_interval = float(sync_interval)
        self.interval = float(interval)
        self._subscribers: dict[tuple[str, int], float] = {}  # (host, port) -> when subscribed
        self._pinned: set[tuple[str, int]] = set()  # configured by the show: never evicted
        self._last_full: dict[tuple[str, int], float] = {}  # subscriber -> when it last got the full state
        self._tokens: dict[str, list[float]] = {}  # host -> [full states it may still get, when counted]
        # subscriber -> the (host, port)s that subscribed it: that controller's own changes are
        # not echoed to it even when it sends from another port than it listens on.
        self._senders: dict[tuple[str, int], list[tuple[str, int]]] = {}
        self._sub_lock = threading.Lock()
        self._pending: dict[tuple[str, str], tuple | None] = {}  # key -> origin of newest change
        self._sync_to: dict[tuple[str, int], None] = {}  # subscribers owed the full state
        self._pending_lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._out: socket.socket | None = None

    # -- subscribers ----------------------------------------------------------------------------

    def subscribe(self, host: str, port: int, sender: tuple[str, int] | None = None,
                  pinned: bool = False) -> bool:
        """Send feedback to (host, port) from now on, starting with the full state. Changes that
        come from `sender` (the controller's sending address) are not sent back to it. `pinned`:
        configured by the show, never evicted nor refused. Returns False when refused."""
        key = (host, int(port))
        with self._sub_lock:
            if pinned:
                self._pinned.add(key)
            elif key not in self._subscribers:
                same_host = [k for k in self._subscribers if k[0] == host and k not in self._pinned]
                if len(same_host) >= self.max_per_host:
                    oldest = same_host[0]  # this host's own oldest (a restarted controller's old port)
                    del self._subscribers[oldest]
                    self._senders.pop(oldest, None)
                    self._last_full.pop(oldest, None)
                    self.warn.warning(("subscribers-host", host), "OSC: %s has more than %d subscriptions, "
                                      "dropped its oldest (port %s)", host, self.max_per_host, oldest[1])
                elif len(self._subscribers) >= self.max_subscribers:
                    self.warn.warning("subscribers-full", "OSC subscribe from %s:%s refused: already %d "
                                      "subscribers", host, port, len(self._subscribers))
                    self.stats["refused"] = self.stats.get("refused", 0) + 1
                    return False
            self._subscribers.pop(key, None)
            self._subscribers[key] = time.monotonic()
            if sender is not None and tuple(sender) != key:
                senders = [x for x in self._senders.get(key, []) if x != tuple(sender)]
                self._senders[key] = (senders + [tuple(sender)])[-8:]  # a restarted controller's new port
        with self._pending_lock:
            self._sync_to[key] = None
        self._wake.set()
        return True

    def unsubscribe(self, host: str, port: int) -> None:
        """Stop feedback to (host, port)."""
        key = (host, int(port))
        with self._sub_lock:
            self._subscribers.pop(key, None)
            self._senders.pop(key, None)
            self._last_full.pop(key, None)
            self._pinned.discard(key)

    @property
    def subscribers(self) -> list[tuple[str, int]]:
        """The (host, port) feedback goes to, oldest first."""
        with self._sub_lock:
            return list(self._subscribers)

    @property
    def pinned(self) -> set[tuple[str, int]]:
        """The subscribers the show configured."""
        with self._sub_lock:
            return set(self._pinned)

    def sync(self, origin: tuple[str, int] | None = None) -> None:
        """Send every parameter's value: to every subscriber (origin None: the engine asks), or,
        asked by a controller at `origin`, the full state to the subscribers on its host (each at
        most once per `sync_interval`)."""
        if origin is None:
            with self._pending_lock:
                for key in self.store.keys():
                    self._pending[key] = None
        else:
            with self._sub_lock:
                targets = [k for k in self._subscribers if k[0] == origin[0]]
            with self._pending_lock:
                for t in targets:
                    self._sync_to[t] = None
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
        for group, name in keys:
            spec = self.store.spec(group, name)
            value = self.store.get(group, name)
            for addr, v in ((address(group, name), value if spec.osc_units else spec.to_unit(value)),
                            (address(group, name, raw=True), value)):
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

    def _host_may(self, host: str, now: float) -> bool:
        """Per host, at most `max_per_host` full states per `sync_interval` (a token bucket): a flood
        of subscriptions from fresh ports cannot turn into a flood of replies."""
        cap = max(1, self.max_per_host)
        rate = cap / max(self.sync_interval, 1e-3)
        if len(self._tokens) > 4 * self.max_subscribers + 64:
            self._tokens.clear()
        bucket = self._tokens.setdefault(host, [float(cap), now])
        bucket[0] = min(cap, bucket[0] + (now - bucket[1]) * rate)
        bucket[1] = now
        if bucket[0] < 1.0:
            return False
        bucket[0] -= 1.0
        return True

    def _loop(self) -> None:
        while not self._stopping.is_set():
            self._wake.wait(0.25)  # at least every 0.25 s: coalesced full-state requests come due
            if self._stopping.is_set():
                return
            self._wake.clear()
            try:
                now = time.monotonic()
                with self._sub_lock:
                    subs = list(self._subscribers)
                    senders = {k: set(v) for k, v in self._senders.items()}
                    last_full = dict(self._last_full)
                with self._pending_lock:
                    pending, self._pending = self._pending, {}
                    # A full state per subscriber at most once per sync_interval, and per host at
                    # most max_per_host of them: later requests wait (coalesced), gone ones are dropped.
                    sync_to = []
                    for t in list(self._sync_to):
                        if t not in subs:
                            del self._sync_to[t]
                        elif now - last_full.get(t, -1e18) >= self.sync_interval and self._host_may(t[0], now):
                            del self._sync_to[t]
                            sync_to.append(t)
                if sync_to:
                    full = self._messages_for(self.store.keys())
                    for target in sync_to:
                        self._send(full, target)
                    with self._sub_lock:
                        for target in sync_to:
                            if target in self._subscribers:
                                self._last_full[target] = now
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
        self.store.add_listener(self.on_change)
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
        self.store.remove_listener(self.on_change)
        self._stopping.set()
        self._wake.set()
        self._thread.join(timeout=2.0)
        self._out.close()
        self._thread = None
