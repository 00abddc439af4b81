"""The CLI's way with errors an artist can make: one line, exit status 2, no traceback.

Every command (`unstable ...`, `unstable explore`) is wrapped in `friendly`; it lives apart from
cli.py so that commands defined in their own packages use it without importing the CLI.
"""

from __future__ import annotations

import functools
import sys

import click

from .disk import is_no_space
from .errors import UnstableError

__all__ = ["friendly"]


def friendly(fn):
    """A command that turns an UnstableError (or the machine's refusal, an OSError) into one line
    on stderr and exit status 2, no traceback."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UnstableError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
        except OSError as e:  # the machine said no (a read-only folder, a full disk): one line too
            where = f"{e.filename}: " if getattr(e, "filename", None) else ""
            why = "no space left on the device" if is_no_space(e) else (e.strerror or str(e))
            click.echo(f"error: {where}{why}", err=True)
            sys.exit(2)
    return wrapper
