"""unstable: generative models that diverge from data, trained and played live."""

from . import allocator

# Before any model runs: every process that imports the package (the show, its training and web
# processes, render and Dask workers) reuses freed memory instead of faulting in fresh pages.
allocator.tune()
