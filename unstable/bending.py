"""Network bending (Broad, Kaszuba & Grierson 2021): deterministic transforms of a trained network's
activations, inserted at sampling time and played live.

A bend names a layer (a hook point the system declares, e.g. `b16.1` of an equilibrium generator or
`c14` of a BAD decoder), an operation and which channels it touches:

    [[bend]]
    layer = "b16.0"
    op = "rotate"            # scale rotate translate flip erode dilate threshold invert ablate
    channels = "cluster"     # all | random (a seeded subset) | cluster (k-means over channels)
    clusters = 4
    cluster = 1

Its amount is a live parameter (`bend<i>_<op>`, or `name`) with a range per operation; amount 0 is
the identity: the bend is skipped, so the sample is bit for bit the unbent one. Bends exist only in
`System.sample`: training never calls the hooks, and no weight is touched.

Channel clusters (the paper's "clusters of features"): the layer's activations for `CLUSTER_SAMPLES`
seeded latents, each channel's maps flattened over the batch (box-pooled to at most 8x8) and
standardised, grouped by k-means (k-means++ seeding from a fixed seed, Lloyd iterations). Cluster 0
is the largest. Offline (renders, tests) they are computed the first time a bend needs them, in
its layer's hook, and kept until `refresh()`. A live show never clusters on its render thread
(on a CPU it takes many frames' time: a visible stall): `defer(ask, panels)` makes a missing
cluster a request that a worker answers with `recompute()` on a snapshot of the weights,
`install()`ed between frames (unstable.live.mirror); until then that bend is skipped (unbent). A
live refresh goes the same way.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass
from typing import Callable, Literal, Mapping, Sequence

import torch
import torch.nn.functional as F

from .clusters import channel_features, kmeans
from .config import setting
from .pacing import tick
from .schema import SAMPLING, ParamSpec
from .upload import to_device

__all__ = ["OPS", "SPATIAL", "BendSettings", "Bender", "transform", "kmeans", "check_bends"]

# op -> (lo, hi, unit, what the amount means)
OPS: dict[str, tuple[float, float, str, str]] = {
    "scale": (-1.0, 4.0, "x", "multiplies the activations by 1 + amount"),
    "rotate": (-180.0, 180.0, "deg", "rotates the feature maps anticlockwise by amount degrees"),
    "translate": (-1.0, 1.0, "width", "shifts the feature maps by amount x their size (zeros come in)"),
    "flip": (0.0, 1.0, "mix", "mixes the feature maps with their mirror image (1 = flipped)"),
    "erode": (0.0, 4.0, "px", "erodes the feature maps (grey-scale min filter of radius amount)"),
    "dilate": (0.0, 4.0, "px", "dilates the feature maps (grey-scale max filter of radius amount)"),
    "threshold": (0.0, 1.0, "mix", "mixes each map with its binarisation at its mean (1 = binary)"),
    "invert": (0.0, 1.0, "mix", "mixes each map with its inversion within its range (1 = inverted)"),
    "ablate": (0.0, 1.0, "mix", "scales the chosen channels towards zero (1 = switched off)"),
}
SPATIAL = frozenset({"rotate", "translate", "flip", "erode", "dilate"})
CLUSTER_SAMPLES = 64


@dataclass(frozen=True)
class BendSettings:
    """`[[bend]]` (in a piece, or `[[pieces.NAME.bend]]` in a show): one transform of one layer."""

    layer: str = setting(doc="the hook point, e.g. 'b16.0' (equilibrium) or 'c14' (BAD decoder)")
    op: Literal["scale", "rotate", "translate", "flip", "erode", "dilate", "threshold", "invert", "ablate"] = \
        setting(doc="the transform")
    channels: Literal["all", "random", "cluster"] = setting(
        "all", doc="which channels: all, a seeded random subset, or one k-means cluster of channels")
    fraction: float = setting(0.5, gt=0, le=1, doc="share of the channels a 'random' subset takes")
    seed: int = setting(0, doc="seed of the 'random' subset")
    clusters: int = setting(4, ge=2, le=64, doc="k of the k-means clustering ('cluster')")
    cluster: int = setting(0, ge=0, le=63, doc="which cluster ('cluster'; 0 is the largest)")
    axis: Literal["x", "y"] = setting("x", doc="axis of 'translate' and 'flip'")
    amount: float = setting(0.0, doc="starting amount (0 = unbent)")
    lo: float | None = setting(None, doc="lowest amount (default per op)")
    hi: float | None = setting(None, doc="highest amount (default per op)")
    name: str = setting("", doc="its live parameter's name (default bend<i>_<op>)")
    panels: tuple[str, ...] = setting((), doc="the panels it bends (default: all of the piece's)")

    def __post_init__(self):
        lo, hi = self.range()
        if not lo < hi:
            raise ValueError(f"hi: the range [{lo}, {hi}] is empty")
        if not lo <= self.amount <= hi:
            raise ValueError(f"amount: {self.amount} is outside [{lo}, {hi}]")
        if not lo <= 0.0 <= hi:
            raise ValueError(f"lo: the range [{lo}, {hi}] must hold 0 (the unbent network)")
        if self.cluster >= self.clusters:
            raise ValueError(f"cluster: {self.cluster} but only {self.clusters} clusters (0..{self.clusters - 1})")

    def range(self) -> tuple[float, float]:
        lo, hi, _, _ = OPS[self.op]
        return (lo if self.lo is None else self.lo, hi if self.hi is None else self.hi)

    def param_name(self, index: int) -> str:
        return self.name or f"bend{index}_{self.op}"

    def spec(self, index: int) -> ParamSpec:
        lo, hi = self.range()
        _, _, unit, what = OPS[self.op]
        where = {"all": "every channel", "random": f"a random {self.fraction:g} of the channels",
                 "cluster": f"channel cluster {self.cluster} of {self.clusters}"}[self.channels]
        return ParamSpec(self.param_name(index), lo, hi, self.amount, unit=unit, smoothing=0.2, reads=SAMPLING,
                         doc=f"bend of {self.layer} ({where}): {what}")


def check_bends(bends: Sequence[BendSettings], layers: Mapping[str, bool], panels: Sequence[str],
                taken: Sequence[str]) -> None:
    """ValueError("bend[i].key: ...") unless every bend names a hook point of `layers` ({name:
    spatial}), a spatial op only on a spatial layer, known panels, and a parameter name not in `taken`."""
    names = set(taken)
    for i, b in enumerate(bends):
        if b.layer not in layers:
            raise ValueError(f"bend[{i}].layer: {b.layer!r} is not a layer of this piece, expected one of "
                             f"{', '.join(layers)}")
        if b.op in SPATIAL and not layers[b.layer]:
            raise ValueError(f"bend[{i}].op: {b.op!r} needs feature maps, but {b.layer!r} is a vector layer "
                             "(use scale, threshold, invert or ablate there)")
        for p in b.panels:
            if p not in panels:
                raise ValueError(f"bend[{i}].panels: {p!r} is not a panel, expected one of {', '.join(panels)}")
        name = b.param_name(i)
        if name in names:
            raise ValueError(f"bend[{i}].name: {name!r} is already a live parameter of this piece")
        names.add(name)


# ----------------------------------------------------------------------------------- transforms

def _affine(x: torch.Tensor, theta: list[list[float]]) -> torch.Tensor:
    """x [N, C, H, W] resampled (bilinear, zeros outside) at theta @ (x, y, 1) of each output pixel."""
    t = to_device(theta, x.device, x.dtype)[None].expand(x.shape[0], 2, 3)
    grid = F.affine_grid(t, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def _morph(x: torch.Tensor, radius: float, dilate: bool) -> torch.Tensor:
    """Grey-scale dilation (max filter) or erosion (min filter) with a square of `radius`; a
    fractional radius mixes the two nearest whole ones, so a fader moves smoothly."""
    def at(r: int) -> torch.Tensor:
        if r == 0:
            return x
        k = 2 * r + 1
        return F.max_pool2d(x, k, 1, r) if dilate else -F.max_pool2d(-x, k, 1, r)
    r0 = int(math.floor(radius))
    frac = radius - r0
    lower = at(r0)
    return lower if frac == 0 else torch.lerp(lower, at(r0 + 1), frac)


def _stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-map (mean, min, max) over the spatial dims; over the channels for a vector layer."""
    dims = (2, 3) if x.shape[2] * x.shape[3] > 1 else (1,)
    return x.mean(dims, keepdim=True), x.amin(dims, keepdim=True), x.amax(dims, keepdim=True)


