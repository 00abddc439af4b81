"""What varies between the variants of a piece, and how a child is bred from its parents.

A variant's genome is its whole piece table (`unstable.config.to_dict` of the validated piece):
what the explorer writes as the variant's piece.toml is exactly what trains. The genes are the
settings the (un)stable equilibrium paper varies by hand: the number of generators, the critic's
mode, which impersonation routes are on (classification, embedding) and the distance functions of
the embedding (L1, L2, cosine), the colour-variety weight, the batch sizes (complexity against
stochasticity: too small explodes, too large falls into stasis), learning rates, widths, the
resolution schedule and the noise.

Breeding is a pure function of the parents' tables and one integer seed (`breed`), so lineage.csv
(parents + seed) reproduces a variant exactly. A child that fails validation (every objective off,
say) is bred again from the next draw of the same seeded generator: every variant is a valid piece.
"""

from __future__ import annotations

import copy
import math
import random
from typing import Any, Callable, Mapping

from ..config import to_dict
from ..errors import ConfigError
from ..system import piece_from_dict

__all__ = ["GENES", "breed", "genome_of", "validate", "get", "put"]

Table = dict[str, Any]


def get(table: Mapping[str, Any], path: str) -> Any:
    """The value at a dotted path of a piece table."""
    node: Any = table
    for part in path.split("."):
        node = node[part]
    return node


def put(table: Table, path: str, value: Any) -> None:
    """Set the value at a dotted path of a piece table (in place)."""
    *head, last = path.split(".")
    node = table
    for part in head:
        node = node.setdefault(part, {})
    node[last] = value


def validate(table: Mapping[str, Any], source: str = "variant") -> Table:
    """The table of a valid piece (normalised through the piece dataclass), or ConfigError."""
    return to_dict(piece_from_dict(table, source))


def genome_of(piece) -> Table:
    """A validated piece's table."""
    return to_dict(piece)


def _scale(rng: random.Random, value: float, lo: float, hi: float) -> float:
    """Log-uniform move by up to x/÷ 2.5, clamped; 3 significant digits so lineage reads well."""
    v = value * math.exp(rng.uniform(-math.log(2.5), math.log(2.5)))
    return float(f"{min(hi, max(lo, v)):.3g}")


