"""(un)stable equilibrium: N style-based generators and a critic over generators, trained without data.

After Broad & Grierson, "Searching for an (un)stable equilibrium: experiments in training generative
models without data" (NeurIPS 2019 workshop). No images are involved anywhere: the only signals are
relational.

- The critic learns which generator made an image (`classifier`), or is pulled both ways by two
  diametrically opposed losses, each after its own batch (`diametric`, works 1:1 and 1:2): the
  true labels on one update, the target-swapped labels on the next, never summed in one step.
- Each generator tries to pass for its target generator (the other one for N = 2; a configurable
  map for N > 2): through the critic's classification (`impersonate`), by bringing its critic
  embeddings close to the target's (`embedding`, a mix of distance functions), and by having more
  pixel-level colour variety in its batch than the target has in its own (`colour_variety`).

One step (`EquilibriumSystem.step`):
  1. every generator renders a batch (shared latents, random per-layer noise), with gradient;
  2. the critic takes `critic.updates` updates on detached batches (the first reuses step 1's
     batch when the batch sizes agree; further updates render fresh ones);
  3. the generators' losses go through the updated critic (its weights frozen) and each
     generator takes one Adam step on its own loss (targets' quantities are detached).

Every random draw after construction (latents, training noise) comes from `self.rng`, a
torch.Generator on the device seeded from the piece, whose state is in the checkpoint; weights are
drawn from a CPU generator seeded the same way. Growth (stage, fade alpha) is a pure function of
the step count, so resuming needs nothing more.

A step that goes wrong (a non-finite loss, weights or gradients) is not hidden: its scalars come
back non-finite and the training paths' `TrainingGuard` undoes it.

The generators' losses are equilibrium/objective.py (the critic's outputs in, losses out); the
bends and latent directions come from unstable.instruments, as every system's do.

`sample` renders with the fixed per-layer noise and returns images at the piece's target
resolution whatever the growth stage (bilinearly upsampled while smaller): the display wants a
stable size, and the growth is then seen as the image sharpening.
"""

from __future__ import annotations

import collections
import copy
from typing import Any, Callable, Mapping

import torch
from torch import nn

from ..adam import load_adam, make_adam
from ..checkpoint import fingerprint as hash_config
from ..parallel import Shard
from ..schema import ParamSpec
from ..instruments import Instrumented
from ..system import accumulate_modules
from .critic import Critic
from .generator import Generator
from .footprint import training_bytes
from .losses import classification_loss
from .objective import generator_losses
from ..traces import TraceCache, TracedSampling
from .traced import sample_generators
from .piece import EquilibriumPiece, OptimSettings, architecture, live_param_specs, objective_weights
from .schedule import batch_share, growth_at


def build_networks(piece: EquilibriumPiece, device: torch.device) -> tuple[nn.ModuleList, Critic]:
    """The piece's generators (one per name) and its critic on `device`, their weights drawn from one
    CPU generator seeded from the piece (the same weights on any device)."""
    g, c = piece.generator, piece.critic
    init_rng = torch.Generator().manual_seed(piece.seed)
    generators = nn.ModuleList(
        Generator(resolution=g.resolution, start_resolution=g.start_resolution, z_dim=g.z_dim, w_dim=g.w_dim,
                  mapping_layers=g.mapping_layers, mapping_lr_mul=g.mapping_lr_mul,
                  channel_base=g.channel_base, min_channels=g.min_channels, max_channels=g.max_channels,
                  noise=g.noise, noise_init=g.noise_init, new_rgb_gain=g.new_rgb_gain, rng=init_rng)
        for _ in piece.generator_names()).to(device, memory_format=torch.channels_last)
    critic = Critic(resolution=g.resolution, start_resolution=g.start_resolution,
                    generators=len(piece.generator_names()), embedding_dim=c.embedding_dim,
                    channel_base=c.channel_base, min_channels=c.min_channels,
                    max_channels=c.max_channels, rng=init_rng)
    # channels_last (NHWC) weights make the convolutions pick NHWC kernels: faster training and
    # inference on the CPU; the activations follow from the constant input.
    critic.to(device, memory_format=torch.channels_last)
    return generators, critic


def _latents(piece: EquilibriumPiece, batch: int, rng: torch.Generator, device: torch.device) -> list[torch.Tensor]:
    """One training batch of latents [B, z_dim] per generator (the same one when the ensemble shares them)."""
    z_dim, n = piece.generator.z_dim, len(piece.generator_names())
    if piece.ensemble.shared_latents:
        z = torch.randn((batch, z_dim), generator=rng, device=device)
        return [z] * n
    return [torch.randn((batch, z_dim), generator=rng, device=device) for _ in range(n)]


