"""The show's tempo: the `tempo` and `tap` parameters of the show group, tap tempo, and an Ableton
Link session the tempo follows and is shared back to.

Tempo is a parameter like any other: OSC (`/unstable/show/tempo` in BPM, as Link and every other
tool counts it: the schema declares it `osc_units`; `/raw` takes BPM too), the page, MIDI and tap
tempo write it into the parameter store, and the automation records it, so a performance played to
a band renders again with the same tempo.
`TempoLink` keeps one Link session and the store in step from its own thread: the session's tempo
is written into the store (origin LINK), and a tempo written by anyone else is committed to the
session. Nothing here touches a model or GL.

    link = TempoLink(store, link=True).start()   # [tempo] link = true, or --link
    ...
    link.stop()
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import statistics
import threading
import time
from dataclasses import dataclass

from .config import setting
from .control.osclog import RateLimitedLog
from .schema import CLOCK, SHOW, ParamSpec

log = logging.getLogger("unstable.tempo")

__all__ = ["TempoSettings", "tempo_specs", "TapTempo", "TempoLink", "parse_beats", "LINK", "TAP"]

MIN_BPM, MAX_BPM = 20.0, 300.0
QUANTUM_MAX = 32        # the most beats in a bar (and so in Link's quantum)
LINK = ("link", 0)      # the origin of tempo changes that came from the Link session
TAP = ("tap", 0)        # the origin of a tempo set by tap tempo
_BEATS = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(beats?|bars?)\s*$")


@dataclass(frozen=True)
class TempoSettings:
    """`[tempo]`: the show's tempo, and whether it follows an Ableton Link session."""

    bpm: float = setting(120.0, ge=MIN_BPM, le=MAX_BPM, doc="the tempo the show starts at, in beats a minute")
    link: bool = setting(False, doc="join an Ableton Link session on the local network (also --link): the "
                         "show's tempo follows the session's and a tempo set here is shared back")
    beats_per_bar: int = setting(4, ge=1, le=32, doc="beats in a bar ('8 bars' in a scene's duration)")


def tempo_specs(bpm: float = 120.0, link: bool = False) -> list[ParamSpec]:
    """The show group's tempo parameters: `tempo` in BPM and `tap` (each press is one tap); with
    `link`, `beat_offset`: what the show's beat count is shifted by to stand on Link's beat (a
    parameter, so the automation replays the alignment)."""
    specs = [
        ParamSpec("tempo", MIN_BPM, MAX_BPM, float(bpm), unit="BPM", doc="the show's tempo (shared with Link)",
                  reads=CLOCK, osc_units=True),
        ParamSpec("tap", 0, 1, 0, kind="toggle", doc="tap tempo: each press is a beat", reads=CLOCK),
    ]
    if link:
        # Both ways from 0: each alignment moves it the short way to the session's phase, so a drift
        # across a bar line is a small step back, not a bar forward (scenes in bars would cut early).
        specs.append(ParamSpec("beat_offset", -float(QUANTUM_MAX), float(QUANTUM_MAX), 0.0, unit="beats",
                               doc="the show's beats shifted onto the Link session's (set by Link)", reads=CLOCK))
    return specs


def parse_beats(value, beats_per_bar: int = 4) -> float | None:
    """Beats in `value` when it is written in beats or bars ("8 bars", "3 beats"), else None (a
    plain number of seconds). Raises ValueError for any other text."""
    if not isinstance(value, str):
        return None
    m = _BEATS.match(value)
    if not m:
        raise ValueError(f"{value!r} is not a duration, expected seconds (a number), 'N beats' or 'N bars'")
    n = float(m[1])
    return n * beats_per_bar if m[2].startswith("bar") else n


