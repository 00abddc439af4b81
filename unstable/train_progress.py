"""What `unstable train` shows while it runs and when it ends: a time left for the real stop, a
closing line saying how to go on, grids large enough to look at, and progress.gif.

- The time left is for whichever stop comes first: the step target or `--minutes`. tqdm's own ETA
  knows only the steps and follows the last few step times, so on a timed run it swings by
  several times the real figure (docs/figures.md, "Figures moved out of docstrings"). Here the
  rate is the run's average since it started (steady), and a `--minutes` deadline caps it.
- Grids of small panels (28 px digits, 32 px generators) would come out at ~134x266 px. They are scaled
  up by a whole factor, nearest neighbour, until the shorter side is at least 512 px: every sample
  pixel is an exact square block, nothing smoothed away.
- progress.gif: the grids over the whole run as one animation, at most `max_frames` frames,
  thinned evenly in steps as the run grows (the first and the newest always stay), each labelled
  with its step, rewritten atomically: at most every 10 s while training (encoding 60 frames is a
  lot beside a fast piece's grids every second), and at the end. A resumed run reads it back (the steps are in the GIF's
  comment) and drops frames past the checkpoint's step, as log.jsonl does.
"""

from __future__ import annotations

import io
import math
import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

__all__ = ["upscale_nearest", "time_left", "eta_text", "end_line", "TrainBar", "ProgressGif"]

GRID_MIN_SIDE = 512    # px: the shorter side of grid.png and grids/step_*.png at least this
GRID_MAX_SIDE = 4096   # px: ... unless the longer side would pass this (a tall grid of 32 rows)


def scale_factor(height: int, width: int, min_side: int = GRID_MIN_SIDE, max_side: int = GRID_MAX_SIDE) -> int:
    """The whole factor that brings the shorter side to `min_side`, limited by `max_side` (at least 1)."""
    want = math.ceil(min_side / max(1, min(height, width)))
    room = max_side // max(1, max(height, width))
    return max(1, min(want, room))


def upscale_nearest(image: torch.Tensor, min_side: int = GRID_MIN_SIDE, max_side: int = GRID_MAX_SIDE) -> torch.Tensor:
    """[3, H, W] -> [3, kH, kW] with each pixel a k x k block (`scale_factor`)."""
    k = scale_factor(image.shape[-2], image.shape[-1], min_side, max_side)
    if k == 1:
        return image
    return image.repeat_interleave(k, dim=-2).repeat_interleave(k, dim=-1)  # [3, kH, kW]


def _clock(seconds: float) -> str:
    s = max(0, int(round(seconds)))
    return f"{s // 3600}:{s // 60 % 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60:02d}:{s % 60:02d}"


def time_left(step: int, target: int, first_step: int, elapsed: float, minutes: float | None
              ) -> tuple[float | None, str]:
    """Seconds until this run stops and what stops it ("steps" or "--minutes"); None when unknown
    yet (no step done and no deadline). `first_step` is where this run (or resume) began."""
    done = step - first_step
    by_steps = (target - step) * elapsed / done if done > 0 and elapsed > 0 else None
    by_time = max(0.0, minutes * 60 - elapsed) if minutes is not None else None
    if by_time is not None and (by_steps is None or by_time < by_steps):
        return by_time, "--minutes"
    return by_steps, "steps"


def eta_text(step: int, target: int, first_step: int, elapsed: float, minutes: float | None) -> str:
    """The progress bar's time left: 'left 03:12 (--minutes 20)', 'left 1:02:00 (steps)', 'left ?'."""
    left, why = time_left(step, target, first_step, elapsed, minutes)
    if left is None:
        return "left ?"
    return f"left {_clock(left)} ({f'--minutes {minutes:g}' if why == '--minutes' else 'steps'})"


def end_line(step: int, target: int, piece_path: str, *, steps: int | None, out: str | None,
             seed: int | None) -> str:
    """The last line of a run: where it stopped and the command that goes on from there."""
    tail = "".join(f" {opt} {value}" for opt, value in (("--out", out), ("--seed", seed)) if value is not None)
    if step < target:
        more = f" --steps {steps}" if steps is not None else ""
        return f"stopped at {step}/{target} — continue with: unstable train {piece_path} --resume{more}{tail}"
    return (f"done: {step}/{target} steps — train further with: unstable train {piece_path} --resume "
            f"--steps {2 * target}{tail}")


class TrainBar(tqdm):
    """The training progress bar over steps, its time left from `eta_text` (the real stop)."""

    def __init__(self, target: int, initial: int, minutes: float | None, started: float, **kw):
        self._stop = (initial, target, minutes, started)  # before tqdm's __init__, which may draw
        super().__init__(total=target, initial=initial, dynamic_ncols=True, smoothing=0,
                         bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}, {left}, {rate_fmt}{postfix}]", **kw)

    @property
    def format_dict(self):
        d = super().format_dict
        first, target, minutes, started = self._stop
        d["left"] = eta_text(d["n"], target, first, time.monotonic() - started, minutes)
        return d


