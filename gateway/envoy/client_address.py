"""Which X-Forwarded-For hops Envoy believes: the same CIDR rule as the Python data path.

With trusted networks, Envoy's `xff` original-IP detection walks X-Forwarded-For from the right
and takes the first address outside them, exactly as `gateway.http.client_address` does; a
client connecting from anywhere else is its own address whatever header it sends.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable

from envoy_data_plane.envoy.config.core.v3 import CidrRange, TypedExtensionConfig
from envoy_data_plane.envoy.extensions.http.original_ip_detection.xff.v3 import (
    XffConfig,
    XffTrustedCidrs,
)
from envoy_data_plane.google.protobuf import Any

XFF_DETECTION = "envoy.http.original_ip_detection.xff"


def original_ip_detection(trusted: Iterable[str]) -> list[TypedExtensionConfig]:
    """The HCM's original_ip_detection_extensions for these networks (none: the connection's
    address or the hop count decides)."""
    cidrs = [_cidr(entry) for entry in trusted]
    if not cidrs:
        return []
    config = XffConfig(xff_trusted_cidrs=XffTrustedCidrs(cidrs=cidrs))
    return [TypedExtensionConfig(name=XFF_DETECTION, typed_config=Any.pack(config))]


def _cidr(entry: str) -> CidrRange:
    network = ipaddress.ip_network(entry, strict=False)
    return CidrRange(
        address_prefix=str(network.network_address),
        prefix_len=network.prefixlen,
    )
