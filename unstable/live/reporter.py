"""What a live show says about itself: each second's telemetry line (to the `--telemetry` file and
the pages that asked for it) and the run's report at the end."""

from __future__ import annotations

import logging
import math
import time

from .telemetry import LiveReport, rss_bytes

log = logging.getLogger("unstable.live")

__all__ = ["Reporter"]


class Reporter:
    """Reads an `Engine`'s parts (frames, timer, recorder, pieces, scenes, controls) and its frame
    statistics (`engine.stats`, a FrameStats) into telemetry lines and the LiveReport."""

    def __init__(self, engine):
        self.engine = engine
        self._next = 1.0                        # the show second of the next line
        self._failures: set[str] = set()        # kinds of failure already logged

    def opened(self) -> None:
        """Say where the show's page and OSC are, and how it plays (the last lines before frames)."""
        e, s, o = self.engine, self.engine.settings, self.engine.options
        for url in e.controls.urls():
            e.echo(f"live: control page and OSCQuery at {url}")
        where = f", OSC on {e.osc.host}:{e.osc.port}" if e.osc else ""
        cap = s.disk.automation_max_mb
        e.echo(f"live: {e.show.name} {s.size[0]}x{s.size[1]} at {e.fps:g} fps on {o.device}"
               f"{where}, {'training' if o.train else 'not training'}; "
               f"{f'automation files up to {cap:g} MB' if cap else 'automation files uncapped'}; "
               f"run folder {e.run_dir}")

    def tick(self, now: float) -> None:
        """After a frame at show time `now`: once a second, watch OSC and send the second's line."""
        if now < self._next:
            return
        e = self.engine
        e.controls.watch()
        self._next = math.floor(now) + 1.0
        try:
            line = self.line(now)
            timing = e.stats.second(line)
            e.controls.telemetry({**timing, **line, "losses": e.piece_set.losses()})
        except Exception as exc:  # a report must never end the show it reports on
            kind = f"{type(exc).__name__}: {exc}"[:200]
            if kind not in self._failures:  # once per kind of failure, not once a second
                self._failures.add(kind)
                log.warning("telemetry: this second's line failed (%s); the show goes on", kind, exc_info=True)

    def line(self, now: float) -> dict:
        """One second's telemetry (the frame timing is added by FrameStats)."""
        e = self.engine
        piece_set = e.piece_set
        line = {"t": round(now, 3), "frame": e.frames, "late_frames": e.timer.late,
                "dropped_slots": e.timer.dropped, "repeated_frames": e.recorder.repeated,
                **piece_set.telemetry(time.perf_counter()),
                "scene": e.timeline.director.current, "recording": e.recorder.writer is not None,
                "params": {g: {k: float(f"{v:.6g}") for k, v in vals.items()} for g, vals in e.snapshot.items()},
                "rss_mb": round(rss_bytes() / 2**20, 1), "guard": piece_set.guards()}
        keepers = piece_set.keepers()
        if keepers:
            line["keeper"] = keepers
        osc = e.controls.osc_line()
        if osc is not None:
            line["osc"] = osc
        errors = piece_set.errors()
        if e.last_result is not None:  # a piece whose sampling fails holds its last frame
            errors.update({f"{n} (display)": why for n, why in e.last_result.errors.items()})
        if errors:
            line["errors"] = errors
        return line

    def last(self) -> None:
        """The last, partial second's line (a show shorter than a second gets one too)."""
        e = self.engine
        if e.stats.pending and e.timer is not None:
            e.stats.second(self.line(e.timer.elapsed()))

    def report(self) -> LiveReport:
        """What the run did so far."""
        e = self.engine
        summary = e.stats.summary()
        elapsed = summary["seconds"]
        rec, piece_set, timer = e.recorder, e.piece_set, e.timer
        return LiveReport(
            frames=e.frames, late_frames=timer.late if timer else 0, **summary,
            dropped_slots=timer.dropped if timer else 0, repeated_frames=rec.repeated if rec else 0,
            steps={n: p.steps for n, p in e.pieces.items()},
            steps_per_second={n: round(p.steps / elapsed, 2) if elapsed > 0 else 0.0 for n, p in e.pieces.items()},
            recordings=list(rec.recordings) if rec else [], stills=list(rec.stills.paths) if rec else [],
            checkpoints=list(piece_set.checkpoints) if piece_set else [],
            errors=piece_set.errors() if piece_set else {})
