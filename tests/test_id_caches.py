"""Caches and rate-limit keys that must not be confused by a reused address (issue 22: no cache
keyed by id() of an object it does not keep alive). CPython hands a freed object's address to the
next object of the same size, so making and dropping objects in a loop reuses one id over and over.
"""

import gc
import logging

from unstable.control.store import ParameterStore
from unstable.display.layout import Layout
from unstable.frame.compose import Composer
from unstable.schema import ParamSpec


def test_each_new_layout_gets_its_own_styled_copy_not_a_freed_ones():
    composer = Composer(None, {"a": "p"})  # styled() needs no GL
    snapshot = {"p": {"hue": 0.25, "fade": 0.5}}
    wrong = []
    for i in range(200):
        layout = Layout(panels=("a",), background=(i / 200, 0.0, 0.0))
        out = composer.styled(layout, snapshot)
        if out.background != layout.background:
            wrong.append(i)
        del layout, out  # freed: the next layout may be made at its address
    assert wrong == [], f"{len(wrong)} of 200 layouts came back as another layout's styled copy"


def test_the_styled_cache_still_answers_the_same_layout_and_looks():
    composer = Composer(None, {"a": "p", "b": "q"})
    layout = Layout(panels=("a", "b"))
    first = composer.styled(layout, {"p": {"hue": 0.25}})
    assert first.style("a").hue == 0.25 and first.style("b").hue == 0.0
    assert composer.styled(layout, {"p": {"hue": 0.25}}) is first
    other = composer.styled(layout, {"p": {"hue": 0.5}})
    assert other is not first and other.style("a").hue == 0.5
    assert composer.styled(layout, {}) is layout  # no look: the layout itself


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.lines = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def test_a_new_failing_listener_is_logged_even_where_a_removed_one_was_freed():
    store = ParameterStore({"p": [ParamSpec("speed", 0.0, 1.0, 0.5)]})
    handler = _Lines()
    logger = logging.getLogger("unstable.store")
    logger.addHandler(handler)
    # pytest's log capture keeps each record, and with it the traceback that holds the listener:
    # kept from propagating, the listeners are freed as they would be in a show
    logger.propagate = False
    # Only what this loop makes is collected each time: after a long suite a full collection of
    # everything the process holds took half a second, fifty of them most of this test's time.
    gc.freeze()
    try:
        for i in range(50):
            def failing(keys, origin, i=i):
                raise RuntimeError(f"listener {i}")
            failing.__qualname__ = f"failing_{i}"
            store.add_listener(failing)
            store.set("p", "speed", 0.3 if i % 2 else 0.6)
            store.remove_listener(failing)
            del failing
            gc.collect()
    finally:
        gc.unfreeze()
        logger.propagate = True
        logger.removeHandler(handler)
    # each listener failed once, within the rate limit's 10 s: one line each, naming it
    assert len(handler.lines) == 50, handler.lines[:3]
    for i, line in enumerate(handler.lines):
        assert f"failing_{i} " in line and "suppressed" not in line, line


def test_one_listener_failing_on_every_write_is_one_line_per_interval():
    store = ParameterStore({"p": [ParamSpec("speed", 0.0, 1.0, 0.5)]})
    handler = _Lines()
    logger = logging.getLogger("unstable.store")
    logger.addHandler(handler)
    try:
        store.add_listener(lambda keys, origin: 1 / 0)
        for i in range(20):
            store.set("p", "speed", 0.3 if i % 2 else 0.6)
    finally:
        logger.removeHandler(handler)
    assert len(handler.lines) == 1 and "parameter listener" in handler.lines[0]
