"""A Standard MIDI File played through a show's mappings, into an automation file a render replays.

`unstable render SHOW --midi FILE.mid` is a performance sequenced in a DAW rendered offline. The
file's messages go through the very `MidiMapper` a live controller's do, on the frame clock: a
message at t seconds lands in frame ceil(t x fps), the first frame at or after it. The timeline is
advanced frame by frame as a live show's is, its automation recorded exactly as a live show
records it, and the render replays that automation: the frames a mapped parameter moves in are
the frames of its events, and scene presets, tap tempo and smoothing follow as they would live.
A mapping to a preset (`preset=`, `morph=`) recalls or morphs to the preset saved in the run folder
(`<run>/presets/`) as the live show's bank does: after the frame of its event, so the morph
starts at the next frame, as it would live; the automation holds every frame of it.
"""

from __future__ import annotations

import math
from fractions import Fraction
from pathlib import Path

from ..errors import UnstableError

__all__ = ["read_midi", "midi_automation", "MAX_BYTES", "MAX_HOURS"]

# mido parses a file message by message in Python, tens of thousands a second: 4 MiB (a knob turned
# all evening, 100 messages a second for three hours, is about 3 MiB) takes about a minute to read;
# a bigger file is refused before it is read, rather than holding the render for an hour.
MAX_BYTES = 4 << 20
# A file's last event sets the render's length; a delta time of 2^28 ticks at a slow tempo puts it
# a million hours away. Longer performances render in parts with --seconds.
MAX_HOURS = 12.0


def read_midi(path: str | Path, seconds: float | None = None) -> list[tuple[float, object]]:
    """[(seconds, mido message)] of the channel messages in the file at `path`, in time order (its
    tempo map applied); anything that is not a Standard MIDI File, is over MAX_BYTES, or (without
    `seconds`, the render's own length) lasts over MAX_HOURS is one UnstableError line."""
    import mido
    path = Path(path)
    try:
        size = path.stat().st_size
        if not path.is_file():
            raise UnstableError(f"--midi {path}: not a file")
        if size > MAX_BYTES:
            raise UnstableError(f"--midi {path}: {size / 2**20:.1f} MiB, more than the {MAX_BYTES >> 20} MiB "
                                "a performance file may be; split it in a DAW")
        mid = mido.MidiFile(str(path))
        out, t = [], 0.0
        for msg in mid:  # merged tracks, .time in seconds since the message before
            t += float(msg.time)
            if not msg.is_meta and msg.type in ("control_change", "note_on", "note_off"):
                out.append((t, msg))
    except FileNotFoundError:
        raise UnstableError(f"--midi {path}: no such file") from None
    except EOFError:  # mido says nothing more: the file stops inside its header or a track
        raise UnstableError(f"--midi {path}: not a Standard MIDI File, or a truncated one (it ends "
                            "inside its header or a track)") from None
    except (OSError, ValueError, KeyError, IndexError, TypeError) as e:
        raise UnstableError(f"--midi {path}: not a Standard MIDI File ({type(e).__name__}: {e})") from None
    if not all(math.isfinite(t) for t, _ in out):
        raise UnstableError(f"--midi {path}: its tempo map gives times that are not finite numbers")
    if seconds is None and out and out[-1][0] > MAX_HOURS * 3600:
        raise UnstableError(f"--midi {path}: its last event is {out[-1][0] / 3600:.3g} hours in, more than "
                            f"{MAX_HOURS:g}; give --seconds to render a part of it")
    return out


def event_frame(t: float, fps: Fraction) -> int:
    """The frame a message at `t` seconds lands in: the first whose time is at or after it."""
    x = Fraction(t) * fps
    n = math.ceil(x)
    # A time written as a float a hair past a frame boundary (0.30000000000000004 x 10) is that frame.
    return n - 1 if n - x > 1 - Fraction(1, 10**9) and n > 0 else n


def midi_automation(show, groups, mid_path: str | Path, out: str | Path, *, run_dir: Path | None = None,
                    seconds: float | None = None) -> int:
    """Play `mid_path` through `show`'s mappings (and the bindings learned in `run_dir`) into the
    automation file `out`; returns how many frames it covers (`seconds`, else through the file's
    last event, at least one frame past it)."""
    from ..control.store import ParameterStore
    from ..formats import exact
    from ..frame.timeline import ShowTimeline
    from ..tempo import TapTempo, TempoLink
    from ..control.midi import LEARN_FILE, load_learned
    from ..control.midi_map import MidiMapper
    events = read_midi(mid_path, seconds)
    s = show.settings
    fps = exact(s.fps)
    store = ParameterStore(groups)
    timeline = ShowTimeline(show.resolved_scenes(), store, list(show.pieces), s.fps, loop=s.loop_scenes,
                            start_values={n: e.params for n, e in s.pieces.items()})
    maps = list(s.midi.map) + (load_learned(Path(run_dir) / LEARN_FILE, groups) if run_dir is not None else [])
    if not maps:
        raise UnstableError(f"--midi {mid_path}: the show {show.show_file} maps no MIDI ([[midi.map]]), and "
                            "nothing was learned in its run folder: the file would move nothing")
    mapper = MidiMapper(store, maps)
    bank = None
    if run_dir is not None and any(m.preset for m in maps):
        from ..control.presets import PresetBank
        # The live bank's folder: presets saved during the show are what its file recalls.
        bank = PresetBank(store, Path(run_dir) / "presets")
    # Tap tempo on the frame clock: a file taps as a performer would, at its own times.
    tempo = TempoLink(store, tap=TapTempo(clock=lambda: timeline.now)).start()
    origin = ("midi", 0)
    if seconds is not None:
        frames = max(1, round(exact(seconds) * fps))
    else:
        frames = (event_frame(events[-1][0], fps) + 2) if events else 1
    by_frame: dict[int, list] = {}
    for t, msg in events:
        by_frame.setdefault(event_frame(t, fps), []).append(msg)
    timeline.start_recording(out, show.name, 0, max_bytes=0)
    try:
        for n in range(frames):
            timeline.now = float(Fraction(n) / fps)
            for msg in by_frame.get(n, ()):
                mapper.handle(msg, origin)
            state = timeline.advance(n)
            for ev in state.actions:
                if bank is not None and ev.kind.startswith("preset/"):
                    bank.act(ev)  # between frames, as the live engine's actions do
    finally:
        if bank is not None:
            bank.close()
        tempo.stop()
        failed = timeline.stop_recording(quiet=True)
    if failed:
        raise UnstableError(f"--midi {mid_path}: its automation could not be written ({failed})")
    return frames


def automation_for_render(show_path: str | Path, mid_path: str | Path, *, run: str | Path | None = None,
                          seconds: float | None = None) -> tuple[Path, float]:
    """`unstable render SHOW --midi FILE.mid`: the file's automation, written into the show's run
    folder (`<run>/midi/<FILE>.automation.jsonl`, where every render worker finds it), and the
    seconds it lasts."""
    import torch

    from ..show import load_show
    from ..show_systems import build_systems, show_groups
    show = load_show(show_path)
    read_midi(mid_path, seconds)  # a file that is not MIDI is one line before any model is built
    run_dir = Path(run) if run is not None else Path("runs") / "live" / show.name
    groups = show_groups(show, build_systems(show, torch.device("cpu")))
    out = run_dir / "midi" / (Path(mid_path).name + ".automation.jsonl")
    frames = midi_automation(show, groups, mid_path, out, run_dir=run_dir, seconds=seconds)
    return out, frames / float(show.settings.fps)