def _gathered(shard: Shard, x: torch.Tensor, n: int) -> torch.Tensor:
    """[N*b, ...] of this rank's rows, generator by generator -> the global [N*B, ...] in the
    order one process has (every generator's whole batch in turn)."""
    if not shard.active:
        return x
    return torch.cat([shard.gather(part) for part in x.chunk(n)])


def train_synthesis(gen: Generator, w: torch.Tensor, stage: int, alpha: float, noise_rng) -> torch.Tensor:
    """A training pass of one generator, w [b, w_dim] -> images [b, 3, R, R], with its noise drawn from
    `noise_rng` (a torch.Generator or unstable.parallel.ShardNoise)."""
    return gen.synthesis(w, stage, alpha, noise_rng=noise_rng)


def _adam(groups, o: OptimSettings) -> torch.optim.Adam:
    return make_adam(groups, lr=o.lr, betas=(o.beta1, o.beta2), eps=o.eps, weight_decay=o.weight_decay)


# --- the system ----------------------------------------------------------------------------------

class EquilibriumSystem(TracedSampling, Instrumented):
    """The ensemble as a `unstable.system.System` (see that module for the contract)."""

    def __init__(self, piece: EquilibriumPiece, device: torch.device | str = "cpu"):
        self.piece = piece
        self.device = torch.device(device)
        self.names = piece.generator_names()
        self.targets = piece.target_indices()
        g, c = piece.generator, piece.critic
        self.generators, self.critic = build_networks(piece, self.device)
        self.stage_resolutions = self.generators[0].stage_resolutions
        # Every training draw: latents and per-layer noise. Its state is checkpointed.
        self.rng = torch.Generator(device=self.device).manual_seed(piece.seed + 1)

        scales = piece.ensemble.lr_scale
        self._g_scale = [scales.get(n, 1.0) for n in self.names]
        self.opt_g = _adam([{"params": list(gen.parameters())} for gen in self.generators], g.optim)
        self.opt_c = _adam([{"params": list(self.critic.parameters())}], c.optim)
        self.step_count = 0
        # What each critic update used: (step, update, "true" | "opposed", batch id). For watching
        # the diametric alternation; not part of the state.
        self.critic_log: collections.deque = collections.deque(maxlen=256)
        self._batches = 0
        self._labels = torch.arange(len(self.names), device=self.device)
        self._target_labels = torch.tensor(self.targets, device=self.device)
        # This process's share of every batch when trained across processes (unstable.parallel);
        # the trainer sets it. One process: the identity everywhere.
        self.shard = Shard()
        # Sampling-time instruments (network bends, latent directions): plain state outside the
        # modules, shared with the sampling copy, never seen by `step`.
        self._build_instruments(piece.bend, piece.directions)
        # The sampling pass as GIL-free traces, made on first use (unstable.traces).
        self._traced = TraceCache()
        # The training passes, which unstable.compiled swaps for compiled ones (UNSTABLE_COMPILE=1).
        self.train_synthesis, self.train_objective = train_synthesis, generator_losses

    # --- growth ---------------------------------------------------------------------------------

    def growth(self, step: int | None = None) -> tuple[int, float]:
        """(stage, alpha) at `step` (default: the next step to run)."""
        return growth_at(self.step_count if step is None else step, len(self.stage_resolutions), self.piece.growth)

    # --- rendering ------------------------------------------------------------------------------

    def _render_training(self, batch: int, stage: int, alpha: float, track_w: bool) -> list[torch.Tensor]:
        """One batch per generator with random noise: [B, 3, R, R] each, in -1..1."""
        images = []
        # Across processes: the global batch's latents and noise are drawn, this rank's rows kept.
        for gen, z in zip(self.generators, _latents(self.piece, batch, self.rng, self.device)):
            w = gen.mapping(self.shard.take(z))  # [b, w_dim]
            if track_w:
                with torch.no_grad():
                    gen.w_avg.lerp_(self.shard.gather(w.detach()).mean(dim=0), 0.005)
            images.append(self.train_synthesis(gen, w, stage, alpha, self.shard.noise(self.rng)))
        self._batches += 1
        return images

    # --- training -------------------------------------------------------------------------------

    def _set_lr(self, multiplier: float) -> None:
        base_g, base_c = self.piece.generator.optim.lr, self.piece.critic.optim.lr
        for group, scale in zip(self.opt_g.param_groups, self._g_scale):
            group["lr"] = base_g * scale * multiplier
        self.opt_c.param_groups[0]["lr"] = base_c * multiplier

    def _critic_update(self, images: list[torch.Tensor], update: int, stage: int, alpha: float) -> tuple:
        batch = torch.cat(images)  # [N*b, 3, R, R] (b = B on one process)
        n = len(images)
        labels = self._labels.repeat_interleave(images[0].shape[0] * self.shard.world)  # [N*B]
        opposed = self.piece.critic.mode == "diametric" and update % 2 == 1
        logits, _ = self.critic(batch, stage, alpha)
        logits = _gathered(self.shard, logits, n)  # [N*B, N]
        loss = classification_loss(logits, self._target_labels[labels] if opposed else labels)
        self.opt_c.zero_grad(set_to_none=True)
        loss.backward()
        self.shard.sum_grads(self.critic.parameters())
        if self.piece.critic.optim.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.critic.parameters(), self.piece.critic.optim.grad_clip)
        self.opt_c.step()
        self.critic_log.append((self.step_count, update, "opposed" if opposed else "true", self._batches))
        accuracy = (logits.detach().argmax(dim=1) == labels).float().mean()
        return loss.detach(), accuracy, float(opposed)

    def generator_losses(self, images: list[torch.Tensor], stage: int, alpha: float,
                         weights: Mapping[str, float]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total generator loss (each generator's part depends only on its own images) and its terms
        (unstable.equilibrium.objective), the critic run on this step's images [b, 3, R, R] each."""
        n, batch = len(images), images[0].shape[0] * self.shard.world
        logits, embedding = self.critic(torch.cat(images), stage, alpha)
        # Across processes: the losses are relational (over the batch), so they take the global
        # batch, this rank's rows carrying the gradient (unstable.parallel).
        logits, embedding = _gathered(self.shard, logits, n), _gathered(self.shard, embedding, n)
        return self.train_objective(self.piece.objectives, self.names, self.targets, self._labels,
                                    logits.view(n, batch, -1), embedding.view(n, batch, -1), images, weights,
                                    self.shard.gather)

    def objective_weights(self, params: Mapping[str, float]) -> dict[str, float]:
        return objective_weights(self.piece, params)

    def step(self, params: Mapping[str, float]) -> dict[str, float]:
        """One optimisation step of the critic and every generator; returns float scalars.

        With the live parameter `training` at 0 nothing is trained and the step count stays put.
        An exploded loss is stepped like any other and shows as non-finite scalars (the guard undoes it).
        """
        if self.opt_g is None:
            raise RuntimeError("a sampling copy does not train")
        stage, alpha = self.growth()
        scalars: dict[str, torch.Tensor | float] = {"resolution": float(self.stage_resolutions[stage]),
                                                    "alpha": float(alpha)}
        if params.get("training", 1.0) < 0.5:
            return {**scalars, "training": 0.0}
        self._set_lr(float(params.get("learning_rate", 1.0)))
        g_opt, c_opt = self.piece.generator.optim, self.piece.critic.optim
        # The live batch_fraction: a smaller batch is noisier (the keeper's second lever).
        fraction = float(params.get("batch_fraction", 1.0))
        g_batch = batch_share(g_opt.batch, fraction, self.shard.world)
        c_batch = batch_share(c_opt.batch, fraction, self.shard.world)
        images = self._render_training(g_batch, stage, alpha, track_w=True)

        critic_on = params.get("critic_training", 1.0) >= 0.5
        for u in range(self.piece.critic.updates if critic_on else 0):
            if u == 0 and c_batch == g_batch:
                batch = [x.detach() for x in images]
            else:
                with torch.no_grad():
                    batch = self._render_training(c_batch, stage, alpha, track_w=False)
            loss, accuracy, phase = self._critic_update(batch, self.step_count * self.piece.critic.updates + u,
                                                        stage, alpha)
            scalars.update(critic_loss=loss, critic_accuracy=accuracy, critic_phase=phase)

        self.critic.requires_grad_(False)
        try:
            total, terms = self.generator_losses(images, stage, alpha, self.objective_weights(params))
        finally:
            self.critic.requires_grad_(True)
        self.opt_g.zero_grad(set_to_none=True)
        total.backward()
        self.shard.sum_grads(p for gen in self.generators for p in gen.parameters())
        if g_opt.grad_clip > 0:
            for gen in self.generators:
                nn.utils.clip_grad_norm_(gen.parameters(), g_opt.grad_clip)
        self.opt_g.step()
        scalars.update(terms)
        if fraction < 1.0:  # what the share came to (at 1 the scalars stay as they always were)
            scalars["batch"] = float(g_batch)
        self.step_count += 1
        return _to_floats(scalars)

    # --- the System protocol ----------------------------------------------------------------------

    def prepare(self, progress: Callable[..., Any]) -> None:
        """Nothing to prepare: the ensemble starts from its seed."""

    def panels(self) -> dict[str, int]:
        return {name: self.piece.generator.z_dim for name in self.names}

    def sample(self, latents: Mapping[str, torch.Tensor], params: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """{panel: z [N, z_dim]} -> {panel: [N, 3, R, R] in 0..1} at the target resolution, fixed noise
        (unstable.equilibrium.traced: through each generator's trace, eagerly while bent)."""
        return sample_generators(self, latents, params)

    def direction_samples(self, panel: str, count: int, seed: int) -> torch.Tensor:
        """w [count, w_dim] of a generator for seeded z ~ N(0, I): what its latent directions analyse."""
        gen = self.generators[self.names.index(panel)]
        z = torch.randn((count, self.piece.generator.z_dim), generator=torch.Generator().manual_seed(seed))
        return gen.mapping(z.to(self.device))

    # The clusters' latents go through a generator 16 at a time: the shipped shows' clusters (and the
    # golden frames) are computed so, and another batch size can move activations in their last bits.
    cluster_chunk = 16

    def _unbent_pass(self, panel: str, z: torch.Tensor, hook, params: Mapping[str, float]) -> None:
        """One unbent pass of a generator on z [M, z_dim] at the current growth stage and the live
        noise gain, `hook` seeing every hook point (what the channel clusters are computed from)."""
        stage, alpha = self.growth()
        gen = self.generators[self.names.index(panel)]
        gen(z, stage, alpha, noise_gain=float(params.get("noise", 1.0)), bend=hook)

    def param_specs(self) -> list[ParamSpec]:
        return live_param_specs(self.piece)

    def state_dict(self) -> dict:
        stage, alpha = self.growth()
        return {
            "generators": [gen.state_dict() for gen in self.generators],
            "critic": self.critic.state_dict(),
            "opt_g": self.opt_g.state_dict(),
            "opt_c": self.opt_c.state_dict(),
            "step": self.step_count,
            "rng": self.rng.get_state(),
            # Derived from the step; kept for whoever reads the checkpoint.
            "growth": {"stage": stage, "alpha": alpha, "resolution": self.stage_resolutions[stage]},
        }

    def load_state_dict(self, state: dict) -> None:
        for gen, sd in zip(self.generators, state["generators"], strict=True):
            gen.load_state_dict(sd)
        self.critic.load_state_dict(state["critic"])
        if "opt_g" in state:  # a shipped starting state carries no optimiser moments: Adam starts fresh
            load_adam(self.opt_g, state["opt_g"])
            load_adam(self.opt_c, state["opt_c"])
        self.step_count = int(state["step"])
        self.rng.set_state(state["rng"].cpu())

    # What `build_system` checks against the memory available before building (footprint.py).
    training_bytes = staticmethod(training_bytes)

    def modules(self) -> dict[str, nn.Module]:
        """Every generator (g0, g1, ...) and the critic: all of them train."""
        return {**dict(zip(self.names, self.generators)), "critic": self.critic}

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """One Adam over every generator (a param group each) and one over the critic."""
        return {} if self.opt_g is None else {"generators": self.opt_g, "critic": self.opt_c}

    def sampling_copy(self) -> "EquilibriumSystem":
        """A copy that only samples: its own generators (no gradients), no critic, no optimisers, no
        training RNG; the piece and the rest shared."""
        twin = copy.copy(self)
        twin.generators = copy.deepcopy(self.generators).requires_grad_(False)
        twin.critic = twin.opt_g = twin.opt_c = twin.rng = None
        twin.critic_log = collections.deque(maxlen=1)
        twin._traced = TraceCache()  # traces hold their generators' tensors: the twin's own
        return twin

    def sampled_modules(self) -> dict[str, nn.Module]:
        """The generators (what a sampling copy has; the critic never samples)."""
        return dict(zip(self.names, self.generators))

    def accumulate(self, source: "EquilibriumSystem", decay: float = 0.0) -> None:
        """Move this (sampling) copy's generators towards `source`'s (decay 0: copy) and take its
        step count, which fixes the growth stage `sample` renders at."""
        accumulate_modules(self.sampled_modules(), source.sampled_modules(), decay)
        self.step_count = source.step_count

    def architecture(self) -> dict:
        """The config that fixes the shapes of the weights (what the fingerprint hashes)."""
        return architecture(self.piece)

    def fingerprint(self) -> str:
        return hash_config(self.architecture())


def _to_floats(scalars: Mapping[str, torch.Tensor | float]) -> dict[str, float]:
    """Scalars as Python floats (non-finite ones kept: the guard reads them), one device sync."""
    keys = [k for k, v in scalars.items() if isinstance(v, torch.Tensor)]
    values = torch.stack([scalars[k].float() for k in keys]).tolist() if keys else []
    out = {k: float(v) for k, v in scalars.items() if not isinstance(v, torch.Tensor)}
    out.update(zip(keys, values))
    return {k: out[k] for k in scalars}


__all__ = ["EquilibriumPiece", "EquilibriumSystem"]
