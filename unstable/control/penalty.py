"""The web server's penalty box: an address the server closed a connection of for abuse is refused
at accept, for `seconds`, before aiohttp parses a byte from it.

Abuse is what no browser, phone or OSCQuery tool does: more connections open at once than the
per-address cap, a request started and not finished within the idle timeout (slowloris), a
websocket closed for flooding past its message budget. Until the box opens again, every connection
from that address is closed as soon as it is accepted (an accept and a close: no parser, no
handler, no 503 written), and the connections it still holds are closed when it is boxed, so one
attacking machine stops costing the show's interpreter anything but the accept. Loopback is never
boxed: it is the show's own machine, the operator's page among it (a page from another site
reaching loopback is refused by the Host and Origin checks, not here).
"""

from __future__ import annotations

import time
from typing import Callable

from .osclog import RateLimitedLog
from .transport import is_loopback

__all__ = ["PenaltyBox"]


class PenaltyBox:
    """Address keys (`connections.address_key`) refused until a time; `exempt(peer)` says which peers
    are never boxed (loopback by default). `seconds` <= 0 turns the box off."""

    MAX_BOXED = 4096  # an attacker with a whole IPv6 range: expired entries go first, then the oldest

    def __init__(self, warn: RateLimitedLog, stats: dict, seconds: float = 30.0,
                 exempt: Callable[[str], bool] = is_loopback, clock: Callable[[], float] = time.monotonic):
        self.warn = warn
        self.stats = stats
        self.seconds = float(seconds)
        self.exempt = exempt
        self._clock = clock
        self._until: dict[str, float] = {}
        for k in ("conn_boxed", "boxed_addresses"):
            stats.setdefault(k, 0)

    def put(self, key: str, peer: str, why: str) -> bool:
        """Box address `key` (of `peer`) for `seconds` because of `why` (one rate-limited line);
        False where it is exempt or the box is off."""
        if self.seconds <= 0 or self.exempt(peer):
            return False
        now = self._clock()
        if len(self._until) >= self.MAX_BOXED:
            self._until = {k: t for k, t in self._until.items() if t > now}
            while len(self._until) >= self.MAX_BOXED:
                del self._until[next(iter(self._until))]
        self._until.pop(key, None)  # re-inserted last: the dict stays oldest first
        self._until[key] = now + self.seconds
        self.stats["boxed_addresses"] += 1
        self.warn.warning(("boxed", key), "web: %s refused for %gs: %s", key, self.seconds, why)
        return True

    def holds(self, key: str) -> bool:
        """Whether connections from address `key` are refused now (counted in `conn_boxed`)."""
        until = self._until.get(key)
        if until is None:
            return False
        if self._clock() >= until:
            del self._until[key]
            return False
        self.stats["conn_boxed"] += 1
        return True

    def __contains__(self, key: str) -> bool:
        until = self._until.get(key)
        return until is not None and self._clock() < until
