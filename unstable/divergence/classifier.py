"""The custom digit classifier: a small conv net whose 10-d logits are BAD's feature space.

The paper's Table 2 is garbled in print (it repeats the decoder's linear layers), so this is a
plain three-conv network of the same spirit. Trained with the paper's recipe: Adam 1e-3, batch
128, and light augmentations that keep digits digits (a random affine warp, a blur or an erased
patch, one of them with probability 0.5). It is frozen during BAD.

`robust > 0` adds adversarial training (half of each batch's loss on FGSM digits within that
L-inf radius). This is our addition, not the paper's. A plain classifier can be fooled by faint,
high-frequency patterns, so BAD's gradient through it turns into a dot lattice that lowers its
confidence. A robust classifier's gradients follow strokes, so diverging against it changes the
shapes themselves.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..config import setting


@dataclass(frozen=True)
class ClassifierSettings:
    """The `[classifier]` table: the custom digit classifier (trained once and cached)."""

    width: int = setting(32, ge=4, le=256, doc="channels of the first conv layer (doubled after)")
    steps: int = setting(600, ge=1, doc="training steps")
    batch: int = setting(128, ge=2, le=4096, doc="training batch size (the paper's 128)")
    lr: float = setting(1e-3, gt=0, le=1, doc="Adam learning rate (the paper's 1e-3)")
    augment: float = setting(0.5, ge=0, le=1, doc="probability that a training digit gets one augmentation")
    robust: float = setting(0.0, ge=0, le=0.5, doc="adversarial training radius (L-inf, pixels in 0..1); 0 = off")
    seed: int = setting(0, doc="seed of the classifier's initialisation, batches and augmentations")


class DigitClassifier(nn.Module):
    """x [N, 1, 28, 28] in 0..1 -> class logits [N, 10]."""

    def __init__(self, width: int = 32, classes: int = 10):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            nn.Conv2d(1, w, 3, padding=1), nn.LeakyReLU(0.2), nn.MaxPool2d(2),           # 28 -> 14
            nn.Conv2d(w, 2 * w, 3, padding=1), nn.LeakyReLU(0.2), nn.MaxPool2d(2),       # 14 -> 7
            nn.Conv2d(2 * w, 2 * w, 3, padding=1), nn.LeakyReLU(0.2),                   # 7 -> 7
        )
        self.head = nn.Sequential(nn.Flatten(), nn.Dropout(0.25), nn.Linear(2 * w * 49, 128),
                                  nn.LeakyReLU(0.2), nn.Linear(128, classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classify(self.embed(x))  # [N, 10]

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """x [N, 1, 28, 28] -> the penultimate activations [N, 128] (the head's last layer left out)."""
        assert x.ndim == 4 and x.shape[1:] == (1, 28, 28), f"expected [N, 1, 28, 28], got {list(x.shape)}"
        return self.head[:-1](self.features(x))

    def classify(self, embedding: torch.Tensor) -> torch.Tensor:
        """Embeddings [N, 128] from `embed` -> class logits [N, 10]."""
        return self.head[-1](embedding)


def augment(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Each image of [N, 1, 28, 28], with probability p, gets one of: affine warp, blur, erasing."""
    n = x.shape[0]
    dev = x.device
    rand = lambda *shape: torch.rand(*shape, generator=generator).to(dev)  # noqa: E731
    choice = torch.randint(0, 3, (n,), generator=generator).to(dev)
    apply = rand(n) < p
    out = x

    # Affine: rotation +-12 degrees, scale 0.9..1.1, shift +-2 px.
    angle = (rand(n) * 2 - 1) * math.radians(12)
    scale = 0.9 + 0.2 * rand(n)
    shift = (rand(n, 2) * 2 - 1) * (2 / 14)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    warped = F.grid_sample(x, grid, align_corners=False, padding_mode="zeros")

    # Blur: 3x3 Gaussian, sigma ~ 0.8.
    k = torch.tensor([0.27, 0.46, 0.27], device=dev)
    kernel = (k[:, None] * k[None, :]).view(1, 1, 3, 3)
    blurred = F.conv2d(x, kernel, padding=1)

    # Erasing: one zeroed rectangle of 4..10 px per side.
    ys, xs = torch.arange(28, device=dev).view(1, 28, 1), torch.arange(28, device=dev).view(1, 1, 28)
    h = (4 + rand(n) * 6).long().view(n, 1, 1)
    w = (4 + rand(n) * 6).long().view(n, 1, 1)
    top = (rand(n) * 24).long().view(n, 1, 1)
    left = (rand(n) * 24).long().view(n, 1, 1)
    hole = ((ys >= top) & (ys < top + h) & (xs >= left) & (xs < left + w)).unsqueeze(1)
    erased = x.masked_fill(hole, 0.0)

    pick = lambda i: (apply & (choice == i)).view(n, 1, 1, 1)  # noqa: E731
    out = torch.where(pick(0), warped, out)
    out = torch.where(pick(1), blurred, out)
    out = torch.where(pick(2), erased, out)
    return out


def fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, generator: torch.Generator) -> torch.Tensor:
    """Adversarial digits [N, 1, 28, 28] for adversarial training: FGSM from a random start
    (Wong, Rice & Kolter 2020, "Fast is better than free"), step 1.25 eps, kept in the eps-ball and 0..1."""
    delta = ((torch.rand(x.shape, generator=generator) * 2 - 1) * eps).to(x.device).requires_grad_(True)
    loss = F.cross_entropy(model((x + delta).clamp(0, 1)), y)
    grad, = torch.autograd.grad(loss, delta)
    delta = (delta.detach() + 1.25 * eps * grad.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


def train_classifier(settings: ClassifierSettings, train_x: torch.Tensor, train_y: torch.Tensor,
                     test_x: torch.Tensor, test_y: torch.Tensor, device: torch.device,
                     progress: Callable[..., object] | None = None,
                     label: str = "digit classifier") -> tuple[DigitClassifier, dict[str, float]]:
    """Train the digit classifier; returns it (eval mode) and its held-out accuracy and loss."""
    with torch.random.fork_rng(devices=[]):  # seeded init and dropout without touching the caller's RNG
        torch.manual_seed(settings.seed)
        return _train_classifier(settings, train_x, train_y, test_x, test_y, device, progress, label)


def _train_classifier(settings, train_x, train_y, test_x, test_y, device, progress, label):
    model = DigitClassifier(settings.width).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=settings.lr)
    gen = torch.Generator().manual_seed(settings.seed + 1)
    train_x, train_y = train_x.to(device), train_y.to(device)
    bar = progress(label, total=settings.steps) if progress else None
    model.train()
    for step in range(settings.steps):
        idx = torch.randint(0, train_x.shape[0], (settings.batch,), generator=gen).to(device)
        x, y = augment(train_x[idx], settings.augment, gen), train_y[idx]
        loss = F.cross_entropy(model(x), y)
        if settings.robust > 0:
            loss = 0.5 * (loss + F.cross_entropy(model(fgsm(model, x, y, settings.robust, gen)), y))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bar is not None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    model.eval()
    metrics = evaluate_classifier(model, test_x.to(device), test_y.to(device))
    if bar is not None:
        bar.set_postfix(heldout_accuracy=f"{metrics['heldout_accuracy']:.3f}")
        bar.close()
    return model, metrics


@torch.no_grad()
def evaluate_classifier(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch: int = 1000) -> dict[str, float]:
    """Held-out accuracy and cross-entropy of a classifier on [N, 1, 28, 28] digits."""
    was_training = model.training
    model.eval()
    correct, loss = 0, 0.0
    for start in range(0, x.shape[0], batch):
        logits = model(x[start:start + batch])
        target = y[start:start + batch]
        correct += int((logits.argmax(1) == target).sum())
        loss += F.cross_entropy(logits, target, reduction="sum").item()
    model.train(was_training)
    n = max(1, x.shape[0])
    return {"heldout_accuracy": correct / n, "heldout_ce": loss / n}
