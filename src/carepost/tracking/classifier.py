"""Is an open or a click a person or a machine, and why. Pure: plain data in (the event, the
other events of the same message, the knowledge of agents and networks), a verdict out; no
I/O, no clock. Every verdict carries reason codes, so a report can say why.

Two mail proxies need a deliberate decision:
- Apple Mail Privacy Protection fetches every remote image of every message from Apple's
  proxy, whether or not anyone reads it, usually soon after delivery, with a bare
  "Mozilla/5.0" agent. Those opens say nothing about a person: `machine` (`apple_mpp`).
- Gmail's image proxy ("GoogleImageProxy" via ggpht.com) fetches when the person opens the
  message, and again when a cached copy has expired. The fetch is caused by a person opening,
  so it is `human` (reason `google_proxy`), as industry practice counts it; only the other
  signals (too fast after delivery, a prefetch header, ...) make it a machine. Yahoo's mail
  proxy behaves the same (`mail_proxy`).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from carepost.tracking import user_agents

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MACHINE_REASONS = (
    "honeypot",
    "head_request",
    "prefetch",
    "scanner_ua",
    "scanner_ip",
    "apple_mpp",
    "bot_ua",
    "all_links_burst",
    "too_fast_after_delivery",
)
HUMAN_REASONS = ("google_proxy", "mail_proxy", "no_machine_signal")

# How sure each machine signal is by itself. Several signals together are surer:
# confidence = 1 - prod(1 - w) (independent evidence), capped below 1.
_WEIGHT = {
    "honeypot": 0.99,
    "head_request": 0.99,
    "prefetch": 0.98,
    "scanner_ua": 0.97,
    "scanner_ip": 0.9,
    "apple_mpp": 0.95,
    "bot_ua": 0.93,
    "all_links_burst": 0.95,
    "too_fast_after_delivery": 0.8,
}

# Defaults an operator should replace with the current published ranges (Knowledge.from_strings;
# `carepost tracking classify --apple-network ...`). Apple's full egress list is far too
# large to ship; 17.0.0.0/8 is Apple's own block, where MPP fetches come from. Google's
# image proxy serves from Google's
# networks (66.249.80.0/20, 64.233.160.0/19, 66.102.0.0/20, 72.14.192.0/18, 74.125.0.0/16).
# The scanner entries are examples of security vendors' blocks (Microsoft's EOP
# 40.92.0.0/15, 40.107.0.0/16, 52.100.0.0/14, 104.47.0.0/17; Mimecast 205.139.110.0/24,
# 207.211.30.0/24; Proofpoint 148.163.128.0/19, 67.231.144.0/20; Barracuda 209.222.80.0/21).
DEFAULT_APPLE_NETWORKS = ("17.0.0.0/8",)
DEFAULT_GOOGLE_PROXY_NETWORKS = (
    "66.249.80.0/20",
    "64.233.160.0/19",
    "66.102.0.0/20",
    "72.14.192.0/18",
    "74.125.0.0/16",
)
DEFAULT_SCANNER_NETWORKS = (
    "40.92.0.0/15",
    "40.107.0.0/16",
    "52.100.0.0/14",
    "104.47.0.0/17",
    "205.139.110.0/24",
    "207.211.30.0/24",
    "148.163.128.0/19",
    "67.231.144.0/20",
    "209.222.80.0/21",
)


def parse_networks(values: Iterable[str], *, setting: str) -> tuple[Network, ...]:
    """Networks from text ("17.0.0.0/8"); a bad entry is named by its position."""
    nets: list[Network] = []
    for position, value in enumerate(values, start=1):
        try:
            nets.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{setting}: entry {position} is not an IP network") from None
    return tuple(nets)


_PLACES_LIMIT = 65_536


@dataclass(frozen=True, slots=True)
class Knowledge:
    """What the classifier knows beyond the event: networks and timing thresholds. The
    user-agent patterns are compiled once in user_agents.py."""

    apple_networks: tuple[Network, ...]
    google_proxy_networks: tuple[Network, ...]
    scanner_networks: tuple[Network, ...]
    # A person needs a few seconds to see a message and click; scanners click on arrival.
    too_fast_click: timedelta = timedelta(seconds=10)
    # Opens: a person with the mailbox open may open within a few seconds, so shorter.
    too_fast_open: timedelta = timedelta(seconds=3)
    burst_window: timedelta = timedelta(seconds=1)
    # Without message_links: this many distinct links within the window is a burst.
    burst_min_links: int = 3
    # Memo of `places` by address text: the network lists are fixed, traffic repeats
    # addresses, and testing one address against them all costs ~20 µs. Not compared.
    _places: dict[str, tuple[bool, bool, bool]] = field(
        default_factory=dict, compare=False, hash=False, repr=False
    )

    def places(self, ip: str) -> tuple[bool, bool, bool]:
        """Whether `ip` is in Apple's, Google's proxy and the scanners' networks."""
        found = self._places.get(ip)
        if found is None:
            addr = _address(ip)
            found = (
                _in(addr, self.apple_networks),
                _in(addr, self.google_proxy_networks),
                _in(addr, self.scanner_networks),
            )
            if len(self._places) >= _PLACES_LIMIT:
                self._places.clear()
            self._places[ip] = found
        return found

    @classmethod
    def default(cls) -> Knowledge:
        return cls.from_strings(
            DEFAULT_APPLE_NETWORKS, DEFAULT_GOOGLE_PROXY_NETWORKS, DEFAULT_SCANNER_NETWORKS
        )

    @classmethod
    def from_strings(
        cls, apple: Iterable[str], google_proxy: Iterable[str], scanners: Iterable[str]
    ) -> Knowledge:
        return cls(
            apple_networks=parse_networks(apple, setting="apple networks"),
            google_proxy_networks=parse_networks(google_proxy, setting="google proxy networks"),
            scanner_networks=parse_networks(scanners, setting="scanner networks"),
        )


