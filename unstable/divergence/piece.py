"""The schema of a BAD piece (pieces/bad-*.toml): its tables as frozen dataclasses, and its live
parameters. Beside equilibrium's piece.py: loading a piece file reads this and no network."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..bending import BendSettings, check_bends
from ..config import setting
from ..directions import DirectionSettings
from ..keeper_settings import KeeperSettings
from ..schema import SAMPLING, TRAINING, ParamSpec
from ..system import learning_rate_spec
from ..train_settings import TrainSettings
from .classifier import ClassifierSettings
from .data import DataSettings
from .features import FeatureSettings
from .losses import Kernel
from .vae import Decoder, VAESettings

__all__ = ["LossSettings", "BADSettings", "DivergencePiece", "live_param_specs",
           "ALPHA_RANGE", "BETA_RANGE", "TEMPERATURE_RANGE", "LR_RANGE"]

ALPHA_RANGE = (-100.0, 100.0)
BETA_RANGE = (0.0, 1000.0)
TEMPERATURE_RANGE = (0.05, 5.0)
LR_RANGE = (1e-7, 1e-2)  # of the piece's absolute Adam rate `bad.lr`; the live `learning_rate` multiplies it


@dataclass(frozen=True)
class LossSettings:
    """The `[loss]` table: which divergence couple BAD uses and how it is computed."""

    couple: Literal["mmd", "isfid", "creativity"] = setting(
        "mmd", doc="'mmd': class-wise MMD vs global MMD; 'isfid': IS vs FID; 'creativity': the creativity loss "
                   "(cross-entropy of the class posterior against the uniform, as in CAN/DeSIGN; alpha < 0 "
                   "lowers it) vs global MMD")
    form: Literal["difference", "ratio"] = setting(
        "difference", doc="maximise alpha*L_div - beta*L_reg, or log(L_div^alpha / L_reg^beta)")
    splits: int = setting(4, ge=1, le=64, doc="IS splits (the reference code uses 4 or 8)")
    mmd: Literal["gretton", "reference"] = setting(
        "gretton", doc="'gretton': the paper's unbiased MMD^2; 'reference': the authors' code's variant")
    kernel: Kernel = setting("gaussian", doc="MMD kernel for the gretton variant: gaussian, laplacian or imq")
    classwise: Literal["all", "predicted"] = setting(
        "all", doc="L_div compares 'all' generated samples with each real class (the paper's eq. 2), or only "
                   "those the digit classifier 'predicted' as that class")
    bandwidth: float = setting(0.0, ge=0, doc="MMD kernel bandwidth; 0 = median pairwise distance of real features")
    scale: float = setting(1.0, gt=0, doc="kernel scale of the 'reference' MMD variant")


@dataclass(frozen=True)
class BADSettings:
    """The `[bad]` table: the divergence run's defaults (alpha, beta, T and lr are also live)."""

    alpha: float = setting(1.0, ge=ALPHA_RANGE[0], le=ALPHA_RANGE[1], doc="weight of L_div (negative for IS)")
    beta: float = setting(20.0, ge=BETA_RANGE[0], le=BETA_RANGE[1], doc="weight of L_reg, the bound (0 = unbounded)")
    lr: float = setting(1e-4, ge=LR_RANGE[0], le=LR_RANGE[1], doc="Adam learning rate of the decoder (the live "
                        "learning_rate multiplies it)")
    batch: int = setting(256, ge=4, le=8192, doc="generated (and real) samples per step")
    temperature: float = setting(1.0, ge=TEMPERATURE_RANGE[0], le=TEMPERATURE_RANGE[1],
                                 doc="prior temperature T: z ~ N(0, T^2 I) while training and sampling")
    real_pool: int = setting(0, ge=0, doc="real digits whose features are precomputed (0 = all training digits)")


@dataclass(frozen=True)
class DivergencePiece:
    """A BAD piece file (pieces/bad-*.toml)."""

    name: str
    kind: Literal["divergence"]
    seed: int = setting(0, ge=0, le=2**63 - 1, doc="seed of the BAD run (latents, real batches)")
    cache: str = setting(".cache/unstable", doc="folder of the cached base models (relative to the working dir)")
    train: TrainSettings = TrainSettings()
    data: DataSettings = DataSettings()
    vae: VAESettings = VAESettings()
    classifier: ClassifierSettings = ClassifierSettings()
    features: FeatureSettings = FeatureSettings()
    loss: LossSettings = LossSettings()
    bad: BADSettings = BADSettings()
    bend: tuple[BendSettings, ...] = setting((), doc="network bends at sampling time ([[bend]] tables)")
    directions: DirectionSettings = DirectionSettings()
    keeper: KeeperSettings | None = setting(None, doc="hold the piece between stasis and explosion while a show "
                                            "plays it or `unstable train` trains it (absent: no keeper)")

    def __post_init__(self):
        from ..schema import common_specs
        taken = [s.name for s in live_param_specs(self) + common_specs()]
        taken += [f"dir{i}" for i in range(self.directions.count)]
        check_bends(self.bend, Decoder.LAYERS, ("decoder", "base"), taken)


def live_param_specs(piece: "DivergencePiece") -> list[ParamSpec]:
    """alpha, beta, temperature, learning_rate (x bad.lr, log), batch_fraction and training on/off,
    defaults from the piece (its bends' and directions' parameters are the system's to add)."""
    b = piece.bad
    return [
        ParamSpec("alpha", *ALPHA_RANGE, b.alpha, doc="how hard the decoder is pushed away from the digits",
                  reads=TRAINING),
        ParamSpec("beta", *BETA_RANGE, b.beta, doc="how tightly it is held to handwriting (0: not at all)",
                  reads=TRAINING),
        ParamSpec("temperature", *TEMPERATURE_RANGE, b.temperature, log=True, smoothing=0.2,
                  doc="spread of the images: low plainer, high wilder", reads=SAMPLING),
        learning_rate_spec("how fast the decoder learns (1: the piece's own pace)"),
        ParamSpec("batch_fraction", 1 / 16, 1.0, 1.0, log=True,
                  doc="share of each training batch made per step: less is quicker, noisier", reads=TRAINING),
        ParamSpec("training", 0, 1, 1, kind="toggle", doc="the decoder keeps diverging, or holds as it is",
                  reads=TRAINING),
    ]
