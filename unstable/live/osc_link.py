"""The show's OSC server, kept alive: started from the show's settings, restarted on the same port
with the same subscribers when its threads die, counters carried over restarts."""

from __future__ import annotations

import contextlib
import logging
import socket

from ..errors import UnstableError
from ..show import OscSettings

log = logging.getLogger("unstable.live")

__all__ = ["OscLink"]


class OscLink:
    """One show's OSC server over the parameter store (handlers write only into the store)."""

    def __init__(self, store, settings: OscSettings, port: int | None = None):
        self.store = store
        self.settings = settings
        self.server = None
        self.restarts = 0
        self._stats_before: dict[str, int] = {}  # counters of servers replaced by `watch`
        self._port = settings.port if port is None else port

    def _make(self, port: int):
        from ..control.osc import OscServer
        s = self.settings
        return OscServer(self.store, host=s.host, port=port, allow=list(s.allow) or None,
                         feedback_interval=s.feedback_interval).start()

    def start(self) -> "OscLink":
        targets = []
        for host, p in self.settings.targets():  # resolved once: feedback must never wait on DNS
            try:
                family = socket.AF_INET6 if ":" in self.settings.host else socket.AF_INET
                info = socket.getaddrinfo(host, p, family, socket.SOCK_DGRAM)
            except (socket.gaierror, UnicodeError) as e:
                raise UnstableError(f"osc.subscribe: {host}:{p} cannot be resolved ({e}); give the "
                                    "controller's IP address") from None
            targets.append((info[0][4][0], p))
        self.server = self._make(self._port)
        for host, p in targets:
            self.server.subscribe(host, p)
        return self

    @property
    def host(self) -> str:
        return self.server.host

    @property
    def port(self) -> int:
        return self.server.port

    def watch(self) -> None:
        """Once a second: restart the OSC threads if they died (same port, same subscribers)."""
        if self.server is None or self.server.running:
            return
        port, subs, pinned = self.server.port, self.server.subscribers, self.server.pinned
        for k, v in self.server.stats.items():  # counters carry over: telemetry shows the whole show's
            self._stats_before[k] = self._stats_before.get(k, 0) + v
        log.error("the OSC threads stopped; restarting them on port %d", port)
        with contextlib.suppress(Exception):
            self.server.stop()
        try:
            self.server = self._make(port)
        except UnstableError as e:  # the port is taken meanwhile: try again next second
            log.error("restarting OSC failed: %s", e)
            return
        for host, p in subs:
            self.server.subscribe(host, p, pinned=(host, p) in pinned)
        self.restarts += 1

    def stats(self) -> dict[str, int]:
        """The OSC counters (messages, rejected, malformed, ...) over the whole show, restarts included."""
        now = dict(self.server.stats) if self.server is not None else {}
        return {k: now.get(k, 0) + self._stats_before.get(k, 0) for k in {*now, *self._stats_before}}

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
