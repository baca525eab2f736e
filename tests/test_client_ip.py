"""The client address behind trusted proxies (authsvc.api.client_ip)."""

from __future__ import annotations

import ipaddress

import pytest

from authsvc.api.client_ip import client_address
from authsvc.config import ConfigError, load_settings

TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:ffff::/48")]


@pytest.mark.parametrize(
    ("peer", "forwarded", "expected"),
    [
        # Direct client: the header is the client's own say-so and ignored.
        ("198.51.100.1", ["1.2.3.4"], "198.51.100.1"),
        # Trusted proxy: the right-most address it did not add itself.
        ("10.0.0.1", ["1.2.3.4"], "1.2.3.4"),
        ("10.0.0.1", ["6.6.6.6, 1.2.3.4"], "1.2.3.4"),  # spoofed left part ignored
        ("10.0.0.1", ["6.6.6.6, 1.2.3.4, 10.0.0.2"], "1.2.3.4"),  # proxy chain
        ("10.0.0.1", ["6.6.6.6", "1.2.3.4"], "1.2.3.4"),  # several header lines
        ("10.0.0.1", ["10.0.0.3, 10.0.0.2"], "10.0.0.3"),  # all trusted: the farthest hop
        ("10.0.0.1", [], "10.0.0.1"),
        ("10.0.0.1", ["not-an-ip"], "10.0.0.1"),  # garbage: blame the proxy
        ("10.0.0.1", ["1.2.3.4, garbage, 10.0.0.2"], "10.0.0.2"),
        ("10.0.0.1", ["1.2.3.4:5678"], "1.2.3.4"),
        ("10.0.0.1", ["[2001:db8::1]:443"], "2001:db8::1"),
        ("10.0.0.1", ["::ffff:1.2.3.4"], "1.2.3.4"),
        ("2001:db8:ffff::1", ["2001:db8::7"], "2001:db8::7"),
        (None, ["1.2.3.4"], None),
    ],
)
def test_client_address(peer: str | None, forwarded: list[str], expected: str | None) -> None:
    assert client_address(peer, forwarded, TRUSTED) == expected


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert client_address("10.0.0.1", ["1.2.3.4"], []) == "10.0.0.1"


def test_trusted_proxies_setting_is_a_cidr_list() -> None:
    settings = load_settings(trusted_proxies="10.0.0.0/8, 192.0.2.1 ,::1")
    assert [str(n) for n in settings.trusted_proxy_networks] == [
        "10.0.0.0/8",
        "192.0.2.1/32",
        "::1/128",
    ]
    with pytest.raises(ConfigError):
        load_settings(trusted_proxies="10.0.0.0/8,nonsense")
