"""The ports a live show listens on, checked before the slow start.

A taken port found by the server itself surfaces only after the pieces have prepared (minutes for
BAD's base models), and `make run` must not simply fail when another program holds 9000. So, before
anything is built:

- a port someone asked for (`--osc-port`, `--web-port`, or a show file's `[osc]`/`[web] port` for
  `unstable live`) that is taken is one clear line naming where it came from;
- `unstable demo` runs on a machine it knows nothing about: when the demo show's own port is taken it
  takes any free one instead and says which.

The check binds the port the way the server will (UDP without SO_REUSEADDR as python-osc does, TCP
with it as the web server does) and lets go; the server binds it a moment later. Another program taking
the port in between is still caught by the server's own one-line error.
"""

from __future__ import annotations

import socket
from typing import Callable

from .errors import UnstableError

__all__ = ["is_free", "free_port", "choose_ports"]

_KIND = {"udp": socket.SOCK_DGRAM, "tcp": socket.SOCK_STREAM}


def _bind(host: str, port: int, kind: str) -> socket.socket:
    """A socket bound to (host, port) as the show's server would bind it; the caller closes it."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(family, _KIND[kind])
    try:
        if kind == "tcp":  # as the web server binds (SO_REUSEADDR): a closed connection's TIME_WAIT is no owner
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((host, port))
        if kind == "tcp":
            s.listen(1)
    except BaseException:
        s.close()
        raise
    return s


def is_free(host: str, port: int, kind: str) -> bool:
    """Whether a `kind` ("udp" or "tcp") server could listen on host:port right now."""
    try:
        _bind(host, port, kind).close()
    except OSError:
        return False
    return True


def free_port(host: str, kind: str) -> int:
    """A port on `host` that no one listens on now (the system's pick)."""
    s = _bind(host, 0, kind)
    try:
        return s.getsockname()[1]
    finally:
        s.close()


def _taken(what: str, host: str, port: int, where: str) -> UnstableError:
    # The wording of the servers' own errors (control/osc.py, control/webserver.py), plus where the port came from.
    return UnstableError(f"{what} on {host}:{port}: address already in use ({where}); stop the program that holds "
                         "it, or choose another port (0: any free one)")


def choose_ports(show, osc_port: int | None, web_port: int | None, *, web: bool, fallback: bool,
                 echo: Callable[[str], None], name: str = "live") -> tuple[int | None, int | None]:
    """The OSC and web ports a show should open: (osc_port, web_port), None where the show's own stands.

    A port given here (from the command line) or, without `fallback`, the show's own, must be free:
    else an UnstableError naming the option or the show's key. With `fallback`, a show's own port
    that is taken is swapped for a free one, and `echo` says so.
    """
    s = show.settings
    wanted = []
    if s.osc.enabled:
        wanted.append(("osc", "udp", s.osc.host, osc_port, s.osc.port, "cannot listen for OSC", "--osc-port", "[osc] port"))
    if web and s.web.enabled:
        wanted.append(("web", "tcp", s.web.host, web_port, s.web.port, "cannot serve the control page", "--web-port",
                       "[web] port"))
    chosen = {"osc": osc_port, "web": web_port}
    for key, kind, host, given, own, what, option, table in wanted:
        port = own if given is None else given
        if port == 0 or is_free(host, port, kind):
            continue
        if given is not None:
            raise _taken(what, host, port, f"{option} {port}")
        if not fallback:
            raise _taken(what, host, port, f"{show.show_file}: {table} = {port}; or give {option}")
        chosen[key] = free_port(host, kind)
        echo(f"{name}: {'OSC' if key == 'osc' else 'control page'} port {port} on {host} is taken; using "
             f"{chosen[key]} instead ({option} chooses one)")
    return chosen["osc"], chosen["web"]
