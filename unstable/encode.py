"""Video out through the ffmpeg binary that imageio-ffmpeg ships: the threaded `VideoWriter`.

We drive `imageio_ffmpeg.get_ffmpeg_exe()` with subprocess rather than `imageio_ffmpeg.write_frames`
because the latter rounds the frame rate to two decimals (30000/1001 would become 29.97) and pads
sizes to multiples of 16 unless told otherwise (reference-notes §4). Here the frame rate goes to
ffmpeg as an exact rational and frames go in at exactly the size given.

The presets and frame-rate parsing are in `unstable.formats`; reading videos back (probe,
frames, md5s) and joining parts in `unstable.probe`.
"""

from __future__ import annotations

import atexit
import json
import os
import queue
import subprocess
import tempfile
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import UnstableError
from .formats import (PNG_PATTERN, PRESETS, SEQUENCE_SIDECAR, ffmpeg_exe, frame_number, parse_fps,
                      sequence_files)

__all__ = ["VideoWriter", "EncodeStats"]


@dataclass(frozen=True)
class EncodeStats:
    """What a VideoWriter did, for the renderer's report.

    `encode_seconds`: wall time the writer thread spent pushing frames into ffmpeg (blocked while
    ffmpeg was busy) plus ffmpeg's finalisation after the last frame. `producer_wait_seconds`: time
    `write()` blocked because the queue was full, i.e. generation waiting on encoding.
    `encoder_cpu_seconds`: ffmpeg's user+system CPU time (None where the OS does not report it).
    """

    frames: int
    wall_seconds: float
    encode_seconds: float
    producer_wait_seconds: float
    encoder_cpu_seconds: float | None


_OPEN_WRITERS: "weakref.WeakSet[VideoWriter]" = weakref.WeakSet()


@atexit.register
def _close_open_writers():
    # Finalise every writer still open at interpreter exit (uncaught exception, sys.exit) so the file
    # plays. A SIGKILL/SIGTERM of this process skips atexit, but ffmpeg then sees end-of-input on
    # its pipe and finalises the frames it already has by itself.
    for w in list(_OPEN_WRITERS):
        try:
            w.close()
        except Exception:  # noqa: BLE001 - best effort at exit, nothing left to report to
            pass


