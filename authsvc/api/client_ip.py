"""The client's address: the TCP peer, or X-Forwarded-For when the peer is a trusted proxy.

X-Forwarded-For is a list each proxy appends the address it received from to, so only its
right-hand end, the part our own proxies wrote, can be believed. Walking it from the right, the
first address that is not one of our trusted proxies is the client (RFC 7239 section 8.3 on
why the rest is untrustworthy). Without trusted proxies configured the header is ignored.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def _parse(value: str) -> Address | None:
    value = value.strip()
    if value.startswith("[") and "]" in value:  # "[v6]:port"
        value = value[1 : value.index("]")]
    elif value.count(":") == 1:  # "v4:port"
        value = value.split(":", 1)[0]
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


def _trusted(address: Address, networks: Sequence[Network]) -> bool:
    return any(address in network for network in networks)


def client_address(
    peer: str | None, forwarded_for: Iterable[str], trusted: Sequence[Network]
) -> str | None:
    """The address to attribute a request to (rate limits, session records)."""
    if peer is None or not trusted:
        return peer
    current = _parse(peer)
    if current is None or not _trusted(current, trusted):
        return peer
    hops = [hop for header in forwarded_for for hop in header.split(",")]
    for hop in reversed(hops):
        address = _parse(hop)
        if address is None:
            # Garbage where a trusted proxy should have written an address: stop believing
            # the header and blame the last hop we trust.
            break
        current = address
        if not _trusted(address, trusted):
            break
    return str(current)
