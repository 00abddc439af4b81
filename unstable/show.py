"""Live shows: `shows/*.toml` validated into a `Show`, with the checks that need the pieces' systems.

A show says which pieces play (piece files, paths relative to the show file), where their panels
go (a compositor `Layout` naming panels `piece/panel`, e.g. `eq/g0`), how big and how fast the
output is, how performers reach it (OSC: host, port, allow-list, controllers subscribed to
feedback at start; controller layouts), how much of the machine training may take, and a list of
scenes (durations, crossfades, their own layout, colour and parameter presets).

    show = load_show("shows/demo.toml")          # schema, piece files, names: one-line errors
    systems = {name: build_system(show.pieces[name], device) for name in show.pieces}
    show.check_systems({n: s.panels() for n, s in systems.items()},
                       {n: with_common(s.param_specs()) for n, s in systems.items()})

`load_show` checks everything a show file alone decides; `Show.check_systems` checks what needs
the systems (panel names in every layout, parameter names and ranges in presets), still before any
slow work (base-model training, a window), and with the same one-line `ConfigError`s naming the
show file and the key.
"""

from __future__ import annotations

import dataclasses
import types
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from .audio.mapping import AUDIO, AudioSettings
from .bending import BendSettings
from .config import load_dataclass, read_toml, setting
from .control.midi_map import MidiSettings
from .directions import DirectionSettings
from .display.layout import Colour, Layout
from .errors import ConfigError, UnstableError
from .keeper_settings import KeeperSettings
from .frame.ndi_sink import NdiSettings
from .guard import GuardSettings
from .schema import ParamSpec
from .show_settings import ActionSettings, ControllerSettings, DiskSettings, OscSettings, TrainingBudget, \
    WebSettings
from .tempo import TempoSettings
from .walk import WalkSettings

__all__ = ["PieceEntry", "OscSettings", "WebSettings", "ControllerSettings", "TrainingBudget", "ActionSettings", "DiskSettings",
           "SceneSettings",
           "ShowSettings", "Show", "load_show", "display_name"]

_EMPTY = types.MappingProxyType({})


def display_name(piece: str, panel: str) -> str:
    """The name a show gives a system's panel: `piece/panel` (e.g. `eq/g0`)."""
    return f"{piece}/{panel}"


@dataclass(frozen=True)
class PieceEntry:
    """`[pieces.NAME]`: one artwork in the show; NAME is its OSC name (`/unstable/NAME/...`)."""

    piece: str = setting(doc="the piece file (pieces/*.toml), relative to the show file")
    params: dict[str, float] = setting(default_factory=lambda: _EMPTY,
                                       doc="starting values of live parameters, in their own units")
    share: float = setting(1.0, gt=0, le=100, doc="relative share of the training time this piece gets")
    start: str = setting("", doc="a checkpoint this piece starts from when its run folder has none (relative "
                         "to the show file; its SHA-256 is checked against MANIFEST.json beside it); "
                         "'' starts from the piece's seed, as `--fresh` always does")
    bend: tuple[BendSettings, ...] = setting((), doc="network bends added to the piece's own ([[pieces.NAME.bend]])")
    directions: DirectionSettings | None = setting(None, doc="latent directions, in place of the piece's own")
    keeper: KeeperSettings | None = setting(None, doc="the piece's keeper in this show ([pieces.NAME.keeper]), in "
                                            "place of the piece's own [keeper] table")


@dataclass(frozen=True)
class SceneSettings:
    """`[[scenes]]`: one part of the show."""

    name: str = setting("", doc="a label for logs and controllers")
    duration: float = setting(0.0, ge=0, doc="seconds before the next scene starts by itself (0: stay until told); "
                              "or beats and bars, '8 bars', '16 beats' (then it ends on a beat at the live tempo)")
    crossfade: float = setting(1.0, ge=0, le=600, doc="seconds of crossfade into this scene, or '2 beats', '1 bar'")
    duration_beats: float = setting(0.0, ge=0, doc="the duration in beats (set by writing `duration` in beats or "
                                    "bars; `duration` then holds its seconds at the show's starting tempo)")
    crossfade_beats: float = setting(0.0, ge=0, doc="the crossfade in beats (set by writing `crossfade` in beats)")
    layout: Layout | None = setting(None, doc="this scene's layout (unset: the show's)")
    colour: Colour | None = setting(None, doc="this scene's colour grade (unset: the show's)")
    params: dict[str, dict[str, float]] = setting(
        default_factory=lambda: _EMPTY, doc="parameter values set when the scene starts: {piece = {name = value}}")


