"""X-Forwarded-For client address resolution tests."""

from __future__ import annotations

import pytest

from gateway.http.client_address import TrustedProxies, resolve_client_ip

TRUSTED = TrustedProxies(["10.0.0.0/8", "192.168.1.0/24", "203.0.113.7", "2001:db8:ffff::/48"])


@pytest.mark.parametrize(
    ("peer", "xff", "expected"),
    [
        # Untrusted peer: the header is ignored entirely.
        ("198.51.100.9", "1.2.3.4", "198.51.100.9"),
        ("198.51.100.9", "10.0.0.1, 1.2.3.4", "198.51.100.9"),
        ("2001:db8:1::5", "1.2.3.4", "2001:db8:1::5"),
        # Trusted peer without a usable header.
        ("10.0.0.2", None, "10.0.0.2"),
        ("10.0.0.2", "", "10.0.0.2"),
        ("10.0.0.2", " , ", "10.0.0.2"),
        # Trusted peer: the right-most untrusted hop wins.
        ("10.0.0.2", "1.2.3.4", "1.2.3.4"),
        ("10.0.0.2", "1.2.3.4, 5.6.7.8", "5.6.7.8"),
        # Multiple trusted hops are skipped.
        ("10.0.0.2", "1.2.3.4, 10.9.9.9, 192.168.1.20", "1.2.3.4"),
        ("10.0.0.2", "1.2.3.4,203.0.113.7,10.1.1.1", "1.2.3.4"),
        # Spoofed left entries never win.
        ("10.0.0.2", "6.6.6.6, 1.2.3.4", "1.2.3.4"),
        ("10.0.0.2", "10.0.0.99, 8.8.8.8, 10.0.0.3", "8.8.8.8"),
        # All hops trusted: the left-most.
        ("10.0.0.2", "10.0.0.5, 192.168.1.1", "10.0.0.5"),
        # Garbage stops the walk: the last good hop to its right (or the peer) wins.
        ("10.0.0.2", "1.2.3.4, unknown, 10.0.0.9", "10.0.0.9"),
        ("10.0.0.2", "1.2.3.4, not-an-ip", "10.0.0.2"),
        ("10.0.0.2", "1.2.3.4, 300.1.1.1, 10.0.0.9, 192.168.1.5", "10.0.0.9"),
        ("10.0.0.2", "1.2.3.4, _hidden", "10.0.0.2"),
        ("10.0.0.2", "1.2.3.4, 5.6.7.8:", "10.0.0.2"),
        ("10.0.0.2", "1.2.3.4, 5.6.7.8:https", "10.0.0.2"),
        ("10.0.0.2", "1.2.3.4, [2001:db8::1]x", "10.0.0.2"),
        # Several header values joined with commas, odd whitespace, empty elements.
        ("10.0.0.2", "7.7.7.7,1.2.3.4 ,\t10.0.0.5,", "1.2.3.4"),
        # Ports and brackets are stripped, IPv6 is normalised.
        ("10.0.0.2", "1.2.3.4:5678", "1.2.3.4"),
        ("10.0.0.2", "[2001:DB8::1]:443", "2001:db8::1"),
        ("10.0.0.2", "[2001:db8::1]", "2001:db8::1"),
        ("10.0.0.2", "2001:db8:0:0::1", "2001:db8::1"),
        ("10.0.0.2", '"[2001:db8::2]:8443"', "2001:db8::2"),
        ("10.0.0.2", "1.2.3.4, [2001:db8:ffff::1]:443, 10.0.0.3:80", "1.2.3.4"),
        ("2001:db8:ffff::9", "[2001:db8:1::7]:1234, [2001:db8:ffff::8]:80", "2001:db8:1::7"),
        # IPv4-mapped addresses are treated as IPv4 (trusted peer and hops).
        ("::ffff:10.0.0.2", "1.2.3.4, ::ffff:10.0.0.7", "1.2.3.4"),
        ("10.0.0.2", "::ffff:1.2.3.4", "1.2.3.4"),
    ],
)
def test_resolve_client_ip(peer: str, xff: str | None, expected: str) -> None:
    assert resolve_client_ip(peer, xff, TRUSTED) == expected


def test_no_trusted_proxies_ignores_header() -> None:
    assert resolve_client_ip("10.0.0.2", "1.2.3.4", TrustedProxies([])) == "10.0.0.2"


@pytest.mark.parametrize(
    ("ip", "expected"),
    [
        ("10.255.255.255", True),
        ("11.0.0.0", False),
        ("192.168.1.200", True),
        ("192.168.2.1", False),
        ("203.0.113.7", True),
        ("203.0.113.8", False),
        ("2001:db8:ffff:1::1", True),
        ("2001:db8:fffe::1", False),
        ("::ffff:10.1.2.3", True),
        ("::a00:1", False),  # IPv4-compatible, not mapped: an IPv6 address
        ("not-an-ip", False),
        ("", False),
    ],
)
def test_trusted_proxies_contains(ip: str, expected: bool) -> None:
    assert TRUSTED.contains(ip) is expected


def test_trusted_proxies_accepts_overlaps_and_host_bits() -> None:
    trusted = TrustedProxies([" 10.1.2.3/8 ", "10.0.0.0/16", "::1", "0.0.0.0/0"])
    assert trusted.contains("8.8.8.8")
    assert trusted.contains("::1")
    assert not trusted.contains("::2")


@pytest.mark.parametrize("bad", ["10.0.0.0/33", "example.com", "", "10.0.0.0/8,192.168.0.0/16"])
def test_trusted_proxies_rejects_bad_entries(bad: str) -> None:
    with pytest.raises(ValueError, match="invalid trusted proxy network") as info:
        TrustedProxies(["10.0.0.0/8", bad])
    assert repr(bad) in str(info.value)


def test_trusted_proxies_single_string_is_one_entry() -> None:
    assert TrustedProxies("10.0.0.0/8").contains("10.2.3.4")
