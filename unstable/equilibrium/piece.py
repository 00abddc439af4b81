"""The piece file of kind "equilibrium": frozen, validated dataclasses (pieces/equilibrium-*.toml).

`EquilibriumPiece` is what `unstable.system.load_piece` builds from a piece file; each table of
the file is one settings class below. Validation happens in `__post_init__` and raises ValueError
naming the key, which the loader turns into a ConfigError naming the file as well. The system
that trains a piece is `unstable.equilibrium.system.EquilibriumSystem`.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from ..bending import BendSettings, check_bends
from ..config import setting, to_dict
from ..directions import DirectionSettings
from ..keeper_settings import KeeperSettings
from ..schema import SAMPLING, TRAINING, ParamSpec
from ..train_settings import TrainSettings
from .losses import DISTANCES, VARIETY

__all__ = ["EquilibriumPiece", "OptimSettings", "GeneratorSettings", "GrowthSettings", "CriticSettings",
           "EnsembleSettings", "ImpersonateSettings", "EmbeddingSettings", "VarietySettings",
           "ObjectiveSettings"]


def _power_of_two(n: int) -> bool:
    return n > 0 and n & (n - 1) == 0


def _check_mix(key: str, mix: Mapping[str, float], known: Mapping[str, Any], what: str) -> None:
    for name, weight in mix.items():
        if name not in known:
            raise ValueError(f"{key}.{name}: not a {what}, expected one of {', '.join(known)}")
        if weight < 0:
            raise ValueError(f"{key}.{name}: weight {weight} is negative")
    if not any(w > 0 for w in mix.values()):
        raise ValueError(f"{key}: needs at least one {what} with a positive weight")


@dataclass(frozen=True)
class OptimSettings:
    """Batch and Adam settings of one network (`[generator.optim]`, `[critic.optim]`)."""

    batch: int = setting(8, ge=1, le=1024, doc="images per generator in each update of this network")
    lr: float = setting(2e-3, gt=0, le=1, doc="Adam learning rate")
    beta1: float = setting(0.0, ge=0, lt=1, doc="Adam beta1 (0 as in StyleGAN)")
    beta2: float = setting(0.99, ge=0, lt=1, doc="Adam beta2")
    eps: float = setting(1e-8, gt=0, le=1, doc="Adam epsilon")
    weight_decay: float = setting(0.0, ge=0, le=1, doc="L2 weight decay")
    grad_clip: float = setting(0.0, ge=0, doc="clip the gradient norm of each network to this; 0 = off")


@dataclass(frozen=True)
class GeneratorSettings:
    """`[generator]`: the architecture every generator shares, and their optimiser."""

    resolution: int = setting(64, ge=8, le=2048, doc="target resolution (power of two)")
    start_resolution: int = setting(8, ge=4, le=2048, doc="resolution growth starts from (power of two)")
    z_dim: int = setting(64, ge=1, le=2048, doc="latent dimension")
    w_dim: int = setting(64, ge=1, le=2048, doc="style (w) dimension")
    mapping_layers: int = setting(4, ge=1, le=16, doc="layers of the mapping network")
    mapping_lr_mul: float = setting(0.01, gt=0, le=1, doc="learning-rate multiplier of the mapping network")
    channel_base: int = setting(1024, ge=4, doc="width at resolution r is channel_base / r, clamped")
    min_channels: int = setting(16, ge=1, le=4096, doc="narrowest layer")
    max_channels: int = setting(64, ge=1, le=4096, doc="widest layer")
    noise: bool = setting(True, doc="per-layer noise inputs")
    noise_init: float = setting(0.1, ge=0, le=10, doc="initial strength of the per-layer noise")
    new_rgb_gain: float = setting(
        0.0, ge=0, le=1, doc="initial gain of the toRGB layers of the resolutions that fade in later: with "
        "no data to pull them, random ones would stay as speckle; 0 = a new resolution starts adding nothing "
        "and grows only the detail the objectives ask for")
    optim: OptimSettings = setting(default_factory=OptimSettings, doc="optimiser of every generator")

    def __post_init__(self):
        for key in ("resolution", "start_resolution"):
            if not _power_of_two(getattr(self, key)):
                raise ValueError(f"{key}: {getattr(self, key)} is not a power of two")
        if self.start_resolution > self.resolution:
            raise ValueError(f"start_resolution: {self.start_resolution} is above resolution {self.resolution}")
        if self.min_channels > self.max_channels:
            raise ValueError(f"min_channels: {self.min_channels} is above max_channels {self.max_channels}")


@dataclass(frozen=True)
class GrowthSettings:
    """`[growth]`: progressive growing, stable then fade-in per new resolution."""

    stable_steps: int = setting(150, ge=0, doc="steps each resolution trains at before the next fades in")
    fade_steps: int = setting(150, ge=0, doc="steps over which a new resolution fades in (0 = at once)")


@dataclass(frozen=True)
class CriticSettings:
    """`[critic]`: the conv net over generators and how it is trained."""

    mode: Literal["classifier", "diametric"] = setting(
        "classifier", doc="classifier: learn which generator made an image; diametric: alternate the "
        "true labels and the target-swapped labels, each on its own batch")
    updates: int = setting(1, ge=0, le=16, doc="critic updates per step (diametric: the losses alternate "
                           "across updates); 0 freezes the critic")
    embedding_dim: int = setting(64, ge=1, le=4096, doc="size of the embedding the generators compare")
    channel_base: int = setting(1024, ge=4, doc="width at resolution r is channel_base / r, clamped")
    min_channels: int = setting(16, ge=1, le=4096, doc="narrowest layer")
    max_channels: int = setting(64, ge=1, le=4096, doc="widest layer")
    optim: OptimSettings = setting(default_factory=OptimSettings, doc="optimiser of the critic")

    def __post_init__(self):
        if self.min_channels > self.max_channels:
            raise ValueError(f"min_channels: {self.min_channels} is above max_channels {self.max_channels}")


@dataclass(frozen=True)
class EnsembleSettings:
    """`[ensemble]`: how many generators and who impersonates whom."""

    generators: int = setting(2, ge=2, le=16, doc="number of generators, named g0, g1, ...")
    targets: dict[str, str] = setting(
        default_factory=lambda: types.MappingProxyType({}),
        doc="generator -> the generator it tries to pass for; default: the next one, cyclically")
    lr_scale: dict[str, float] = setting(
        default_factory=lambda: types.MappingProxyType({}), gt=0, le=100,
        doc="per-generator learning-rate multiplier, e.g. {g1 = 0.5}")
    shared_latents: bool = setting(True, doc="every generator gets the same latents in a step (row k is "
                                   "the same place in each latent space)")


@dataclass(frozen=True)
class ImpersonateSettings:
    """`[objectives.impersonate]`: be classified as the target generator."""

    on: bool = setting(True, doc="use this objective")
    weight: float = setting(1.0, ge=0, le=1000, doc="weight in the generator loss")


@dataclass(frozen=True)
class EmbeddingSettings:
    """`[objectives.embedding]`: bring my critic embeddings close to the target's."""

    on: bool = setting(False, doc="use this objective")
    weight: float = setting(1.0, ge=0, le=1000, doc="weight in the generator loss")
    distances: dict[str, float] = setting(
        default_factory=lambda: types.MappingProxyType({"l2": 1.0}),
        doc=f"mix of distances, name -> weight; names: {', '.join(DISTANCES)}")
    pairing: Literal["paired", "all_pairs", "centroid"] = setting(
        "paired", doc="paired: row k to row k; all_pairs: every row to every row; centroid: batch means")

    def __post_init__(self):
        _check_mix("distances", self.distances, DISTANCES, "distance")


