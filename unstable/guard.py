"""Keeping a system that lives on the edge of instability trainable for weeks: the training guard
and stasis detection. Works for every System through the protocol alone.

    guard = TrainingGuard(system, GuardSettings())
    scalars = guard.step(params)      # None: the step went wrong and was undone
    report = guard.check_stasis(params)

The guard wraps `System.step`, and is the only bad-step handling there is: systems return a bad
step's non-finite scalars and leave its state as it is. After each step the guard checks the
returned scalars (the loss), every parameter and every gradient of the system's trainable modules
(`System.modules()`) for non-finite values, and the total gradient
norm against `max_grad_norm` (measured after the system's own clipping, if any) and the growth of
the total weight norm against `max_weight_growth` (an explosion that clipping or scale-invariant
layers hide from the gradients still shows in the weights). A step that fails
a check, or raises, is undone: the last good state (a copy of `state_dict()` refreshed every
`good_every` good steps, into buffers allocated once) is loaded back, the learning rate is backed
off by `backoff` (never below `min_lr_scale`; it creeps back after `recover_steps` good steps), and
the event is logged and counted. After `max_failures` failed steps in a row the guard gives up:
`stopped` says why and the owner stops training that piece (the display keeps its last frames); a
live show tries again after `retry_after` seconds (`retry_due`, `retry`), since what broke it may
be a parameter value a performer has since moved.

The learning rate is backed off through the live `learning_rate` parameter when the system has one
(both systems of this project do: a multiplier of the piece's own rates, the same meaning in every
system), otherwise through the `lr` of every optimiser the system declares (`System.optimizers()`).

Stasis: `check_stasis` samples a fixed set of latents and measures the output's *variety* (the
per-pixel standard deviation across latents, averaged) and *motion* (mean change since the last
check). Variety under `stasis_threshold` for `stasis_patience` checks in a row is stasis: reported,
and answered with `stasis_response` ("none", or "perturb": noise of `perturb_scale` x each
weight tensor's spread added to the weights).

`before_step` is a list of callables run just before each step, inside the guarded region. It is
empty unless Python code installs one (the soak benchmark and tests inject faults with it); nothing
from OSC or a show file reaches it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Literal, Mapping

import torch
from torch import nn

from .config import setting
from .parallel import DistributedError

log = logging.getLogger("unstable.guard")

__all__ = ["GuardSettings", "TrainingGuard", "clone_state", "copy_state"]


@dataclass(frozen=True)
class GuardSettings:
    """`[guard]` of a show: how live training survives explosions, NaNs and stasis."""

    enabled: bool = setting(True, doc="check every training step and undo the bad ones")
    max_grad_norm: float = setting(1e4, ge=0, doc="a total gradient norm above this undoes the step (0: no limit)")
    max_weight_growth: float = setting(10.0, ge=0, doc="a step that multiplies the total weight norm by more than "
                                       "this undoes the step (0: no limit)")
    good_every: int = setting(10, ge=1, le=100000, doc="good steps between copies of the last good state")
    backoff: float = setting(0.5, gt=0, lt=1, doc="learning-rate factor applied after each undone step")
    min_lr_scale: float = setting(1 / 64, gt=0, le=1, doc="the learning rate is never backed off below this factor")
    recover_steps: int = setting(200, ge=0, doc="good steps after which the backed-off learning rate doubles "
                                 "back (up to the performer's value; 0: never)")
    max_failures: int = setting(5, ge=1, le=1000, doc="failed steps in a row after which the piece stops training")
    retry_after: float = setting(60.0, ge=0, doc="seconds after which a live piece that stopped training tries "
                                 "again from its last good state (0: never)")
    stasis_every: float = setting(10.0, ge=0, doc="seconds between stasis checks of each live piece (0: off)")
    stasis_samples: int = setting(6, ge=2, le=64, doc="fixed latents sampled per panel for a stasis check")
    stasis_threshold: float = setting(0.01, ge=0, le=1, doc="output variety (pixel std across latents, 0..1) "
                                      "below which a piece counts as in stasis")
    stasis_patience: int = setting(3, ge=1, le=1000, doc="checks in a row under the threshold before stasis is declared")
    stasis_response: Literal["none", "perturb"] = setting("none", doc="what stasis does: 'none' (report only) or "
                                                          "'perturb' (small noise on the weights)")
    perturb_scale: float = setting(0.05, gt=0, le=1, doc="perturbation noise, relative to each weight tensor's spread")


# ------------------------------------------------------------------------------------ state copies

def clone_state(obj: Any) -> Any:
    """A deep copy of a (nested) state dict: tensors cloned, containers rebuilt, the rest shared."""
    if isinstance(obj, torch.Tensor):
        return obj.detach().clone()
    if isinstance(obj, dict):
        return {k: clone_state(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(clone_state(v) for v in obj)
    return obj


def _same_structure(dst: Any, src: Any) -> bool:
    if isinstance(src, torch.Tensor):
        return (isinstance(dst, torch.Tensor) and dst.shape == src.shape and dst.dtype == src.dtype
                and dst.device == src.device)
    if isinstance(src, dict):
        return isinstance(dst, dict) and dst.keys() == src.keys() and all(_same_structure(dst[k], src[k]) for k in src)
    if isinstance(src, (list, tuple)):
        return (type(dst) is type(src) and len(dst) == len(src)
                and all(_same_structure(a, b) for a, b in zip(dst, src)))
    return True


def _copy_leaves(dst: Any, src: Any) -> Any:
    if isinstance(src, torch.Tensor):
        dst.copy_(src.detach())
        return dst
    if isinstance(src, dict):
        return {k: _copy_leaves(dst[k], v) for k, v in src.items()}
    if isinstance(src, (list, tuple)):
        return type(src)(_copy_leaves(a, b) for a, b in zip(dst, src))
    return src


def copy_state(dst: Any, src: Any) -> Any:
    """`src` copied into `dst`'s tensors when the structure matches (no new memory), else cloned."""
    if dst is not None and _same_structure(dst, src):
        with torch.no_grad():
            return _copy_leaves(dst, src)
    return clone_state(src)


