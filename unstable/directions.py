"""Latent directions (Härkönen et al. 2020, "GANSpace"): principal components of an early latent
activation under sampled latents, each a live control.

Equilibrium generators: PCA of w = mapping(z); BAD decoders: PCA of the decoder's first hidden layer
(after its ELU). The top `count` components, ordered by explained variance, become the live
parameters `dir0` ... `dir<count-1>`: the offset along that direction in standard deviations of the
samples' projection on it. Offset 0 everywhere leaves the network's own path (bit for bit).

Offline (renders, tests) a panel's basis is computed the first time a sample steers it, and
`refresh()` recomputes them from the current weights at the next sample. A live show never
computes on its render thread (a PCA of 2000 latents is a visible stall): `defer(ask, panels)`
makes a missing basis a request (`ask()`) that a worker answers with `recompute()` on a snapshot
of the weights, `install()`ed between frames (unstable.live.mirror); until then the panel is drawn
unsteered. A live refresh (OSC `/unstable/<piece>/directions/refresh`) goes the same way. The new
components of a refresh are matched to the previous ones (greedily by |cosine|, among twice as
many candidates) and their signs set to agree, so `dir0` keeps meaning the same move as long as
the network keeps such a direction; slot order is then the previous order, not necessarily the
new explained-variance order.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Callable, Mapping

import torch

from .config import setting
from .pacing import tick
from .schema import SAMPLING, ParamSpec
from .upload import to_device

__all__ = ["DirectionSettings", "Basis", "principal_directions", "match_directions", "Directions"]


@dataclass(frozen=True)
class DirectionSettings:
    """`[directions]`: PCA directions of the piece's latent space as live parameters."""

    count: int = setting(0, ge=0, le=32, doc="how many directions become live parameters dir0.. (0 = none)")
    samples: int = setting(2000, ge=16, le=100000, doc="sampled latents the PCA is computed from")
    range: float = setting(3.0, gt=0, le=20, doc="each offset goes from -range to +range standard deviations")
    seed: int = setting(0, doc="seed of the sampled latents")


@dataclass
class Basis:
    """Directions [k, D] (orthonormal rows), the standard deviation along each [k], the share of
    the variance each explains [k] and the samples' mean [D]."""

    vectors: torch.Tensor
    std: torch.Tensor
    explained: torch.Tensor
    mean: torch.Tensor


def principal_directions(samples: torch.Tensor, k: int) -> Basis:
    """The top-k principal components of samples [M, D], by explained variance; each sign fixed so
    that its largest-magnitude entry is positive (a deterministic choice for the first computation)."""
    x = samples.double()
    mean = x.mean(0)
    c = x - mean  # [M, D]
    if c.shape[1] <= c.shape[0]:
        # The eigenvectors of the scatter matrix: the same components as an SVD of the samples,
        # and much cheaper when D is well below M, as for a BAD decoder's hidden layer (2000 x 800;
        # docs/figures.md, "Figures moved out of docstrings").
        lam, vec = torch.linalg.eigh(c.T @ c)  # ascending
        ss, vh = lam.flip(0).clamp_min(0), vec.flip(1).T
    else:
        s, vh = torch.linalg.svd(c, full_matrices=False)[1:]
        ss = s.pow(2)
    k = min(k, vh.shape[0])
    vec = vh[:k]
    sign = torch.sign(vec.gather(1, vec.abs().argmax(1, keepdim=True)))
    vec = vec * torch.where(sign == 0, torch.ones_like(sign), sign)
    var = ss / max(1, x.shape[0] - 1)
    return Basis(vec.float(), var[:k].sqrt().float(), (var[:k] / var.sum().clamp_min(1e-30)).float(), mean.float())


def match_directions(previous: torch.Tensor, candidates: Basis) -> Basis:
    """Pick and orient, for each previous direction [k, D], one of the candidates (greedy on the
    largest |cosine| first), flipping its sign to agree with the previous one."""
    k = previous.shape[0]
    cos = previous.double() @ candidates.vectors.double().T  # [k, K']
    score = cos.abs().clone()
    pick = [-1] * k
    for _ in range(min(k, score.shape[1])):
        flat = int(score.argmax())
        i, j = divmod(flat, score.shape[1])
        pick[i] = j
        score[i, :] = -1.0
        score[:, j] = -1.0
    idx = torch.tensor(pick)
    signs = torch.sign(cos[torch.arange(k), idx]).float()
    signs[signs == 0] = 1.0
    return Basis(candidates.vectors[idx] * signs[:, None], candidates.std[idx], candidates.explained[idx],
                 candidates.mean)


