"""The live engine as a package: the loop (engine, session), the training thread with the
sampling copy (training, mirror), opening pieces (pieces), the recorder, telemetry and OSC link.
Scenes, timers, automation and the frame itself are the frame pipeline's (unstable.frame)."""

from .engine import Engine
from .mirror import SamplingMirror
from .pieces import build_systems, show_groups
from .telemetry import LiveReport

__all__ = ["Engine", "SamplingMirror", "LiveReport", "build_systems", "show_groups"]