class TapTempo:
    """Taps into a tempo: the median interval of the newest taps. A pause longer than `reset`
    seconds starts over; taps closer than the fastest tempo allows (a flood, a bouncing button)
    are ignored with one log line per few seconds and start the count over, so no burst can push
    the tempo anywhere."""

    def __init__(self, *, keep: int = 6, reset: float = 2.0, clock=time.monotonic):
        self.keep = keep
        self.reset = reset
        self.clock = clock
        self.ignored = 0
        self._taps: list[float] = []
        self._last: float | None = None
        self._warn = RateLimitedLog(log, 5.0)

    def tap(self, now: float | None = None) -> float | None:
        """Count one tap; returns the tempo in BPM once two taps make one, else None."""
        now = self.clock() if now is None else float(now)
        last, self._last = self._last, now
        if last is not None and 0 <= now - last < 60.0 / MAX_BPM:
            # Measured from the tap before, taken or not: a flood never spaces itself into a tempo,
            # and the count starts again after it (the tempo stays where it was).
            self.ignored += 1
            self._taps = []
            self._warn.warning("flood", "tap tempo: taps %.3f s apart ignored (faster than %g BPM); %d so far",
                               now - last, MAX_BPM, self.ignored)
            return None
        if self._taps and not 0 <= now - self._taps[-1] <= self.reset:
            self._taps = []
        self._taps = (self._taps + [now])[-self.keep:]
        if len(self._taps) < 2:
            return None
        gaps = [b - a for a, b in zip(self._taps, self._taps[1:])]
        return min(max(60.0 / statistics.median(gaps), MIN_BPM), MAX_BPM)