class ProgressGif:
    """progress.gif of a run folder: the grids over training, bounded to `max_frames` frames."""

    COMMENT = b"unstable progress steps="

    def __init__(self, path: str | Path, max_frames: int = 60, frame_ms: int = 200, hold_ms: int = 1500,
                 max_side: int = 1024, min_interval: float = 10.0):
        self.path = Path(path)
        self.min_interval = float(min_interval)
        self._written = -math.inf  # time.monotonic() of the last write
        self.max_frames = max(2, int(max_frames))
        self.frame_ms, self.hold_ms, self.max_side = int(frame_ms), int(hold_ms), int(max_side)
        self.frames: list[tuple[int, object]] = []  # (step, PIL "P" image), oldest first

    @property
    def steps(self) -> list[int]:
        return [s for s, _ in self.frames]

    def load(self, upto_step: int) -> "ProgressGif":
        """Take the frames of an existing progress.gif up to `upto_step` (a resumed run); a missing,
        foreign or damaged file starts an empty animation."""
        from PIL import Image, ImageSequence
        try:
            with Image.open(self.path) as im:
                comment = im.info.get("comment", b"")
                if not comment.startswith(self.COMMENT):
                    return self
                steps = [int(s) for s in comment[len(self.COMMENT):].decode().split(",") if s]
                frames = [f.convert("RGB").quantize(colors=256, dither=Image.Dither.NONE)
                          for f in ImageSequence.Iterator(im)]
        except (OSError, ValueError, SyntaxError, EOFError):
            return self
        if len(frames) == len(steps):
            self.frames = [(s, f) for s, f in zip(steps, frames) if s <= upto_step]
        return self

    def _frame(self, step: int, canvas: torch.Tensor):
        from PIL import Image, ImageDraw, ImageFont
        from .images import to_uint8
        rgb = to_uint8(canvas)  # [H, W, 3]
        big = max(rgb.shape[:2])
        if big > self.max_side:  # a huge grid: every n-th pixel, still crisp
            n = math.ceil(big / self.max_side)
            rgb = rgb[::n, ::n]
        else:
            k = scale_factor(*rgb.shape[:2], min_side=256, max_side=self.max_side)
            rgb = np.repeat(np.repeat(rgb, k, axis=0), k, axis=1)
        label = 14
        frame = np.full((rgb.shape[0] + label, rgb.shape[1], 3), 31, np.uint8)  # [H + label, W, 3]
        frame[:rgb.shape[0]] = rgb
        image = Image.fromarray(frame)
        try:
            font = ImageFont.load_default(size=11)
        except TypeError:  # Pillow < 10.1: the bitmap font has one size
            font = ImageFont.load_default()
        ImageDraw.Draw(image).text((3, rgb.shape[0] + 1), f"step {step}", fill=(230, 230, 230), font=font)
        return image.quantize(colors=256, dither=Image.Dither.NONE)

    def add(self, step: int, canvas: torch.Tensor) -> None:
        """The grid `canvas` ([3, H, W] in 0..1, before upscaling) of `step`; a step seen before is replaced."""
        frame = self._frame(step, canvas)
        self.frames = [(s, f) for s, f in self.frames if s < step] + [(step, frame)]
        while len(self.frames) > self.max_frames:
            # Drop the inner frame whose neighbours are closest in steps: what stays is spread evenly.
            steps = self.steps
            i = min(range(1, len(steps) - 1), key=lambda j: steps[j + 1] - steps[j - 1])
            del self.frames[i]

    def write(self, force: bool = True) -> None:
        """Rewrite progress.gif atomically (a viewer never sees half a file); unless `force`, only
        when `min_interval` seconds have passed since the last write."""
        if not self.frames or (not force and time.monotonic() - self._written < self.min_interval):
            return
        first, *rest = [f for _, f in self.frames]
        size = first.size
        rest = [f if f.size == size else f.resize(size) for f in rest]  # a grown piece's grid: one size
        buf = io.BytesIO()
        durations = [self.frame_ms] * (len(self.frames) - 1) + [self.hold_ms]
        first.save(buf, format="GIF", save_all=True, append_images=rest, duration=durations, loop=0,
                   disposal=1, comment=self.COMMENT + ",".join(map(str, self.steps)).encode())
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.tmp")
        try:
            tmp.write_bytes(buf.getvalue())
            tmp.replace(self.path)
        except OSError:
            tmp.unlink(missing_ok=True)  # a full disk: no half file left behind
            raise
        self._written = time.monotonic()
