"""Generations of variants: bred from parents, written as run folders, reproducible from lineage.

A child is a pure function of its parents' piece tables, the explored piece's table and the seed in
its lineage row (`child_table`); `reproduce` rebuilds any variant from lineage.csv alone. The seed
of each breeding is drawn from the exploration's seed, the generation and the index.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Mapping, Sequence

from ..config import read_toml
from ..errors import UnstableError
from .genome import breed, changes, validate
from .records import Row, read_lineage, variant_dir, variant_id, write_lineage
from .tomlout import dumps

__all__ = ["breeding_seed", "child_table", "breed_generation", "reproduce", "variant_table", "write_variant"]


def breeding_seed(explore_seed: int, generation: int, index: int) -> int:
    """The seed of one breeding: stable across Python versions and machines (not `hash()`)."""
    digest = hashlib.sha256(f"{explore_seed}:{generation}:{index}".encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def variant_table(root: Path, vid: str, base: Mapping) -> dict:
    """A variant's piece table as written in its folder (`base` for the explored piece)."""
    if vid == "base":
        return dict(base)
    path = variant_dir(root, vid) / "piece.toml"
    if not path.exists():
        raise UnstableError(f"{path}: missing (the parent {vid} of a variant in lineage.csv)")
    return validate(read_toml(path), str(path))


def child_table(parents: Sequence[Mapping], base: Mapping, row: Row, base_name: str) -> dict:
    """The piece table of the variant `row` describes, from its parents' tables."""
    name = f"{base_name} · {row.id}"
    if row.operation == "copy":  # the explored piece itself, as the reference of generation 0
        return validate({**parents[0], "name": name}, f"variant {row.id}")
    table, _ = breed(list(parents), base, row.seed, name=name)
    return table


def write_variant(root: Path, vid: str, table: Mapping, row: Row) -> Path:
    """Write the variant's piece.toml (with its lineage as a comment) into its run folder."""
    folder = variant_dir(root, vid)
    folder.mkdir(parents=True, exist_ok=True)
    header = (f"A variant bred by `unstable explore` ({row.operation}) from {' and '.join(row.parents)}, "
              f"seed {row.seed}.\n" + "\n".join(row.changes))
    text = dumps(table, header)
    path = folder / "piece.toml"
    if not path.exists() or path.read_text(encoding="utf-8") != text:
        tmp = folder / ".piece.toml.tmp"
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    return folder


def breed_generation(root: Path, settings: Mapping, generation: int, parent_ids: Sequence[str]) -> list[Row]:
    """Breed generation `generation` from `parent_ids`, write its folders, append it to lineage.csv."""
    base = settings["base"]
    lineage = [r for r in read_lineage(root) if r.generation < generation]
    parents = {p: variant_table(root, p, base) for p in parent_ids}
    rows = []
    for i in range(int(settings["population"])):
        vid = variant_id(generation, i)
        seed = breeding_seed(int(settings["seed"]), generation, i)
        if generation == 0 and i == 0:
            mine, op = [parent_ids[0]], "copy"
        elif len(parent_ids) > 1 and i % 2 == 1:  # odd children have two parents: crossover may mix them
            mine = [parent_ids[i % len(parent_ids)], parent_ids[(i + 1) % len(parent_ids)]]
            op = "breed"
        else:
            mine, op = [parent_ids[i % len(parent_ids)]], "breed"
        row = Row(vid, generation, tuple(mine), op, seed, ())
        table = child_table([parents[p] for p in mine], base, row, settings["base"]["name"])
        if op == "breed":
            _, done = breed([parents[p] for p in mine], base, seed, name=table["name"])
            op = done
        row = Row(vid, generation, tuple(mine), op, seed, tuple(changes(parents[mine[0]], table)))
        write_variant(root, vid, table, row)
        rows.append(row)
    write_lineage(root, lineage + rows)  # last: a generation in lineage.csv has all its folders
    return rows


def reproduce(root: Path, vid: str, base: Mapping) -> dict:
    """The piece table of variant `vid` rebuilt from lineage.csv and its parents' tables alone."""
    rows = {r.id: r for r in read_lineage(root)}
    if vid not in rows:
        raise UnstableError(f"{Path(root) / 'lineage.csv'}: no variant {vid!r}")
    row = rows[vid]
    parents = [variant_table(root, p, base) for p in row.parents]
    return child_table(parents, base, row, base["name"])
