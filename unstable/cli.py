"""The `unstable` command: thin click commands over the modules that do the work."""

from __future__ import annotations

import functools
import sys

import click

from .errors import UnstableError

DEVICE = click.Choice(["auto", "cpu", "cuda"])


def friendly(fn):
    """Turn an UnstableError into one line on stderr and exit status 2 (no traceback)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except UnstableError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(2)
    return wrapper


@click.group()
@click.version_option(package_name="unstable")
def main():
    """unstable: neural networks that diverge from data, live and rendered."""


@main.command()
@click.argument("piece", type=click.Path(dir_okay=False))
@click.option("--steps", type=click.IntRange(min=1), default=None, help="Train to this total step count (default: the piece's [train] steps).")
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=None, help="Stop after this many minutes.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Run folder (default runs/<piece>).")
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@click.option("--seed", type=int, default=None, help="Override the piece's seed.")
@click.option("--resume", is_flag=True, help="Continue the checkpoint in the run folder.")
@friendly
def train(piece, steps, minutes, out, device, seed, resume):
    """Train PIECE (a pieces/*.toml file), writing grids, log.jsonl and checkpoints."""
    from .system import resolve_device
    from .trainer import train as run_training
    folder = run_training(piece, steps=steps, out=out, device=resolve_device(device), seed=seed,
                          resume=resume, minutes=minutes, echo=click.echo)
    click.echo(f"run folder: {folder}  (latest grid: {folder / 'grid.png'})")


DEFAULT_PIECE = "pieces/equilibrium-1-1.toml"


@main.command()
@click.option("--minutes", type=click.FloatRange(min=0, min_open=True), default=3.0, show_default=True,
              help="How long to train the default piece.")
@click.option("--out", type=click.Path(file_okay=False), default="runs/demo", show_default=True)
@click.option("--device", type=DEVICE, default="auto", show_default=True)
@friendly
def demo(minutes, out, device):
    """The main job on the built-in default: train the default piece for a few minutes."""
    from pathlib import Path

    from .system import resolve_device
    from .trainer import train as run_training
    resume = (Path(out) / "checkpoint.pt").exists()
    folder = run_training(DEFAULT_PIECE, out=out, device=resolve_device(device), resume=resume,
                          minutes=minutes, steps=10**9, echo=click.echo)
    click.echo(f"demo: grids in {folder / 'grids'}, latest {folder / 'grid.png'}")


if __name__ == "__main__":
    main()
