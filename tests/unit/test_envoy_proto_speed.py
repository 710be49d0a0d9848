"""The cached betterproto2 validators check exactly what betterproto2's own do."""

from __future__ import annotations

import pydantic
import pytest
from envoy_data_plane.envoy.config.cluster.v3 import Cluster
from envoy_data_plane.envoy.config.core.v3 import SocketAddress

from gateway.envoy import proto_speed


def test_the_cached_validator_is_installed_and_idempotent() -> None:
    assert proto_speed.install()
    assert proto_speed.install()


def test_a_message_made_invalid_after_construction_still_fails_to_serialize() -> None:
    proto_speed.install()
    address = SocketAddress(address="127.0.0.1", port_value=80)
    address.port_value = 1 << 40  # not a uint32: caught when serialized, as before
    with pytest.raises(pydantic.ValidationError):
        bytes(address)


def test_valid_messages_serialize_as_before() -> None:
    cluster = Cluster(name="region_eu")
    proto_speed.install()
    cached = bytes(cluster)
    assert Cluster.parse(cached).name == "region_eu"
    assert cached == bytes(Cluster(name="region_eu"))