def transform(x: torch.Tensor, op: str, amount: float, axis: str = "x") -> torch.Tensor:
    """`op` at `amount` on activations x [N, C, H, W] (a vector layer as [N, C, 1, 1]); amount 0 is x."""
    a = float(amount)
    if a == 0.0:
        return x
    if op == "scale":
        return x * (1.0 + a)
    if op == "ablate":
        return x * (1.0 - a)
    if op == "rotate":
        quarter = a / 90.0
        if quarter == round(quarter) and x.shape[2] == x.shape[3]:
            return torch.rot90(x, int(round(quarter)) % 4, dims=(2, 3))  # exact for right angles
        th = math.radians(a)
        c, s = math.cos(th), math.sin(th)
        return _affine(x, [[c, -s, 0.0], [s, c, 0.0]])
    if op == "translate":
        d = -2.0 * a  # normalised coordinates span 2: content moves right (x) or down (y) for a > 0
        return _affine(x, [[1.0, 0.0, d], [0.0, 1.0, 0.0]] if axis == "x" else [[1.0, 0.0, 0.0], [0.0, 1.0, d]])
    if op == "flip":
        return torch.lerp(x, x.flip(3 if axis == "x" else 2), a)
    if op in ("erode", "dilate"):
        return _morph(x, max(a, 0.0), op == "dilate")
    if op == "threshold":
        mean, lo, hi = _stats(x)
        return torch.lerp(x, torch.where(x > mean, hi, lo), a)
    if op == "invert":
        _, lo, hi = _stats(x)
        return torch.lerp(x, lo + hi - x, a)
    raise ValueError(f"unknown bend op {op!r}, expected one of {', '.join(OPS)}")


