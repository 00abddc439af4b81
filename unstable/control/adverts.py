"""Finding the show on a LAN: this machine's addresses, and zeroconf adverts of the OSCQuery server
(`_oscjson._tcp`) and the OSC server (`_osc._udp`), made only when the show listens beyond loopback."""

from __future__ import annotations

import ipaddress
import logging
import socket

from .transport import is_loopback

log = logging.getLogger("unstable.web")

__all__ = ["advertise", "lan_addresses"]


def lan_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback (for the printed URL and zeroconf)."""
    import ifaddr
    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ipaddress.ip_address(ip.ip).is_loopback:
                out.append(ip.ip)
    return out


def advertise(name: str, host: str, port: int, osc_host: str, osc_port: int | None, url: str):
    """Announce `_oscjson._tcp` (the web server at `port`) and `_osc._udp` (the OSC server) over mDNS,
    on the interfaces `host` covers; returns the Zeroconf to unregister later, or None (no LAN
    address, or no multicast on this network: the printed `url` still works)."""
    from zeroconf import InterfaceChoice, ServiceInfo, Zeroconf
    wildcard = host in ("0.0.0.0", "::", "")
    addrs = lan_addresses() if wildcard else [host]
    if not addrs:
        return None
    try:
        zc = Zeroconf(interfaces=InterfaceChoice.All if wildcard else addrs)
        packed = [socket.inet_aton(a) for a in addrs if ":" not in a]
        zc.register_service(ServiceInfo("_oscjson._tcp.local.", f"{name}._oscjson._tcp.local.",
                                        port=port, addresses=packed, server=f"{name}.local.",
                                        properties={"txtvers": "1"}))
        if osc_port and not is_loopback(osc_host):
            zc.register_service(ServiceInfo("_osc._udp.local.", f"{name}._osc._udp.local.",
                                            port=osc_port, addresses=packed, server=f"{name}.local.",
                                            properties={"txtvers": "1"}))
        return zc
    except Exception as e:  # no multicast on this network: the URL still works
        log.warning("zeroconf advert failed (%s); clients can still connect to %s", e, url)
        return None
