"""OSC dispatch: from a datagram's bytes to handler calls, with the checks on packets and messages.

`OscDispatcher` is python-osc's `Dispatcher` with its two hook points filled in:
`call_handlers_for_packet` parses the packet (malformed bytes are counted, never raised),
unpacks bundles (timetags are not slept on: a bundle is applied when it arrives and the render
loop reads the newest value at its next frame), checks each message's address and string sizes
and calls its handlers, each in isolation; `handlers_for_address` answers exact addresses from a
dict and lets OSC patterns reach parameters only. Argument checks belong to the handlers.
"""

from __future__ import annotations

from pythonosc import osc_packet
from pythonosc.dispatcher import Dispatcher

from .osclog import RateLimitedLog, reject, shorten

_PATTERN_CHARS = frozenset("*?[]{}")


class OscDispatcher(Dispatcher):
    """python-osc's dispatcher with an exact-match fast path and per-message checks.

    The stock one compiles the incoming address to a regex and tries it against every mapped
    address; ours are plain strings, so a dict lookup answers nearly every message. Incoming OSC
    patterns (`/unstable/*/hue`) still go through python-osc's matcher, and reach only handlers
    marked `is_param`. `stats` is the server's shared counter dict ("malformed", "messages",
    "unknown", "rejected", "errors").
    """

    def __init__(self, stats: dict, warn: RateLimitedLog, *, max_string: int = 256,
                 max_address: int = 256, max_elements: int = 64):
        super().__init__(strict_timing=False)  # never sleep on a timetag inside the handler
        self.stats = stats
        self.warn = warn
        self.max_elements = int(max_elements)
        self.max_string = int(max_string)
        self.max_address = int(max_address)

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

    def bundle_problem(self, data: bytes) -> str | None:
        """Why a bundle's top level is refused before python-osc parses it, or None.

        python-osc walks every element of a bundle in Python, and warns for each empty one: a
        datagram of 2,040 empty elements costs milliseconds of the OSC thread (and the GIL the
        render loop needs), so a flood of them can starve the show of frames (docs/figures.md,
        "Figures moved out of docstrings"). Reading only the element
        sizes, at most `max_elements` of them, costs microseconds; an element is never empty (it is
        a message or a bundle) and always a multiple of 4 bytes long.
        """
        pos, n = 16, 0  # "#bundle\0" and the 8-byte timetag
        end = len(data)
        while pos < end:
            if n == self.max_elements:
                return f"bundle of more than {self.max_elements} elements"
            if pos + 4 > end:
                return "bundle element size cut short"
            size = int.from_bytes(data[pos:pos + 4], "big", signed=True)
            if size <= 0 or size % 4 or pos + 4 + size > end:
                return f"bundle element {n} has an impossible size ({size} bytes)"
            pos += 4 + size
            n += 1
        return None

    def call_handlers_for_packet(self, data: bytes, client_address) -> list:  # type: ignore[override]
        """Every message of the packet (or bundle) to its handlers; never raises, replies nothing."""
        problem = self.bundle_problem(data) if data[:8] == b"#bundle\x00" else None
        if problem is not None:
            self.warn.warning("malformed", "malformed OSC packet (%d bytes) from %s:%s ignored: %s",
                              len(data), client_address[0], client_address[1], problem)
            self.stats["malformed"] += 1
            return []
        try:
            messages = osc_packet.OscPacket(data).messages
        except Exception as e:  # ParseError, and whatever else random bytes provoke
            self.warn.warning("malformed", "malformed OSC packet (%d bytes) from %s:%s ignored: %s",
                              len(data), client_address[0], client_address[1], shorten(str(e)))
            self.stats["malformed"] += 1
            return []
        origin = (client_address[0], client_address[1])
        for timed in messages:  # timetags ignored on purpose: newest value wins at next frame
            try:
                self._dispatch(timed.message, origin)
            finally:
                self.stats["messages"] += 1
        return []

    def _reject(self, addr: str, origin, why: str) -> None:
        reject(self.warn, self.stats, addr, origin, why)

    def _dispatch(self, message, origin) -> None:
        addr = message.address
        if len(addr) > self.max_address:
            self._reject(shorten(addr), origin, f"address longer than {self.max_address} characters")
            return
        if not addr.isprintable():  # keeps control characters out of handlers and log lines
            self._reject(shorten(addr), origin, "address has unprintable characters")
            return
        for a in message.params:
            if isinstance(a, (str, bytes)) and len(a) > self.max_string:
                self._reject(addr, origin, f"string argument longer than {self.max_string} characters")
                return
        if sum(addr.count(c) for c in "*?[{") > 8:
            # python-osc turns patterns into regexes; many wildcards could backtrack for long.
            self._reject(shorten(addr), origin, "too many pattern wildcards")
            return
        handlers = self.handlers_for_address(addr)
        if not handlers:
            self.warn.warning("unknown", "OSC address %s from %s:%s is not in the schema, ignored",
                              shorten(addr), origin[0], origin[1])
            self.stats["unknown"] += 1
            return
        for handler in handlers:
            try:
                handler.invoke(origin, message)
            except Exception:
                self.warn.warning(("error", addr), "OSC handler for %s failed", addr, exc_info=True)
                self.stats["errors"] += 1
