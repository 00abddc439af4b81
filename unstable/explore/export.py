"""`unstable explore DIR --export ID pieces/NAME.toml`: a variant as a piece file of its own."""

from __future__ import annotations

import copy
from pathlib import Path

from ..errors import UnstableError
from .breeding import variant_table
from .records import read_lineage, read_scores, write_atomic
from .tomlout import dumps

__all__ = ["export_variant", "ancestry"]


def ancestry(root: Path, vid: str) -> list[str]:
    """Lines tracing `vid` back to the explored piece: `id (operation): changes`, newest first."""
    rows = {r.id: r for r in read_lineage(root)}
    out, todo, seen = [], [vid], set()
    while todo:
        v = todo.pop(0)
        if v in seen or v not in rows:
            continue
        seen.add(v)
        r = rows[v]
        out.append(f"{v} from {' + '.join(r.parents)} ({r.operation}): {'; '.join(r.changes) or 'as its parent'}")
        todo += [p for p in r.parents if p != "base"]
    return out


def export_variant(root: Path, vid: str, dest: Path, settings: dict, *, overwrite: bool = False) -> Path:
    """Write variant `vid` of the exploration in `root` as the piece file `dest`: its settings, the
    explored piece's own [train] table (a variant trained only the exploration's few steps), and its
    lineage and scores as comments. An existing `dest` is kept unless `overwrite`."""
    root, dest = Path(root), Path(dest)
    if vid not in {r.id for r in read_lineage(root)}:
        raise UnstableError(f"--export {vid}: no such variant in {root / 'lineage.csv'}")
    if dest.exists() and not overwrite:
        raise UnstableError(f"{dest}: exists; choose another name or pass --overwrite")
    if dest.suffix != ".toml":
        raise UnstableError(f"{dest}: a piece file ends in .toml")
    table = copy.deepcopy(variant_table(root, vid, settings["base"]))
    if settings.get("piece_train"):
        table["train"] = dict(settings["piece_train"])
    table["name"] = f"{settings['base']['name']} · {vid}"
    s = read_scores(root).get(vid, {})
    scores = ", ".join(f"{k} {s[k]}" for k in ("status", "motion", "pixel_diversity", "feature_diversity",
                                               "generator_difference", "colour_variety", "novelty") if s.get(k))
    header = "\n".join([f"Exported by `unstable explore {root} --export {vid}` from {settings['piece']}.",
                        f"Scores after {settings['steps']} steps: {scores or 'none yet'}.", "Lineage:",
                        *ancestry(root, vid)])
    from .genome import validate
    validate(table, str(dest))
    write_atomic(dest, dumps(table, header))
    return dest
