"""An aiohttp server in a thread of its own, with its own event loop.

The control page (webserver.py) and the explorer's contact sheet both serve this way: the show's
(or the exploration's) threads never wait on the network, and a port that cannot be bound is one
UnstableError raised in the caller's thread.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Awaitable, Callable

from ..errors import UnstableError
from .connections import loop_error_handler
from .osclog import RateLimitedLog

__all__ = ["serve_in_thread"]


def serve_in_thread(name: str, what: str, serve: Callable[[], Awaitable[None]],
                    shutdown: Callable[[], Awaitable[None]], warn: RateLimitedLog,
                    on_loop: Callable[[asyncio.AbstractEventLoop], None]) -> threading.Thread:
    """Start thread `name`: a new event loop (given to `on_loop` first), `serve()` run to
    completion, then the loop runs until stopped (`loop.stop` from any thread through
    `call_soon_threadsafe`), then `shutdown()` and the handlers left over are cancelled. A failure of
    `serve()` is an UnstableError here: "cannot serve {what}: why"."""
    ready, failure = threading.Event(), []

    def run():
        loop = asyncio.new_event_loop()
        on_loop(loop)
        asyncio.set_event_loop(loop)
        loop.set_exception_handler(loop_error_handler(warn))
        try:
            loop.run_until_complete(serve())
        except BaseException as e:  # noqa: BLE001 - raised in the caller's thread below
            failure.append(e)
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(shutdown())
            # Connections the cleanup did not end (a client that stopped mid-request): cancel
            # their handlers so closing the loop leaves nothing pending.
            rest = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for t in rest:
                t.cancel()
            loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            loop.close()

    thread = threading.Thread(target=run, name=name, daemon=True)
    thread.start()
    ready.wait(30.0)
    if failure:
        thread.join(timeout=5.0)
        e = failure[0]
        why = e.strerror if isinstance(e, OSError) and e.strerror else e
        raise UnstableError(f"cannot serve {what}: {why}")
    return thread