@dataclass(frozen=True)
class OutputSettings:
    """`[outputs]`: where the composed frames go besides the window and the recordings."""

    ndi: NdiSettings | None = setting(None, doc="[outputs.ndi]: publish the frames as an NDI source (present: on)")


@dataclass(frozen=True)
class ShowSettings:
    """A show file (shows/*.toml), as written."""

    pieces: dict[str, PieceEntry]
    name: str = setting("", doc="the show's name (run folder runs/live/<name>); default: the file's name")
    layout: Layout = setting(default_factory=Layout, doc="where the panels go ('piece/panel' names)")
    size: tuple[int, int] = setting((512, 256), ge=2, le=16384, doc="output width and height in pixels (even)")
    fps: float = setting(30.0, gt=0, le=240, doc="target frame rate")
    look_ahead: int = setting(4, ge=1, le=32, doc="frames each generator samples per call, kept for the frames "
                              "to come (a batch costs far less than its frames one by one; 1: one at a time)")
    colour: Colour = setting(default_factory=Colour, doc="colour grade of the whole frame")
    walk: WalkSettings = setting(default_factory=WalkSettings, doc="the latent walk every panel follows")
    fullscreen: bool = setting(False, doc="open the window fullscreen")
    monitor: int = setting(0, ge=0, le=16, doc="fullscreen on this monitor (0: primary)")
    vsync: bool = setting(False, doc="wait for the screen's refresh on swap (the loop paces itself anyway)")
    osc: OscSettings = setting(default_factory=OscSettings)
    web: WebSettings = setting(default_factory=WebSettings, doc="OSCQuery and the control page in a browser")
    controllers: ControllerSettings = setting(default_factory=ControllerSettings)
    training: TrainingBudget = setting(default_factory=TrainingBudget)
    guard: GuardSettings = setting(default_factory=GuardSettings, doc="undoing bad training steps, stasis checks")
    actions: ActionSettings = setting(default_factory=ActionSettings)
    disk: DiskSettings = setting(default_factory=DiskSettings)
    scenes: tuple[SceneSettings, ...] = setting((), doc="the scenes in order (empty: one scene, the show's layout)")
    loop_scenes: bool = setting(True, doc="after the last scene, start again from the first")
    outputs: OutputSettings = setting(default_factory=OutputSettings, doc="outputs besides the window (NDI)")
    audio: AudioSettings = setting(default_factory=AudioSettings, doc="sound that plays the show: a file or "
                                   "input device, its features mapped onto live parameters ([[audio.map]])")
    midi: MidiSettings = setting(default_factory=MidiSettings, doc="a MIDI controller: its port, feedback and "
                                 "[[midi.map]] (notes and CCs onto parameters, scenes, actions)")
    tempo: TempoSettings = setting(default_factory=TempoSettings, doc="the show's tempo and Ableton Link")

    def __post_init__(self):
        if not self.pieces:
            raise ValueError("pieces: a show needs at least one piece, e.g. [pieces.eq] piece = \"../pieces/x.toml\"")
        w, h = self.size
        if w % 2 or h % 2:
            raise ValueError(f"size: {w}x{h} must be even in both directions (recordings are yuv420p)")
        for name in self.pieces:
            from .schema import SHOW, normalise_groups
            if name == SHOW:
                raise ValueError(f"pieces.{name}: {name!r} is the show's own OSC group, choose another name")
            if name == AUDIO and self.audio.map:
                raise ValueError(f"pieces.{name}: {name!r} is the OSC group of the [[audio.map]] amounts, "
                                 "choose another name")
            try:
                normalise_groups({name: ()})
            except UnstableError as e:
                raise ValueError(f"pieces.{name}: {e}") from None


