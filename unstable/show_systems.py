"""A show's pieces as Systems and as parameter groups: what every driver of a show (live, render,
`unstable controllers`) opens the same way. Below the drivers, so that none imports another for it."""

from __future__ import annotations

from typing import Any, Mapping

import torch

from .audio.mapping import AUDIO, audio_specs
from .control.midi_map import check_maps, learn_specs
from .schema import SHOW, show_specs, with_common
from .show import Show
from .system import build_system
from .tempo import tempo_specs

__all__ = ["build_systems", "show_groups", "piece_actions"]


def build_systems(show: Show, device: torch.device) -> dict[str, Any]:
    """One System per piece of the show, seeded like `unstable train` (no prepare yet)."""
    systems = {}
    for name, piece in show.pieces.items():
        torch.manual_seed(piece.seed)
        systems[name] = build_system(piece, device)
    return systems


def show_groups(show: Show, systems: Mapping[str, Any]) -> dict[str, list]:
    """The parameter groups of a show: each piece's specs plus the common ones, the show group, and
    the audio group (the [[audio.map]] amounts) when the show maps audio."""
    groups: dict[str, list] = {name: with_common(s.param_specs()) for name, s in systems.items()}
    groups[SHOW] = show_specs(len(show.scene_list())) + tempo_specs(show.settings.tempo.bpm, show.settings.tempo.link)
    if show.settings.audio.map:
        show.check_audio(groups)
        groups[AUDIO] = audio_specs(show.settings.audio)
    if show.settings.midi.port:
        groups[SHOW] = groups[SHOW] + learn_specs(sum(len(specs) for specs in groups.values()) + 1)
    check_maps(show.settings.midi.map, groups, show.show_file)
    return groups


def piece_actions(systems: Mapping[str, Any]) -> dict[str, list[str]]:
    """{piece: its OSC actions}: 'directions/refresh' for a piece with latent directions,
    'clusters/refresh' for one with a bend on a channel cluster (controllers get a button each)."""
    return {name: acts for name, system in systems.items() if (acts := system.actions())}
