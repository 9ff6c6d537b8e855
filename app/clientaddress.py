"""Who the client is, for every per-client limit: one function, so no endpoint can be dodged
by a trick another one sees through.

- The peer (the TCP connection's address) is the client, unless it is a trusted proxy
  (GATEWAY_TRUSTED_PROXIES). Behind trusted proxies, X-Forwarded-For is read from the right and
  the first address that is not itself a trusted proxy is the client: entries to its left were
  written by the client and prove nothing.
- Several X-Forwarded-For header lines count as one list, in order (RFC 9110 §5.3): HAProxy's
  ``option forwardfor`` adds its own line after the client's, and reading only the first line
  would believe the client.
- An IPv6 client is its /64: one subscriber gets at least a /64 and can rotate freely within it.
  IPv4-mapped IPv6 addresses (``::ffff:192.0.2.1``, from dual-stack sockets) are the IPv4 address.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from starlette.types import Scope

    from app.settings import Settings

Network = ipaddress.IPv4Network | ipaddress.IPv6Network

IPV6_CLIENT_PREFIX = 64
MAX_HOPS = 32


def client_key(peer: str | None, forwarded_for: Iterable[str], trusted: tuple[Network, ...]) -> str:
    """The key a per-client limit counts under: an IPv4 address, an IPv6 /64, or the peer as given
    when it is not an IP address (a Unix socket, the test client)."""
    address = _client(peer, forwarded_for, trusted)
    if address is None:
        return peer or "unknown"
    if isinstance(address, ipaddress.IPv6Address):
        mapped = address.ipv4_mapped
        if mapped is not None:
            return str(mapped)
        return str(ipaddress.IPv6Network((address, IPV6_CLIENT_PREFIX), strict=False))
    return str(address)


def client_of(scope: Scope, settings: Settings) -> str:
    """``client_key`` of an ASGI request: its peer and every X-Forwarded-For line it carries."""
    client = scope.get("client")
    lines = [value.decode("latin-1") for name, value in scope["headers"] if name == b"x-forwarded-for"]
    return client_key(client[0] if client else None, lines, settings.gateway_trusted_proxies)


def _client(
    peer: str | None, lines: Iterable[str], trusted: tuple[Network, ...]
) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    address = _ip(peer)
    if address is None or not trusted or not _is_trusted(address, trusted):
        return address
    for hop in _hops_from_the_right(list(lines)):
        ip = _ip(hop.strip())
        if ip is None:
            return address  # a garbled entry: the last trusted hop is the best we know
        if not _is_trusted(ip, trusted):
            return ip
        address = ip
    return address


def _hops_from_the_right(lines: list[str]) -> Iterator[str]:
    """The last MAX_HOPS entries of the X-Forwarded-For lines, right to left, blanks skipped.

    Only the right end is read (rsplit with a bound): a chain of trusted proxies longer than
    MAX_HOPS is not a deployment, and a header of thousands of entries costs no more than that.
    """
    left = MAX_HOPS
    for line in reversed(lines):
        for hop in reversed(line.rsplit(",", left)[-left:]):
            if hop.strip():
                yield hop
            left -= 1
            if left == 0:
                return


def _ip(text: str | None) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    if not text or len(text) > 64:  # longer than any address with a zone: not one
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _is_trusted(ip: ipaddress.IPv4Address | ipaddress.IPv6Address, trusted: tuple[Network, ...]) -> bool:
    return any(ip in net for net in trusted)