@dataclass(frozen=True)
class VarietySettings:
    """`[objectives.colour_variety]`: more colour variety in my batch than the target has in its own."""

    on: bool = setting(True, doc="use this objective")
    weight: float = setting(1.0, ge=0, le=1000, doc="weight in the generator loss")
    measures: dict[str, float] = setting(
        default_factory=lambda: types.MappingProxyType({"std": 1.0}),
        doc=f"mix of variety measures, name -> weight; names: {', '.join(VARIETY)}")
    relation: Literal["softplus", "hinge", "difference", "ratio"] = setting(
        "softplus", doc="how my variety is set against the target's (see losses.relational_loss)")
    sharpness: float = setting(10.0, gt=0, le=1000, doc="softplus sharpness")
    margin: float = setting(0.0, ge=-10, le=10, doc="lead over the target's variety to aim for")
    resolution: int = setting(0, ge=0, le=2048, doc="measure on the batch box-downsampled to this size "
                              "(power of two), so variety is sought in the composition rather than in "
                              "pixel noise; 0 = the full resolution")

    def __post_init__(self):
        _check_mix("measures", self.measures, VARIETY, "variety measure")
        if self.resolution and not _power_of_two(self.resolution):
            raise ValueError(f"resolution: {self.resolution} is not a power of two")


