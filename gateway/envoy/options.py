"""The translation options a gateway with these settings uses: one place for serve and the CLI."""

from __future__ import annotations

from datetime import date

from gateway.envoy.limits import EdgeLimits
from gateway.envoy.translate import EnvoyOptions
from gateway.settings import Settings
from regions.geoip import bundled_database_path


def options_from_settings(
    settings: Settings,
    *,
    on: date,
    listener_address: str = "0.0.0.0",
    listener_port: int = 10000,
    trusted_hops: int = 0,
) -> EnvoyOptions:
    """Envoy options deciding by the law in force on `on`, with the Python path's timeouts,
    limits, attempts and health checks, the settings' GeoIP database (else the bundled one) and
    OTLP collector for Envoy's spans.
    """
    return EnvoyOptions(
        listener_address=listener_address,
        listener_port=listener_port,
        connect_timeout=settings.upstream_connect_timeout,
        stream_idle_timeout=settings.upstream_read_timeout,
        first_byte_timeout=settings.upstream_first_byte_timeout,
        health_check_path=settings.health_path,
        health_check_interval=settings.health_interval,
        trusted_hops=trusted_hops,
        decision_on=on,
        max_attempts=settings.max_attempts,
        geoip_database=str(settings.geoip_database or bundled_database_path()),
        limits=EdgeLimits.from_settings(settings),
        otlp_endpoint=settings.envoy_otlp_endpoint,
        otlp_service_name=f"{settings.otel_service_name}-envoy",
    )
