"""The one frame pipeline shared by `unstable live` and `unstable render` (see pipeline.py)."""