@dataclass(frozen=True)
class ObjectiveSettings:
    """`[objectives]`: the generators' objectives, each switchable and weighted."""

    impersonate: ImpersonateSettings = setting(default_factory=ImpersonateSettings)
    embedding: EmbeddingSettings = setting(default_factory=EmbeddingSettings)
    colour_variety: VarietySettings = setting(default_factory=VarietySettings)

    def __post_init__(self):
        if not (self.impersonate.on or self.embedding.on or self.colour_variety.on):
            raise ValueError("every objective is off, turn on at least one")  # no key: the table itself


@dataclass(frozen=True)
class EquilibriumPiece:
    """A piece file of kind "equilibrium" (see pieces/equilibrium-1-*.toml)."""

    name: str
    kind: Literal["equilibrium"]
    seed: int = setting(ge=0, le=2**63 - 1, doc="seed of the weights, batches and grids")
    train: TrainSettings = setting(default_factory=TrainSettings)
    generator: GeneratorSettings = setting(default_factory=GeneratorSettings)
    growth: GrowthSettings = setting(default_factory=GrowthSettings)
    critic: CriticSettings = setting(default_factory=CriticSettings)
    ensemble: EnsembleSettings = setting(default_factory=EnsembleSettings)
    objectives: ObjectiveSettings = setting(default_factory=ObjectiveSettings)
    bend: tuple[BendSettings, ...] = setting((), doc="network bends at sampling time ([[bend]] tables)")
    directions: DirectionSettings = setting(default_factory=DirectionSettings,
                                            doc="PCA directions of w as live parameters")
    keeper: KeeperSettings | None = setting(None, doc="hold the piece between stasis and explosion while a show "
                                            "plays it or `unstable train` trains it (absent: no keeper)")

    def __post_init__(self):
        names = self.generator_names()
        for key in ("targets", "lr_scale"):
            for name in getattr(self.ensemble, key):
                if name not in names:
                    raise ValueError(f"ensemble.{key}.{name}: no such generator, expected one of {', '.join(names)}")
        for name, target in self.ensemble.targets.items():
            if target not in names:
                raise ValueError(f"ensemble.targets.{name}: {target!r} is not a generator, "
                                 f"expected one of {', '.join(names)}")
            if target == name:
                raise ValueError(f"ensemble.targets.{name}: a generator cannot target itself")
        emb = self.objectives.embedding
        if emb.on and emb.pairing == "paired" and not self.ensemble.shared_latents:
            raise ValueError("objectives.embedding.pairing: 'paired' compares the same latents and needs "
                             "ensemble.shared_latents = true")
        from ..schema import common_specs
        taken = [s.name for s in live_param_specs(self, instruments=False) + common_specs()]
        taken += [f"dir{i}" for i in range(self.directions.count)]
        check_bends(self.bend, layer_names(self.generator.resolution), names, taken)

    def layers(self) -> dict[str, bool]:
        """The generators' hook points of network bending, {name: spatial}."""
        return layer_names(self.generator.resolution)

    def generator_names(self) -> list[str]:
        return [f"g{i}" for i in range(self.ensemble.generators)]

    def target_indices(self) -> list[int]:
        """For each generator, the index of the generator it tries to pass for."""
        names = self.generator_names()
        return [names.index(self.ensemble.targets.get(n, names[(i + 1) % len(names)])) for i, n in enumerate(names)]


