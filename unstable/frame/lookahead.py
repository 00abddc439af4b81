"""Sampling a few frames ahead: one batched call of a generator instead of one call per frame.

On a CPU a generator's cost per call is mostly fixed overhead (hundreds of small ops): sampling 4
frames in one batch costs little more than one frame (docs/figures.md, "Figures moved out of
docstrings"), so the frame pipeline samples each panel `size` frames at a time and
keeps the frames still to come. The walk times of those frames are predicted with the walk clock's
own arithmetic (`WalkClock.ahead`), bit for bit what the timeline will give them.

A kept image is used only when what decided it still holds: the same frame, the same walk time
(a walk_speed change, a skipped frame or a restart makes another), the same sampling parameters
(those of the piece's snapshot whose ParamSpec says a sampler reads them: not the compositor's,
the clock's or training's) and the same panel. So the picture is the one a frame-by-frame pipeline would draw, only sampled earlier; a
changed parameter shows in the next frame, as it would without look-ahead. New weights (a live mirror's sync, a few
times a second while training) show from each panel's next group, at most `size` - 1 frames later:
re-sampling on every sync would put several batches into one frame, a visible stutter, to show a
training step a fraction of a second sooner.

Each panel's groups are aligned to absolute frame numbers and staggered: panel i of n starts its
groups at frames i*size//n (mod size), so a frame carries at most about one panel's batch and the
sampling cost is spread evenly over the frames instead of landing on every size-th one.

A scheduled scene change (`FrameState.upcoming`) would otherwise land every panel the new scene
brings in on one frame (three batches in the demo, more than a frame's budget on a CPU); the
pipeline samples each such panel's first group in one of the `size` - 1 frames before the change
instead (`warm`), with the parameters of that frame: a scene preset that changes a sampling
parameter makes the change frame sample again, as it would without look-ahead.

Determinism: batched convolutions need not give bit-identical results in another batch
composition, so the batches are a pure function of the frames' states: a miss samples from its
frame to the end of its panel's group, and a piece whose sampling parameters changed since the
frame before, or are still gliding towards their targets (or whose walk speed is), samples one
frame at a time. A live show and the offline render of it make the same batches from the same
states (tests/test_one_pipeline.py). What is kept at frame k depends only on the
`primed_frames(size)` = 2 (size - 1) frames before it (a group is sampled at most size - 1 frames
before its first frame, by a scene change's warming, and covers at most size - 1 after it), and
`note` keeps every piece's key of the frame before, shown or not; so an offline render that
starts at frame k notes frame k - primed_frames - 1's parameters and samples the primed frames
first (`FramePipeline.prime`), and makes the batches one render in one go makes.

Aligned groups (a render job's timeline, whose every frame is a pure function of its number,
`state_of`): every panel's groups are the blocks [k*size, (k+1)*size) of absolute frame numbers,
sampled whole whatever frame asks first, their frames split into runs of equal sampling
parameters (a parameter curve), one sampler call per run, in frame order. A frame's batch is then
the same in a render from frame 0, in a part that starts mid-group and on a cluster worker, so the
parts of a split render equal the whole render frame for frame, with no priming.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Mapping, Sequence

import torch

from ..schema import CLOCK, SAMPLING

if TYPE_CHECKING:
    from .timeline import FrameState

__all__ = ["LookAhead"]


@dataclass(frozen=True)
class _Kept:
    """One kept image and what decided it."""

    walk: float              # the walk time it was sampled at
    scale: float | None      # its latents' scale (a job's temperature), None: the walk's own
    key: tuple               # the sampling parameters (LookAhead.key)
    image: torch.Tensor      # [3, H, W]


class LookAhead:
    """Kept images of the frames to come, per display panel.

    `size` frames per batch (1: one at a time); `order` lists every display panel of the pipeline
    (their groups are staggered in that order); `walk_ahead(piece, frames)` predicts the walk
    times of frames to come (the timeline's `walk_times_ahead`); `reads` is {piece: {parameter:
    its ParamSpec's consumer}} (a parameter not listed counts as a sampling one).
    """

    def __init__(self, size: int, order: Sequence[str], walk_ahead: Callable[[str, Sequence[int]], list[float]],
                 reads: Mapping[str, Mapping[str, str]] | None = None, *,
                 state_of: Callable[[int], "FrameState"] | None = None):
        if size < 1:
            raise ValueError(f"look-ahead size {size!r}: expected at least 1 frame")
        self.size = int(size)
        self.walk_ahead = walk_ahead
        reads = reads or {}
        # A sample depends on the sampling parameters alone; a clock parameter gliding (walk_speed)
        # changes the walk times to come, which the look-ahead predicts at a constant speed.
        self._not_key = {p: frozenset(k for k, r in m.items() if r != SAMPLING) for p, m in reads.items()}
        self._not_moving = {p: frozenset(k for k, r in m.items() if r not in (SAMPLING, CLOCK))
                            for p, m in reads.items()}
        # A timeline that knows any frame's state (a render job's): aligned groups (module doc).
        self.state_of = state_of
        n = max(1, len(order))
        self.offset = {d: 0 if state_of is not None else (i * self.size) // n  # staggered groups live
                       for i, d in enumerate(order)}
        self._kept: dict[str, dict[int, _Kept]] = {}  # display -> frame -> its kept image
        self._last_key: dict[str, tuple] = {}  # piece -> the sampling key of the frame before
        self.calls = 0    # sampler calls made (a benchmark's and a test's count)
        self.sampled = 0  # frames x panels sampled

    @staticmethod
    def primed_frames(size: int) -> int:
        """How many frames before frame k decide what is kept at k: an offline render that starts
        at k samples them first."""
        return 2 * (max(1, int(size)) - 1)

    def key(self, name: str, params: Mapping[str, float]) -> tuple:
        """What decides a sample of piece `name` besides the walk time and the weights: its sampling
        parameters."""
        ignored = self._not_key.get(name, frozenset())
        return tuple(sorted((k, float(v)) for k, v in params.items() if k not in ignored))

    def group(self, display: str, frame: int) -> range:
        """The frames from `frame` to the end of `display`'s aligned group."""
        return range(frame, frame + self.size - (frame - self.offset.get(display, 0)) % self.size)

    def gliding(self, name: str, params: Mapping[str, float], targets: Mapping[str, float]) -> bool:
        """Whether a sampling or clock parameter of piece `name` is still on its way to its target
        (smoothing): the frames to come will then sample other values or walk times. A training or
        compositor parameter gliding changes no sample."""
        still = self._not_moving.get(name, frozenset())
        return any(k not in still and k in targets and float(targets[k]) != float(v) for k, v in params.items())

    def note(self, name: str, params: Mapping[str, float]) -> None:
        """Take `params` as piece `name`'s frame before, without sampling (a frame that does not
        show the piece; a render that starts at frame k notes the frame before those it primes)."""
        self._last_key[name] = self.key(name, params)

    def _sample(self, src, frames: Sequence[int], times: Sequence[float], scales: Sequence[float] | None,
                params: Mapping[str, float], displays: Sequence[str], key: tuple, keep_from: int,
                kept: dict[str, dict[int, _Kept]]) -> dict[str, torch.Tensor]:
        """One sampler call for `displays` at `frames` (walk `times`, latent `scales` or None); the
        images of frames `keep_from` on go into `kept`. Returns {display: [T, 3, H, W]}."""
        batch = src.sample(src.latents(times, scales), params, displays)  # latents {display: [T, D]}
        self.calls += 1
        self.sampled += len(frames) * len(displays)
        for d in displays:
            imgs = batch[d]
            assert imgs.shape[0] == len(frames), f"{d}: {imgs.shape[0]} images for {len(frames)} frames"
            mine = kept.setdefault(d, {})
            for i in range(keep_from, len(frames)):
                mine[frames[i]] = _Kept(times[i], None if scales is None else scales[i], key, imgs[i])
        return batch

    def warm(self, name: str, src, display: str, frame: int, params: Mapping[str, float]) -> None:
        """Sample `display`'s group from `frame`, a frame to come, now (with `params`, the sampling
        parameters of the frame before it): a panel that a scheduled scene change brings in is
        then ready on that frame instead of adding its batch to the change's."""
        frames = tuple(self.group(display, frame))
        kept: dict[str, dict[int, _Kept]] = {}
        self._sample(src, frames, self.walk_ahead(name, frames), None, params, [display], self.key(name, params),
                     0, kept)
        self._kept.update(kept)

    def images(self, name: str, src, frame: int, walk_time: float, params: Mapping[str, float],
               targets: Mapping[str, float], wanted: Sequence[str], scale: float | None = None
               ) -> dict[str, torch.Tensor]:
        """{display: [3, H, W]} of source `name`'s `wanted` panels at `frame` (walk time
        `walk_time`, latent `scale` or None, sampling `params`, which glide towards `targets`)."""
        key = self.key(name, params)
        # Parameters still moving, or changed since the last frame (a jump, a fuzzing controller):
        # the frames to come will likely not have these values, so sample just this one.
        changed = self._last_key.get(name) != key
        self._last_key[name] = key
        single = self.state_of is None and (changed or self.gliding(name, params, targets))
        out: dict[str, torch.Tensor] = {}
        todo: dict[tuple[int, ...], list[str]] = {}  # frames to sample -> the panels that need them
        for d in wanted:
            kept = self._kept.get(d, {}).pop(frame, None)
            if kept is not None and (kept.walk, kept.scale, kept.key) == (walk_time, scale, key):
                out[d] = kept.image
            else:
                todo.setdefault((frame,) if single else tuple(self.group(d, frame)), []).append(d)
        for frames, displays in todo.items():
            if self.state_of is not None:
                self._aligned(name, src, frame, displays)
                out.update((d, self._kept[d].pop(frame).image) for d in displays)
                continue
            kept: dict[str, dict[int, _Kept]] = {}
            times = [walk_time, *self.walk_ahead(name, frames[1:])]
            scales = None if scale is None else [scale] * len(frames)
            batch = self._sample(src, frames, times, scales, params, displays, key, 1, kept)
            self._kept.update(kept)  # replaces what the displays kept before
            out.update((d, batch[d][0]) for d in displays)  # this frame's; the rest are kept
        return out

    def _aligned(self, name: str, src, frame: int, displays: Sequence[str]) -> None:
        """Sample `displays`' aligned group around `frame` from the timeline's own states of its
        frames: runs of equal sampling parameters, one call each, in frame order (runs that end
        before `frame` are not needed). Their images from `frame` on are kept."""
        first = frame - frame % self.size
        states = [self.state_of(f) for f in range(first, first + self.size)]
        params = [s.snapshot.get(name, {}) for s in states]
        keys = [self.key(name, p) for p in params]
        kept: dict[str, dict[int, _Kept]] = {}
        a = 0
        for b in range(1, self.size + 1):
            if b < self.size and keys[b] == keys[a]:
                continue
            if first + b > frame:
                run = states[a:b]
                scales = [s.temperatures[name] for s in run] if name in run[0].temperatures else None
                self._sample(src, [s.frame for s in run], [s.walk_times[name] for s in run], scales,
                             params[a], displays, keys[a], max(0, frame - first - a), kept)
            a = b
        self._kept.update(kept)
