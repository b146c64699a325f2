"""Which IP addresses the media fetcher may connect to: globally routable unicast only.

`ipaddress.is_global` alone is not enough, and it changes between Python versions: on 3.11 it calls
6to4 (2002::/16) and NAT64 (64:ff9b::/96) addresses global whatever IPv4 address they wrap (so
2002:7f00:1:: and 64:ff9b::7f00:1 would reach 127.0.0.1), calls multicast and the IPv4-compatible
::/96 block global, and the IETF protocol block 192.0.0.0/24 partly global. So: unwrap every IPv6 form
that embeds an IPv4 address and judge that address, then refuse an explicit list of special-purpose
blocks (RFC 6890 and its successors) on top of `is_global`. 100.64.0.0/10 (shared address space, where
Alibaba Cloud's metadata service 100.100.100.200 lives) is on the list although Python already says
"not global" for it, so the rule does not hang on one Python version's table.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

_V4_REFUSED = tuple(
    ip_network(n)
    for n in (
        "0.0.0.0/8",  # "this network"
        "10.0.0.0/8",  # private
        "100.64.0.0/10",  # shared address space (carrier NAT; cloud metadata such as 100.100.100.200)
        "127.0.0.0/8",  # loopback
        "169.254.0.0/16",  # link-local (cloud metadata 169.254.169.254)
        "172.16.0.0/12",  # private
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",  # private
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
    )
)
_V6_REFUSED = tuple(
    ip_network(n)
    for n in (
        "::/96",  # unspecified, loopback and the deprecated IPv4-compatible form
        "64:ff9b:1::/48",  # local-use NAT64 (RFC 8215): wraps addresses of a private translator
        "100::/64",  # discard
        "2001::/23",  # IETF protocol assignments (Teredo, ORCHID, ...)
        "2001:db8::/32",  # documentation
        "3fff::/20",  # documentation
        "5f00::/16",  # segment routing
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated)
        "ff00::/8",  # multicast
    )
)
_NAT64 = ip_network("64:ff9b::/96")


def embedded_ipv4(ip: IPv6Address) -> IPv4Address | None:
    """The IPv4 address an IPv6 address stands for: IPv4-mapped, 6to4, or well-known-prefix NAT64."""
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip in _NAT64:
        return IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def is_public(ip: IPv4Address | IPv6Address) -> bool:
    """True only for a globally routable unicast address (after unwrapping an embedded IPv4 address)."""
    if isinstance(ip, IPv6Address):
        inner = embedded_ipv4(ip)
        if inner is not None:
            return is_public(inner)
        if ip.scope_id or any(ip in net for net in _V6_REFUSED):
            return False
    elif any(ip in net for net in _V4_REFUSED):
        return False
    return ip.is_global and not ip.is_multicast


def parse_public(text: str) -> IPv4Address | IPv6Address | None:
    """The address written in `text` (as a resolver returned it) when it is public, else None."""
    try:
        ip = ip_address(text)
    except ValueError:
        return None
    return ip if is_public(ip) else None
