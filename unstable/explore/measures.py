"""The measures of a variant, from fixed probe latents at each checkpoint of its training, and
novelty against the archive of every variant so far.

Per checkpoint (`probe`), on `PROBES` fixed latents (the same for every variant of every
exploration, so variants are comparable), rendered with the piece's default live parameters:

- motion: mean absolute change of the probe images (0..1 pixels) since the previous checkpoint.
  The paper's stasis is the system settling: little motion between checkpoints. `stasis` in
  scores.csv is 1 when the last motion is under the exploration's stasis floor.
- pixel_diversity: std over the batch at each pixel, averaged (images within a generator differ).
- feature_diversity: mean pairwise cosine distance of the variant's own critic embeddings of the
  batch (differences the critic sees, not only pixels).
- generator_difference: mean absolute difference between generators' images of the same latents.
- colour_variety: per-channel std of every pixel's colour, averaged (the colour cloud's spread).
- mean colour (R, G, B): where the colour cloud sits.

Descriptor space of novelty (`descriptor`): the eight numbers
    [(log10(motion + 1e-4) + 4) / 4, 3 pixel_diversity, feature_diversity,
     3 generator_difference, 3 colour_variety, mean R, mean G, mean B]
each scaled to about 0..1 so that no one measure dominates the Euclidean distance. Novelty is the
mean distance to the k nearest other variants in the archive (Lehman & Stanley's sparseness),
except that a variant whose nearest neighbour is at distance 0 (the same genome trains to the same
descriptor) scores 0: it adds nothing to the archive.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import torch
import torch.nn.functional as F

__all__ = ["PROBES", "PROBE_SEED", "probe", "descriptor", "novelty", "MEASURES"]

PROBES = 8
PROBE_SEED = 20190  # fixed for every exploration: the probe latents are a shared yardstick
MEASURES = ("motion", "pixel_diversity", "feature_diversity", "generator_difference", "colour_variety")


@torch.no_grad()
def probe(system, previous: torch.Tensor | None) -> tuple[dict[str, float], torch.Tensor]:
    """The measures of `system` now and its probe images as uint8 [G, P, 3, R, R] (for the next
    checkpoint's motion). `previous`: the last checkpoint's probe images, or None."""
    from ..schema import defaults
    from ..trainer import fixed_latents
    params = defaults(system.param_specs())
    latents = fixed_latents(system.panels(), PROBES, PROBE_SEED, system.device)
    images = system.sample(latents, params)  # {panel: [P, 3, R, R] in 0..1}
    x = torch.stack([images[n] for n in sorted(images)]).float().cpu()  # [G, P, 3, R, R]
    finite = bool(torch.isfinite(x).all())
    x = torch.nan_to_num(x, nan=0.0)
    q = (x * 255).round().to(torch.uint8)  # what motion compares: a checkpoint's probe costs G*P*3*R*R bytes
    out: dict[str, float] = {"finite": float(finite)}
    if previous is not None and previous.shape == q.shape:
        out["motion"] = float((q.float() - previous.float()).abs().mean() / 255.0)
    out["pixel_diversity"] = float(x.std(dim=1).mean())
    out["colour_variety"] = float(x.permute(0, 1, 3, 4, 2).reshape(-1, 3).std(dim=0).mean())
    g = x.shape[0]
    diffs = [(x[i] - x[j]).abs().mean() for i in range(g) for j in range(i + 1, g)]
    out["generator_difference"] = float(torch.stack(diffs).mean()) if diffs else 0.0
    for c, name in enumerate("rgb"):
        out[f"mean_{name}"] = float(x[:, :, c].mean())
    out["feature_diversity"] = _feature_diversity(system, x)
    return out, q


def _feature_diversity(system, x: torch.Tensor) -> float:
    """Mean pairwise cosine distance of the critic's embeddings of each generator's probe batch."""
    critic = getattr(system, "critic", None)
    if critic is None:
        return 0.0
    stage, alpha = system.growth()
    r = system.stage_resolutions[stage]
    values = []
    for imgs in x:  # [P, 3, R, R]
        small = F.interpolate(imgs, size=(r, r), mode="area") if imgs.shape[-1] != r else imgs
        _, emb = critic((small * 2 - 1).to(system.device), stage, alpha)  # [P, E]
        e = F.normalize(emb.float(), dim=1)
        cos = e @ e.T  # [P, P]
        p = cos.shape[0]
        values.append(float((1 - cos).sum() / (p * (p - 1))) if p > 1 else 0.0)
    return sum(values) / len(values)


def descriptor(m: Mapping[str, float]) -> list[float]:
    """A variant's point in the descriptor space of novelty (see the module doc)."""
    motion = m.get("motion") or 0.0
    return [(math.log10(motion + 1e-4) + 4) / 4, 3 * m["pixel_diversity"], m["feature_diversity"],
            3 * m["generator_difference"], 3 * m["colour_variety"], m["mean_r"], m["mean_g"], m["mean_b"]]


def novelty(point: Sequence[float], others: Sequence[Sequence[float]], k: int = 3) -> float:
    """Mean Euclidean distance to the k nearest of `others` (0 when one of them is the same point)."""
    if not others:
        return 0.0
    d = sorted(math.dist(point, o) for o in others)
    if d[0] < 1e-12:
        return 0.0
    near = d[:k]
    return sum(near) / len(near)