@dataclass(frozen=True)
class Show:
    """A loaded show: its settings, where it came from, and its pieces' validated configs."""

    settings: ShowSettings
    show_file: str                   # the show file, for error messages
    piece_paths: dict[str, Path]     # piece name -> resolved piece file
    pieces: dict[str, Any]           # piece name -> validated piece dataclass

    @property
    def name(self) -> str:
        return self.settings.name

    @property
    def walk_tempo(self) -> float | None:
        """The tempo (BPM) a walk period in beats was turned into seconds at, which the timeline
        scales the walk's speed against (ShowTimeline's `walk_bpm`); None for a period in seconds."""
        return float(self.settings.tempo.bpm) if self.settings.walk.period_beats > 0 else None

    def keeper(self, name: str) -> KeeperSettings | None:
        """The keeper settings of piece `name` in this show: the show's `[pieces.NAME.keeper]`, else
        the piece file's `[keeper]`, else None (no keeper)."""
        own = self.settings.pieces[name].keeper
        return own if own is not None else getattr(self.pieces[name], "keeper", None)

    def scene_list(self) -> list[SceneSettings]:
        """The scenes, or one that shows the show's layout forever when none are given."""
        return list(self.settings.scenes) or [SceneSettings(name="main", crossfade=0.0)]

    def resolved_scenes(self) -> list[SceneSettings]:
        """The scenes with their layout and colour filled in (the show's where a scene has none)."""
        return [dataclasses.replace(s, layout=s.layout or self.settings.layout, colour=s.colour or self.settings.colour)
                for s in self.scene_list()]

    def scene_layout(self, i: int) -> Layout:
        return self.scene_list()[i].layout or self.settings.layout

    def scene_colour(self, i: int) -> Colour:
        return self.scene_list()[i].colour or self.settings.colour

    def check_systems(self, panels: Mapping[str, Mapping[str, int]],
                      specs: Mapping[str, list[ParamSpec]]) -> list[str]:
        """Check layouts and presets against the systems; returns every display panel name.

        `panels`: {piece: system.panels()}; `specs`: {piece: live ParamSpecs (with the common
        ones)}. Raises ConfigError naming the show file and key.
        """
        available = [display_name(p, q) for p, ps in panels.items() for q in ps]
        self.settings.layout.check_panels(available, self.show_file, "layout")
        for i, scene in enumerate(self.settings.scenes):
            if scene.layout is not None:
                scene.layout.check_panels(available, self.show_file, f"scenes[{i}].layout")
        for i in range(len(self.scene_list())):
            if not [n for n in self.scene_layout(i).panel_names(available) if n]:
                raise ConfigError(self.show_file, f"scenes[{i}].layout.panels" if self.settings.scenes else "layout.panels",
                                  "shows no panel at all")
        by_piece = {p: {s.name: s for s in ss} for p, ss in specs.items()}

        def check(values: Mapping[str, float], piece: str, key: str):
            known = by_piece[piece]
            for name, v in values.items():
                if name not in known:
                    raise ConfigError(self.show_file, f"{key}.{name}", f"not a live parameter of {piece!r}, expected "
                                      f"one of {', '.join(sorted(known))}")
                s = known[name]
                if not s.lo <= v <= s.hi:
                    raise ConfigError(self.show_file, f"{key}.{name}",
                                      f"{v!r} is out of range, expected {s.lo:g} to {s.hi:g}")

        for piece, entry in self.settings.pieces.items():
            check(entry.params, piece, f"pieces.{piece}.params")
        for i, scene in enumerate(self.settings.scenes):
            for piece, values in scene.params.items():
                if piece not in by_piece:
                    raise ConfigError(self.show_file, f"scenes[{i}].params.{piece}", f"no piece {piece!r} in the "
                                      f"show, expected one of {', '.join(repr(p) for p in by_piece)}")
                check(values, piece, f"scenes[{i}].params.{piece}")
        return available

    def check_audio(self, groups: Mapping[str, list[ParamSpec]]) -> None:
        """Every `[[audio.map]]` names a live parameter of the show ('piece.param' or 'show.name')."""
        for i, m in enumerate(self.settings.audio.map):
            group, name = m.key
            key = f"audio.map[{i}].param"
            if group not in groups or group == AUDIO:
                raise ConfigError(self.show_file, key, f"{m.param!r}: no piece {group!r} in the show, expected one of "
                                  f"{', '.join(repr(g) for g in groups if g != AUDIO)}")
            known = {s.name for s in groups[group]}
            if name not in known:
                raise ConfigError(self.show_file, key, f"{m.param!r}: not a live parameter of {group!r}, expected one "
                                  f"of {', '.join(sorted(known))}")

    def audio_file(self, override: str | None = None) -> Path | None:
        """The audio file a render or live show follows: `override` (--audio, as given) or the show's."""
        if override:
            return Path(override)
        return self.resolve(self.settings.audio.file) if self.settings.audio.file else None

    def resolve(self, path: str) -> Path:
        """A path written in the show file, relative to the show file's folder."""
        p = Path(path)
        return p if p.is_absolute() else Path(self.show_file).parent / p