def bend_channels(x: torch.Tensor, op: str, amount: float, channels: torch.Tensor | None,
                  axis: str = "x") -> torch.Tensor:
    """`transform` on the `channels` (indices, None = all) of x [N, C, H, W] or [N, C]; a new tensor."""
    vector = x.ndim == 2
    y = x[:, :, None, None] if vector else x
    if channels is None:
        out = transform(y, op, amount, axis)
    else:
        out = y.clone()
        out[:, channels] = transform(y[:, channels], op, amount, axis)
    return out[:, :, 0, 0] if vector else out


# ----------------------------------------------------------------------------------- the bender

class Bender:
    """The bends of one piece at sampling time, and their channel choices (random subsets, clusters).

    `hook(panel, params, activations)` gives the callable a network's hook points call with
    (layer, x) -> x, or None when no bend is on (amount 0 everywhere): then the network runs its
    unbent path. `activations(panel, layers)` (the system's) returns {layer: activations [M, C, ...]}
    for `CLUSTER_SAMPLES` seeded latents, from one unbent pass, for clustering. Shared by a system and its
    sampling copy; `refresh()` drops the clusters (recomputed with the weights of the next sample),
    or, after `defer`, asks for them to be recomputed elsewhere.
    """

    def __init__(self, bends: Sequence[BendSettings], seed: int = 0):
        self.bends = tuple(bends)
        self.seed = seed
        self.names = [b.param_name(i) for i, b in enumerate(self.bends)]
        self.clusters: dict[tuple[str, str, int], torch.Tensor] = {}  # (panel, layer, k) -> labels [C]
        self.cluster_seconds = 0.0
        self._subsets: dict[tuple, torch.Tensor] = {}
        # (panel, layer, k, cluster, device) -> (the labels it came from, channel indices on the device):
        # a bend's hook reads them every frame, and a GPU must not wait for them each time.
        self._cluster_channels: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._lock = threading.Lock()
        # Live (`defer`): missing clusters are asked for, never computed in a hook.
        self.ask: Callable[[], None] | None = None
        self._wanted: set[tuple[str, str, int]] = set()  # (panel, layer, k) asked for, not installed yet

    def specs(self) -> list[ParamSpec]:
        return [b.spec(i) for i, b in enumerate(self.bends)]

    def defer(self, ask: Callable[[], None], panels: Sequence[str]) -> None:
        """Never cluster in a hook from now on (a live show's render thread): a missing cluster is
        wanted, `ask()` is called (once per newly wanted key) and its bend is skipped until
        `install()` brings it. Every cluster the bends can use on `panels` is wanted at once, so a
        bend moved later bends from its first frame."""
        keys = {(p, b.layer, b.clusters) for b in self.bends if b.channels == "cluster"
                for p in (b.panels or panels)}
        with self._lock:
            self.ask = ask
            missing = keys - set(self.clusters) - self._wanted
            self._wanted |= missing
        if missing:
            ask()

    def refresh(self) -> None:
        """Forget the clusters: the next sample that needs them clusters the current weights
        (deferred: their recomputation is asked for, the current ones bend meanwhile)."""
        with self._lock:
            ask = self.ask
            if ask is None:
                self.clusters.clear()
        if ask is not None:
            ask()

    def recompute(self, activations: Callable[[str, Sequence[str]], Mapping[str, torch.Tensor]]) -> dict:
        """New labels for every cluster computed so far and every one wanted
        ({(panel, layer, k): labels [C]}, None for a layer the network did not run), one pass per
        panel; nothing is installed. Meant for a worker thread, with `activations` reading a snapshot
        of the weights: the render thread keeps bending with the current clusters meanwhile."""
        import time
        with self._lock:
            keys = sorted(set(self.clusters) | self._wanted)
        t0 = time.perf_counter()
        found = {}
        for panel in dict.fromkeys(p for p, _, _ in keys):
            wanted = [(layer, k) for p, layer, k in keys if p == panel]
            acts = activations(panel, sorted({layer for layer, _ in wanted}))
            tick()
            found.update({(panel, layer, k): kmeans(channel_features(acts[layer]), k, seed=self.seed)
                          if layer in acts else None for layer, k in wanted})
        self.cluster_seconds += time.perf_counter() - t0
        return found

    def install(self, clusters: Mapping) -> None:
        """Swap in clusters from `recompute()` (one dict update under the lock). A None (the layer
        did not run at that growth stage) is dropped: its hook asks again once the layer runs."""
        with self._lock:
            self.clusters.update({k: v for k, v in clusters.items() if v is not None})
            self._wanted.difference_update(clusters)

    def _channels(self, bend: BendSettings, panel: str, c: int, device,
                  activations: Callable[[str, Sequence[str]], Mapping[str, torch.Tensor]],
                  wanted: Sequence[tuple[str, int]] = ()) -> torch.Tensor | None:
        """The channel indices a bend touches (None: all; empty: skip the bend). A missing cluster is
        computed here, in the hook of its layer (so only once that layer runs), together with every
        other (layer, k) of `wanted` still missing for this panel: one pass of the network for all
        of them; deferred (`defer`), it is asked for instead and the bend skipped meanwhile."""
        if bend.channels == "all":
            return None
        if bend.channels == "random":
            key = ("random", bend.seed, bend.fraction, c, str(device))
            subset = self._subsets.get(key)
            if subset is None:
                gen = torch.Generator().manual_seed(bend.seed)
                keep = max(1, round(bend.fraction * c))
                subset = self._subsets[key] = torch.randperm(c, generator=gen)[:keep].sort().values.to(device)
            return subset
        key = (panel, bend.layer, bend.clusters)
        with self._lock:
            labels = self.clusters.get(key)
        if labels is None and self.ask is not None:
            with self._lock:
                missing = {(panel, *w) for w in wanted} | {key}
                missing -= set(self.clusters) | self._wanted
                self._wanted |= missing
            if missing:  # outside the lock: a request takes the mirror's own lock
                self.ask()
            return torch.empty(0, dtype=torch.long, device=device)
        if labels is None:
            with self._lock:
                missing = [w for w in wanted if (panel, *w) not in self.clusters]
            self._cluster(panel, sorted(set(missing) | {(bend.layer, bend.clusters)}), activations)
            with self._lock:
                labels = self.clusters.get(key)
            if labels is None:  # the network did not run this layer: nothing to bend
                return torch.empty(0, dtype=torch.long, device=device)
        channels_key = (*key, bend.cluster, str(device))
        cached = self._cluster_channels.get(channels_key)
        if cached is None or cached[0] is not labels:  # (new clusters installed since: computed again)
            cached = self._cluster_channels[channels_key] = labels, (labels == bend.cluster).nonzero()[:, 0].to(device)
        return cached[1]

    def _cluster(self, panel: str, wanted: Sequence[tuple[str, int]],
                 activations: Callable[[str, Sequence[str]], Mapping[str, torch.Tensor]]) -> None:
        """Cluster the channels of the (layer, k) in `wanted` of one panel, from one pass."""
        import time
        t0 = time.perf_counter()
        acts = activations(panel, sorted({layer for layer, _ in wanted}))
        # A layer missing from `acts` (not run at this growth stage) is clustered when it runs.
        found = {(panel, layer, k): kmeans(channel_features(acts[layer]), k, seed=self.seed)
                 for layer, k in wanted if layer in acts}
        self.cluster_seconds += time.perf_counter() - t0
        with self._lock:
            self.clusters.update(found)

    def hook(self, panel: str, params: Mapping[str, float],
             activations: Callable[[str, Sequence[str]], Mapping[str, torch.Tensor]]) -> Callable[[str, torch.Tensor], torch.Tensor] | None:
        """The hook for one panel at these live amounts, or None when nothing bends it."""
        active: dict[str, list[tuple[BendSettings, float]]] = {}
        for b, name in zip(self.bends, self.names):
            lo, hi = b.range()
            a = min(max(float(params.get(name, b.amount)), lo), hi)
            if a != 0.0 and (not b.panels or panel in b.panels):
                active.setdefault(b.layer, []).append((b, a))
        if not active:
            return None
        wanted = sorted({(b.layer, b.clusters) for bends in active.values() for b, _ in bends if b.channels == "cluster"})

        def bend(layer: str, x: torch.Tensor) -> torch.Tensor:
            for b, a in active.get(layer, ()):
                channels = self._channels(b, panel, x.shape[1], x.device, activations, wanted)
                if channels is not None and channels.numel() == 0:
                    continue
                x = bend_channels(x, b.op, a, channels, b.axis)
            return x

        return bend
