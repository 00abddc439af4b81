"""Output names that never replace an earlier render unless asked (`--overwrite`).

A second `unstable render render/demo.toml` used to write over render/out/demo.mp4 without a word:
an evening's render gone. Now a name that exists becomes the first free numbered one beside it
(demo-2.mp4, demo-3.mp4, ...), and the render says so. A name that does not exist yet is kept as
it is, so an interrupted render (its `<name>.parts/` folder, no finished file yet) is found and
resumed under the name it started with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, TypeVar

__all__ = ["numbered", "unused", "choose_outputs"]

T = TypeVar("T")


def numbered(path: Path, n: int) -> Path:
    """`path` with `-n` before its suffix: demo.mp4 -> demo-2.mp4; a PNG folder demo -> demo-2."""
    return path.with_name(f"{path.stem}-{n}{path.suffix}") if path.suffix else path.with_name(f"{path.name}-{n}")


def _exists(path: Path) -> bool:
    return path.exists() or path.is_symlink()


def unused(path: Path, taken: set[Path] = frozenset()) -> Path:
    """`path` when nothing is there (and no other output of this render takes it), else the first
    free numbered name beside it."""
    path = Path(path)
    candidate, n = path, 1
    while _exists(candidate) or candidate.resolve() in taken:
        n += 1
        candidate = numbered(path, n)
    return candidate


def choose_outputs(outputs: Sequence[tuple[int, T, Path]], overwrite: bool,
                   echo: Callable[[str], None]) -> list[tuple[int, T, Path]]:
    """The (index, variation, path) outputs of a render with each path that would replace an
    existing file or folder moved to a free numbered name (said through `echo`); as given with
    `overwrite`."""
    if overwrite:
        return list(outputs)
    taken = {Path(p).resolve() for _, _, p in outputs if not _exists(Path(p))}
    chosen = []
    for i, v, p in outputs:
        p = Path(p)
        if _exists(p):
            new = unused(p, taken)
            taken.add(new.resolve())
            echo(f"render: {p} exists; writing {new} (--overwrite replaces it)")
            p = new
        chosen.append((i, v, p))
    return chosen
