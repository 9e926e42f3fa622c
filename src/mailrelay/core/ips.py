"""Which addresses mailrelay may be made to connect to by someone else's data (an MX record, a
webhook URL): not loopback, private, link-local, shared (RFC 6598), multicast, reserved or
unspecified, unless the operator allows it."""

from __future__ import annotations

import ipaddress

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_SHARED_SPACE = ipaddress.ip_network("100.64.0.0/10")  # RFC 6598 carrier-grade NAT


def is_public(ip: IPAddress) -> bool:
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if isinstance(ip, ipaddress.IPv4Address) and ip in _SHARED_SPACE:
        return False
    return not (ip.is_loopback or ip.is_private or ip.is_link_local or ip.is_unspecified
                or ip.is_multicast or ip.is_reserved)


def is_address(text: str) -> bool:
    """Whether `text` is an IP address (v4, or v6 with or without a %zone), not a name."""
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def is_public_text(ip: str) -> bool:
    """is_public for an address as text; False for text that is no address."""
    try:
        return is_public(ipaddress.ip_address(ip.split("%", 1)[0]))
    except ValueError:
        return False


def is_local_name(host: str) -> bool:
    """`localhost` and names under it (RFC 6761 §6.3: always the loopback address)."""
    host = host.lower().rstrip(".")
    return host == "localhost" or host.endswith(".localhost")
