"""The show's outputs: its window and compositor, and the frame sinks after them (recorder, the page's
preview, stills, the window). A new output is a new sink here; the driver only hands each frame on."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

import numpy as np

from ..disk import MB, free_bytes
from ..frame.sinks import Sink, StillSink, WindowSink
from ..show import Show
from .recorder import Recorder

__all__ = ["Outputs"]


class Outputs:
    """Opens the window (black while the pieces prepare), the compositor drawing into it, the recorder
    and the stills; `put` hands a composed frame to every sink, the window's last."""

    def __init__(self, show: Show, *, headless: bool, fullscreen: bool, monitor: int | None, run_dir: Path,
                 echo: Callable[[str], None]):
        self.show = show
        self.run_dir = run_dir
        self.echo = echo
        self.window = None
        self.compositor = None
        self.recorder: Recorder | None = None
        self.stills: StillSink | None = None
        self.ndi = None                     # the NdiSink with [outputs.ndi] (unstable.frame.ndi_sink)
        self.sinks: list[Sink] = []
        self._open_window(headless, fullscreen, monitor)

    def _open_window(self, headless: bool, fullscreen: bool, monitor: int | None) -> None:
        from ..display.compositor import Compositor
        from ..display.layout import Layout, Scene
        from ..display.window import HeadlessWindow, open_window
        s = self.show.settings
        if headless:
            self.window = HeadlessWindow(s.size, reason="--headless")
        else:
            self.window = open_window(s.size, fullscreen=fullscreen, monitor=monitor,
                                      title=f"unstable: {self.show.name}", vsync=s.vsync, fallback_headless=True)
            if self.window.headless:
                self.echo(f"live: no window ({self.window.reason}); running headless")
        self.compositor = Compositor(self.window.ctx, s.size)
        self.compositor.draw_into(self.window)  # at the show's own size: no second pass to present it
        if not self.window.headless:  # black while the pieces prepare (base models can take minutes)
            self.compositor.render(Scene({}, Layout(panels=("",))), fade=0.0)
            self.compositor.present(self.window)
            self.window.swap()

    def open_sinks(self, timeline, *, automation: Path | None, sound, preview, take_still: Callable,
                   panel_images: Callable | None = None) -> None:
        """The recorder (its automation from `timeline`, `sound` the file the show plays, if any),
        `preview` (the page's, or None) and stills, each handed to `take_still(pixels, frame)`; an
        NDI source with `[outputs.ndi]` (its panels' from `panel_images()`, {display: [3, H, W]})."""
        s = self.show.settings
        d = s.disk
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.recorder = Recorder(timeline, show=self.show.name, size=s.size, fps=s.fps, run_dir=self.run_dir,
                                 automation=automation, min_free=int(d.min_free_mb * MB),
                                 stills_keep=d.stills_keep, recordings_budget=int(d.recordings_budget_mb * MB),
                                 sound=sound, automation_max=int(d.automation_max_mb * MB))
        free = free_bytes(self.run_dir)
        if d.min_free_mb and free < d.min_free_mb * MB:
            self.echo(f"live: only {free / MB:.0f} MB free on the disk of {self.run_dir} (below [disk] min_free_mb = "
                      f"{d.min_free_mb:g}): no recordings or stills until there is more")
        self.stills = StillSink(take_still)
        # The window goes last: its swap ends the frame, and a frame composed into the window is
        # read back (recording, preview, still) before it.
        self.sinks = [self.recorder] + ([preview] if preview is not None else []) + [self.stills,
                                                                                    WindowSink(self.window)]
        if s.outputs.ndi is not None:  # read back before the window's swap, like the others
            from ..frame.ndi_sink import NdiSink
            self.ndi = NdiSink(s.outputs.ndi, self.show.name, s.size, s.fps, panel_images=panel_images)
            self.sinks.insert(-1, self.ndi)
            self.echo(f"live: NDI source {self.ndi.name!r}" + (" and its panels" if s.outputs.ndi.panels else ""))

    def put(self, frame: int) -> None:
        """Hand frame number `frame`, just composed, to every sink."""
        for sink in self.sinks:
            sink.put(frame, self.compositor)

    def read(self) -> np.ndarray:
        """The last composed frame, [H, W, 3] uint8 (a reused buffer)."""
        return self.compositor.read()

    @property
    def should_close(self) -> bool:
        """The window was closed (ESC, the window manager)."""
        return self.window is not None and self.window.should_close

    def close_recorder(self) -> None:
        """Finish the recordings and stills (before the controls stop: their files are the show's)."""
        if self.recorder is not None:
            self.recorder.close()  # its problems were logged as they happened, one line each

    def close(self) -> None:
        """Stop the NDI sources, release the compositor and close the window."""
        if self.ndi is not None:
            self.ndi.close()
        if self.compositor is not None:
            with contextlib.suppress(Exception):
                self.compositor.release()
        if self.window is not None:
            self.window.close()