class TempoLink:
    """The store's `show/tempo` in step with tap tempo and, with `link`, an Ableton Link session.

    Listens to the store: a press of `show/tap` is a tap (the toggle is put back at once, so every
    press counts); a tempo written by anyone but the session is committed to it. A thread polls the
    session every `poll` seconds and writes a changed session tempo into the store (origin LINK).
    A non-finite tempo from anywhere is one log line and changes nothing.
    """

    def __init__(self, store, *, link: bool = False, poll: float = 0.01, tap: TapTempo | None = None,
                 quantum: int = 4):
        self.store = store
        self.link_on = link
        # Link's quantum: peers agree on the beat only modulo it (aalink's default is 1, on the beat
        # but not the bar), so the session is joined with the show's beats in a bar.
        self.quantum = int(quantum)
        self.poll = poll
        self.tapper = tap or TapTempo()
        self.link = None
        self.peers = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        self._stop = threading.Event()
        self._warn = RateLimitedLog(log, 5.0)
        self._error: BaseException | None = None

    def start(self) -> "TempoLink":
        """Listen to the store and, with `link`, join the session (returns once joined)."""
        self.store.add_listener(self._on_change)
        if self.link_on:
            self._thread = threading.Thread(target=self._run, name="unstable-link", daemon=True)
            self._thread.start()
            self._ready.wait(10.0)
            if self._error is not None:
                self.stop()
                raise self._error
        return self

    def stop(self) -> None:
        """Leave the session and stop listening."""
        self.store.remove_listener(self._on_change)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)

    # -- the store's side -----------------------------------------------------------------------

    def _on_change(self, keys, origin) -> None:
        if (SHOW, "tap") in keys and self.store.get(SHOW, "tap") >= 0.5:
            self.store.set(SHOW, "tap", 0)  # origin None: no event, and the next press is a change again
            bpm = self.tapper.tap()
            if bpm is not None:
                self.store.set(SHOW, "tempo", bpm, TAP)
        if (SHOW, "tempo") in keys and origin != LINK and self._loop is not None:
            bpm = self.store.get(SHOW, "tempo")
            self._loop.call_soon_threadsafe(self._commit, bpm)

    def _commit(self, bpm: float) -> None:
        if self.link is not None and abs(self.link.tempo - bpm) > 1e-6:
            self.link.tempo = bpm

    # -- the session's side ---------------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._session())
        except BaseException as e:  # noqa: BLE001 - the show goes on; start() reports the first one
            self._error = e
            self._ready.set()

    async def _session(self) -> None:
        from aalink import Link
        self._loop = asyncio.get_running_loop()
        self.link = Link(self.store.get(SHOW, "tempo"), self._loop)
        self.link.quantum = self.quantum
        self.link.enabled = True
        self._ready.set()
        try:
            while not self._stop.is_set():
                self._follow()
                await asyncio.sleep(self.poll)
        finally:
            self.link.enabled = False
            self._loop = None

    def _follow(self) -> None:
        bpm = float(self.link.tempo)
        peers = int(self.link.num_peers)
        if peers != self.peers:
            log.info("link: %d peer(s) in the session", peers)
            self.peers = peers
        if not math.isfinite(bpm):
            self._warn.warning("nan", "link: the session's tempo is %r, not a number; kept %g BPM", bpm,
                               self.store.get(SHOW, "tempo"))
            return
        spec = self.store.spec(SHOW, "tempo")
        if abs(spec.clamp(bpm) - self.store.get(SHOW, "tempo")) > 1e-3:
            if not spec.lo <= bpm <= spec.hi:
                self._warn.warning("range", "link: the session's tempo %g BPM is outside %g..%g, clamped",
                                   bpm, spec.lo, spec.hi)
            self.store.set(SHOW, "tempo", bpm, LINK)

    def beat(self) -> float | None:
        """The session's beat now (None without a session): where a scene change would land."""
        return None if self.link is None else float(self.link.beat)

    def align(self, show_beat: float, quantum: int, tolerance: float = 0.05) -> float | None:
        """Put the show's beat count on the session's: `show_beat` is the show's beat now (the frame
        just drawn); sets `show/beat_offset` so that beat + offset falls on the session's phase in a
        bar of `quantum` beats, when it is off by more than `tolerance` beats. Returns the offset set."""
        if self.link is None or (SHOW, "beat_offset") not in self.store:
            return None
        if getattr(self.link, "quantum", quantum) != quantum:  # the bar the session's phase is in
            self.link.quantum = quantum
        phase = float(self.link.beat) % quantum
        offset = self.store.get(SHOW, "beat_offset")
        # The step onto the session's phase, the short way round the bar: -quantum/2 .. quantum/2.
        step = (phase - show_beat + quantum / 2) % quantum - quantum / 2
        if abs(step) <= tolerance:
            return None
        want = offset + step
        spec = self.store.spec(SHOW, "beat_offset")
        if not spec.lo <= want <= spec.hi:  # a drift of many bars one way: back by whole bars
            want -= math.copysign(quantum * ((abs(want) - spec.hi) // quantum + 1), want)
        self.store.set(SHOW, "beat_offset", want, LINK)
        return want


class BeatClock:
    """Beats on the frame clock: the integral of the show's tempo over frame time, so a live show
    and its render (which replays the tempo from the automation) count the same beats at the same
    frames. `origin` shifts the count (a Link session's beat when the show started)."""

    def __init__(self, bpm: float = 120.0):
        self.beat = 0.0
        self.bpm = float(bpm)
        self.offset = 0.0
        self.t: float | None = None

    def advance(self, t: float, bpm: float | None, offset: float | None = None) -> float:
        """The beat at frame time `t`, the tempo having been the previous frame's since then;
        a new `offset` (the show's `beat_offset`, Link's phase) moves the count by its change."""
        if self.t is not None and t > self.t:
            self.beat += (t - self.t) * self.bpm / 60.0
        self.t = t
        if bpm is not None and math.isfinite(bpm) and bpm > 0:
            self.bpm = float(bpm)
        if offset is not None and math.isfinite(offset) and offset != self.offset:
            self.beat += offset - self.offset
            self.offset = float(offset)
        return self.beat

    def ahead(self, t: float) -> float:
        """The beat at a later frame time `t` if the tempo stays as it is."""
        return self.beat + max(0.0, t - (self.t if self.t is not None else t)) * self.bpm / 60.0

    @staticmethod
    def on_beat(beat: float) -> float:
        """The first whole beat at or after `beat` (a millionth of a beat of rounding is on it)."""
        return float(math.ceil(beat - 1e-6))
