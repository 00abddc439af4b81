"""The live engine as a package: the loop and the frame call (engine), split by responsibility
into the pieces (pieceset, pieces: resuming, training, mirror), the control surfaces (controls,
osc_link, web_link), what their events do (actions), the outputs (outputs, recorder, sound), the
options (options) and what the show says about itself (reporter, telemetry). Scenes, timers,
automation and the frame itself are the frame pipeline's (unstable.frame)."""

from .engine import Engine
from .mirror import SamplingMirror
from .pieces import build_systems, show_groups
from .telemetry import LiveReport

__all__ = ["Engine", "SamplingMirror", "LiveReport", "build_systems", "show_groups"]
