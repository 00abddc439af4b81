"""Training across processes (torchrun / torch.distributed): this process's share of every batch.

    torchrun --nproc_per_node 2 -m unstable train pieces/equilibrium-1-1.toml

How a batch is split, and why the result does not depend on the number of processes:

- Every rank draws the *whole* global batch's randomness (latents, real batches, training noise)
  from the system's own generator, which starts from the same seed on every rank and advances the
  same way, and keeps only its rows (`Shard.take`): the global batch is the one a single process
  would draw, whatever the world size, and every rank's generator stays in step for checkpoints.
- Each rank runs the expensive part (the generator's synthesis, the critic, the decoder's
  convolutions, the feature extractor) on its rows only.
- The losses of both artworks are relational (colour variety across a batch, IS/FID/MMD over a
  batch): not means of per-sample terms, so averaging per-rank gradients would not be the
  gradient of the global loss. Instead every rank gathers the global batch of the loss's inputs
  (`Shard.gather`: the other ranks' rows as constants, its own rows carrying their gradient) and
  computes the *global* loss; its backward pass then holds the gradient through its own rows,
  and the sum over ranks (`Shard.sum_grads`, one all-reduce) is exactly the gradient of the global
  loss. Every rank then takes the same optimiser step on the same weights, so the weights stay
  identical on every rank without broadcasting them.
- What differs from one process is float summation order (the convolutions' weight gradients are
  summed per rank, then across ranks), so results agree within float rounding, amplified a little
  by the training dynamics (tests/test_distributed.py states the tolerance).

With one process (`Shard()`, the default every system starts with) every method is the identity
and the single-process code path is unchanged, bit for bit.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Iterable

import torch

from .errors import UnstableError

__all__ = ["DistributedError", "GroupLost", "Shard", "ShardNoise", "from_env", "init", "world_from_env"]


class DistributedError(UnstableError):
    """Training across processes cannot go on (the same on every rank): not a bad step for the
    training guard to undo, so it lets it through and the process stops with one line."""


class GroupLost(DistributedError):
    """A collective failed (another rank died): the process exits, and torchrun restarts the group
    (which resumes from the last checkpoint) or stops."""


def _collective(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # gloo/NCCL report a dead peer as a RuntimeError of their own
        raise GroupLost(f"training across processes: a collective failed ({type(e).__name__}: "
                        f"{str(e).strip().splitlines()[0] if str(e).strip() else ''})") from e


@dataclass
class Shard:
    """Rank `rank` of `world` processes; `Shard()` is the single process."""

    rank: int = 0
    world: int = 1

    @property
    def active(self) -> bool:
        return self.world > 1

    def span(self, n: int) -> tuple[int, int]:
        """This rank's rows [a, b) of a global batch of n (n must divide evenly)."""
        if n % self.world:
            raise DistributedError(f"a batch of {n} does not split evenly over {self.world} processes; "
                                   "use a batch that the number of processes divides")
        per = n // self.world
        return self.rank * per, (self.rank + 1) * per

    def take(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's rows of a global batch [n, ...]."""
        if not self.active:
            return x
        a, b = self.span(x.shape[0])
        return x[a:b]

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """The global batch from every rank's rows [b, ...] -> [world * b, ...] in rank order; only
        this rank's rows carry gradient (see the module doc for why that gives the exact gradient)."""
        if not self.active:
            return x
        import torch.distributed as dist
        local = x.detach().contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world)]
        _collective(dist.all_gather, parts, local)
        parts[self.rank] = x
        return torch.cat(parts)

    def sum_grads(self, params: Iterable[torch.nn.Parameter]) -> None:
        """Sum the gradients over ranks (one all-reduce of a flat buffer). Parameters without a
        gradient are skipped: every rank runs the same graph, so they are the same ones everywhere."""
        if not self.active:
            return
        import torch.distributed as dist
        grads = [p.grad for p in params if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        _collective(dist.all_reduce, flat, op=dist.ReduceOp.SUM)
        offset = 0
        for g in grads:
            g.copy_(flat[offset:offset + g.numel()].view_as(g))
            offset += g.numel()

    def noise(self, rng: torch.Generator) -> "torch.Generator | ShardNoise":
        """Training noise drawn for the global batch from `rng`, this rank's rows kept."""
        return ShardNoise(rng, self) if self.active else rng

    def any(self, flag: bool) -> bool:
        """True on every rank when `flag` is true on any (stopping together)."""
        if not self.active:
            return flag
        import torch.distributed as dist
        t = torch.tensor([1.0 if flag else 0.0])
        _collective(dist.all_reduce, t, op=dist.ReduceOp.MAX)
        return bool(t.item() > 0)

    def barrier(self) -> None:
        if self.active:
            import torch.distributed as dist
            _collective(dist.barrier)

    def close(self) -> None:
        """Leave the process group once every rank is done: gloo's connection threads are stopped
        here rather than torn down by the interpreter's exit, where one still joinable aborts the
        process ("terminate called without an active exception") after a complete run."""
        if self.active:
            import torch.distributed as dist
            self.barrier()
            if dist.is_initialized():
                dist.destroy_process_group()


class ShardNoise:
    """Stands in for a torch.Generator where per-sample noise is drawn: draws the global batch's
    noise (the same draw a single process makes) and returns this rank's rows."""

    def __init__(self, rng: torch.Generator, shard: Shard):
        self.rng, self.shard = rng, shard

    def randn(self, shape: tuple[int, ...], device, dtype) -> torch.Tensor:
        full = torch.randn((shape[0] * self.shard.world, *shape[1:]), generator=self.rng, device=device, dtype=dtype)
        return self.shard.take(full)


def world_from_env() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def from_env() -> Shard:
    """The shard torchrun describes in the environment (RANK, WORLD_SIZE), else the single process."""
    world = world_from_env()
    return Shard(int(os.environ.get("RANK", "0")), world) if world > 1 else Shard()


def init(device: torch.device) -> tuple[Shard, torch.device]:
    """Join the process group torchrun set up (gloo on the CPU, NCCL on CUDA) and pick this rank's
    device (cuda:LOCAL_RANK). Without torchrun: the single process, the device unchanged."""
    shard = from_env()
    if not shard.active:
        return shard, device
    import torch.distributed as dist
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        # torchrun's store outlives a restart of the group (--max-restarts): without a prefix per
        # attempt the new ranks would read the dead ranks' addresses and fail to connect.
        store, rank, world = next(dist.rendezvous("env://"))
        attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                store=dist.PrefixStore(f"unstable/attempt_{attempt}", store), rank=rank,
                                world_size=world)
    return shard, device
