"""What one equilibrium training step runs at: its growth stage and fade-in for a step count, and its
batch for the live `batch_fraction`. Pure functions of their arguments, so resuming a run needs
nothing more than its step count and its parameters."""

from __future__ import annotations

from .piece import GrowthSettings

__all__ = ["MIN_SHARE", "batch_share", "growth_at"]


def growth_at(step: int, stages: int, growth: GrowthSettings) -> tuple[int, float]:
    """(stage, fade alpha) for the step about to run: stage 0 stable, then per stage a fade and a stable run."""
    if stages == 1 or step < growth.stable_steps:
        return 0, 1.0
    period = growth.fade_steps + growth.stable_steps
    if period == 0:  # no schedule at all: straight to the target resolution
        return stages - 1, 1.0
    done = step - growth.stable_steps
    stage = 1 + done // period
    if stage >= stages:
        return stages - 1, 1.0
    alpha = 1.0 if growth.fade_steps == 0 else min(1.0, (done % period) / growth.fade_steps)
    return stage, alpha


# The fewest images per generator a step with a smaller batch_fraction makes: the losses are
# relational over the batch (colour variety is a std over it, the embedding distances compare rows
# and batch means), and with one image a std is undefined (NaN) and a batch mean is one image.
MIN_SHARE = 2


def batch_share(full: int, fraction: float, world: int = 1) -> int:
    """The images per generator (or critic update) of a step at live `batch_fraction`: the piece's
    `full` batch at 1 (exactly), else round(full x fraction), at least MIN_SHARE (never more than
    `full`), rounded up to split evenly over `world` processes."""
    if fraction >= 1.0:
        return full
    n = min(full, max(MIN_SHARE, round(full * fraction)))
    return -(-n // world) * world if n % world else n
