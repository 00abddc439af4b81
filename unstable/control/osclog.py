"""Log lines about untrusted OSC input that cannot flood the log, shared by every OSC layer."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("unstable.osc")


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


def shorten(value, limit: int = 60) -> str:
    """A short, escaped rendering of untrusted input for a log line."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def reject(warn: RateLimitedLog, stats: dict, addr: str, origin, why: str) -> None:
    """Log (rate-limited) and count a message refused by a check, naming its address and sender."""
    warn.warning(("rejected", addr, why.split(" ")[0]), "OSC %s from %s:%s rejected: %s",
                 addr, origin[0], origin[1], why)
    stats["rejected"] += 1
