"""The webhook's pure decisions: which addresses are refused (SSRF), the allow-list, the
signature, and what an HTTP status means."""

from __future__ import annotations

import hashlib
import hmac
import ipaddress

import pytest

from carepost.journeys.webhook import (
    WebhookConfigError,
    address_refusal,
    classify,
    parse_networks,
    sign,
)

REFUSED = {
    "127.0.0.1": "loopback",
    "127.8.9.10": "loopback",
    "::1": "loopback",
    "10.1.2.3": "private",
    "172.16.0.1": "private",
    "172.31.255.255": "private",
    "192.168.1.1": "private",
    "fc00::1": "private",
    "fd12:3456::1": "private",
    "169.254.1.1": "link_local",
    "fe80::1": "link_local",
    "169.254.169.254": "metadata",
    "fd00:ec2::254": "metadata",
    "224.0.0.1": "multicast",
    "ff02::1": "multicast",
    "0.0.0.0": "unspecified",  # noqa: S104 (an address to refuse, not to bind)
    "::": "unspecified",
    "100.64.0.1": "cgnat",
    "100.127.255.254": "cgnat",
    # IPv6 forms carrying a refused IPv4 address:
    "::ffff:127.0.0.1": "loopback",
    "::ffff:169.254.169.254": "metadata",
    "::ffff:10.0.0.1": "private",
    "2002:7f00:1::": "loopback",  # 6to4 of 127.0.0.1
    "64:ff9b::a9fe:a9fe": "metadata",  # NAT64 of 169.254.169.254
    "2001:0:4136:e378:8000:63bf:80ff:fffe": "loopback",  # Teredo, client 127.0.0.1
}
# Reserved, documentation and broadcast ranges: refused (the reason's name varies with
# the Python version's tables).
OTHER = ["192.0.2.1", "198.51.100.7", "240.0.0.1", "255.255.255.255", "2001:db8::1"]
ALLOWED = ["93.184.215.14", "8.8.8.8", "2606:4700:4700::1111", "::ffff:93.184.215.14"]


@pytest.mark.parametrize(("address", "why"), sorted(REFUSED.items()))
def test_refused_addresses(address: str, why: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) == why


@pytest.mark.parametrize("address", OTHER)
def test_other_non_public_addresses(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is not None


@pytest.mark.parametrize("address", ALLOWED)
def test_public_addresses(address: str) -> None:
    assert address_refusal(ipaddress.ip_address(address)) is None


def test_allow_list_is_an_explicit_escape_hatch() -> None:
    allowed = parse_networks("127.0.0.0/8, 10.20.0.0/16")
    assert address_refusal(ipaddress.ip_address("127.0.0.1"), allowed) is None
    assert address_refusal(ipaddress.ip_address("::ffff:127.0.0.1"), allowed) is None
    assert address_refusal(ipaddress.ip_address("10.20.3.4"), allowed) is None
    assert address_refusal(ipaddress.ip_address("10.21.0.1"), allowed) == "private"
    assert address_refusal(ipaddress.ip_address("::1"), allowed) == "loopback"
    assert parse_networks("") == ()
    with pytest.raises(WebhookConfigError, match="item 2: not a CIDR block"):
        parse_networks("127.0.0.0/8, localhost")


def test_signature_and_statuses() -> None:
    body = b'{"contact":"c1"}'
    expected = hmac.new(b"k", b"1700000000." + body, hashlib.sha256).hexdigest()
    assert sign(b"k", 1700000000, body) == f"v1={expected}"
    assert classify(204).ok
    assert not classify(302).ok
    assert not classify(302).retry  # redirects are not followed, nor retried
    assert not classify(404).retry
    assert classify(429).retry
    assert classify(503).retry
