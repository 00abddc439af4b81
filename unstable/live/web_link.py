"""The live show's web side: its OSCQuery server and control page, opened over the parameter store
(they write nothing else), following the scenes and fed each second's telemetry, as osc_link.py
does for OSC. With `[web] process` the server runs in a process of its own (web_process.py)."""

from __future__ import annotations

from typing import Mapping, Sequence

from ..control.adverts import lan_addresses
from ..control.oscquery import AddressSpace
from ..control.store import ParameterStore
from ..control.webserver import WebServer
from ..frame.preview import PreviewSink

__all__ = ["WebLink"]


class WebLink:
    """A started WebServer and the PreviewSink it shows (a frame sink the session adds)."""

    def __init__(self, params: ParameterStore, show, web_settings, *, port: int | None, osc,
                 scene_pieces: Sequence[Sequence[str]], piece_actions: Mapping[str, Sequence[str]]):
        w = web_settings
        self.scene_pieces = [list(p) for p in scene_pieces]  # the pieces each scene shows
        space = AddressSpace(params, actions=piece_actions, name=show.name, pieces=show.pieces,
                             shown=self.scene_pieces[0] if self.scene_pieces else None)
        self.preview = PreviewSink(w.preview_fps, w.preview_width)
        kind, more = WebServer, {}
        if w.process:  # the same server in a process of its own (web_process.py says why)
            from .web_process import WebProcess
            kind, more = WebProcess, {"nice": w.nice}
        self.server = kind(params, space, host=w.host, port=w.port if port is None else port,
                           token=w.token or None, allow=list(w.allow) or None, advertise=w.advertise,
                           osc_host=osc.host if osc else "127.0.0.1", osc_port=osc.port if osc else None,
                           scenes=[sc.name or f"scene {i}" for i, sc in enumerate(show.scene_list())],
                           preview=self.preview.jpeg, hosts=w.hosts, idle_timeout=w.idle_timeout,
                           max_connections=w.max_connections, max_per_address=w.max_per_address,
                           penalty=w.penalty, **more).start()
        self._scene: int | None = None

    def urls(self) -> list[str]:
        """The control page's URLs: loopback, and each LAN address (with the token) when it is open."""
        urls = [self.server.url()]
        if self.server.host in ("0.0.0.0", "::", ""):
            urls += [self.server.url(a) for a in lan_addresses()]
        return urls

    def follow(self, scene: int) -> None:
        """The OSCQuery tree lists what scene `scene` shows; PATH_CHANGED when that changes."""
        if scene != self._scene:
            self._scene = scene
            if scene < len(self.scene_pieces):
                self.server.show_pieces(self.scene_pieces[scene])

    def telemetry(self, line: dict) -> None:
        """One second's telemetry to the pages that asked for it."""
        self.server.telemetry(line)

    def stop(self) -> None:
        self.server.stop()
