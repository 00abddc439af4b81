"""`python -m unstable ...` and the `unstable` console script: the `unstable` command (what
`torchrun -m unstable train PIECE` runs)."""

from . import allocator


def run() -> None:
    """The `unstable` command's entry point: the process first starts again with jemalloc where it is
    installed (unstable.allocator), before the commands are imported (the first process would import
    them only to be replaced), then runs them."""
    allocator.exec_with_jemalloc()
    from .cli import main

    main()


if __name__ == "__main__":
    run()
