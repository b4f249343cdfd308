"""A journey's webhook step: a signed POST of ids, made SSRF-safe.

- What is sent: JSON with ids only (enrolment, contact, journey, version, step, visit),
  never PHI. Headers: `Idempotency-Key: <enrolment>:<visit>` (the same for every retry:
  the receiver deduplicates; delivery is at least once), `X-Carepost-Timestamp` (Unix
  seconds) and `X-Carepost-Signature: v1=<hex HMAC-SHA256(secret, "<timestamp>." + body)>`.
  The secret is `CAREPOST_JOURNEY_WEBHOOK_SECRET`; it is never logged or echoed.
- Where it may go (`address_refusal`, pure): the host is resolved once and every
  address must be public. Refused: loopback, private (RFC 1918, ULA fc00::/7), link-local
  (169.254/16, fe80::/10) and the cloud metadata addresses in them, CGNAT 100.64/10,
  multicast, unspecified, reserved and documentation ranges, and IPv6 forms carrying such
  an IPv4 address (::ffff:a.b.c.d, 6to4, Teredo, NAT64). The connection goes to the
  checked address itself (the URL's host is sent as Host and as TLS SNI, and the
  certificate is verified against it), so DNS cannot answer differently in between.
  Redirects are not followed (a 3xx is a failure). `CAREPOST_JOURNEY_WEBHOOK_ALLOW_
  NETWORKS` lists networks allowed anyway: an escape hatch for an on-premises receiver
  and for tests on loopback.
- What a result means (`classify`): 2xx done; 408, 429, 5xx, timeouts and connection
  errors are worth retrying; any other answer and a refused address are final.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import socket
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

import httpx

IP = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]

METADATA = (ipaddress.ip_address("169.254.169.254"), ipaddress.ip_address("fd00:ec2::254"))
CGNAT = ipaddress.ip_network("100.64.0.0/10")
NAT64 = ipaddress.ip_network("64:ff9b::/96")
USER_AGENT = "carepost-journeys/1"


class WebhookConfigError(ValueError):
    pass


def parse_networks(text: str) -> tuple[Network, ...]:
    """Comma-separated CIDR blocks; an error names the bad item by position."""
    out: list[Network] = []
    for i, item in enumerate(p.strip() for p in text.split(",")):
        if not item:
            continue
        try:
            out.append(ipaddress.ip_network(item, strict=False))
        except ValueError:
            raise WebhookConfigError(
                f"journey_webhook_allow_networks item {i + 1}: not a CIDR block ({item!r})"
            ) from None
    return tuple(out)


def _embedded(ip: IP) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries (mapped, 6to4, Teredo, NAT64)."""
    if not isinstance(ip, ipaddress.IPv6Address):
        return None
    if ip.ipv4_mapped is not None:
        return ip.ipv4_mapped
    if ip.sixtofour is not None:
        return ip.sixtofour
    if ip.teredo is not None:
        return ip.teredo[1]
    if ip in NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def _category(ip: IP) -> str | None:
    if ip in METADATA:
        return "metadata"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link_local"
    if ip.is_multicast:
        return "multicast"
    if isinstance(ip, ipaddress.IPv4Address) and ip in CGNAT:
        return "cgnat"
    if ip.is_private:
        return "private"
    if ip.is_reserved or not ip.is_global:
        return "not_public"
    return None


def address_refusal(ip: IP, allowed: Sequence[Network] = ()) -> str | None:
    """Why a webhook may not connect to `ip` (None: it may). Pure."""
    inner = _embedded(ip)
    if any(ip in net for net in allowed if net.version == ip.version):
        return None
    if inner is not None and any(inner in net for net in allowed if net.version == 4):
        return None
    # An address carrying an IPv4 one reaches that one: it decides.
    return _category(inner) if inner is not None else _category(ip)


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass(frozen=True)
class WebhookConfig:
    secret: bytes = b""
    allow: tuple[Network, ...] = ()
    max_attempts: int = 5
    backoff: timedelta = timedelta(seconds=30)  # doubled after each failed attempt
    resolver: Resolver = field(default=system_resolver)
    # TLS verification: the system's roots, or a context trusting a private receiver's CA.
    verify: bool | ssl.SSLContext = True

    @classmethod
    def from_settings(cls, secret: str, allow_networks: str) -> WebhookConfig:
        return cls(secret=secret.encode(), allow=parse_networks(allow_networks))

    def retry_after(self, attempts: int) -> timedelta:
        factor: int = 2 ** max(attempts - 1, 0)
        return self.backoff * factor


@dataclass(frozen=True)
class Outcome:
    ok: bool
    retry: bool
    detail: str  # for the transition: a status or a reason, never the URL or body


def sign(secret: bytes, timestamp: int, body: bytes) -> str:
    mac = hmac.new(secret, str(timestamp).encode() + b"." + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def body_of(ids: dict[str, str | int]) -> bytes:
    return json.dumps(ids, sort_keys=True, separators=(",", ":")).encode()


def classify(status: int) -> Outcome:
    if 200 <= status < 300:
        return Outcome(True, False, f"http {status}")
    retry = status in (408, 429) or status >= 500
    return Outcome(False, retry, f"http {status}")


def call(
    config: WebhookConfig,
    url: str,
    ids: dict[str, str | int],
    *,
    idempotency_key: str,
    timestamp: int,
    timeout: timedelta,
) -> Outcome:
    """POST once; never raises for network trouble (it is an Outcome)."""
    if not config.secret:
        return Outcome(False, False, "no signing secret configured")
    target = httpx.URL(url)
    host = target.host
    port = target.port or (443 if target.scheme == "https" else 80)
    try:
        addresses = [ipaddress.ip_address(host)]
    except ValueError:
        try:
            addresses = [ipaddress.ip_address(a.split("%")[0]) for a in config.resolver(host, port)]
        except (OSError, UnicodeError, ValueError):
            return Outcome(False, True, "name did not resolve")
    if not addresses:
        return Outcome(False, True, "name did not resolve")
    for address in addresses:
        why = address_refusal(address, config.allow)
        if why is not None:
            return Outcome(False, False, f"address refused: {why}")
    body = body_of(ids)
    headers = {
        "Host": host if target.port is None else f"{host}:{target.port}",
        "Content-Type": "application/json",
        "User-Agent": USER_AGENT,
        "Idempotency-Key": idempotency_key,
        "X-Carepost-Timestamp": str(timestamp),
        "X-Carepost-Signature": sign(config.secret, timestamp, body),
    }
    chosen = addresses[0]
    pinned = target.copy_with(host=str(chosen))
    extensions = {"sni_hostname": host} if target.scheme == "https" else {}
    seconds = timeout.total_seconds()
    try:
        with httpx.Client(
            timeout=seconds, follow_redirects=False, trust_env=False, verify=config.verify
        ) as client:
            response = client.post(pinned, content=body, headers=headers, extensions=extensions)
    except httpx.TimeoutException:
        return Outcome(False, True, "timeout")
    except httpx.HTTPError as exc:
        return Outcome(False, True, f"connection failed ({type(exc).__name__})")
    return classify(response.status_code)
