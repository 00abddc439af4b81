"""Feature extractors for BAD's losses: the custom digit classifier, or a torchvision ImageNet net.

Every extractor maps digits [N, 1, 28, 28] in 0..1 to logits [N, D] and stays frozen (eval mode,
no parameter gradients) while gradients flow back to the images. torchvision models see the
digits as ImageNet images: grey repeated to 3 channels, resized (299 for inception_v3, 224 for
the others), ImageNet mean/std normalisation.

torchvision weights cannot be downloaded on the machines this project targets, so they load from
a local file (`features.weights = "path/to/file.pth"`), or, by default, from the torch hub cache
(`$TORCH_HOME/hub/checkpoints/<torchvision's file name>`, where torchvision itself would put
them). A missing file is one clear error naming the path and the URL to fetch it from elsewhere.
`weights = "none"` builds the network with random weights, only when a piece asks for it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import setting
from ..errors import UnstableError

Extractor = Literal["custom", "alexnet", "inception_v3", "mobilenet_v2"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# name -> (constructor, weights enum, input size)
_TORCHVISION = {
    "alexnet": ("alexnet", "AlexNet_Weights", 224),
    "inception_v3": ("inception_v3", "Inception_V3_Weights", 299),
    "mobilenet_v2": ("mobilenet_v2", "MobileNet_V2_Weights", 224),
}


@dataclass(frozen=True)
class FeatureSettings:
    """The `[features]` table: which network embeds images for the losses."""

    extractor: Extractor = setting("custom", doc="custom digit classifier, or a torchvision ImageNet classifier")
    layer: Literal["logits", "embedding"] = setting(
        "logits", doc="custom classifier only: its 10-d logits, or its 128-d penultimate embedding")
    weights: str = setting("", doc="torchvision weights: '' = torch hub cache, a .pth path, or 'none' (random)")
    size: int = setting(0, ge=0, le=512, doc="input size for torchvision nets (0: 299 for inception_v3, else 224)")


class WeightsError(UnstableError):
    """Pretrained weights that are missing or do not fit the network."""


def hub_weights_path(name: str) -> tuple[Path, str]:
    """Where torchvision keeps `name`'s ImageNet weights in the hub cache, and where they come from."""
    from ..tv import import_torchvision
    tv = import_torchvision()
    enum = getattr(tv.models, _TORCHVISION[name][1]).IMAGENET1K_V1
    url = enum.url
    import torch.hub
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url), url


def build_torchvision(name: str, weights: str) -> nn.Module:
    """A torchvision classifier with weights from `weights` ('' = hub cache, a path, or 'none')."""
    from ..tv import import_torchvision
    tv = import_torchvision()
    ctor = getattr(tv.models, _TORCHVISION[name][0])
    kwargs: dict = {"weights": None}
    if name == "inception_v3":
        # torchvision's pretrained inception keeps its aux head in the file and expects inputs
        # re-normalised Google-style (transform_input), as when it loads the weights itself.
        kwargs.update(aux_logits=True, init_weights=weights == "none", transform_input=weights != "none")
    model = ctor(**kwargs)
    if weights == "none":
        return model
    if weights:
        path, url = Path(weights).expanduser(), hub_weights_path(name)[1]
    else:
        path, url = hub_weights_path(name)
    if not path.is_file():
        raise WeightsError(f"features.weights: no {name} weights at {path}; download {url} to that path "
                           f"(or set features.weights to a local .pth file, or 'none' for random weights)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # truncated files, foreign state dicts
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise WeightsError(f"{path}: not usable {name} weights ({first[:200]})") from None
    return model


class TorchvisionFeatures(nn.Module):
    """Digits [N, 1, 28, 28] -> ImageNet logits [N, 1000] through a frozen torchvision network."""

    def __init__(self, name: str, weights: str = "", size: int = 0):
        super().__init__()
        self.name = name
        self.size = size or _TORCHVISION[name][2]
        self.net = build_torchvision(name, weights)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.expand(-1, 3, -1, -1)  # [N, 3, 28, 28]
        x = F.interpolate(x, size=(self.size, self.size), mode="bilinear", align_corners=False)
        out = self.net((x - self.mean) / self.std)
        return out.logits if hasattr(out, "logits") else out  # [N, 1000]


def freeze(model: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients: the extractor is a fixed measuring instrument."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class ClassifierEmbedding(nn.Module):
    """Digits [N, 1, 28, 28] -> the digit classifier's penultimate activations [N, 128].

    Richer than the 10 logits: a pattern that barely moves the logits (a faint dot lattice, a
    texture) still moves the embedding, so an MMD bound measured in it holds the decoder closer to
    the digits' look as well as to their classes. Shares the classifier's (frozen) weights."""

    def __init__(self, classifier: nn.Module):
        super().__init__()
        self.classifier = classifier

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier.embed(x)  # [N, 128]


def build_extractor(settings: FeatureSettings, classifier: nn.Module, device: torch.device) -> nn.Module:
    """The frozen feature extractor a piece asks for; 'custom' reuses the digit classifier."""
    if settings.extractor != "custom" and settings.layer != "logits":
        raise UnstableError(f"features.layer = {settings.layer!r} is for extractor = 'custom' only "
                            f"(torchvision extractors give their 1000 ImageNet logits)")
    if settings.extractor == "custom":
        return classifier if settings.layer == "logits" else ClassifierEmbedding(classifier)
    return freeze(TorchvisionFeatures(settings.extractor, settings.weights, settings.size).to(device))


@torch.no_grad()
def extract(model: nn.Module, x: torch.Tensor, batch: int = 256, progress=None) -> torch.Tensor:
    """Features of many images [N, 1, 28, 28] in batches (no gradient) -> [N, D]."""
    out = []
    bar = progress("real features", total=x.shape[0]) if progress else None
    for start in range(0, x.shape[0], batch):
        out.append(model(x[start:start + batch]))
        if bar is not None:
            bar.update(min(batch, x.shape[0] - start))
    if bar is not None:
        bar.close()
    return torch.cat(out)
