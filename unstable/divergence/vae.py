"""The base generator: a VAE with a 16-d Normal latent and a Bernoulli decoder (paper, Table 1).

Decoder: Linear(16, 800), BatchNorm1d, ELU, Linear(800, 64) reshaped to [16, 2, 2], then four
transposed convolutions whose output paddings (2, 1, 1, 0) give 2 -> 7 -> 14 -> 28 -> 28. It
returns Bernoulli logits; the image a decoder "draws" is their sigmoid (the Bernoulli mean),
which is what BAD diverges and what the engine shows. The encoder mirrors it.

Training: binary cross-entropy + beta * KL with beta warmed up linearly from 0 to 1 (the paper's
KL warm-up), Adam. `train_vae` is pure computation; the caller owns caching and IO.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import accel
from ..config import setting


@dataclass(frozen=True)
class VAESettings:
    """The `[vae]` table: the base VAE's size and training recipe (it is trained once and cached)."""

    latent: int = setting(16, ge=1, le=512, doc="latent dimension (the paper's 16)")
    hidden: int = setting(800, ge=8, le=4096, doc="width of the decoder's first linear layer (the paper's 800)")
    steps: int = setting(1200, ge=1, doc="training steps of the base VAE")
    batch: int = setting(64, ge=2, le=4096, doc="training batch size of the base VAE")
    lr: float = setting(1e-3, gt=0, le=1, doc="Adam learning rate of the base VAE")
    warmup: int = setting(400, ge=0, doc="KL warm-up: steps for the KL weight to go from 0 to 1")
    seed: int = setting(0, doc="seed of the base VAE's initialisation and batches")


