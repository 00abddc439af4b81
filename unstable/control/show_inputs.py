"""A live show's MIDI controller and tempo (tap, Ableton Link), started on its parameter store.

Both only write into the store, so they hook onto a running show from outside it: `attach(engine)`
starts them after the show's first frame (the store and the run folder exist by then; the rtmidi
and Link threads never wait on the frame), and `stop()` ends them after the show.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger("unstable.inputs")

__all__ = ["ShowInputs"]


class ShowInputs:
    """The MIDI link (with `[midi] port`, or `midi_port`) and the tempo link of one live show."""

    def __init__(self, show, *, link: bool | None = None, midi_port: str | None = None, api: str | None = None):
        self.show = show
        s = show.settings
        self.link_on = s.tempo.link if link is None else link
        self.midi_port = s.midi.port if midi_port is None else midi_port
        self.api = s.midi.api if api is None else api
        self.midi = None
        self.tempo = None
        self._started = False

    def start(self, store, run_dir: Path | None) -> "ShowInputs":
        """Tap tempo always, Link when asked, the MIDI port when one is named."""
        from ..tempo import TempoLink
        self._started = True
        try:
            self.tempo = TempoLink(store, link=self.link_on, quantum=self.show.settings.tempo.beats_per_bar).start()
        except Exception as e:  # noqa: BLE001 - no Link session (no network): the show plays on its own tempo
            log.error("link: cannot join an Ableton Link session (%s: %s); the show keeps its own tempo",
                      type(e).__name__, e)
            self.tempo = TempoLink(store, link=False).start()
        if self.midi_port:
            from .midi import MidiLink
            try:
                self.midi = MidiLink(store, self.show.settings.midi, run_dir, source=self.show.show_file,
                                     api=self.api, port=self.midi_port).start()
            except Exception as e:  # noqa: BLE001 - no MIDI system at all: one line, the show plays on
                log.error("midi: cannot start MIDI input on %r (%s: %s); the show plays on without it",
                          self.api or "the default MIDI system", type(e).__name__, e)
                self.midi = None
        return self

    def attach(self, engine) -> None:
        """Start on `engine`'s store after its first frame; the control page lists the bindings."""
        last_align = [-1e9]

        def hook(eng):
            if not self._started:
                self.start(eng.params, getattr(eng, "run_dir", None))
                space = _page_space(eng)
                if space is not None and self.midi is not None:
                    space.page_extras["midi"] = self.midi.bindings
            # Once a second: the show's beats on the Link session's (the frame clock's beat now,
            # against the session's beat now; a frame's lateness is the error).
            timer, timeline = getattr(eng, "timer", None), getattr(eng, "timeline", None)
            if self.tempo is not None and self.tempo.link is not None and timer is not None and timeline is not None:
                now = timer.elapsed()
                if now - last_align[0] >= 1.0:
                    last_align[0] = now
                    self.tempo.align(timeline.beats.ahead(now), self.show.settings.tempo.beats_per_bar)
        engine.frame_hooks.append(hook)

    def stop(self) -> None:
        """Close the port and leave the Link session."""
        for part in (self.midi, self.tempo):
            if part is not None:
                part.stop()


def _page_space(engine):
    """The AddressSpace the control page is drawn from (None without a page)."""
    link = getattr(getattr(engine, "controls", None), "web_link", None) or getattr(engine, "web_link", None)
    server = getattr(link, "server", None)
    return getattr(server, "space", None)
