"""Log records of a child process (the training process, the web process) sent to the show, which
logs them into its own log at its own levels."""

from __future__ import annotations

from typing import Callable

__all__ = ["SendQueue"]


class SendQueue:
    """The queue a `logging.handlers.QueueHandler` writes to: sends ("log", record) with `send`."""

    def __init__(self, send: Callable[[tuple], None]):
        self.send = send

    def put_nowait(self, record) -> None:
        record.exc_info = None  # formatted into msg by QueueHandler.prepare; tracebacks do not pickle
        self.send(("log", record))
