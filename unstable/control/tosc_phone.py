"""A TouchOSC document for a phone held upright (390 x 844 points, an iPhone 12-15's screen; TouchOSC
scales it to other phones): the same controls as the tablet layout of controllers.py, in pages a
thumb can play instead of a wall of 70-point faders.

A pager with a tab per page: "show" first (a big button per scene for the first SHOW_SCENES, still,
sync, get feedback, the master fade, record and the connection to enter; a longer show's other
scenes on tabs "scenes 2", ...), then each piece's parameters as full-width horizontal faders
with their names above, at most `PER_PAGE` to a page (more make pages "eq 2", "eq 3", ...), and the
piece's actions as buttons on its last page. Every control sends and receives the same address as
on the tablet layout, so feedback moves it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
import zlib
from pathlib import Path
from typing import Sequence

from ..schema import PREFIX, SHOW, address, normalise_groups
from .surface import PALETTE as _PALETTE, SHOW_COLOUR as _SHOW_COLOUR, label as _label, plays as _plays, scene_names
from .tosc import EAST, MOMENTARY, TOGGLE, Tosc, document

WIDTH, HEIGHT = 390, 844        # points, portrait
TABBAR = 56                     # the pager's tabs, along the top
MARGIN, GAP = 14, 10
CONTROL_H = 56                  # every fader and button: above the 44-48 pt a finger needs
LABEL_H, TITLE_H = 26, 34
PER_PAGE = 7                    # label + control + gap = 92 pt each: 7 fit under a title
SCENE_H = 64
SHOW_SCENES = 6                 # scenes on the show page (three rows); more go to pages "scenes 2", ...
_BG, _PAGE_BG = (0.08, 0.08, 0.09), (0.11, 0.11, 0.12)


def _pages(groups) -> list[tuple[str, str, list]]:
    """(tab label, piece, specs) for each piece page, PER_PAGE parameters to a page."""
    out = []
    for piece, specs in groups.items():
        if piece == SHOW:
            continue
        chunks = [list(specs[i:i + PER_PAGE]) for i in range(0, len(specs), PER_PAGE)] or [[]]
        for k, chunk in enumerate(chunks):
            out.append((piece if len(chunks) == 1 else f"{piece} {k + 1}", piece, chunk))
    return out


def _scenes(t: Tosc, page: ET.Element, names: Sequence[str], first: int, y: int) -> int:
    """A big button per scene, two to a row, from `y`: a press sends `/unstable/scene <index>`
    (`first` is the index of names[0]); returns the next y."""
    half = (WIDTH - 2 * MARGIN - GAP) // 2
    for k, name in enumerate(names):
        col, row = k % 2, k // 2
        _button(t, page, f"scene/{first + k}", (MARGIN + col * (half + GAP), y + row * (SCENE_H + GAP), half, SCENE_H),
                _SHOW_COLOUR, name, f"{PREFIX}/scene", [("CONSTANT", "INTEGER", str(first + k))])
    return y + -(-len(names) // 2) * (SCENE_H + GAP) + (GAP if names else 0)


def _button(t: Tosc, page: ET.Element, name: str, frame, colour, text: str, path: str, args) -> ET.Element:
    """A momentary button that sends `path args` on the press only, with its text on it."""
    b = t.node(page, "BUTTON", name, frame, colour, buttonType=("i", MOMENTARY))
    t.value(b, "x", 0)
    t.osc(b, path, args, receive=False, condition="RISE")
    lab = t.node(page, "LABEL", f"{name}/label", frame, (0.1, 0.1, 0.1), background=("b", 0),
                 textSize=("i", 18), interactive=("b", 0))
    t.value(lab, "text", text)
    return b


def _control(t: Tosc, page: ET.Element, piece: str, spec, y: int, colour) -> int:
    """Name above, a full-width horizontal fader (or a toggle) below; returns the next y."""
    w = WIDTH - 2 * MARGIN
    lab = t.node(page, "LABEL", f"{piece}/{spec.name}/label", (MARGIN, y, w, LABEL_H), colour,
                 background=("b", 0), textSize=("i", 16), textAlignH=("i", 1))
    t.value(lab, "text", _label(spec))
    y += LABEL_H
    if spec.kind == "toggle":
        c = t.node(page, "BUTTON", f"{piece}/{spec.name}", (MARGIN, y, 120, CONTROL_H), colour,
                   buttonType=("i", TOGGLE))
    else:
        c = t.node(page, "FADER", f"{piece}/{spec.name}", (MARGIN, y, w, CONTROL_H), colour,
                   orientation=("i", EAST), bar=("b", 1), cursor=("b", 1), response=("i", 0))
    t.value(c, "x", spec.to_unit(spec.default))
    t.osc(c, address(piece, spec.name), [("VALUE", "FLOAT", "x")],
          scale=(spec.lo, spec.hi) if spec.osc_units else (0, 1))  # tempo: the fader sends BPM
    return y + CONTROL_H + GAP


def touchosc_phone_xml(groups, *, host: str = "127.0.0.1", port: int = 9000, feedback_port: int = 9001,
                       title: str = "unstable", actions=None, scenes: Sequence[str] | None = None) -> str:
    """The phone's TouchOSC document (uncompressed XML) for `groups` = {piece: [ParamSpec]}."""
    actions = actions or {}
    groups = normalise_groups(groups)
    names = scene_names(groups, scenes)
    groups = {piece: tuple(s for s in specs if _plays(piece, s)) for piece, specs in groups.items()}
    t = Tosc("phone:" + title + repr(sorted((p, [s.name for s in v]) for p, v in groups.items())) + repr(names))
    script = (f"-- subscribe to feedback from the unstable engine when the document loads\n"
              f"function init()\n  sendOSC('{PREFIX}/subscribe', {int(feedback_port)})\nend\n")
    root = t.node(None, "GROUP", title, (0, 0, WIDTH, HEIGHT), _BG, script=("s", script))
    pager = t.node(root, "PAGER", "pages", (0, 0, WIDTH, HEIGHT), _BG, tabbar=("b", 1),
                   tabbarSize=("i", TABBAR), tabLabels=("b", 1))
    page_h = HEIGHT - TABBAR
    w = WIDTH - 2 * MARGIN
    half = (w - GAP) // 2

    show = t.node(pager, "GROUP", "show", (0, 0, WIDTH, page_h), _PAGE_BG, tabLabel=("s", "show"))
    info = t.node(show, "LABEL", "connection", (MARGIN, MARGIN, w, 2 * LABEL_H), (0.2, 0.2, 0.2), textSize=("i", 13))
    t.value(info, "text", f"send to {host}:{port}, receive on {feedback_port}")
    y = MARGIN + 2 * LABEL_H + GAP
    # The first scenes where a performer looks first; a long show's others on pages of their own.
    first, rest = names[:SHOW_SCENES], names[SHOW_SCENES:]
    y = _scenes(t, show, first, 0, y)
    for k, (label, path, args) in enumerate((("still", f"{PREFIX}/still", [("VALUE", "FLOAT", "x")]),
                                             ("sync", f"{PREFIX}/sync", []))):
        _button(t, show, label, (MARGIN + k * (half + GAP), y, half, CONTROL_H), (0.5, 0.5, 0.55), label, path, args)
    y += CONTROL_H + GAP
    _button(t, show, "subscribe", (MARGIN, y, w, CONTROL_H), (0.5, 0.5, 0.55), "get feedback",
            f"{PREFIX}/subscribe", [("CONSTANT", "INTEGER", str(int(feedback_port)))])
    y += CONTROL_H + GAP
    for spec in groups.get(SHOW, ()):
        y = _control(t, show, SHOW, spec, y, _SHOW_COLOUR)
    per = 2 * ((page_h - 2 * MARGIN) // (SCENE_H + GAP))
    for k in range(0, len(rest), per):
        label = f"scenes {k // per + 2}"
        page = t.node(pager, "GROUP", label, (0, 0, WIDTH, page_h), _PAGE_BG, tabLabel=("s", label))
        _scenes(t, page, rest[k:k + per], SHOW_SCENES + k, MARGIN)

    pieces = [p for p in groups if p != SHOW]
    pages = _pages(groups)
    last = {piece: i for i, (_, piece, _) in enumerate(pages)}
    for i, (label, piece, specs) in enumerate(pages):
        colour = _PALETTE[pieces.index(piece) % len(_PALETTE)]
        page = t.node(pager, "GROUP", label, (0, 0, WIDTH, page_h), _PAGE_BG, tabLabel=("s", label))
        head = t.node(page, "LABEL", f"{label}/title", (MARGIN, MARGIN, w, TITLE_H), colour,
                      background=("b", 0), textSize=("i", 20), textAlignH=("i", 1))
        t.value(head, "text", label)
        y = MARGIN + TITLE_H + GAP
        for spec in specs:
            y = _control(t, page, piece, spec, y, colour)
        if i == last[piece]:  # the piece's actions after its last parameters, two to a row
            for k, action in enumerate(actions.get(piece, ())):
                words = action.split("/")
                _button(t, page, f"{piece}/{action}", (MARGIN + (k % 2) * (half + GAP), y, half, CONTROL_H), colour,
                        " ".join([words[-1], *words[:-1]]), f"{PREFIX}/{piece}/{action}", [("VALUE", "FLOAT", "x")])
                y += (CONTROL_H + GAP) if k % 2 else 0
    return document(root)


def write_touchosc_phone(path, groups, **kw) -> Path:
    """Write the phone's `.tosc` (zlib-compressed XML, as TouchOSC saves it); returns the path.
    `kw` as touchosc_phone_xml takes them (host, port, feedback_port, title, actions, scenes)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(zlib.compress(touchosc_phone_xml(groups, **kw).encode("utf-8"), 9))
    return path
