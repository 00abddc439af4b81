"""`unstable explore`: the click command (registered on the main group in unstable/cli.py)."""

from __future__ import annotations

import os
from pathlib import Path

import click

from ..errors import UnstableError
from ..friendly import friendly

__all__ = ["explore"]


@click.command("explore")
@click.argument("source", type=click.Path(exists=True))
@click.option("--population", type=click.IntRange(2, 256), default=8, show_default=True, help="Variants per generation.")
@click.option("--generations", type=click.IntRange(min=1), default=3, show_default=True,
              help="Generations in all (an exploration run again goes on to this many).")
@click.option("--steps", type=click.IntRange(min=1), default=200, show_default=True, help="Training steps per variant.")
@click.option("--segments", type=click.IntRange(2, 100), default=4, show_default=True,
              help="Checkpoints per variant at which the measures are taken (motion is between them).")
@click.option("--workers", type=click.IntRange(min=0), default=None,
              help="Dask LocalCluster worker processes (default 1; 0: train in this process).")
@click.option("--scheduler", default=None, metavar="tcp://HOST:PORT",
              help="Train on a running Dask cluster (workers must see --out at the same path).")
@click.option("--threads", type=click.IntRange(min=1), default=None,
              help="Torch threads per variant (default: the cores shared among the workers). Scores are "
                   "reproducible for a given thread count; fixed when the exploration starts.")
@click.option("--out", type=click.Path(file_okay=False), default=None, help="Exploration folder (default "
              "runs/explore/<piece>).")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True, help="Seed of the breeding.")
@click.option("--auto", is_flag=True, help="Headless: choose the parents by the measures, no contact sheet.")
@click.option("--stasis-floor", type=click.FloatRange(min=0), default=0.002, show_default=True,
              help="Motion of the probe images between checkpoints below which a variant is in stasis.")
@click.option("--max-guard", type=click.FloatRange(0, 1), default=0.1, show_default=True,
              help="Fraction of steps the guard may undo for a variant to stay in the band.")
@click.option("--host", default="127.0.0.1", show_default=True, help="Where the contact sheet listens.")
@click.option("--port", type=click.IntRange(0, 65535), default=9088, show_default=True,
              help="The contact sheet's TCP port (0: any free one).")
@click.option("--export", "export", nargs=2, default=None, metavar="ID PIECE.toml",
              help="With an exploration folder as SOURCE: write variant ID as a piece file and stop.")
@click.option("--overwrite", is_flag=True, help="With --export: replace an existing piece file.")
@click.option("--device", type=click.Choice(["auto", "cpu", "cuda"]), default="cpu", show_default=True)
@friendly
def explore(source, population, generations, steps, segments, workers, scheduler, threads, out, seed, auto,
            stasis_floor, max_guard, host, port, export, overwrite, device):
    """Explore variants of SOURCE (an equilibrium piece file, or an exploration folder to continue):
    bred, trained on Dask, measured; chosen on the contact sheet in the browser or, with --auto, by
    novelty within the band between stasis and explosion. Writes OUT/lineage.csv, OUT/scores.csv and
    a run folder OUT/gen-<g>/<id>/ per variant that `train`, `live` and `render` open."""
    from .explorer import Explorer, load_settings, new_settings
    if workers is not None and scheduler:
        raise UnstableError("--workers starts a local cluster, --scheduler joins one: give one of them")
    if scheduler:
        from ..render.scheduler import parse_scheduler
        parse_scheduler(scheduler)
    src = Path(source)
    if src.is_dir():
        root = src
        settings = load_settings(root)
        if settings is None:
            raise UnstableError(f"{root}: not an exploration folder (no explore.json)")
    else:
        root = Path(out) if out else Path("runs") / "explore" / src.stem
        given_threads = threads or max(1, (os.cpu_count() or 1) // max(1, workers or 1))
        fresh = new_settings(src, population=population, steps=steps, segments=segments, seed=seed,
                             threads=given_threads, device=_device(device), stasis_floor=stasis_floor,
                             max_guard=max_guard)
        started = load_settings(root)
        if started is not None and not threads:
            fresh["threads"] = started["threads"]  # the started exploration's, whatever the cores now
        settings = fresh  # Explorer.start refuses a folder that holds an exploration with other settings
    if export:
        from .export import export_variant
        if not src.is_dir():
            raise UnstableError("--export: give the exploration folder as SOURCE (unstable explore DIR --export ID FILE)")
        path = export_variant(root, export[0], Path(export[1]), settings, overwrite=overwrite)
        click.echo(f"explore: {export[0]} written as {path}")
        return
    explorer = Explorer(root, settings, workers=1 if workers is None and not scheduler else workers,
                        scheduler=scheduler, auto=auto, echo=click.echo)
    explorer.start()
    sheet = None
    if not auto:
        from .sheet import ContactSheet
        sheet = ContactSheet(explorer, host=host, port=port).start()
        click.echo(f"explore: contact sheet on {sheet.url()}")
    try:
        scores = explorer.run(generations)
        chosen = [s["id"] for s in scores if s.get("selected")]
        click.echo(f"explore: {root / 'scores.csv'}, {root / 'lineage.csv'}; selected: {', '.join(chosen) or 'none'}")
        if sheet is not None:
            click.echo("explore: the last generation is scored; the contact sheet stays up until Ctrl-C "
                       f"(export a variant with `unstable explore {root} --export ID pieces/NAME.toml`)")
            explorer.stopped.wait()
    except KeyboardInterrupt:
        explorer.stop()
        click.echo(f"explore: interrupted; `unstable explore {root}` continues it", err=True)
    finally:
        if sheet is not None:
            sheet.stop()


def _device(name: str) -> str:
    from ..system import resolve_device
    return str(resolve_device(name))
