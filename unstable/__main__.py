"""`python -m unstable ...`: the `unstable` command (what `torchrun -m unstable train PIECE` runs)."""

from .cli import run

if __name__ == "__main__":
    run()
