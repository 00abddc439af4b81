"""How one live show is played: the options of `unstable live` beside the show file's settings,
checked when the engine is made (before anything opens)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from ..errors import UnstableError
from ..show import Show

__all__ = ["LiveOptions"]


@dataclass(frozen=True)
class LiveOptions:
    """The engine's keyword arguments (see `Engine`), checked; `resolved` fills in the show's own
    values where an option was left out."""

    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    headless: bool = False
    fullscreen: bool | None = None
    monitor: int | None = None
    seconds: float | None = None
    record: Path | None = None
    automation: Path | None = None
    telemetry: str | os.PathLike | None = None
    osc_port: int | None = None
    web_port: int | None = None
    web: bool = True
    run_dir: Path | None = None
    fresh: bool = False
    resume: bool = False
    reset_params: bool = False      # resume the weights, not the live parameter values
    audio: str | os.PathLike | None = None   # --audio: play the [[audio.map]] from this file instead
    train: bool = True
    time_source: Callable[[], float] = time.perf_counter
    echo: Callable[[str], None] = print
    progress: Callable | None = None

    def __post_init__(self):
        set_ = object.__setattr__  # frozen: normalised once, here
        set_(self, "device", torch.device(self.device))
        for name in ("record", "automation", "run_dir"):
            if getattr(self, name) is not None:
                set_(self, name, Path(getattr(self, name)))
        if self.fresh and self.resume:
            raise UnstableError("--fresh and --resume contradict each other: choose one")
        if self.record is not None and self.record.suffix.lower() != ".mp4":
            raise UnstableError(f"--record {self.record}: recordings are .mp4 files (preset h264_live)")

    def resolved(self, show: Show) -> "LiveOptions":
        """These options with the show's fullscreen, monitor, web and training switches and its
        default run folder filled in."""
        s = show.settings
        return LiveOptions(**{
            **{k: getattr(self, k) for k in self.__dataclass_fields__},
            "fullscreen": s.fullscreen if self.fullscreen is None else self.fullscreen,
            "monitor": s.monitor if self.monitor is None else self.monitor,
            "web": self.web and s.web.enabled,
            "train": self.train and s.training.on,
            "run_dir": self.run_dir if self.run_dir is not None else Path("runs") / "live" / show.name})

    def max_frames(self, fps: float) -> int | None:
        """The slot a timed show stops at: round(seconds x fps), at least 1 (None: untimed)."""
        return None if self.seconds is None else max(1, round(self.seconds * fps))