class Directions:
    """The directions of a piece's panels (one basis per panel), computed lazily (or, after
    `defer`, by whoever `ask` reaches), shared by a system and its sampling copy.
    `samples(panel, m, seed)` (the system's) returns the activations to analyse, [m, D]."""

    def __init__(self, settings: DirectionSettings):
        self.settings = settings
        self.bases: dict[str, Basis] = {}
        self.seconds = 0.0
        self.refreshes = 0
        self._stale = False
        self._previous: dict[str, Basis] = {}  # the bases before a refresh, until each is matched
        self._lock = threading.Lock()
        # Live (`defer`): missing bases are asked for, never computed in `basis()`.
        self.ask: Callable[[], None] | None = None
        self._wanted: set[str] = set()  # panels without a basis whose first computation is asked for

    def specs(self) -> list[ParamSpec]:
        r = self.settings.range
        return [ParamSpec(f"dir{i}", -r, r, 0.0, unit="std", smoothing=0.2, reads=SAMPLING,
                          doc=f"steers the images along their direction {i} (0: the one that changes them most)")
                for i in range(self.settings.count)]

    def defer(self, ask: Callable[[], None], panels) -> None:
        """Never compute in `basis()` from now on (a live show's render thread): a missing basis is
        wanted, `ask()` is called (once per newly wanted panel) and the panel stays unsteered until
        `install()` brings its basis. Every one of `panels` is wanted at once (when there are
        directions), so a control moved later steers from its first frame."""
        with self._lock:
            self.ask = ask
            missing = {p for p in panels if p not in self.bases} - self._wanted if self.settings.count else set()
            self._wanted |= missing
        if missing:
            ask()

    def refresh(self) -> None:
        """Recompute every panel's directions with the weights of the next sample, matched to these
        (deferred: asked for, like a missing basis)."""
        with self._lock:
            ask = self.ask
            if ask is None:
                self._stale = True
        if ask is not None:
            ask()

    def recompute(self, samples: Mapping[str, Callable[[int, int], torch.Tensor]]) -> dict[str, Basis]:
        """New bases for every panel that has one, each matched to its current basis, and for every
        wanted panel without one (its first computation); only panels with a `samples` function
        here. Nothing is installed. Meant for a worker thread, with `samples` reading a snapshot of
        the weights: the render thread keeps using the current bases meanwhile."""
        with self._lock:
            current = {p: b for p, b in self.bases.items() if p in samples}
            first = sorted(p for p in self._wanted if p in samples and p not in current)
        t0 = time.perf_counter()
        s = self.settings
        out = {}
        for panel, previous in current.items():
            tick()  # a live refresh's worker paces itself (unstable.pacing)
            acts = samples[panel](s.samples, s.seed)  # [M, D]
            out[panel] = match_directions(previous.vectors,
                                          principal_directions(acts, min(2 * s.count, acts.shape[1])))
        for panel in first:  # as `basis()` computes a first basis offline: the same numbers
            tick()
            out[panel] = principal_directions(samples[panel](s.samples, s.seed), s.count)
        self.seconds += time.perf_counter() - t0
        return out

    def install(self, bases: Mapping[str, Basis]) -> None:
        """Swap in bases from `recompute()` (one dict update under the lock: a sample sees the old
        basis or the new one, never a mix). A panel that had a basis counts as refreshed."""
        with self._lock:
            if any(p in self.bases for p in bases):
                self.refreshes += 1
            self.bases.update(bases)
            self._wanted.difference_update(bases)

    def basis(self, panel: str, samples: Callable[[int, int], torch.Tensor]) -> Basis | None:
        """The panel's basis, computed (or refreshed and matched) now if needed; deferred (`defer`),
        None until a worker's basis is installed."""
        with self._lock:
            ask, basis = self.ask, self.bases.get(panel)
            new = ask is not None and basis is None and panel not in self._wanted
            if new:
                self._wanted.add(panel)
        if ask is not None:
            if new:  # outside the lock: a request takes the mirror's own lock
                ask()
            return basis
        with self._lock:
            if self._stale:
                self._stale = False
                self.refreshes += 1
                self._previous = dict(self.bases)
                self.bases.clear()
            basis = self.bases.get(panel)
            previous = self._previous.pop(panel, None)
        if basis is None:
            t0 = time.perf_counter()
            s = self.settings
            acts = samples(s.samples, s.seed)
            k = s.count
            if previous is None:
                basis = principal_directions(acts, k)
            else:
                basis = match_directions(previous.vectors, principal_directions(acts, min(2 * k, acts.shape[1])))
            self.seconds += time.perf_counter() - t0
            with self._lock:
                self.bases[panel] = basis
        return basis

    def steer(self, panel: str, params: Mapping[str, float],
              samples: Callable[[int, int], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor] | None:
        """The function that moves activations [N, D] by the live offsets, or None when all are 0
        (or, deferred, while the panel's basis is still being computed). It adds one shift [D] to
        every row: the traced sampling passes (unstable.traces) take it as steer(0)."""
        r = self.settings.range
        offsets = [min(max(float(params.get(f"dir{i}", 0.0)), -r), r) for i in range(self.settings.count)]
        if not any(offsets):
            return None
        basis = self.basis(panel, samples)
        if basis is None:
            return None

        def move(h: torch.Tensor) -> torch.Tensor:
            o = to_device(offsets[:basis.vectors.shape[0]], h.device, h.dtype)
            shift = (o * basis.std.to(h)) @ basis.vectors.to(h)  # [D]
            return h + shift

        return move
