"""Comments and docstrings say why the code is as it is, once (issue 24, "The story told once").

Two things are refused in unstable/'s comments and docstrings (code and its strings, log lines
included, are not read):
- history: what the code did before ("as before", "used to", "no longer", "previously",
  "(was ...", an issue number). The reader has the code as it is; its past is in git;
- one machine's timings: a figure in ms, fps, steps/s, images/s or it/s, "~0.4 s on a CPU", or
  "measured here". Such a figure is true of one machine at one time; it lives in docs/figures.md,
  and the docstring keeps the reason it supports.

A frame rate named as a condition of arithmetic ("about an hour at 30 fps") is not a measurement and
passes. The allow-list below holds the few durations that are arithmetic on constants, the same on
every machine.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "unstable"

# "used to" as a habit of the past ("used to write over"), not the passive "is used to sign"
HISTORY = re.compile(r"\bas before\b|(?<!\bis )(?<!\bare )(?<!\bbe )(?<!\bbeen )(?<!\bwas )(?<!\bwere )"
                     r"\bused to\b|\bno longer\b|\bpreviously\b|\(was\s|\bissue \d+", re.IGNORECASE)
TIMING = re.compile(r"(?<![\w.])~?\d+(?:\.\d+)? ?(?:ms|fps|steps/s|images/s|it/s)\b"
                    r"|(?<![\w.])~?\d+(?:\.\d+)? ?s on (?:a|the|this)\b"
                    r"|\bmeasured (?:here|on)\b", re.IGNORECASE)

# (file under unstable/, exact figure): why it is not one machine's timing.
ALLOWED = {
    # the STFT window (N_FFT = 1024) and hop (HOP = 256) as durations at 48 kHz, and the half
    # window by which an onset's column centre can precede its click: arithmetic on constants
    ("audio/features.py", "21.3 ms"),
    ("audio/features.py", "5.3 ms"),
    ("audio/features.py", "~8 ms"),
    ("audio/features.py", "8 ms"),
    # two frame slots at 30 fps
    ("frame/timers.py", "66.7 ms"),
}


def prose(source: str) -> list[tuple[int, str]]:
    """(line, text) of every comment and every module, class and function docstring in `source`."""
    out = [(tok.start[0], tok.string) for tok in tokenize.generate_tokens(io.StringIO(source).readline)
           if tok.type == tokenize.COMMENT]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            doc = node.body[0] if node.body else None
            if (isinstance(doc, ast.Expr) and isinstance(doc.value, ast.Constant)
                    and isinstance(doc.value.value, str)):
                out += [(doc.lineno + i, line) for i, line in enumerate(doc.value.value.splitlines())]
    return sorted(out)


def problems(rel: str, source: str) -> list[str]:
    """'file:line: what' for each history marker or one-machine timing in `source`'s prose."""
    found = []
    for line, text in prose(source):
        for m in HISTORY.finditer(text):
            found.append(f"{rel}:{line}: history {m.group(0)!r}: {text.strip()}")
        for m in TIMING.finditer(text):
            figure = m.group(0)
            if (rel, figure) in ALLOWED:
                continue
            if figure.lower().endswith("fps") and text[:m.start()].rstrip().lower().endswith(" at"):
                continue  # a frame rate named as the condition of a sum, not a measured speed
            found.append(f"{rel}:{line}: timing {figure!r}: {text.strip()}")
    return found


def test_prose_tells_the_story_once():
    found = []
    for f in sorted(ROOT.rglob("*.py")):
        found += problems(f.relative_to(ROOT).as_posix(), f.read_text(encoding="utf-8"))
    assert not found, ("comments and docstrings narrate history or quote one machine's timings "
                       "(say why instead; figures go to docs/figures.md):\n" + "\n".join(found))


def test_every_allowed_figure_is_still_there():
    # An allow-list entry whose figure is gone would silently permit it anywhere in that file later.
    for rel, figure in ALLOWED:
        assert figure in (ROOT / rel).read_text(encoding="utf-8"), (rel, figure)


@pytest.mark.parametrize("source, kind", [
    ('"""Samples 4 frames in 9.1 ms."""\n', "timing"),
    ("x = 1  # a flood took a show from 30 fps to 2\n", "timing"),
    ('def f():\n    """Trains at 1.5 steps/s."""\n', "timing"),
    ("class C:\n    # clustering takes ~0.4 s on a CPU\n    pass\n", "timing"),
    ('"""Measured here, with two busy cores."""\n', "timing"),
    ("x = 1  # changed frames sample again, as before\n", "history"),
    ('"""A port used to be found late."""\n', "history"),
    ("# a second render used to write over the first\n", "history"),
    ("# a binding that no longer fits\n", "history"),
    ('def f():\n    """The rate, x2 (was x1)."""\n', "history"),
    ("# see issue 24\n", "history"),
])
def test_each_marker_is_caught(source, kind):
    found = problems("example.py", source)
    assert len(found) == 1 and f": {kind} " in found[0], found


@pytest.mark.parametrize("rel, source", [
    ("example.py", "x = 1  # about an hour of frame times at 30 fps\n"),
    ("example.py", '"""What was asked for, not taken yet; an hour at 30 fps."""\n'),
    ("example.py", 'log.warning("learning rate x%.4g (was x%.4g)", a, b)\n'),  # code, not prose
    ("example.py", "# the seed is used to draw the probes; they are used to compare runs\n"),
    ("audio/features.py", "# a window of 1024 samples (21.3 ms)\n"),
])
def test_what_passes(rel, source):
    assert problems(rel, source) == []


def test_an_allowed_figure_is_allowed_only_where_listed():
    assert len(problems("frame/lookahead.py", "# a window of 1024 samples (21.3 ms)\n")) == 1
