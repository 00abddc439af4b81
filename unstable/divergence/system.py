"""Bounded Adversarial Divergence (Chemla-Romeu-Santos & Esling): a VAE decoder pushed off its classes.

A pre-trained decoder g (from a VAE trained on binarised MNIST) is fine-tuned to maximise

    alpha * L_div(f(g(z)), f(x)) - beta * L_reg(f(g(z)), f(x)),    z ~ N(0, T^2 I)

where f is a frozen classifier's feature map and x real digits. Two loss couples:

- "isfid": L_div = IS of the generated batch, L_reg = FID to the real digits. The paper's alpha is
  negative (-1): IS must go *down* (less confidently classified), FID stay small.
- "mmd": L_div = sum over classes k of MMD(generated, real digits of class k) (pushed up: away
  from every class cluster), L_reg = MMD(generated, all real digits) (kept down: inside the data).
  Taken literally (`classwise = "all"`) the sum is 10 x L_reg + a constant for balanced classes
  (see losses.classwise_mmd), so the objective collapses to (10 alpha - beta) L_reg;
  `classwise = "predicted"` compares, per class, only the generated samples the digit classifier
  assigns to it, which keeps the two terms in tension.

The classifier (and any torchvision extractor) is frozen; only the decoder's parameters move, so the
decoder is the one trainable module (`modules()`): the base decoder, the classifier and the extractor
are fixed measuring instruments and a fixed comparison panel, loaded once by `prepare()` or from a
checkpoint, never stepped; the sampling copy shares the base decoder instead of copying it.
alpha, beta, the temperature T and the learning rate (a multiplier of `bad.lr`, as in every system)
are live parameters read on every step. A step that goes wrong is not hidden: a non-finite
objective comes back as such and the training paths' `TrainingGuard` undoes the step (weights,
BatchNorm statistics and Adam moments all come back from its last good state).

`prepare()` trains (or loads from the cache) the base VAE and the digit classifier.

The piece's schema is divergence/piece.py; the terms of the objective, the classifier's view and
the real-digit pool are plain functions in divergence/objective.py; the bends and latent
directions come from unstable.instruments, as every system's do.
"""

from __future__ import annotations

import copy
from typing import Any, Callable, Mapping

import torch

from ..adam import load_adam, make_adam
from ..checkpoint import fingerprint
from ..instruments import Instrumented
from ..parallel import Shard
from ..schema import ParamSpec
from ..system import accumulate_modules
from ..traces import TraceCache, TracedSampling
from ..upload import to_device
from .cache import base_key, cached_model
from .classifier import DigitClassifier, train_classifier
from .data import Digits, load_digits
from .features import build_extractor, freeze
from .losses import objective
from .objective import CPU_CHUNK, bad_terms, class_logits, decode_and_embed, real_pool
# The schema lives in piece.py; `unstable.system.KINDS` finds a kind's piece class beside its System.
from .piece import DivergencePiece, live_param_specs
from .traced_decoder import sample_decoders
from .vae import Decoder, train_vae