def with_instruments(piece: Any, entry: PieceEntry, source: str, name: str) -> Any:
    """The piece with the show's bends appended to its own and the show's directions, if set."""
    if not entry.bend and entry.directions is None:
        return piece
    over = {"bend": tuple(piece.bend) + tuple(entry.bend)}
    if entry.directions is not None:
        over["directions"] = entry.directions
    try:
        return dataclasses.replace(piece, **over)
    except ValueError as e:
        key, _, msg = str(e).partition(": ")
        if key.startswith("bend[") and piece.bend:
            msg += f" (the piece's own {len(piece.bend)} bend(s) come first in this count)"
        raise ConfigError(source, f"pieces.{name}.{key}", msg) from None


def _beats_in_seconds(raw: dict, source: str) -> dict:
    """Scene durations and crossfades, and the walk's period, written in beats or bars ("8 bars")
    as `*_beats` plus their seconds at the show's starting tempo (what a render's length and the
    look-ahead estimate from; the walk's clock scales its speed by the live tempo over that one)."""
    from .tempo import TempoSettings, parse_beats
    tempo = raw.get("tempo") if isinstance(raw.get("tempo"), dict) else {}
    defaults = TempoSettings()
    bpm, per_bar = tempo.get("bpm", defaults.bpm), tempo.get("beats_per_bar", defaults.beats_per_bar)
    if not isinstance(bpm, (int, float)) or not isinstance(per_bar, int) or not bpm > 0 or per_bar < 1:
        return raw  # the loader says what is wrong with [tempo]
    walk = raw.get("walk")
    if isinstance(walk, dict):
        if "period_beats" in walk:  # by hand it could disagree with `period`, which the walk draws from
            raise ConfigError(source, "walk.period_beats", "is set from `period` written in beats or bars, "
                              "write period = \"4 beats\" instead")
        try:
            beats = parse_beats(walk.get("period"), per_bar)
        except ValueError as e:
            raise ConfigError(source, "walk.period", str(e)) from None
        if beats is not None:
            if not beats > 0:
                raise ConfigError(source, "walk.period", f"{walk['period']!r} must be more than 0 beats")
            raw = {**raw, "walk": {**walk, "period": beats * 60.0 / bpm, "period_beats": beats}}
    scenes = raw.get("scenes")
    if not isinstance(scenes, list):
        return raw
    out = []
    for i, scene in enumerate(scenes):
        if isinstance(scene, dict):
            scene = dict(scene)
            for key in ("duration", "crossfade"):
                try:
                    beats = parse_beats(scene.get(key), per_bar)
                except ValueError as e:
                    raise ConfigError(source, f"scenes[{i}].{key}", str(e)) from None
                if beats is not None:
                    scene[key], scene[f"{key}_beats"] = beats * 60.0 / bpm, beats
        out.append(scene)
    return {**raw, "scenes": out}


def load_show(path: str | Path, *, check_starts: bool = True) -> Show:
    """Read and validate a show file and the piece files it names (one ConfigError line on failure).

    `check_starts=False` leaves out the check that each piece's `start` checkpoint exists (the
    script that makes them)."""
    from .system import load_piece
    path = Path(path)
    source = str(path)
    settings = load_dataclass(ShowSettings, _beats_in_seconds(read_toml(path), source), source=source)
    if not settings.name:
        settings = dataclasses.replace(settings, name=path.stem)
    if not settings.name.replace("-", "").replace("_", "").replace(".", "").isalnum():
        raise ConfigError(source, "name", f"{settings.name!r} is not a usable folder name, expected letters, "
                          "digits, '_', '-', '.'")
    piece_paths, pieces = {}, {}
    for name, entry in settings.pieces.items():
        p = Path(entry.piece)
        resolved = p if p.is_absolute() else path.parent / p
        if not resolved.is_file():
            raise ConfigError(source, f"pieces.{name}.piece", f"{entry.piece!r}: no such piece file "
                              f"(looked for {resolved}; paths are relative to the show file)")
        piece_paths[name] = resolved
        pieces[name] = with_instruments(load_piece(resolved), entry, source, name)
        if entry.start and check_starts:
            start = Path(entry.start) if Path(entry.start).is_absolute() else path.parent / entry.start
            if not start.is_file():
                raise ConfigError(source, f"pieces.{name}.start", f"{entry.start!r}: no such checkpoint (looked for "
                                  f"{start}; make it with scripts/make_shipped.py, or remove `start`)")
    return Show(settings, source, piece_paths, pieces)
