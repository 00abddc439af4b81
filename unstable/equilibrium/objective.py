"""What each generator of the ensemble is trained on, given the critic's view of every batch.

Each generator i is scored against its target generator j = targets[i] (its own part of the total
depends only on its own images; the target's quantities are detached): being classified as j
(`impersonate`), critic embeddings close to j's (`embedding`), more colour variety in its batch
than j has in its own (`colour_variety`). The critic is run by the system (it knows the growth
stage and, across processes, gathers the global batch); this module only turns its outputs into
losses.
"""

from __future__ import annotations

from typing import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F

from .losses import classification_loss, colour_variety, embedding_distance, relational_loss
from .piece import ObjectiveSettings

__all__ = ["generator_losses"]


def generator_losses(obj: ObjectiveSettings, names: Sequence[str], targets: Sequence[int], labels: torch.Tensor,
                     logits: torch.Tensor, embedding: torch.Tensor, images: Sequence[torch.Tensor],
                     weights: Mapping[str, float],
                     gather: Callable[[torch.Tensor], torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """(total loss, named terms) of the generators `names` from the critic's logits [N, B, N] and
    embeddings [N, B, E] of every generator's global batch of B, this process's images
    ([b, 3, R, R] each, in -1..1; `gather` makes the global batch of one, the identity on one
    process), the generators' class labels [N] and the objectives' live `weights`."""
    batch = logits.shape[1]
    variety = None
    if obj.colour_variety.on:
        size = obj.colour_variety.resolution
        small = [F.avg_pool2d(x, x.shape[-1] // size) if size and x.shape[-1] > size else x for x in images]
        small = [gather(x) for x in small]
        variety = torch.stack([colour_variety(x, obj.colour_variety.measures) for x in small])  # [N]
    terms: dict[str, torch.Tensor] = {}
    total = images[0].new_zeros(())
    for i, name in enumerate(names):
        j = targets[i]
        loss = images[0].new_zeros(())
        if obj.impersonate.on:
            target = labels[j].expand(batch)
            ce = classification_loss(logits[i], target)
            terms[f"{name}_impersonate"] = ce.detach()
            terms[f"{name}_p_target"] = logits[i].detach().softmax(dim=1)[:, j].mean()
            loss = loss + weights["impersonate"] * ce
        if obj.embedding.on:
            d = embedding_distance(embedding[i], embedding[j].detach(), obj.embedding.distances,
                                   obj.embedding.pairing)
            terms[f"{name}_embedding"] = d.detach()
            loss = loss + weights["embedding"] * d
        if variety is not None:
            v = obj.colour_variety
            rel = relational_loss(variety[i], variety[j].detach(), v.relation, sharpness=v.sharpness,
                                  margin=v.margin)
            terms[f"{name}_variety"] = variety[i].detach()
            loss = loss + weights["colour_variety"] * rel
        terms[f"{name}_loss"] = loss.detach()
        total = total + loss
    return total, terms