def _pow2_step(rng: random.Random, value: int, lo: int, hi: int) -> int:
    choices = [v for v in (value // 2, value * 2) if lo <= v <= hi] or [value]
    return rng.choice(choices)


def _generators(rng, t, base):
    n = get(t, "ensemble.generators")
    n2 = rng.choice([m for m in (2, 3, 4) if m != n])
    put(t, "ensemble.generators", n2)
    # Named targets and rates refer to generators the child may not have: back to the cyclic default.
    put(t, "ensemble.targets", {})
    put(t, "ensemble.lr_scale", {})


def _critic_mode(rng, t, base):
    put(t, "critic.mode", "classifier" if get(t, "critic.mode") == "diametric" else "diametric")


def _impersonation(rng, t, base):
    # Which impersonation routes: the classification, the embedding, or both.
    route = rng.choice(["classification", "embedding", "both"])
    put(t, "objectives.impersonate.on", route != "embedding")
    put(t, "objectives.embedding.on", route != "classification")


_DISTANCE_MIXES = [{"l1": 1.0}, {"l2": 1.0}, {"cosine": 1.0}, {"l1": 0.5, "cosine": 0.5},
                   {"l2": 0.5, "cosine": 0.5}, {"l1": 0.5, "l2": 0.5}]


def _distance(rng, t, base):
    now = dict(get(t, "objectives.embedding.distances"))
    put(t, "objectives.embedding.distances", dict(rng.choice([m for m in _DISTANCE_MIXES if m != now])))
    put(t, "objectives.embedding.on", True)


def _variety(rng, t, base):
    if get(t, "objectives.colour_variety.on") and rng.random() < 0.2:
        put(t, "objectives.colour_variety.on", False)
        return
    put(t, "objectives.colour_variety.on", True)
    put(t, "objectives.colour_variety.weight", _scale(rng, max(0.05, get(t, "objectives.colour_variety.weight")),
                                                      0.05, 20.0))


def _batch(which):
    def gene(rng, t, base):
        cap = max(32, 4 * get(base, f"{which}.optim.batch"))
        put(t, f"{which}.optim.batch", _pow2_step(rng, get(t, f"{which}.optim.batch"), 2, cap))
    return gene


def _lr(which):
    def gene(rng, t, base):
        put(t, f"{which}.optim.lr", _scale(rng, get(t, f"{which}.optim.lr"), 1e-5, 0.05))
    return gene


def _width(which):
    def gene(rng, t, base):
        # At most twice the base piece's widest layer: variants stay near the piece's cost.
        hi = 2 * get(base, f"{which}.max_channels")
        lo = get(t, f"{which}.min_channels")
        put(t, f"{which}.max_channels", _pow2_step(rng, get(t, f"{which}.max_channels"), max(lo, 2), hi))
    return gene


def _schedule(rng, t, base):
    res = get(t, "generator.resolution")
    starts = [r for r in (4, 8, 16, 32) if r <= res]
    if rng.random() < 0.5 and len(starts) > 1:
        put(t, "generator.start_resolution", rng.choice(starts))
    else:
        for key in ("growth.stable_steps", "growth.fade_steps"):
            put(t, key, int(round(_scale(rng, max(1, get(t, key)), 1, 10_000))))


def _noise(rng, t, base):
    if rng.random() < 0.25:
        put(t, "generator.noise", not get(t, "generator.noise"))
    put(t, "generator.noise_init", _scale(rng, max(0.01, get(t, "generator.noise_init")), 0.0, 2.0))


GENES: dict[str, Callable[[random.Random, Table, Mapping], None]] = {
    "generators": _generators, "critic_mode": _critic_mode, "impersonation": _impersonation,
    "distance": _distance, "colour_variety": _variety, "generator_batch": _batch("generator"),
    "critic_batch": _batch("critic"), "generator_lr": _lr("generator"), "critic_lr": _lr("critic"),
    "generator_width": _width("generator"), "critic_width": _width("critic"), "schedule": _schedule,
    "noise": _noise,
}

# Crossover takes each of these tables whole from one parent or the other (a table's settings
# belong together: a batch with its learning rate, a distance mix with its pairing).
_BLOCKS = ["generator.optim", "critic.optim", "critic", "ensemble", "growth", "objectives.impersonate",
           "objectives.embedding", "objectives.colour_variety", "generator"]


def _flat(t: Mapping, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in t.items():
        if isinstance(v, Mapping) and v and k not in ("targets", "lr_scale", "distances", "measures"):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def changes(before: Mapping, after: Mapping) -> list[str]:
    """`key: old -> new` for every setting that differs (what lineage.csv records)."""
    a, b = _flat(before), _flat(after)
    return [f"{k}: {_short(a.get(k))} -> {_short(b.get(k))}" for k in sorted(set(a) | set(b))
            if a.get(k) != b.get(k) and k not in ("name", "seed")]


def _short(v: Any) -> str:
    if isinstance(v, Mapping):
        return "{" + ",".join(f"{k}={x:g}" if isinstance(x, float) else f"{k}={x}" for k, x in v.items()) + "}"
    return f"{v:g}" if isinstance(v, float) else str(v)


def breed(parents: list[Mapping[str, Any]], base: Mapping[str, Any], seed: int, *, name: str,
          mutations: int = 2, crossover: float = 0.5, tries: int = 50) -> tuple[Table, str]:
    """A child table of `parents` (one: mutation; two: crossover then mutation) and what was done.

    Deterministic in (parents, base, seed, name). `base` is the explored piece: the bounds of the
    genes are relative to it. The child's own weight seed is drawn from `seed`.
    """
    rng = random.Random(seed)
    last_error = None
    for _ in range(tries):
        child = copy.deepcopy(dict(parents[0]))
        ops = []
        if len(parents) > 1 and rng.random() < crossover:
            other = parents[1]
            for block in _BLOCKS:
                if rng.random() < 0.5:
                    mine, theirs = get(child, block), get(other, block)
                    for k, v in theirs.items():  # only this table's own settings, not its sub-tables
                        if not isinstance(v, Mapping) or k in ("targets", "lr_scale", "distances", "measures"):
                            mine[k] = copy.deepcopy(v)
            ops.append("crossover")
        genes = rng.sample(sorted(GENES), k=rng.randint(1, mutations))
        for g in genes:
            GENES[g](rng, child, base)
        ops.append("mutate " + "+".join(genes))
        child["name"] = name
        child["seed"] = rng.randrange(2**31)
        try:
            return validate(child, f"variant {name}"), ", ".join(ops)
        except ConfigError as e:  # an invalid combination: the next draw of the same generator
            last_error = e
    raise ConfigError(f"variant {name}", "", f"no valid child in {tries} tries ({last_error})")
