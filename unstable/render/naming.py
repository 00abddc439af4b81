"""Output names that never replace an earlier render unless asked (`--overwrite`).

A second `unstable render render/demo.toml` must not write over render/out/demo.mp4 without a
word (an evening's render gone), so a name that exists becomes the first free numbered one beside it
(demo-2.mp4, demo-3.mp4, ...), and the render says so. A name that does not exist yet is kept as
it is, so an interrupted render (its `<name>.parts/` folder, no finished file yet) is found and
resumed under the name it started with.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Sequence, TypeVar

from ..errors import UnstableError
from ..renderjob import Variation, check_suffix, output_path

__all__ = ["numbered", "unused", "choose_outputs", "output_paths"]

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


def output_paths(spec, out: str | None = None, span: tuple[int, int] | None = None,
                 variations: Sequence[str] = ()) -> list[tuple[int, Variation, Path]]:
    """(index, variation, output path) of each output of render `spec` (a RenderSpec) with these
    options: `out` instead of its pattern, frames [A, B) (a part), only the named `variations`."""
    chosen = list(enumerate(spec.variations))
    if variations:
        names = [v.name for v in spec.variations]
        for name in variations:
            if name not in names:
                raise UnstableError(f"--variation {name!r}: the job {spec.path} has no such variation, "
                                    f"expected one of {', '.join(names[:10])}{' ...' if len(names) > 10 else ''}")
        chosen = [(i, v) for i, v in chosen if v.name in variations]
    pattern = out or spec.output
    if out is not None:
        if len(chosen) > 1 and "{variation}" not in out and "{index}" not in out:
            raise UnstableError(f"--out {out}: the job renders {len(chosen)} variations; put {{variation}} "
                                "in --out or pick one with --variation")
        try:
            check_suffix(Path(out), spec.preset, "--out")
            Path(out.format(job="j", variation="v", index=0))
        except KeyError as e:
            raise UnstableError(f"--out {out}: unknown placeholder {{{e.args[0]}}}, expected {{job}}, "
                                "{variation} or {index}") from None
        except (ValueError, IndexError) as e:
            raise UnstableError(f"--out {out}: {str(e).split(': ', 1)[-1]}") from None
    # The job's pattern marks a part of the job in the name (.fA-B); an explicit --out is taken as given.
    part = None if out is not None else span
    paths = [(i, v, output_path(pattern, spec.name, spec.preset, v, i, part, spec.length)) for i, v in chosen]
    seen = {}
    for _, v, p in paths:
        if p.resolve() in seen:
            raise UnstableError(f"{p}: variations {seen[p.resolve()]!r} and {v.name!r} would both write it")
        seen[p.resolve()] = v.name
    return paths