def perturb_weights(modules: Iterable[torch.nn.Module], scale: float, seed: int, device: torch.device) -> None:
    """Add noise of `scale` x each floating-point parameter's spread (its std; a single value's
    magnitude; never below 1e-3) to every parameter of `modules`, drawn from a generator on `device`
    seeded with `seed`."""
    g = torch.Generator(device=device)
    g.manual_seed(seed)
    with torch.no_grad():
        for m in modules:
            for p in m.parameters():
                if not p.is_floating_point():
                    continue
                spread = p.std() if p.numel() > 1 else p.abs().reshape(())
                spread = torch.nan_to_num(spread, nan=0.0).clamp_min(1e-3)
                p.add_(torch.randn(p.shape, generator=g, device=p.device, dtype=p.dtype) * (scale * spread))


# ------------------------------------------------------------------------------------ the guard

class TrainingGuard:
    """Wraps one system's training steps: undo bad steps, back the learning rate off, watch for stasis."""

    def __init__(self, system: Any, settings: GuardSettings | None = None, name: str = ""):
        self.system = system
        self.settings = settings or GuardSettings()
        self.name = name or getattr(getattr(system, "piece", None), "name", "piece")
        self.before_step: list[Callable[[Any], None]] = []  # fault injection (tests, soak); empty by default
        self.lr_scale = 1.0
        self.recoveries = 0          # undone steps (each one restored the last good state)
        self.exceptions = 0          # of which the step raised
        self.failures = 0            # failed steps in a row
        self.good_steps = 0
        self.stopped: str | None = None
        self._stopped_at: float | None = None
        self.retries = 0
        self.last_reason: str | None = None
        self.events: deque = deque(maxlen=64)  # recent {step, reason, lr_scale}
        self._good: Any = None
        self._good_step = 0
        self._good_norm: float | None = None
        self._last_norm: float | None = None  # total weight norm after the last good step
        self._norm_now: float | None = None
        self._since_backoff = 0
        self._opt_scale = 1.0        # applied to the optimisers' lr (systems without `learning_rate`)
        specs = {s.name: s for s in system.param_specs()}
        self._lr_spec = specs.get("learning_rate")
        # Stasis: fixed probe latents, made once (a check allocates only the samples).
        self._probe: dict[str, torch.Tensor] | None = None
        self._previous: dict[str, torch.Tensor] = {}
        self.variety: float | None = None
        self.motion: float | None = None
        self.low_checks = 0
        self.in_stasis = False
        self.stasis_events = 0
        self.perturbations = 0

    # -- good state ---------------------------------------------------------------------------------

    def remember(self) -> None:
        """Take the system's current state as the last good one (copied into buffers reused each time)."""
        self._good = copy_state(self._good, self.system.state_dict())
        self._good_step = int(self.system.step_count)
        self._good_norm = self._last_norm

    def restore(self) -> None:
        """Load the last good state back into the system (and drop the failed step's gradients)."""
        # A copy goes in: optimisers keep the tensors they are given, and the kept one must stay good.
        self.system.load_state_dict(clone_state(self._good))
        # Gradients are not state, but a NaN left in one that the next step does not recompute (a
        # network whose update is switched off) would fail every later check.
        for m in self.system.modules().values():
            m.zero_grad(set_to_none=True)
        self._last_norm = self._good_norm

    # -- stepping -----------------------------------------------------------------------------------

    def scaled(self, params: Mapping[str, float]) -> dict[str, float]:
        """The step's parameters with the backed-off learning rate folded in."""
        out = dict(params)
        if self._lr_spec is not None and self.lr_scale != 1.0:
            out["learning_rate"] = float(params.get("learning_rate", self._lr_spec.default)) * self.lr_scale
        return out

    def step(self, params: Mapping[str, float]) -> dict[str, float] | None:
        """One guarded `System.step`: its scalars, or None when the step failed and was undone."""
        if not self.settings.enabled:
            for hook in self.before_step:
                hook(self.system)
            return self.system.step(params)
        if self.stopped is not None:
            return None
        if self._good is None:
            self.remember()
        try:
            for hook in self.before_step:
                hook(self.system)
            scalars = self.system.step(self.scaled(params))
        except DistributedError:
            raise  # training across processes cannot go on (a rank died...): nothing to undo here
        except Exception as e:
            self.exceptions += 1
            log.warning("%s: training step raised", self.name, exc_info=True)
            self._trip(f"step raised {type(e).__name__}: {str(e)[:200]}")
            return None
        reason = self.check(scalars)
        if reason is not None:
            self._trip(reason)
            return None
        self.failures = 0
        self.good_steps += 1
        self._last_norm = self._norm_now
        if self.good_steps % self.settings.good_every == 0:
            self.remember()
        self._creep_back()
        return scalars

    def check(self, scalars: Mapping[str, float] | None) -> str | None:
        """Why the system's current state is bad (a non-finite scalar, weight or gradient, or a
        gradient norm past the limit), or None when it is fine."""
        for k, v in (scalars or {}).items():
            if isinstance(v, (int, float)) and not math.isfinite(v):
                return f"non-finite {k} ({v})"
        params = [p for m in self.system.modules().values() for p in m.parameters()]
        if not params:
            return None
        with torch.no_grad():
            weights = torch.stack(torch._foreach_norm([p.detach() for p in params]))
            grads = [p.grad for p in params if isinstance(p, nn.Parameter) and p.grad is not None]
            gnorm = (torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)).float())
                     if grads else torch.zeros((), device=weights.device))
            total = torch.linalg.vector_norm(weights.float())
            w, g = torch.stack([total, gnorm.float().to(weights.device)]).tolist()
        if not math.isfinite(w):
            return "non-finite parameter"
        if not math.isfinite(g):
            return "non-finite gradient"
        if self.settings.max_grad_norm > 0 and g > self.settings.max_grad_norm:
            return f"gradient norm {g:.3g} > {self.settings.max_grad_norm:g}"
        growth = self.settings.max_weight_growth
        if growth > 0 and self._last_norm and w > growth * self._last_norm:
            return f"weight norm grew x{w / self._last_norm:.3g} in one step (> x{growth:g})"
        self._norm_now = w
        return None

    def _trip(self, reason: str) -> None:
        s = self.settings
        self.failures += 1
        self.last_reason = reason
        step = int(self.system.step_count)
        try:
            self.restore()
        except Exception as e:  # the last good state does not load: nothing more to try
            self.stopped = f"{reason}; restoring the last good state failed: {type(e).__name__}: {e}"
            log.error("%s: %s: training stops", self.name, self.stopped)
            return
        self.recoveries += 1
        old = self.lr_scale
        self.lr_scale = max(s.min_lr_scale, self.lr_scale * s.backoff)
        self._apply_opt_scale()
        self._since_backoff = 0
        self.events.append({"step": step, "reason": reason, "lr_scale": self.lr_scale})
        log.warning("%s: step %d undone (%s): back to step %d, learning rate x%.4g (was x%.4g)",
                    self.name, step, reason, self._good_step, self.lr_scale, old)
        if self.failures >= s.max_failures:
            self.stopped = f"{self.failures} failed steps in a row, the last: {reason}"
            self._stopped_at = time.monotonic()
            log.error("%s: %s: training stops, the display keeps the last good frames", self.name, self.stopped)

    def retry_due(self) -> bool:
        """True once a stopped guard's `retry_after` has passed (a live show tries again)."""
        return (self.stopped is not None and self.settings.retry_after > 0 and self._stopped_at is not None
                and time.monotonic() - self._stopped_at >= self.settings.retry_after)

    def retry(self) -> None:
        """Train again from the last good state, at the backed-off learning rate."""
        log.warning("%s: training again after %s", self.name, self.stopped)
        self.stopped = None
        self._stopped_at = None
        self.failures = 0
        self.retries += 1

    def _creep_back(self) -> None:
        if self.lr_scale >= 1.0 or self.settings.recover_steps <= 0:
            return
        self._since_backoff += 1
        if self._since_backoff >= self.settings.recover_steps:
            self._since_backoff = 0
            self.lr_scale = min(1.0, self.lr_scale * 2.0)
            self._apply_opt_scale()
            log.info("%s: learning rate back to x%.4g", self.name, self.lr_scale)

    def _apply_opt_scale(self) -> None:
        if self._lr_spec is not None or self.lr_scale == self._opt_scale:
            return
        ratio = self.lr_scale / self._opt_scale
        for opt in self.system.optimizers().values():
            for group in opt.param_groups:
                group["lr"] = group["lr"] * ratio
        self._opt_scale = self.lr_scale

    # -- stasis -------------------------------------------------------------------------------------

    def check_stasis(self, params: Mapping[str, float]) -> dict[str, Any]:
        """Sample the probe latents; report variety, motion and stasis, and respond if configured."""
        s = self.settings
        if self._probe is None:
            g = torch.Generator().manual_seed(20240917)
            self._probe = {name: torch.randn(s.stasis_samples, dim, generator=g).to(self.system.device)
                           for name, dim in self.system.panels().items()}  # {panel: [K, D]}
        with torch.no_grad():
            out = self.system.sample(self._probe, params)  # {panel: [K, 3, H, W]}
            varieties, motions = [], []
            for name, x in out.items():
                x = x.float()
                varieties.append(x.std(dim=0).mean())
                prev = self._previous.get(name)
                if prev is not None and prev.shape == x.shape:
                    motions.append((x - prev).abs().mean())
                self._previous[name] = x
            variety = float(torch.stack(varieties).mean()) if varieties else 0.0
            motion = float(torch.stack(motions).mean()) if motions else None
        self.variety, self.motion = variety, motion
        perturbed = False
        if math.isfinite(variety) and variety < s.stasis_threshold:
            self.low_checks += 1
        else:
            self.low_checks = 0
            self.in_stasis = False
        if self.low_checks >= s.stasis_patience:
            if not self.in_stasis:
                self.stasis_events += 1
                log.warning("%s: stasis: output variety %.4g < %g for %d checks", self.name, variety,
                            s.stasis_threshold, self.low_checks)
            self.in_stasis = True
            if s.stasis_response == "perturb":
                self.perturb()
                perturbed = True
                self.low_checks = 0  # give the perturbation `patience` checks to work
        return {"variety": variety, "motion": motion, "stasis": self.in_stasis, "perturbed": perturbed}

    def perturb(self, scale: float | None = None, seed: int | None = None) -> None:
        """Add noise of `scale` x each weight tensor's spread to every parameter of the system."""
        scale = self.settings.perturb_scale if scale is None else scale
        perturb_weights(self.system.modules().values(), scale, seed if seed is not None else 7 + self.perturbations,
                        self.system.device)
        self.perturbations += 1
        log.warning("%s: perturbed the weights (noise x%g of their spread)", self.name, scale)

    def telemetry(self) -> dict[str, Any]:
        """A small dict for the live telemetry line."""
        out = {"recoveries": self.recoveries, "lr_scale": round(self.lr_scale, 5)}
        if self.variety is not None:
            out["variety"] = round(self.variety, 5)
        if self.motion is not None:
            out["motion"] = round(self.motion, 5)
        if self.in_stasis:
            out["stasis"] = True
        if self.perturbations:
            out["perturbations"] = self.perturbations
        if self.last_reason:
            out["last"] = self.last_reason
        if self.stopped:
            out["stopped"] = self.stopped
        return out