# ------------------------------------------------------------------------------------ what a piece decides

def layer_names(resolution: int) -> dict[str, bool]:
    """`b<r>.<j>`: the output of styled conv j of the block at resolution r (Generator.layer_names)."""
    from .layers import resolutions_between
    return {f"b{r}.{j}": True for r in resolutions_between(4, resolution) for j in range(1 if r == 4 else 2)}


def live_param_specs(piece: EquilibriumPiece, instruments: bool = True) -> list[ParamSpec]:
    """The live parameters of an equilibrium piece (sampling, training, objective weights, and with
    `instruments` its bends' amounts and its latent directions' offsets)."""
    from ..system import learning_rate_spec
    specs = [
        ParamSpec("temperature", 0.0, 3.0, 1.0, smoothing=0.2, doc="variety of the images: 0 all alike, higher wilder",
                  reads=SAMPLING),
        ParamSpec("truncation", 0.0, 1.5, 1.0, smoothing=0.2,
                  doc="pulls the images towards the average one (1: no pull)", reads=SAMPLING),
        ParamSpec("noise", 0.0, 3.0, 1.0, smoothing=0.2, doc="fine grain and texture in the images", reads=SAMPLING),
        learning_rate_spec("how fast the networks learn (1: the piece's own pace)"),
        # As BAD's: x each network's batch, at least 2 images a generator (schedule.batch_share).
        ParamSpec("batch_fraction", 1 / 16, 1.0, 1.0, log=True,
                  doc="share of each training batch made per step: less is quicker, noisier", reads=TRAINING),
        ParamSpec("training", 0.0, 1.0, 1.0, kind="toggle", doc="the generators keep learning, or hold as they are",
                  reads=TRAINING),
        ParamSpec("critic_training", 0.0, 1.0, 1.0, kind="toggle",
                  doc="the critic that judges them keeps learning, or holds", reads=TRAINING),
    ]
    obj = piece.objectives
    for name in ("impersonate", "embedding", "colour_variety"):
        o = getattr(obj, name)
        if o.on:
            specs.append(ParamSpec(f"{name}_weight", 0.0, max(1.0, 4.0 * o.weight), o.weight, smoothing=0.5,
                                   doc=f"how strongly the {name.replace('_', ' ')} aim pulls", reads=TRAINING))
    if instruments:
        from ..bending import Bender
        from ..directions import Directions
        specs += Bender(piece.bend).specs() + Directions(piece.directions).specs()
    return specs


def objective_weights(piece: EquilibriumPiece, params: Mapping[str, float]) -> dict[str, float]:
    """The objectives' weights: the live `<name>_weight` parameters, else the piece's."""
    obj = piece.objectives
    return {name: float(params.get(f"{name}_weight", getattr(obj, name).weight))
            for name in ("impersonate", "embedding", "colour_variety")}


def architecture(piece: EquilibriumPiece) -> dict:
    """The config that fixes the shapes of the weights (what the fingerprint hashes)."""
    g = to_dict(piece.generator)
    c = to_dict(piece.critic)
    for d, drop in ((g, ("optim", "noise_init", "new_rgb_gain")), (c, ("optim", "mode", "updates"))):
        for key in drop:
            d.pop(key)
    return {"kind": "equilibrium", "generators": piece.ensemble.generators, "generator": g, "critic": c}
