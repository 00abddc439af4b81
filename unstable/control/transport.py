"""OSC transport: the UDP server and the checks that need only the datagram and its sender.

python-osc's `BlockingOSCUDPServer` is a `socketserver.UDPServer`; its `verify_request` hook
runs before anything is parsed, so the allow-list and the datagram size limit live there. What
passes goes to python-osc's request handler, which hands the bytes to the dispatcher
(`unstable.control.dispatch`). The receive buffer is raised before bind so that a burst of
messages is not dropped by the kernel.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Iterable

from pythonosc import osc_server

from ..errors import UnstableError
from .osclog import RateLimitedLog, log

MiB = 1 << 20


def parse_allow(allow: Iterable[str] | None):
    """The allow-list as a tuple of ip_network (None: no allow-list)."""
    if allow is None:
        return None
    nets = []
    for entry in allow:
        try:
            nets.append(ipaddress.ip_network(str(entry).strip(), strict=False))
        except ValueError:
            raise UnstableError(f"OSC allow-list entry {entry!r} is not an IP address or network "
                                "(e.g. '192.168.1.20' or '192.168.1.0/24')") from None
    return tuple(nets)


def is_loopback(host: str) -> bool:
    """True for 'localhost' and loopback addresses: a socket there is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class AllowList:
    """Sender hosts accepted (None: anyone), with a bounded cache of the per-host answer."""

    def __init__(self, nets):
        self.nets = nets
        self._cache: dict[str, bool] = {}

    def __call__(self, host: str) -> bool:
        if self.nets is None:
            return True
        ok = self._cache.get(host)
        if ok is None:
            try:
                ip = ipaddress.ip_address(host)
                ok = any(ip in net for net in self.nets)
            except ValueError:
                ok = False
            if len(self._cache) > 4096:
                self._cache.clear()
            self._cache[host] = ok
        return ok


class OscUDPServer(osc_server.BlockingOSCUDPServer):
    """python-osc's blocking UDP server with a big receive buffer and transport checks.

    `stats` is the server's shared counter dict: "foreign" and "oversize" are counted here,
    "packets" for every datagram once its work is done, "errors" for anything that escapes the
    dispatcher. Nothing a sender does makes `serve_forever` raise.
    """

    def __init__(self, server_address, dispatcher, *, allowed: AllowList, max_packet: int,
                 rcvbuf: int, stats: dict, warn: RateLimitedLog):
        self.allowed = allowed
        self.max_packet = int(max_packet)
        self.rcvbuf = int(rcvbuf)
        self.stats = stats
        self.warn = warn
        # One byte more than the limit, so an oversized datagram is seen as such, not truncated.
        self.max_packet_size = self.max_packet + 1
        super().__init__(server_address, dispatcher)

    def server_bind(self):
        # Before bind: the default ~200 KiB buffer drops hundreds of messages in a burst.
        want = self.rcvbuf
        try:
            self.socket.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, want)
            force = getattr(socket, "SO_RCVBUFFORCE", None)
            if force is not None and self.socket.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF) < want:
                # Capped by net.core.rmem_max; a privileged process may go past the cap.
                try:
                    self.socket.setsockopt(socket.SOL_SOCKET, force, want)
                except OSError:
                    pass
        except OSError as e:
            log.warning("could not set the OSC receive buffer to %d bytes: %s", want, e)
        super().server_bind()

    def verify_request(self, request, client_address) -> bool:
        """Allow-list and size. Whether the bytes are OSC at all is the dispatcher's to say (and
        count as malformed), so python-osc's own prefix check is not used here."""
        # Counters are bumped after the work (and its log line), so a reader who sees a count
        # also sees its effect. socketserver does not guard this hook: nothing may escape it.
        try:
            if not self.allowed(client_address[0]):
                self.warn.warning("foreign", "OSC from %s:%s ignored: not in the allow-list",
                                  *client_address[:2])
                self.stats["foreign"] += 1
            elif len(request[0]) > self.max_packet:
                self.warn.warning("oversize", "OSC packet of more than %d bytes from %s:%s ignored",
                                  self.max_packet, *client_address[:2])
                self.stats["oversize"] += 1
            else:
                return True  # counted in process_request, once handled
        except Exception:
            self.handle_error(request, client_address)
        self.stats["packets"] += 1
        return False

    def process_request(self, request, client_address) -> None:
        try:
            self.finish_request(request, client_address)  # python-osc's handler -> dispatcher
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.stats["packets"] += 1

    def handle_error(self, request, client_address) -> None:
        # socketserver's default prints a traceback to stderr per packet: log it, rate-limited.
        self.warn.warning("error", "OSC packet from %s:%s failed", *client_address[:2], exc_info=True)
        self.stats["errors"] += 1