class Decoder(nn.Module):
    """z [N, latent] -> Bernoulli logits [N, 1, 28, 28] (paper, Table 1)."""

    def __init__(self, latent: int = 16, hidden: int = 800):
        super().__init__()
        self.latent = latent
        self.mlp = nn.Sequential(nn.Linear(latent, hidden), nn.BatchNorm1d(hidden), nn.ELU(), nn.Linear(hidden, 64))
        self.convs = nn.Sequential(
            nn.ConvTranspose2d(16, 32, 9, stride=4, padding=4, output_padding=2), nn.ELU(),   # 2 -> 7
            nn.ConvTranspose2d(32, 32, 7, stride=2, padding=3, output_padding=1), nn.ELU(),   # 7 -> 14
            nn.ConvTranspose2d(32, 64, 5, stride=2, padding=2, output_padding=1), nn.ELU(),   # 14 -> 28
            nn.ConvTranspose2d(64, 1, 3, stride=1, padding=1),                                # 28 -> 28
        )

    # Hook points of network bending, {name: spatial}: the first hidden layer (after its ELU), the
    # 16x2x2 reshape, and the output of each transposed conv but the last (after its ELU).
    LAYERS = {"fc": False, "c2": True, "c7": True, "c14": True, "c28": True}

    def forward(self, z: torch.Tensor, bend=None, steer=None) -> torch.Tensor:
        """z [N, latent] -> logits [N, 1, 28, 28]. Sampling only: `steer` moves the first hidden
        layer [N, hidden] (latent directions), `bend(layer, x) -> x` is called at `LAYERS`."""
        assert z.ndim == 2 and z.shape[1] == self.latent, f"expected z [N, {self.latent}], got {list(z.shape)}"
        if bend is None and steer is None:
            return self.upsample(self.mlp(z).view(-1, 16, 2, 2))  # [N, 1, 28, 28] logits
        h = self.hidden(z)  # [N, hidden]
        if steer is not None:
            h = steer(h)
        if bend is not None:
            h = bend("fc", h)
        return self.upsample(self.mlp[3](h).view(-1, 16, 2, 2), bend)

    def upsample(self, x: torch.Tensor, bend=None) -> torch.Tensor:
        """The transposed convolutions: x [N, 16, 2, 2] -> logits [N, 1, 28, 28] (`bend` as in forward).

        Same maths as `self.convs(x)`, faster on a CPU: the activations are channels_last (oneDNN's
        kernels instead of PyTorch's generic transposed conv), the last, stride-1 layer runs as the
        ordinary conv it equals, and the convolutions take `accel.conv_dtype` (bf16 where the
        precision setting asks for it: sampling under `bf16`, training too under `bf16-train`).
        """
        x = x.contiguous(memory_format=torch.channels_last)
        names = ("c2", "c7", "c14", "c28")
        for i in range(0, len(self.convs) - 1, 2):
            if bend is not None:
                x = bend(names[i // 2], x)
            x = self.convs[i + 1](_transposed(self.convs[i], x))
        if bend is not None:
            x = bend("c28", x)
        return _transposed(self.convs[-1], x)

    def hidden(self, z: torch.Tensor) -> torch.Tensor:
        """The first hidden layer [N, hidden] (Linear, BatchNorm, ELU): where latent directions live."""
        return self.mlp[2](self.mlp[1](self.mlp[0](z)))

    def mean(self, z: torch.Tensor, bend=None, steer=None) -> torch.Tensor:
        """The Bernoulli mean (the drawn image) [N, 1, 28, 28] in 0..1."""
        return torch.sigmoid(self(z, bend, steer))

    def codes(self, z: torch.Tensor) -> torch.Tensor:
        """The MLP's output for z [N, latent] as the convolutions' input [N, 16, 2, 2].

        Its BatchNorm normalises over the batch, so it takes the whole batch at once (in training
        across processes, the whole global batch on every rank: a small part of the cost, and its
        statistics and running averages exactly the single process's); the convolutions after it
        are per image and may take any rows of it (`mean_of`)."""
        return self.mlp(z).view(-1, 16, 2, 2)

    def mean_of(self, codes: torch.Tensor) -> torch.Tensor:
        """The Bernoulli means [n, 1, 28, 28] of `codes` rows [n, 16, 2, 2] (see `codes`)."""
        return torch.sigmoid(self.upsample(codes))


def _transposed(layer: nn.ConvTranspose2d, x: torch.Tensor) -> torch.Tensor:
    """layer(x), computed as an ordinary conv where that is the same maths (stride 1, no output padding)."""
    k, p = layer.kernel_size[0], layer.padding[0]
    if layer.stride == (1, 1) and layer.output_padding == (0, 0) and layer.groups == 1 and layer.dilation == (1, 1):
        # A stride-1 transposed conv is a conv with the kernel flipped and its in/out swapped.
        weight = layer.weight.transpose(0, 1).flip(2, 3)  # [out, in, k, k]
        return accel.conv2d(x, weight, layer.bias, padding=k - 1 - p)
    return accel.conv_transpose2d(x, layer.weight, layer.bias, stride=layer.stride, padding=layer.padding,
                                  output_padding=layer.output_padding)


class Encoder(nn.Module):
    """x [N, 1, 28, 28] -> (mu, logvar) [N, latent] each: the decoder's layers in reverse."""

    def __init__(self, latent: int = 16, hidden: int = 800):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv2d(1, 64, 3, stride=1, padding=1), nn.ELU(),    # 28 -> 28
            nn.Conv2d(64, 32, 5, stride=2, padding=2), nn.ELU(),   # 28 -> 14
            nn.Conv2d(32, 32, 7, stride=2, padding=3), nn.ELU(),   # 14 -> 7
            nn.Conv2d(32, 16, 9, stride=4, padding=4), nn.ELU(),   # 7 -> 2
        )
        self.mlp = nn.Sequential(nn.Linear(64, hidden), nn.BatchNorm1d(hidden), nn.ELU(), nn.Linear(hidden, 2 * latent))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.convs(x).flatten(1)  # [N, 64]
        mu, logvar = self.mlp(h).chunk(2, dim=1)
        return mu, logvar.clamp(-12, 8)


class VAE(nn.Module):
    """Encoder + decoder with the reparameterised Normal posterior."""

    def __init__(self, latent: int = 16, hidden: int = 800):
        super().__init__()
        self.encoder = Encoder(latent, hidden)
        self.decoder = Decoder(latent, hidden)

    def losses(self, x: torch.Tensor, generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-image reconstruction BCE (summed over pixels) and KL to N(0, I), both batch means."""
        rec, kl = self.image_losses(x, generator)
        return rec.mean(), kl.mean()

    def image_losses(self, x: torch.Tensor, generator: torch.Generator | None = None,
                     sample: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
        """Reconstruction BCE (summed over pixels) and KL to N(0, I) of each image of x
        [N, 1, 28, 28] -> ([N], [N]); their sum is the negative ELBO. `sample=False` decodes the
        posterior mean instead of a reparameterised draw (deterministic)."""
        mu, logvar = self.encoder(x)
        z = mu
        if sample:
            # Noise from a CPU generator, so a seed means the same draws on every device.
            eps = torch.randn(mu.shape, generator=generator).to(mu.device)
            z = mu + eps * (0.5 * logvar).exp()
        rec = F.binary_cross_entropy_with_logits(self.decoder(z), x, reduction="none").flatten(1).sum(1)
        kl = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).sum(1)
        return rec, kl


def train_vae(settings: VAESettings, train_x: torch.Tensor, test_x: torch.Tensor, device: torch.device,
              progress: Callable[..., object] | None = None, label: str = "base VAE") -> tuple[VAE, dict[str, float]]:
    """Train the base VAE on binarised digits [N, 1, 28, 28]; returns it (eval mode) and held-out losses."""
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's RNG
        torch.manual_seed(settings.seed)
        vae = VAE(settings.latent, settings.hidden).to(device)
    opt = torch.optim.Adam(vae.parameters(), lr=settings.lr)
    gen = torch.Generator().manual_seed(settings.seed + 1)
    train_x = train_x.to(device)
    bar = progress(label, total=settings.steps) if progress else None
    vae.train()
    for step in range(settings.steps):
        idx = torch.randint(0, train_x.shape[0], (settings.batch,), generator=gen).to(device)
        warm = min(1.0, (step + 1) / settings.warmup) if settings.warmup else 1.0
        rec, kl = vae.losses(train_x[idx], gen)
        loss = rec + warm * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if bar is not None:
            bar.update(1)
            if step % 20 == 0:
                bar.set_postfix(rec=f"{rec.item():.1f}", kl=f"{kl.item():.1f}", refresh=False)
    vae.eval()
    metrics = evaluate_vae(vae, test_x.to(device), gen)
    if bar is not None:
        bar.set_postfix(heldout_rec=f"{metrics['heldout_bce']:.1f}", heldout_kl=f"{metrics['heldout_kl']:.1f}")
        bar.close()
    return vae, metrics


@torch.no_grad()
def evaluate_vae(vae: VAE, x: torch.Tensor, generator: torch.Generator | None = None, batch: int = 500) -> dict[str, float]:
    """Held-out reconstruction cross-entropy and KL (per image, nats), as in the paper's Table 3."""
    was_training = vae.training
    vae.eval()
    rec_sum = kl_sum = 0.0
    for start in range(0, x.shape[0], batch):
        chunk = x[start:start + batch]
        rec, kl = vae.losses(chunk, generator)
        rec_sum += rec.item() * chunk.shape[0]
        kl_sum += kl.item() * chunk.shape[0]
    vae.train(was_training)
    return {"heldout_bce": rec_sum / max(1, x.shape[0]), "heldout_kl": kl_sum / max(1, x.shape[0])}
