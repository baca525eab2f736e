"""authsvc/server.py: how the connection limits come from the settings (the guard itself is
exercised over real sockets in test_slow_clients.py)."""

from __future__ import annotations

import resource

import pytest

from authsvc.config import Settings
from authsvc.server import ConnectionLimits, raise_fd_limit


def _limits(**settings: object) -> ConnectionLimits:
    return ConnectionLimits.from_settings(Settings(**settings))  # type: ignore[arg-type]


def test_addresses_are_counted_per_host_and_ipv6_per_64() -> None:
    limits = _limits()
    assert limits.client_key("192.0.2.7") == "192.0.2.7"
    assert limits.client_key("2001:db8:1:2::1") == limits.client_key("2001:db8:1:2:ffff::9")
    assert limits.client_key("2001:db8:1:2::1") != limits.client_key("2001:db8:1:3::1")
    # A Unix-socket peer has no address to count by.
    assert limits.client_key("") is None


def test_trusted_proxies_are_not_capped_per_address() -> None:
    limits = _limits(trusted_proxies="10.0.0.0/8, 2001:db8::/32")
    assert limits.client_key("10.1.2.3") is None
    assert limits.client_key("2001:db8::5") is None
    assert limits.client_key("192.0.2.7") == "192.0.2.7"


def test_a_per_address_cap_of_zero_counts_nobody() -> None:
    assert _limits(max_connections_per_client=0).client_key("192.0.2.7") is None


def test_the_connection_cap_fits_the_descriptor_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        pytest.skip("no hard descriptor limit to exceed")
    fitted = raise_fd_limit(_limits(max_connections=hard + 1000))
    # Raised to the hard limit, and the cap lowered below it with room for the rest.
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
    assert fitted.max_connections < hard
    modest = _limits(max_connections=10)
    assert raise_fd_limit(modest) == modest
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
