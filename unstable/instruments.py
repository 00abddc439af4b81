"""The sampling-time instruments every System plays, in one place: network bends (`bending.Bender`)
and latent directions (`directions.Directions`), their OSC actions, their refresh and their
off-thread recomputation.

A system mixes in `Instrumented`, builds its instruments once with `_build_instruments(bends,
directions)` and gives the two things only it knows about its networks:

- `direction_samples(panel, count, seed)`: the activations [count, D] its latent directions analyse,
  for `count` seeded latents z ~ N(0, I) (an equilibrium generator's w, a BAD decoder's first hidden
  layer);
- `_unbent_pass(panel, z, hook, params)`: one pass of a panel's network on latents z [M, latent] at
  the live `params` with `hook(layer, x) -> x` called at every hook point and nothing bent; what the
  bends' channel clusters are computed from.

The rest (`sample`'s bend and steer hooks, `refresh`, `defer_computations`, `recompute`,
`actions`) is the same for every system and lives here. The instruments are plain state outside
the modules: a `sampling_copy()` shares them (copy.copy), `step` never sees them.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Sequence

import torch

from .bending import CLUSTER_SAMPLES, Bender, BendSettings
from .directions import Directions, DirectionSettings
from .pacing import tick

__all__ = ["Instrumented", "INSTRUMENTS"]

# What `refresh` and `recompute` take, and the OSC action (`/unstable/<piece>/<what>/refresh`) of each.
INSTRUMENTS = ("directions", "clusters")


class Instrumented:
    """The System protocol's instrument methods over a system's `bender` and `directions`."""

    bender: Bender
    directions: Directions
    # Seeded latents per unbent pass when clustering (all of them in one pass unless a system says less).
    cluster_chunk: int = CLUSTER_SAMPLES

    def _build_instruments(self, bends: Sequence[BendSettings], directions: DirectionSettings) -> None:
        """The piece's bends and directions, seeded from the piece (call once, in `__init__`)."""
        self.bender = Bender(bends, seed=self.piece.seed)
        self.directions = Directions(directions)

    def instrument_specs(self) -> list:
        """The live parameters of the instruments: each bend's amount, then dir0.. of the directions."""
        return self.bender.specs() + self.directions.specs()

    def actions(self) -> list[str]:
        """This system's OSC actions: 'directions/refresh' when it has latent directions,
        'clusters/refresh' when a bend uses a channel cluster (controllers get a button each)."""
        acts = []
        if self.directions.settings.count:
            acts.append("directions/refresh")
        if any(b.channels == "cluster" for b in self.bender.bends):
            acts.append("clusters/refresh")
        return acts

    def _instrument(self, what: str):
        if what not in INSTRUMENTS:
            raise KeyError(f"unknown refresh {what!r}, expected 'directions' or 'clusters'")
        return self.directions if what == "directions" else self.bender

    def _hooks(self, panel: str, params: Mapping[str, float]) -> tuple[Callable | None, Callable | None]:
        """(bend hook, steer) of one panel at the live `params`: what `sample` hands its network;
        either is None when nothing bends or steers the panel."""
        bend = self.bender.hook(panel, params, lambda p, layers: self._activations(p, layers, params))
        steer = self.directions.steer(panel, params, functools.partial(self.direction_samples, panel))
        return bend, steer

    @torch.no_grad()
    def _activations(self, panel: str, layers: Sequence[str], params: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """{layer: activations [M, C, H, W] or [M, C]} for M = CLUSTER_SAMPLES latents seeded from the
        piece, from unbent passes (`cluster_chunk` latents each): what the bends' channel clusters
        group. A layer the network did not run (a growth stage not reached yet) is left out."""
        z = torch.randn((CLUSTER_SAMPLES, self.panels()[panel]),
                        generator=torch.Generator().manual_seed(self.piece.seed))  # [M, latent]
        seen: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}

        def capture(name: str, x: torch.Tensor) -> torch.Tensor:
            tick()  # every layer: a live refresh's worker paces itself (unstable.pacing)
            if name in seen:
                seen[name].append(x.detach().clone())
            return x

        for chunk in z.to(self.device).split(self.cluster_chunk):
            tick()
            self._unbent_pass(panel, chunk, capture, params)
        return {layer: torch.cat(xs) for layer, xs in seen.items() if xs}

    def refresh(self, what: str) -> None:
        """Recompute the latent directions ('directions', matched to the previous ones) or the
        channel clusters ('clusters') with the weights of the next sample."""
        self._instrument(what).refresh()

    def defer_computations(self, ask: Callable[[str], None]) -> None:
        """From now on (a live show), directions and clusters this system and its copies lack are
        not computed in `sample`: `ask('directions' | 'clusters')` is called, the panel is drawn
        unsteered or unbent until a `recompute` result is installed, and every one the piece's
        settings can use is asked for at once."""
        panels = tuple(self.panels())
        self.directions.defer(functools.partial(ask, "directions"), panels)
        self.bender.defer(functools.partial(ask, "clusters"), panels)

    @torch.no_grad()
    def recompute(self, what: str, params: Mapping[str, float]) -> Callable[[], None]:
        """`refresh(what)`'s computation on this system's own weights, installing nothing: call it on
        a snapshot (`sampling_copy()`) off the render thread. Returns the cheap call that swaps the
        result into the directions or clusters the piece shares (at a frame boundary)."""
        instrument = self._instrument(what)
        if what == "directions":
            found = self.directions.recompute({p: functools.partial(self.direction_samples, p) for p in self.panels()})
        else:
            found = self.bender.recompute(lambda p, layers: self._activations(p, layers, params))
        return functools.partial(instrument.install, found)