class DivergenceSystem(TracedSampling, Instrumented):
    """The BAD artwork: a diverging decoder beside its base, for the trainer, engine and renderer."""

    def __init__(self, piece: DivergencePiece, device: torch.device):
        self.piece = piece
        self.device = torch.device(device)
        self.step_count = 0
        # Placeholder weights until prepare() (or load_state_dict) fills them.
        self.decoder = Decoder(piece.vae.latent, piece.vae.hidden).to(self.device)
        self.base_decoder = freeze(Decoder(piece.vae.latent, piece.vae.hidden).to(self.device))
        self.classifier = freeze(DigitClassifier(piece.classifier.width).to(self.device))
        self.optimizer = make_adam(self.decoder.parameters(), lr=piece.bad.lr)
        # A training step's images through the convolutions and the extractor this many at a time
        # on a CPU (objective.decode_and_embed); a GPU takes the batch whole.
        self._chunk = CPU_CHUNK if self.device.type == "cpu" else None
        # All of BAD's randomness (latents, real batches, IS shuffles) from one CPU generator whose
        # state is checkpointed: same seed, same run on any device, and exact resume.
        self.gen = torch.Generator().manual_seed(piece.seed)
        self.base_metrics: dict[str, float] = {}
        self.base_ready = False  # base decoder + classifier hold real weights
        self.extractor: torch.nn.Module | None = None
        self.digits: Digits | None = None
        self._pool: dict[str, Any] | None = None
        # This process's share of every batch when trained across processes (unstable.parallel).
        self.shard = Shard()
        # Sampling-time instruments, shared with the sampling copy, never seen by `step`.
        self._build_instruments(piece.bend, piece.directions)
        # The decoders' sampling pass as GIL-free traces, made on first use (unstable.traces).
        self._traced = TraceCache()

    # ------------------------------------------------------------------ preparation

    def prepare(self, progress: Callable[..., Any]) -> None:
        """Load the data, train or load the cached base VAE and classifier, build the extractor."""
        p = self.piece
        if self.digits is None:
            self.digits = load_digits(p.data)
        d = self.digits
        if not self.base_ready:
            vae_key = base_key("vae", data=p.data, vae=p.vae)
            vae_metrics, _, _ = cached_model(
                p.cache, "vae", vae_key, self.base_decoder,
                lambda: self._decoder_of(train_vae(p.vae, d.train_x, d.test_x, self.device, progress)), self.device)
            cls_key = base_key("classifier", data=p.data, classifier=p.classifier)
            cls_metrics, _, _ = cached_model(
                p.cache, "classifier", cls_key, self.classifier,
                lambda: train_classifier(p.classifier, d.train_x, d.train_y, d.test_x, d.test_y, self.device, progress),
                self.device)
            self.decoder.load_state_dict(self.base_decoder.state_dict())
            self.base_metrics = {**{f"vae_{k}": v for k, v in vae_metrics.items()},
                                 **{f"classifier_{k}": v for k, v in cls_metrics.items()}}
            self.base_ready = True
            self._pool = None
        if self.extractor is None:
            self.extractor = build_extractor(p.features, self.classifier, self.device)
        self._real_pool(progress)

    @staticmethod
    def _decoder_of(trained) -> tuple[torch.nn.Module, dict[str, float]]:
        vae, metrics = trained
        return vae.decoder, metrics

    def _real_pool(self, progress: Callable[..., Any] | None = None) -> dict[str, Any]:
        """Features of the real digits (fixed: the extractor is frozen), their labels and statistics."""
        if self._pool is not None:
            return self._pool
        if self.digits is None or self.extractor is None:
            raise RuntimeError("DivergenceSystem.prepare() must run before training steps")
        self._pool = real_pool(self.piece, self.digits, self.extractor, self.device, progress)
        return self._pool

    # ------------------------------------------------------------------ live parameters

    def param_specs(self) -> list[ParamSpec]:
        """The piece's own live parameters (live_param_specs), its bends' amounts and its directions' offsets."""
        return live_param_specs(self.piece) + self.instrument_specs()

    def _params(self, params: Mapping[str, float]) -> dict[str, float]:
        return {s.name: s.clamp(params.get(s.name, s.default)) for s in self.param_specs()}

    # ------------------------------------------------------------------ training

    def step(self, params: Mapping[str, float]) -> dict[str, float]:
        """One BAD step on the decoder with the live alpha, beta, temperature and learning rate.

        A non-finite objective is stepped like any other and returned as it is (the guard undoes it).
        """
        if self.optimizer is None:
            raise RuntimeError("a sampling copy does not train")
        if not self.base_ready or self.extractor is None:
            raise RuntimeError("DivergenceSystem.prepare() must run before training steps")
        p = self._params(params)
        if p["training"] < 0.5:
            return {"training": 0.0}
        pool = self._real_pool()
        lr = self.piece.bad.lr * p["learning_rate"]
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        full, latent = self.piece.bad.batch, self.piece.vae.latent
        # A live share of the batch, but at least 4 samples per class on average (class-wise MMD).
        batch = full if p["batch_fraction"] >= 1.0 else min(full, max(40, round(full * p["batch_fraction"])))
        # Drawn from the CPU generator (the same draws on every device), queued onto a GPU.
        z = to_device(torch.randn(batch, latent, generator=self.gen), self.device) * p["temperature"]  # [B, latent]
        idx = to_device(torch.randint(0, pool["features"].shape[0], (batch,), generator=self.gen), self.device)
        real, labels = pool["features"][idx], pool["labels"][idx]  # [B, D], [B]

        self.decoder.train()
        # Across processes, this rank's rows through the convolutions and the extractor; the
        # relational losses take the global batch, these rows carrying the gradient, which is
        # summed over ranks.
        codes = self.shard.take(self.decoder.codes(z))  # [b, 16, 2, 2]: the MLP on the global batch
        images, fake = decode_and_embed(self.decoder, self.extractor, codes, self._chunk)  # [b, 1, 28, 28], [b, D]
        if self.shard.active:
            fake = self.shard.gather(fake)  # [B, D]
            images = self.shard.gather(images.detach())  # [B, 1, 28, 28]
        l_div, l_reg, named = bad_terms(self.piece, self.classifier, self.gen, images, fake, real, labels, pool)
        obj = objective(l_div, l_reg, p["alpha"], p["beta"], self.piece.loss.form)
        self.optimizer.zero_grad(set_to_none=True)
        (-obj).backward()
        self.shard.sum_grads(self.decoder.parameters())
        self.optimizer.step()
        self.step_count += 1

        values = {"objective": obj.detach(), **{k: v.detach() for k, v in named.items()}}
        if self.piece.features.extractor == "custom":
            # How unsure the classifier is about this batch: the thing BAD raises.
            prob = torch.softmax(class_logits(self.piece, self.classifier, images, fake), 1)  # [B, 10]
            values["class_entropy"] = -(prob * prob.clamp_min(1e-12).log()).sum(1).mean()
        # One copy to the host for all of them (on a GPU each float() would be a wait of its own).
        scalars = dict(zip(values, torch.stack([v.to(torch.float64).reshape(()) for v in values.values()]).tolist()))
        scalars.update(alpha=p["alpha"], beta=p["beta"], temperature=p["temperature"],
                       learning_rate=p["learning_rate"], lr=lr, batch=float(batch))
        return scalars

    # ------------------------------------------------------------------ drawing

    def panels(self) -> dict[str, int]:
        """The diverged decoder, and its base beside it for comparison."""
        return {"decoder": self.piece.vae.latent, "base": self.piece.vae.latent}

    def modules(self) -> dict[str, torch.nn.Module]:
        """The decoder: the one network BAD trains (the base decoder and classifier are frozen)."""
        return {"decoder": self.decoder}

    def sampled_modules(self) -> dict[str, torch.nn.Module]:
        """The decoder (the base decoder and classifier are frozen and shared with a sampling copy)."""
        return self.modules()

    def optimizers(self) -> dict[str, torch.optim.Optimizer]:
        """The decoder's Adam."""
        return {} if self.optimizer is None else {"decoder": self.optimizer}

    def sampling_copy(self) -> "DivergenceSystem":
        """A copy that only samples: its own decoder (no gradients), no optimiser, data, extractor or
        RNG; the piece and the frozen base decoder and classifier shared (nothing trains them, and
        `prepare()` or a checkpoint loads them in place, so the copy sees those loads)."""
        twin = copy.copy(self)
        twin.decoder = copy.deepcopy(self.decoder).requires_grad_(False)
        twin.optimizer = twin.gen = twin.extractor = twin.digits = twin._pool = None
        twin.base_metrics = dict(self.base_metrics)
        twin._traced = TraceCache()  # traces hold their decoder's tensors: the twin's own
        return twin

    def accumulate(self, source: "DivergenceSystem", decay: float = 0.0) -> None:
        """Move this (sampling) copy's decoder towards `source`'s (decay 0: copy; BatchNorm statistics
        copied) and take its step count."""
        accumulate_modules(self.sampled_modules(), source.sampled_modules(), decay)
        self.step_count = source.step_count

    @torch.no_grad()
    def decode(self, which: str, z: torch.Tensor, temperature: float, bend=None, steer=None) -> torch.Tensor:
        """Bernoulli means [N, 1, 28, 28] of `which` decoder ('decoder' or 'base') at z * temperature
        (bent and steered when sampling with bends or directions on)."""
        net = self.decoder if which == "decoder" else self.base_decoder
        was_training = net.training
        net.eval()  # BatchNorm running statistics: a sample must not depend on its batch
        try:
            return net.mean(z.to(self.device) * temperature, bend, steer)
        finally:
            net.train(was_training)

    @torch.no_grad()
    def direction_samples(self, panel: str, count: int, seed: int) -> torch.Tensor:
        """The first hidden layer [count, hidden] of a panel's decoder for seeded z ~ N(0, I): what its
        latent directions analyse."""
        net = self.decoder if panel == "decoder" else self.base_decoder
        z = torch.randn((count, self.piece.vae.latent), generator=torch.Generator().manual_seed(seed))
        was_training = net.training
        net.eval()
        try:
            return net.hidden(z.to(self.device))
        finally:
            net.train(was_training)

    def _unbent_pass(self, panel: str, z: torch.Tensor, hook, params: Mapping[str, float]) -> None:
        """One unbent pass of a panel's decoder on z [M, latent] at temperature 1, `hook` seeing every
        hook point (what the channel clusters are computed from)."""
        self.decode(panel, z, 1.0, bend=hook)

    def sample(self, latents: Mapping[str, torch.Tensor], params: Mapping[str, float]) -> dict[str, torch.Tensor]:
        """{panel: z [N, latent]} -> {panel: grey images as [N, 3, 28, 28] in 0..1} at the live temperature,
        with the live bends and latent directions (unstable.divergence.traced_decoder)."""
        return sample_decoders(self, latents, params)

    # ------------------------------------------------------------------ checkpoints

    def state_dict(self) -> dict:
        """Decoder, optimiser, step, RNG, and the base models, so a run is self-contained."""
        return {
            "decoder": self.decoder.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "step": torch.tensor(self.step_count),
            "rng": self.gen.get_state(),
            "base_decoder": self.base_decoder.state_dict(),
            "classifier": self.classifier.state_dict(),
            "base_metrics": dict(self.base_metrics),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a `state_dict()`; the base models in it replace any cached ones.

        A checkpoint written by an older version may also hold `nan_restores` (a NaN-restore count;
        the TrainingGuard keeps its own): ignored."""
        if "base_decoder" in state and "classifier" in state:
            self.base_decoder.load_state_dict(state["base_decoder"])
            # The guard loads its last good state back after a bad step: the same classifier, whose
            # real-digit features (a pass over the whole pool) need not be extracted again.
            same = self.base_ready and _equal(self.classifier.state_dict(), state["classifier"])
            self.classifier.load_state_dict(state["classifier"])
            self.base_metrics = {k: float(v) for k, v in state.get("base_metrics", {}).items()}
            self.base_ready = True
            if self.piece.features.extractor == "custom" and not same:
                self._pool = None  # features of the real digits came from the old classifier
        self.decoder.load_state_dict(state["decoder"])
        if "optimizer" in state:  # a shipped starting state carries no optimiser moments
            load_adam(self.optimizer, state["optimizer"])
        self.step_count = int(state["step"])
        self.gen.set_state(state["rng"])

    @staticmethod
    def training_bytes(piece: DivergencePiece) -> None:
        """No estimate: the decoder, its base and the classifier are MNIST-sized (a few MB); the data
        and the real-digit pool are what a BAD piece holds, and they are read, not built."""
        return None

    def fingerprint(self) -> str:
        """Hash of what fixes the architecture: decoder and classifier sizes, extractor."""
        p = self.piece
        return fingerprint({"kind": "divergence", "latent": p.vae.latent, "hidden": p.vae.hidden,
                            "classifier_width": p.classifier.width, "extractor": p.features.extractor})


def _equal(a: Mapping[str, torch.Tensor], b: Mapping[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k].to(a[k].device)) for k in a)
