"""Log lines about untrusted OSC input that cannot flood the log, shared by every OSC layer."""

from __future__ import annotations

import logging
import time

log = logging.getLogger("unstable.osc")


class RateLimitedLog:
    """Warnings that cannot flood the log: one line per key per `interval` seconds, and with
    `per_minute`, at most that many lines a minute in all (a burst of up to that many at once).

    The next line after a quiet spell says how many were suppressed. Keys are a kind of problem
    (and, for problems on known addresses, the address), so a flood of random addresses costs
    one line per interval, not one per packet. The total budget matters when a sender varies the
    key on purpose (every parameter, every kind of bad value: ~90 keys in the demo, ~6 KB of
    stderr a second without it); what it holds back is counted and said in the next line.
    """

    def __init__(self, logger: logging.Logger, interval: float = 2.0, max_keys: int = 1024,
                 per_minute: float | None = None):
        self.logger = logger
        self.interval = interval
        self.max_keys = max_keys
        self.per_minute = per_minute
        self._tokens = float(per_minute) if per_minute else 0.0
        self._filled = time.monotonic()
        self._held_back = 0  # lines the total budget held back since the last line
        self._last: dict[object, list] = {}  # key -> [time of last line, suppressed since]

    def _spend(self, now: float) -> bool:
        """Take one line from the total budget (always granted without one)."""
        if not self.per_minute:
            return True
        self._tokens = min(float(self.per_minute), self._tokens + (now - self._filled) * self.per_minute / 60.0)
        self._filled = now
        if self._tokens < 1.0:
            self._held_back += 1
            return False
        self._tokens -= 1.0
        return True

    def warning(self, key, msg: str, *args, exc_info=False) -> None:
        """Log `msg % args` at WARNING unless `key` was logged less than `interval` ago (or the
        total budget is spent)."""
        now = time.monotonic()
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return
        if not self._spend(now):
            if entry is not None:
                entry[1] += 1
            return
        suppressed = entry[1] if entry is not None else 0
        if len(self._last) >= self.max_keys:
            self._last.clear()
        self._last[key] = [now, 0]
        if suppressed:
            msg += f" ({suppressed} similar suppressed)"
        if self._held_back:
            msg += f" ({self._held_back} other lines held back by the log's limit of {self.per_minute:g} a minute)"
            self._held_back = 0
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


class RateLimitFilter(logging.Filter):
    """A logging filter that lets one record per source line through per `interval` seconds; the
    next one says how many were suppressed. For libraries whose log lines a sender can provoke:
    python-osc warns once per unidentifiable bundle element, through the root logger
    (`logging.warning`), so 10 datagrams of 2,040 empty elements would be 20,400 lines."""

    def __init__(self, interval: float = 2.0, match: str = "pythonosc", max_keys: int = 1024):
        super().__init__()
        self.interval = float(interval)
        self.match = match
        self.max_keys = max_keys
        self._last: dict[tuple, list] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if self.match not in (record.pathname or "") and not record.name.startswith(self.match):
            return True
        key = (record.pathname, record.lineno)
        now = time.monotonic()
        entry = self._last.get(key)
        if entry is not None and now - entry[0] < self.interval:
            entry[1] += 1
            return False
        if len(self._last) >= self.max_keys:
            self._last.clear()
        suppressed = entry[1] if entry is not None else 0
        self._last[key] = [now, 0]
        msg = record.getMessage()
        if len(msg) > 200:  # the library quotes the datagram: keep the line short
            msg = msg[:197] + "..."
        record.msg = msg + (f" ({suppressed} similar suppressed)" if suppressed else "")
        record.args = None
        return True


_library_filter: RateLimitFilter | None = None


def install_library_log_limit(interval: float = 2.0) -> RateLimitFilter:
    """Rate-limit python-osc's own log lines (once per process): on the root logger, which it logs
    through, and on the `pythonosc` loggers, should a version log through its own."""
    global _library_filter
    if _library_filter is None:
        _library_filter = RateLimitFilter(interval)
        for name in ("", "pythonosc", "pythonosc.osc_bundle", "pythonosc.osc_message",
                     "pythonosc.dispatcher", "pythonosc.osc_server"):
            logging.getLogger(name).addFilter(_library_filter)
    return _library_filter
