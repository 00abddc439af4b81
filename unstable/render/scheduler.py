"""Joining an existing Dask scheduler (`unstable render ... --scheduler tcp://HOST:PORT`) without
hanging or a traceback: the address checked before anything connects, and the connection given
one deadline.

Dask's own client trusts its peer: a port that accepts and never speaks keeps `Client(...)` waiting
past its `timeout` (that timeout covers the TCP connect, not the handshake), and a port that speaks
something else has its first 8 bytes read as a frame length (`Unable to allocate 3.07 EiB`). So
before the client, `probe_scheduler` reads the scheduler's greeting itself: a Dask scheduler sends
its handshake as soon as it accepts, a small length-prefixed message. Then the client is made in a
thread that is given up on at the deadline, whatever it is doing.
"""

from __future__ import annotations

import os
import re
import socket
import struct
import threading
import time

from ..errors import UnstableError

__all__ = ["SCHEDULER_TIMEOUT", "parse_scheduler", "probe_scheduler", "connect_scheduler"]

# Seconds for the whole connection (TCP, the greeting, the client's own handshake), unless the
# environment sets UNSTABLE_SCHEDULER_TIMEOUT.
SCHEDULER_TIMEOUT = 20.0
# A scheduler's greeting is a few hundred bytes; a length past this is another protocol's bytes.
_MAX_GREETING = 1 << 20
_ADDRESS = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*)://(?P<rest>.*)")


def scheduler_timeout() -> float:
    """The connection deadline in seconds (UNSTABLE_SCHEDULER_TIMEOUT, default 20)."""
    raw = os.environ.get("UNSTABLE_SCHEDULER_TIMEOUT")
    if raw is None:
        return SCHEDULER_TIMEOUT
    try:
        value = float(raw)
        if not 0 < value <= 3600:
            raise ValueError
    except ValueError:
        raise UnstableError(f"UNSTABLE_SCHEDULER_TIMEOUT={raw!r}: expected seconds, more than 0 and at most "
                            "3600") from None
    return value


def parse_scheduler(address: str) -> tuple[str, str, int]:
    """(scheme, host, port) of a scheduler address `tcp://HOST:PORT` (or `tls://`; IPv6 hosts in
    brackets), or UnstableError naming what is wrong with it."""
    def bad(why: str) -> UnstableError:
        return UnstableError(f"--scheduler {address!r}: {why}, expected tcp://HOST:PORT (a Dask scheduler's "
                             "address, e.g. tcp://10.0.0.5:8786)")
    m = _ADDRESS.fullmatch(address.strip())
    if m is None:
        raise bad("not an address (no tcp://)")
    scheme, rest = m["scheme"].lower(), m["rest"]
    if scheme not in ("tcp", "tls"):
        raise bad(f"{scheme}:// is not a protocol a Dask scheduler speaks here")
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0:
            raise bad("the IPv6 host's '[' is never closed")
        host, tail = rest[1:end], rest[end + 1:]
        if not host:
            raise bad("empty host")
    else:
        host, sep, port_text = rest.rpartition(":")
        if "[" in rest or "]" in rest or ":" in host:
            raise bad("an IPv6 host goes in brackets, tcp://[::1]:8786")
        tail = (sep + port_text) if sep else ""
        if not sep:
            host = rest
    if not host or "/" in host or any(c.isspace() for c in host):
        raise bad("no valid host")
    if not tail.startswith(":") or not tail[1:].isdigit():
        raise bad("no port (tcp://HOST:PORT)")
    port = int(tail[1:])
    if not 1 <= port <= 65535:
        raise bad(f"port {port} is not in 1..65535")
    return scheme, host, port


def _recv_exactly(sock: socket.socket, n: int, deadline: float) -> bytes:
    out = bytearray()
    while len(out) < n:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        sock.settimeout(left)
        chunk = sock.recv(min(n - len(out), 1 << 16))
        if not chunk:
            raise ConnectionError("closed the connection")
        out += chunk
    return bytes(out)


def probe_scheduler(address: str, host: str, port: int, timeout: float) -> None:
    """Connect to a tcp:// scheduler and read its greeting within `timeout` seconds, or raise one
    UnstableError line saying what the port did instead."""
    deadline = time.monotonic() + timeout
    where = f"--scheduler {address}"
    try:
        sock = socket.create_connection((host, port), timeout=timeout)
    except socket.gaierror as e:
        raise UnstableError(f"{where}: cannot resolve {host!r} ({e.strerror or e})") from None
    except (TimeoutError, socket.timeout):
        raise UnstableError(f"{where}: no connection within {timeout:g} s") from None
    except OSError as e:
        raise UnstableError(f"{where}: cannot connect ({e.strerror or e})") from None
    try:
        with sock:
            head = _recv_exactly(sock, 8, deadline)
            (size,) = struct.unpack("<Q", head)
            if not 0 < size <= _MAX_GREETING:
                raise UnstableError(f"{where}: the port answered, but not as a Dask scheduler (its first bytes "
                                    f"{head!r} are not a Dask message)")
            _recv_exactly(sock, size, deadline)
    except (TimeoutError, socket.timeout):
        raise UnstableError(f"{where}: the port accepted the connection but no Dask scheduler answered within "
                            f"{timeout:g} s") from None
    except (ConnectionError, OSError) as e:
        raise UnstableError(f"{where}: the connection broke before a Dask scheduler answered "
                            f"({getattr(e, 'strerror', None) or e})") from None


def connect_scheduler(address: str, timeout: float | None = None):
    """A dask.distributed Client joined to the scheduler at `address`, or one UnstableError line
    within about `timeout` seconds (default `scheduler_timeout()`)."""
    from dask.distributed import Client
    timeout = scheduler_timeout() if timeout is None else timeout
    scheme, host, port = parse_scheduler(address)
    started = time.monotonic()
    if scheme == "tcp":  # over TLS the client speaks first: the client's own deadline has to do
        probe_scheduler(address, host, port, timeout)
    left = max(1.0, timeout - (time.monotonic() - started))
    box: dict = {}

    def make() -> None:
        try:
            box["client"] = Client(address, timeout=f"{left}s")
        except BaseException as e:  # noqa: BLE001 - reported below as one line
            box["error"] = e

    # Dask's client may still wait on a peer that has gone quiet; a thread lets the render give up.
    thread = threading.Thread(target=make, name="unstable-scheduler-connect", daemon=True)
    thread.start()
    thread.join(left + 2.0)
    if thread.is_alive():
        raise UnstableError(f"--scheduler {address}: the scheduler did not finish connecting within "
                            f"{timeout:g} s")
    if "error" in box:
        e = box["error"]
        why = str(e).splitlines()[0][:200] if str(e) else type(e).__name__
        raise UnstableError(f"--scheduler {address}: cannot join a Dask scheduler there ({why})")
    return box["client"]
