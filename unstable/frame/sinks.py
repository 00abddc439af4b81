"""Where a composed frame goes: a sink takes the compositor after each frame.

Live, a show's sinks are the recorder, the page's preview, stills (on request), NDI and the window
(a new output is a new sink); offline, the encoder. A sink that needs pixels reads them back once (`compositor.read()`, a reused buffer); one
that does not (the window) draws from the texture on the GPU, or finds the frame composed in its
back buffer already (`Compositor.draw_into`). The window comes last: its swap ends the frame, and
the pixels of a frame composed into it can be read only before.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Protocol

__all__ = ["Sink", "StillSink", "WindowSink", "EncoderSink"]


class Sink(Protocol):
    """An output of the frame pipeline."""

    def put(self, frame: int, compositor) -> None:
        """Take frame number `frame`, just composed in `compositor`."""

    def close(self) -> None:
        """Finish (flush files, close windows)."""


class WindowSink:
    """The show's window: present the composed texture and swap (nothing when headless)."""

    def __init__(self, window):
        self.window = window

    def put(self, frame: int, compositor) -> None:
        if not self.window.headless:
            compositor.present(self.window)
            self.window.swap()
        self.window.poll()

    def close(self) -> None:
        self.window.close()


class StillSink:
    """Stills on request: the first frame after `request()` is read back once and handed to
    `write(pixels, frame)` (pixels [H, W, 3] uint8, the compositor's reused buffer: copy to keep).
    Frames nobody asked a still of cost nothing. Several requests before a frame are one still."""

    def __init__(self, write: Callable[[Any, int], Any]):
        self.write = write
        self.due = False
        self.taken = 0      # stills handed to `write`

    def request(self) -> None:
        """Take a still of the next frame."""
        self.due = True

    def put(self, frame: int, compositor) -> None:
        if not self.due:
            return
        self.due = False
        self.write(compositor.read(), frame)
        self.taken += 1

    def close(self) -> None:
        self.due = False


class EncoderSink:
    """A video file (or PNG folder) being written: each frame's pixels go to its encoder.

    `writer` is an unstable.encode.VideoWriter (ffmpeg in its own process, fed from a queue by a
    thread of its own, so encoding overlaps the next frames' sampling). `wait_seconds` counts the
    time `put` blocked on a full queue: encoding, not generation, was then the slower side.
    """

    def __init__(self, writer):
        self.writer = writer
        self.wait_seconds = 0.0

    def put(self, frame: int, compositor) -> None:
        picture = compositor.read()  # [H, W, 3] uint8, a reused buffer the writer copies
        t0 = time.perf_counter()
        self.writer.write(picture)
        self.wait_seconds += time.perf_counter() - t0

    def close(self) -> None:
        self.writer.close()
