"""Adam as the pieces' training steps build it (equilibrium and BAD): torch's fused kernel, one pass
over all of a network's parameters per step, where torch has one for the device (CPU and CUDA
do), foreach elsewhere. The base models' pre-training (divergence/vae.py, classifier.py) keeps
torch's default, so that a base model cached before trains again to the same bits.

Why: a step of the equilibrium pieces updates 180 small tensors; the foreach kernels walk them in
several passes, the fused one in one (docs/figures.md has the times). The same update to float rounding
(tests/test_fused_adam.py).

A checkpoint written with another kernel (foreach, before this) carries that choice in its
param_groups, which `torch.optim.Optimizer.load_state_dict` would take over with the moments:
`load_adam` keeps the kernel chosen here and moves the step counts to where the fused kernel
reads them (the parameters' device)."""

from __future__ import annotations

from typing import Iterable

import torch

FUSED_DEVICES = ("cpu", "cuda")


def _params(params) -> list[torch.Tensor]:
    out = []
    for p in params:
        out.extend(p["params"] if isinstance(p, dict) else [p])
    return out


def kernel_for(params: Iterable) -> dict:
    """Adam's kernel arguments for these parameters (or param groups): fused where it can be."""
    tensors = _params(params)
    devices = {p.device.type for p in tensors}
    fused = bool(devices) and devices <= set(FUSED_DEVICES) and all(p.is_floating_point() for p in tensors)
    return {"fused": True} if fused else {"foreach": True}


def make_adam(params, **settings) -> torch.optim.Adam:
    """torch.optim.Adam over `params` (tensors or param groups) with `settings` (lr, betas, ...),
    on the fused kernel where the device has one."""
    params = list(params)
    opt = torch.optim.Adam(params, **settings, **kernel_for(params))
    opt.register_step_post_hook(_mark_written)
    return opt


def _mark_written(opt: torch.optim.Optimizer, args, kwargs) -> None:
    """Move the version counters of the parameters a fused step wrote. torch's fused Adam writes them
    in place without doing so (torch 2.13; foreach does), and a parameter's version is how anything
    that caches a function of the weights knows they changed (equilibrium/single_image.py)."""
    written = [p for group in opt.param_groups if group.get("fused") for p in group["params"]]
    if written:
        torch.autograd.graph.increment_version(written)


def load_adam(opt: torch.optim.Adam, state: dict) -> None:
    """opt.load_state_dict(state), keeping the kernel `opt` was built with."""
    kernel = {k: opt.param_groups[0].get(k) for k in ("foreach", "fused")}
    opt.load_state_dict(state)
    for group in opt.param_groups:
        group.update(kernel)
        if group.get("fused"):
            for p in group["params"]:
                st = opt.state.get(p)
                if st and "step" in st:  # the fused kernel reads a float32 count on the device
                    st["step"] = st["step"].to(device=p.device, dtype=torch.float32)
