"""The one error type the CLI turns into a single clear line and a non-zero exit.

Anything an artist can get wrong (a piece file, a show file, a render job, a checkpoint, a
command-line value) raises `UnstableError` with a message that names the file, the key and what
was expected. Everything else is a bug and keeps its traceback.
"""


class UnstableError(Exception):
    """A user-facing error: its message is the whole story, one line, no traceback."""


class ConfigError(UnstableError):
    """A piece, show or render file that cannot be used as written."""

    def __init__(self, source: str, key: str, message: str):
        self.source = source
        self.key = key
        self.detail = message
        where = f"{source}: {key}" if key else source
        super().__init__(f"{where}: {message}")


class CheckpointError(UnstableError):
    """A checkpoint that is missing, unreadable, or belongs to a different piece."""
