"""How much memory an equilibrium piece needs to train, estimated from its settings alone.

A piece (or the piece stored in a checkpoint) can name networks no machine holds: 2048 px at 4096
channels is billions of weights and terabytes of activations. Building it first and failing later
would fill a machine's memory within seconds before anything said why. `training_bytes` reads only the
settings, so `build_system` can refuse such a piece with one line before allocating anything.

The estimate follows the networks' own layout (unstable.equilibrium.generator / critic): per
stage r of the progressive growth, two 3x3 convolutions at `channels_at(r)` in each generator and
in the critic, their style affines, the mapping network; weights in float32 with a gradient and
Adam's two moments; activations of one training batch with a few tensors kept per convolution
for the backward pass. It errs high on purpose (every stage at its output width, 8 tensors kept
per layer), so a piece it lets through fits; the shipped pieces need a few hundred MB by it.
"""

from __future__ import annotations

from .layers import channels_at, resolutions_between

__all__ = ["training_bytes"]

FLOAT = 4
KEPT_PER_CONV = 8  # activations a convolution keeps for backward (input, pre-activation, noise, style ...)


def training_bytes(piece) -> int:
    """Bytes to train `piece` (an EquilibriumPiece) at its full resolution: weights, gradients,
    Adam's moments and one batch of activations, for every generator and the critic."""
    g, c = piece.generator, piece.critic
    n_gen = piece.ensemble.generators
    stages = resolutions_between(g.start_resolution, g.resolution)

    def conv_weights(base: int, lo: int, hi: int, style_dim: int = 0) -> int:
        total = 0
        for r in stages:
            ch = channels_at(r, base, lo, hi)
            total += 2 * (9 * ch * ch + ch) + 2 * style_dim * ch + 3 * ch  # two convs, styles, to/from RGB
        return total

    mapping = g.z_dim * g.w_dim + (g.mapping_layers - 1) * g.w_dim * g.w_dim
    weights = n_gen * (mapping + conv_weights(g.channel_base, g.min_channels, g.max_channels, g.w_dim))
    weights += conv_weights(c.channel_base, c.min_channels, c.max_channels) + c.embedding_dim * 16
    # Weights, their gradients and Adam's two moments.
    weight_bytes = 4 * weights * FLOAT

    def activations(base: int, lo: int, hi: int) -> int:
        return sum(2 * KEPT_PER_CONV * channels_at(r, base, lo, hi) * r * r for r in stages)

    batch = max(g.optim.batch, c.optim.batch)
    per_image = activations(g.channel_base, g.min_channels, g.max_channels) \
        + activations(c.channel_base, c.min_channels, c.max_channels)
    # Each generator's batch goes through itself and the critic (both ways for the impersonation).
    activation_bytes = n_gen * batch * 2 * per_image * FLOAT
    return int(weight_bytes + activation_bytes)