class VideoWriter:
    """Encode HxWx3 uint8 RGB frames with ffmpeg in a background thread.

        with VideoWriter("out.mp4", 512, 256, "30000/1001", "h264") as w:
            for frame in frames:          # [H, W, 3] uint8, or a batch [T, H, W, 3]
                w.write(frame)
        print(w.stats)

    `write` copies the frame into a bounded queue (`queue_frames` deep) and returns, so generation
    and encoding overlap; a full queue blocks the producer (back pressure, bounded memory).
    `close()` is idempotent and safe in `finally` or atexit: it drains the queue, closes ffmpeg's
    input and waits for a finalised, playable file. ffmpeg runs in its own session, so a ctrl-C
    in the terminal reaches only Python (whose `finally` closes the writer), and if this process
    is killed outright ffmpeg sees end-of-input and finalises the frames it received.

    `start_number` numbers the first PNG of a png sequence (for resumed renders).
    """

    def __init__(self, path: str | os.PathLike, width: int, height: int, fps, preset: str = "h264", *,
                 queue_frames: int = 8, start_number: int = 0, overwrite: bool = True):
        if preset not in PRESETS:
            raise UnstableError(f"preset {preset!r} is unknown, expected one of {', '.join(PRESETS)}")
        self.preset = PRESETS[preset]
        self.path = Path(path)
        self.fps = parse_fps(fps)
        self.width, self.height = int(width), int(height)
        if self.width < 1 or self.height < 1:
            raise UnstableError(f"{self.path}: size {width}x{height} is empty, expected a positive width and height")
        sx, sy = self.preset.subsample
        if self.width % sx or self.height % sy:
            need = "even width and height" if (sx, sy) == (2, 2) else "an even width"
            raise UnstableError(
                f"{self.path}: size {self.width}x{self.height} cannot be encoded with preset {preset!r} "
                f"({self.preset.pix_fmt} needs {need}); use an even size or the ffv1/png preset")
        if not self.preset.sequence and self.path.suffix.lower() not in self.preset.suffixes:
            raise UnstableError(f"{self.path}: preset {preset!r} writes {' or '.join(self.preset.suffixes)} files, "
                                f"not {self.path.suffix or 'a file without suffix'!r}")
        if start_number < 0:
            raise UnstableError(f"{self.path}: start_number {start_number} must be >= 0")
        if not overwrite and self.path.exists() and not self.preset.sequence:
            raise UnstableError(f"{self.path}: already exists (refusing to overwrite)")

        self._frame_bytes = self.width * self.height * 3
        self._queue: queue.Queue = queue.Queue(maxsize=max(1, queue_frames))
        self._lock = threading.Lock()
        self._closed = False
        self._error: str | None = None
        self._submitted = 0
        self._written = 0
        self._encode_seconds = 0.0
        self._producer_wait = 0.0
        self._cpu: float | None = None
        self._t_open = time.perf_counter()
        self.stats: EncodeStats | None = None

        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-nostats", "-y",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{self.width}x{self.height}",
               "-framerate", f"{self.fps.numerator}/{self.fps.denominator}", "-i", "pipe:0",
               "-an", *self.preset.args]
        if preset == "h264_live":
            cmd += ["-g", str(max(1, round(2 * self.fps)))]
        if self.preset.sequence:
            self.path.mkdir(parents=True, exist_ok=True)
            # Frames from start_number on are (re)written now: stale ones from an older, longer
            # render would otherwise be counted as part of this one.
            stale = [f for f in sequence_files(self.path) if frame_number(f) >= start_number]
            if stale and not overwrite:
                raise UnstableError(f"{self.path}: already holds frames from {PNG_PATTERN % start_number} on "
                                    "(refusing to overwrite)")
            for f in stale:
                f.unlink()
            (self.path / SEQUENCE_SIDECAR).write_text(json.dumps({
                "fps": f"{self.fps.numerator}/{self.fps.denominator}", "width": self.width,
                "height": self.height, "pattern": PNG_PATTERN}) + "\n")
            cmd += ["-f", "image2", "-start_number", str(start_number), str(self.path / PNG_PATTERN)]
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            cmd += [str(self.path)]
        self._stderr = tempfile.TemporaryFile()
        try:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                          stderr=self._stderr, start_new_session=True)
        except OSError as e:
            self._stderr.close()
            raise UnstableError(f"{self.path}: cannot start ffmpeg ({e})") from None
        self._thread = threading.Thread(target=self._pump, name=f"encode:{self.path.name}", daemon=True)
        self._thread.start()
        _OPEN_WRITERS.add(self)

    @property
    def pid(self) -> int:
        """Process id of the ffmpeg encoder (it outlives this process if this one is killed)."""
        return self._proc.pid

    @property
    def frames_written(self) -> int:
        """Frames handed to ffmpeg so far (queued frames not yet counted)."""
        return self._written

    def _pump(self):
        """Writer thread: queue -> ffmpeg stdin; on failure keep draining so producers never block."""
        stdin = self._proc.stdin
        while True:
            item = self._queue.get()
            if item is None:
                break
            if self._error is not None:
                continue
            t0 = time.perf_counter()
            try:
                stdin.write(item)
                self._written += len(item) // self._frame_bytes
            except (BrokenPipeError, OSError, ValueError):
                self._error = "ffmpeg stopped accepting frames"
            self._encode_seconds += time.perf_counter() - t0
        t0 = time.perf_counter()
        try:
            stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self._wait_encoder()
        self._encode_seconds += time.perf_counter() - t0

    def _wait_encoder(self):
        # wait4 also reports the child's CPU time; fall back to a plain wait where it is missing.
        if hasattr(os, "wait4"):
            try:
                _, status, usage = os.wait4(self._proc.pid, 0)
                self._proc.returncode = os.waitstatus_to_exitcode(status)
                self._cpu = usage.ru_utime + usage.ru_stime
                return
            except ChildProcessError:
                pass
        self._proc.wait()

    def _stderr_tail(self) -> str:
        try:
            self._stderr.seek(0)
            lines = [ln.strip() for ln in self._stderr.read().decode(errors="replace").splitlines() if ln.strip()]
        except (OSError, ValueError):
            return ""
        return lines[-1] if lines else ""

    def _fail(self, what: str):
        self.close(_raise=False)
        tail = self._stderr_tail()
        raise UnstableError(f"{self.path}: {what}" + (f" ({tail})" if tail else ""))

    def write(self, frames) -> None:
        """Queue one frame [H, W, 3] or a batch [T, H, W, 3] of uint8 RGB (copied; the caller may reuse it)."""
        if self._closed:
            raise UnstableError(f"{self.path}: write after close")
        if self._error is not None or self._proc.poll() is not None:
            self._fail(self._error or "ffmpeg exited early")
        a = np.asarray(frames)
        if a.ndim == 3:
            a = a[None]
        if a.ndim != 4 or a.shape[1:] != (self.height, self.width, 3) or a.dtype != np.uint8:
            raise ValueError(f"frames must be uint8 [T, {self.height}, {self.width}, 3] or "
                             f"[{self.height}, {self.width}, 3], got {a.dtype} {list(np.shape(frames))}")
        if len(a) == 0:
            return
        data = np.ascontiguousarray(a).tobytes()  # the copy that lets the caller reuse its buffer
        t0 = time.perf_counter()
        self._queue.put(data)
        self._producer_wait += time.perf_counter() - t0
        self._submitted += len(a)

    def close(self, _raise: bool = True) -> EncodeStats | None:
        """Finish: encode what is queued, close ffmpeg's input, wait for the file. Idempotent.

        Returns the EncodeStats (also kept as `self.stats`); raises UnstableError if ffmpeg failed.
        """
        with self._lock:
            if not self._closed:
                self._closed = True
                self._queue.put(None)
                self._thread.join()
                _OPEN_WRITERS.discard(self)
                self.stats = EncodeStats(
                    frames=self._written, wall_seconds=time.perf_counter() - self._t_open,
                    encode_seconds=self._encode_seconds, producer_wait_seconds=self._producer_wait,
                    encoder_cpu_seconds=self._cpu)
                if self._proc.returncode not in (0, None) and self._error is None:
                    self._error = f"ffmpeg failed with exit status {self._proc.returncode}"
        if _raise and self._error is not None:
            tail = self._stderr_tail()
            raise UnstableError(f"{self.path}: {self._error}" + (f" ({tail})" if tail else ""))
        return self.stats

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, exc_type, exc, tb):
        # On an exception in the body, still finalise (a playable partial file) but let the original
        # exception propagate rather than one about the encoder.
        self.close(_raise=exc_type is None)

    def __del__(self):
        try:
            if not self._closed:
                self.close(_raise=False)
        except Exception:  # noqa: BLE001 - never raise from a finaliser
            pass
