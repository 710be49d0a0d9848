"""The failed-authentication throttle: counting, blocking, expiry, the memory bound."""

from __future__ import annotations

import pytest

from gateway.auth_throttle import AuthGuard, AuthThrottle, address_key
from gateway.errors import ApiError


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_blocks_after_the_limit_for_the_window() -> None:
    clock = Clock()
    throttle = AuthThrottle(limit=3, window=60, max_addresses=10, clock=clock)
    assert not throttle.maybe_blocked()
    assert throttle.failed("192.0.2.1") is None
    assert throttle.failed("192.0.2.1") is None
    assert throttle.failed("192.0.2.1") == 60
    assert throttle.maybe_blocked()
    assert throttle.retry_after("192.0.2.1") == 60
    assert throttle.retry_after("192.0.2.2") is None  # another address is not affected
    clock.now += 59.5
    assert throttle.retry_after("192.0.2.1") == 1
    clock.now += 0.5
    assert throttle.retry_after("192.0.2.1") is None
    assert not throttle.maybe_blocked()
    assert throttle.failed("192.0.2.1") is None  # a fresh count after the block


def test_failures_spread_beyond_the_window_do_not_block() -> None:
    clock = Clock()
    throttle = AuthThrottle(limit=3, window=10, max_addresses=10, clock=clock)
    for _ in range(10):
        assert throttle.failed("192.0.2.1") is None
        clock.now += 6  # two failures per window at most


def test_repeating_one_stale_key_is_not_guessing() -> None:
    throttle = AuthThrottle(limit=3, window=60, max_addresses=10, clock=Clock())
    for _ in range(50):
        assert throttle.failed("192.0.2.1", hash("rg_stale")) is None
    assert not throttle.maybe_blocked()
    throttle.failed("192.0.2.1", hash("guess-1"))
    assert throttle.failed("192.0.2.1", hash("guess-2")) == 60  # 3 distinct: stale, 1, 2


def test_memory_is_bounded_least_recent_first() -> None:
    throttle = AuthThrottle(limit=2, window=60, max_addresses=100, clock=Clock())
    for i in range(1000):
        throttle.failed(f"10.0.{i // 256}.{i % 256}")
    assert len(throttle) == 100


def test_limit_zero_turns_it_off() -> None:
    throttle = AuthThrottle(limit=0, window=60, max_addresses=10, clock=Clock())
    for _ in range(100):
        assert throttle.failed("192.0.2.1") is None
    assert not throttle.maybe_blocked() and len(throttle) == 0


@pytest.mark.parametrize(
    ("address", "key"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
        ("2001:db8:1:2:bbbb::9", "2001:db8:1:2::/64"),  # same /64, same count
        ("::ffff:192.0.2.1", "192.0.2.1"),
        (None, "unknown"),
        ("not-an-address", "unknown"),
    ],
)
def test_address_keys(address: str | None, key: str) -> None:
    assert address_key(address) == key


def test_guard_answers_429_with_retry_after() -> None:
    scope = {"client": ("198.51.100.4", 5000), "headers": []}
    guard = AuthGuard(
        AuthThrottle(limit=2, window=30, max_addresses=10, clock=Clock()),
        lambda s: str(s["client"][0]),
    )
    guard.check(scope)
    guard.failed(scope, "wrong-1")
    guard.failed(scope, "wrong-2")
    with pytest.raises(ApiError) as refused:
        guard.check(scope)
    assert refused.value.status == 429
    assert refused.value.headers == {"Retry-After": "30"}
    assert refused.value.code == "too_many_auth_failures"
