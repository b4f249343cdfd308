"""The one client-network helper the portal, the unsubscribe pages and tracking share."""

from __future__ import annotations

import pytest

from carepost.web.client import UNKNOWN, network_of


@pytest.mark.parametrize(
    ("host", "network"),
    [
        ("203.0.113.77", "203.0.113.0/24"),
        ("203.0.113.0", "203.0.113.0/24"),
        ("2001:db8:abcd:12::1", "2001:db8:abcd::/48"),
        # A dual-stack socket reports IPv4 clients as mapped addresses: same /24.
        ("::ffff:203.0.113.77", "203.0.113.0/24"),
        (" 198.51.100.9 ", "198.51.100.0/24"),
    ],
)
def test_network_of_keeps_only_the_network(host: str, network: str) -> None:
    assert network_of(host) == network


@pytest.mark.parametrize("host", ["", "testclient", "not-an-ip", "999.1.1.1", "1.2.3.4/24"])
def test_what_is_not_an_address_is_unknown(host: str) -> None:
    assert network_of(host) == UNKNOWN
