"""`python -m unstable ...`: the `unstable` command (what `torchrun -m unstable train PIECE` runs)."""

from .cli import main

if __name__ == "__main__":
    main()
