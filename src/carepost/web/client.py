"""Who is asking, as much as carepost keeps of it: the client's network (/24 for IPv4,
/48 for IPv6), never the full address. Rate limits count by it, audit entries record it,
and tracking events store it; one helper so all three mean the same network."""

from __future__ import annotations

import functools
import ipaddress

from starlette.requests import Request

UNKNOWN = "unknown"


@functools.lru_cache(maxsize=4096)
def network_of(host: str) -> str:
    """The /24 (IPv4) or /48 (IPv6) holding `host`, or "unknown" when it is not an IP
    address. An IPv4-mapped IPv6 address (a dual-stack socket) counts as its IPv4 address,
    so it lands in the same /24 rather than in one /48 shared by every IPv4 client.
    Cached: real traffic repeats addresses, and parsing one costs microseconds."""
    try:
        ip = ipaddress.ip_address(host.strip())
    except ValueError:
        return UNKNOWN
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    prefix = 24 if ip.version == 4 else 48
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def client_network(request: Request) -> str:
    """The network of the request's client (after uvicorn's trusted proxy headers)."""
    return network_of(request.client.host if request.client else "")
