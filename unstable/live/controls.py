"""The show's control surfaces: its OSC server and its web side (OSCQuery and the control page).
They write only into the parameter store; what their events make happen is unstable.live.actions'."""

from __future__ import annotations

from typing import Mapping, Sequence

from ..control.store import ParameterStore
from ..show import Show

__all__ = ["Controls"]


class Controls:
    """OSC (kept alive by `OscLink`) and the web link (`WebLink`), each when the show has it on."""

    def __init__(self, params: ParameterStore, show: Show, *, osc_port: int | None, web_port: int | None,
                 web: bool, scene_pieces: Sequence[Sequence[str]], piece_actions: Mapping[str, Sequence[str]]):
        s = show.settings
        self.osc = None
        self.web_link = None
        try:
            if s.osc.enabled:
                from .osc_link import OscLink
                self.osc = OscLink(params, s.osc, osc_port).start()
            if web:
                from .web_link import WebLink
                self.web_link = WebLink(params, show, s.web, port=web_port, osc=self.osc,
                                        scene_pieces=scene_pieces, piece_actions=piece_actions)
        except BaseException:
            self.stop()  # the OSC port is free again for the error's next try
            raise

    @property
    def preview(self):
        """The control page's preview sink (None without a web server)."""
        return self.web_link.preview if self.web_link is not None else None

    def urls(self) -> list[str]:
        """Where the control page and OSCQuery answer (none without a web server)."""
        return self.web_link.urls() if self.web_link is not None else []

    def follow(self, scene: int) -> None:
        """The OSCQuery tree lists what scene `scene` shows."""
        if self.web_link is not None:
            self.web_link.follow(scene)

    def watch(self) -> None:
        """Once a second: restart the OSC threads if they died."""
        if self.osc is not None:
            self.osc.watch()

    def telemetry(self, line: dict) -> None:
        """One second's telemetry to the pages that asked for it."""
        if self.web_link is not None:
            self.web_link.telemetry(line)

    def osc_line(self) -> dict | None:
        """The OSC counters of the telemetry line (None without OSC)."""
        if self.osc is None:
            return None
        return {"messages": self.osc.stats()["messages"], "restarts": self.osc.restarts}

    def stop(self) -> None:
        if self.osc is not None:
            self.osc.stop()
        if self.web_link is not None:
            self.web_link.stop()