@dataclass(frozen=True, slots=True)
class Event:
    kind: Literal["open", "click"]
    link_index: int | None
    method: str
    user_agent: str
    ip: str
    headers: Mapping[str, str]
    delivered_at: datetime
    at: datetime
    message_links: int | None = None
    honeypot: bool = False


@dataclass(frozen=True, slots=True)
class Verdict:
    verdict: Literal["human", "machine"]
    reasons: tuple[str, ...]
    confidence: float


def _address(ip: str) -> Address | None:
    try:
        addr = ipaddress.ip_address(ip.strip())
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _in(addr: Address | None, nets: Sequence[Network]) -> bool:
    return addr is not None and any(addr.version == n.version and addr in n for n in nets)


def _is_prefetch(headers: Mapping[str, str]) -> bool:
    for name, value in headers.items():
        key = name.lower()
        if key in ("sec-purpose", "purpose", "x-purpose", "x-moz") and (
            "prefetch" in value.lower() or "preview" in value.lower()
        ):
            return True
    return False


def _burst(event: Event, others: Sequence[Event], knowledge: Knowledge) -> bool:
    """Every link of the message (or, not knowing how many, several distinct links)
    clicked within the window around this click."""
    if event.kind != "click" or event.link_index is None:
        return False
    window = knowledge.burst_window
    links = {event.link_index}
    for other in others:
        if (
            other.kind == "click"
            and other.link_index is not None
            and abs(other.at - event.at) <= window
        ):
            links.add(other.link_index)
    if event.message_links is not None and event.message_links >= 2:
        return len(links) >= event.message_links
    return len(links) >= knowledge.burst_min_links


def classify(event: Event, others: Sequence[Event], knowledge: Knowledge) -> Verdict:
    """The verdict for one event. `others` are the other events of the same message (the
    event itself may be among them; it is compared by value, which is harmless)."""
    reasons: list[str] = []
    if event.honeypot:
        reasons.append("honeypot")
    if event.method.strip().upper() == "HEAD":
        reasons.append("head_request")
    if _is_prefetch(event.headers):
        reasons.append("prefetch")

    ua = user_agents.match(event.user_agent)
    family = ua.family if ua else None
    in_apple, in_google, in_scanner = knowledge.places(event.ip)
    if family == "scanner":
        reasons.append("scanner_ua")
    if in_scanner:
        reasons.append("scanner_ip")
    if event.kind == "open" and (in_apple and family in (None, "generic")):
        reasons.append("apple_mpp")
    elif event.kind == "open" and family == "generic":
        # The bare agent without an Apple address: MPP from egress we were not told about.
        reasons.append("apple_mpp")
    if family == "bot" or (family == "generic" and event.kind == "click"):
        reasons.append("bot_ua")
    if _burst(event, others, knowledge):
        reasons.append("all_links_burst")
    elapsed = event.at - event.delivered_at
    limit = knowledge.too_fast_click if event.kind == "click" else knowledge.too_fast_open
    if elapsed < limit:
        reasons.append("too_fast_after_delivery")

    if reasons:
        doubt = 1.0
        for reason in reasons:
            doubt *= 1.0 - _WEIGHT[reason]
        if reasons == ["apple_mpp"] and not in_apple:
            doubt = max(doubt, 0.3)  # the agent alone, not the network: less sure
        return Verdict("machine", tuple(reasons), round(min(0.999, 1.0 - doubt), 3))

    if family == "google_proxy":
        # Spoofing the proxy's agent gains nothing, but outside Google's networks it is
        # less certain that Gmail fetched it.
        sure = 0.85 if in_google else 0.7
        return Verdict("human", ("google_proxy",), sure)
    if family == "mail_proxy":
        return Verdict("human", ("mail_proxy",), 0.8)
    # Later events are surer: scanners act on arrival, people minutes to days later.
    sure = 0.9 if elapsed >= timedelta(minutes=1) else 0.75
    return Verdict("human", ("no_machine_signal",), sure)
