"""Every setting the gateway reads, in one typed object; the only module reading the environment."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, Any, Literal

from dotenv import dotenv_values
from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    DotEnvSettingsSource,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

ENV_PREFIX = "GATEWAY_"
LOOPBACK_NETWORKS = ("127.0.0.0/8", "::1/128")
CONFIG_ENV = "GATEWAY_CONFIG"
DOCUMENTED_DATA_DIR = "~/.local/share/residency-gateway"
DOCUMENTED_CONFIG_FILE = "~/.config/residency-gateway/gateway.env"


def default_data_dir() -> Path:
    """`$XDG_DATA_HOME/residency-gateway` (`~/.local/share/residency-gateway`): one place
    that the gateway and its CLI find wherever they run."""
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "residency-gateway"


def config_file() -> Path:
    """The settings file: `GATEWAY_CONFIG`, else `$XDG_CONFIG_HOME/residency-gateway/gateway.env`
    (`~/.config/…`). Lines `GATEWAY_X=value`, read below the environment; it need not exist."""
    explicit = os.environ.get(CONFIG_ENV)
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config"
    return Path(base) / "residency-gateway" / "gateway.env"


def setting_origin(name: str) -> str:
    """Where setting `name` comes from: its environment variable, the config file, or the
    default (for messages that must say which database or directory was used, and why)."""
    variable = ENV_PREFIX + name.upper()
    if os.environ.get(variable):
        return variable
    path = config_file()
    if path.is_file() and dotenv_values(path).get(variable):
        return f"{variable} in {path}"
    return "the default"


def _split_list(value: object) -> object:
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value


class Settings(BaseSettings):
    """Gateway settings; each field is read from `GATEWAY_<FIELD>` unless noted."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="ignore", env_file=None)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the config file (`config_file()`)."""
        config = DotEnvSettingsSource(settings_cls, env_file=config_file())
        return init_settings, env_settings, config, file_secret_settings

    host: str = Field("127.0.0.1", description="listen address")
    port: int = Field(8080, ge=1, le=65535, description="listen port")
    workers: int = Field(1, ge=1, le=64, description="worker processes (one per core)")
    data_plane: Literal["python", "envoy"] = Field(
        "python",
        description="who carries inference requests: python (the gateway's own data path) or "
        "envoy (a supervised Envoy on host:port deciding with pushed tables; the Python app "
        "moves to control_port behind it, workers sets Envoy's threads)",
    )
    control_port: int = Field(
        0,
        ge=0,
        le=65535,
        description="with data_plane=envoy: loopback port of the Python app (admin, audit, "
        "console, metrics, health) that Envoy forwards every non-inference path to; "
        "0: a free port chosen at start (only Envoy needs to know it)",
    )
    config: Path | None = Field(
        None,
        description="settings file of GATEWAY_*=value lines, read below the environment; "
        f"default: {DOCUMENTED_CONFIG_FILE} (if it exists)",
    )
    data_dir: Path = Field(
        default_factory=default_data_dir,
        description="SQLite file, spool, keys ($XDG_DATA_HOME/residency-gateway if set)",
        json_schema_extra={"documented_default": DOCUMENTED_DATA_DIR},
    )
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default: a SQLite file in data_dir"
    )
    geoip_database: Path | None = Field(
        None, description="MaxMind GeoIP2/GeoLite2 or DB-IP file; default: the bundled one"
    )
    trusted_proxies: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="CIDRs whose X-Forwarded-For is believed (comma separated)",
    )
    max_body_bytes: int = Field(
        4 * 1024 * 1024, ge=1024, description="request body limit (413 above it)"
    )
    max_request_header_bytes: int = Field(
        60 * 1024,
        ge=1024,
        description="request line plus headers limit in bytes (431 and close above it)",
    )
    request_header_timeout: float = Field(
        10.0,
        gt=0,
        description="seconds a connection may take to send a request's whole header block "
        "(408 and close after it; a new connection sending nothing is closed)",
    )
    request_body_idle_timeout: float = Field(
        30.0, gt=0, description="max seconds between request body chunks (408 and close after it)"
    )
    max_connections: int = Field(
        10_000,
        ge=1,
        description="open client connections per worker; beyond, a new connection gets 503 and is "
        "closed (lowered to fit the open-files limit, which is raised to its hard limit)",
    )
    upstream_connect_timeout: float = Field(
        2.0, gt=0, description="seconds to connect to a region before failing over"
    )
    upstream_first_byte_timeout: float = Field(
        60.0, gt=0, description="seconds to wait for response headers before failing over"
    )
    upstream_read_timeout: float = Field(120.0, gt=0, description="max gap between body chunks")
    upstream_client: Literal["h1", "aiohttp"] = Field(
        "h1", description="upstream HTTP client: h1 (lean, httptools) or aiohttp"
    )
    upstream_max_connections: int = Field(
        1024,
        ge=1,
        description="most upstream connections open at once, in all (both clients); a request "
        "waits for one within upstream_connect_timeout, then fails over",
    )
    upstream_max_connections_per_region: int = Field(
        512,
        ge=1,
        description="most upstream connections open to one region (so a hung region cannot "
        "hold them all)",
    )
    max_attempts: int = Field(
        3, ge=1, le=10, description="regions tried per request, all within the allowed set"
    )
    snapshot_refresh_interval: float = Field(
        1.0,
        gt=0,
        description="seconds between policy version checks (SQLite: the reload path; "
        "PostgreSQL: the safety net behind LISTEN/NOTIFY)",
    )
    snapshot_cache: bool = Field(
        True,
        description="keep the last policy snapshot read from the database, signed, in "
        "data_dir, and route from it when started while the database is down; false: not "
        "ready until the database answers",
    )
    change_feed: bool = Field(
        True, description="on PostgreSQL, LISTEN for policy changes and reload at once"
    )
    change_feed_reconnect_max: float = Field(
        5.0, gt=0, description="max seconds between reconnects of the policy change listener"
    )
    change_feed_ping_interval: float = Field(
        10.0, gt=0, description="seconds of quiet after which the listener probes its connection"
    )
    health_interval: float = Field(2.0, gt=0, description="seconds between region probes")
    health_timeout: float = Field(1.0, gt=0, description="probe timeout in seconds")
    health_path: str = Field("/healthz", description="path probed on every region")
    health_fall: int = Field(2, ge=1, description="failed probes in a row to mark down")
    health_rise: int = Field(2, ge=1, description="good probes in a row to mark up")
    simulate_regions: bool = Field(
        False, description="start a region simulator for every loopback region in the catalog"
    )
    seed_demo_catalog: bool = Field(
        True, description="seed the demo regions and tenants into an empty database"
    )
    seed_catalog: Path | None = Field(
        None, description="catalog YAML (regions, tenants) to seed an empty database instead"
    )
    audit_hmac_key: SecretStr | None = Field(
        None, description="key for client-IP HMACs; default: a random key kept in data_dir"
    )
    routing_log_batch_size: int = Field(
        512,
        ge=1,
        description="most routing records per database transaction (one is written when this "
        "many are spooled, else every routing_log_linger_ms)",
    )
    routing_log_linger_ms: float = Field(
        50.0,
        gt=0,
        description="longest wait before spooled routing records are stored in the database "
        "(they are durable in the spool meanwhile); longer: fewer, larger transactions",
    )
    routing_log_idle_backlog: int = Field(
        2048,
        ge=0,
        description="store routing records in the database from a thread at idle CPU priority "
        "(Linux SCHED_IDLE: it runs when request handling leaves the core free) while fewer "
        "than this many wait, at normal priority beyond; 0: always at normal priority",
    )
    audit_durability: Literal["write-ahead", "write-ahead-lazy", "strict", "relaxed"] = Field(
        "write-ahead",
        description="write-ahead: a request leaves for a region only once its decision is "
        "fsynced, and its response completes only once its outcome is too; write-ahead-lazy: "
        "the decision likewise, the outcome fsynced with the next group commit (within 5 ms, "
        "not waited for); strict: no decision before forwarding, a response completes only "
        "once its record is fsynced; relaxed: nothing waits (records are spooled at once)",
    )
    audit_spool_dir: Path | None = Field(
        None, description="local spool of routing records; default: data_dir/audit-spool"
    )
    audit_spool_inline_flush_ms: float = Field(
        0.5,
        ge=0,
        description="fsync a quiet event-loop turn's routing record on the loop itself while a "
        "spool flush takes less than this on average (else the writer thread does every "
        "flush); 0: always the thread",
    )
    audit_signing_key: Path | None = Field(
        None,
        description="Ed25519 PEM key signing audit checkpoints and exports; "
        "default: data_dir/audit-signing-key.pem, generated on first start",
    )
    audit_trusted_keys: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="public keys (PEM files, comma separated) of other signers, e.g. replicas",
    )
    audit_checkpoint_records: int = Field(1000, ge=1, description="sign the chain every N records")
    audit_checkpoint_seconds: float = Field(60.0, gt=0, description="... or every T seconds")
    audit_retention_days: int | None = Field(
        None, ge=1, description="remove audit entries older than this; default: keep all"
    )
    audit_retention_interval: float = Field(3600.0, gt=0, description="seconds between prunes")
    auth_failure_limit: int = Field(
        20,
        ge=0,
        description="failed API key or operator token attempts from one client address within "
        "auth_failure_window before that address gets 429 for auth_failure_window seconds; "
        "0: no throttling",
    )
    auth_failure_window: float = Field(
        60.0, gt=0, description="seconds over which failed authentication attempts are counted"
    )
    auth_throttle_max_addresses: int = Field(
        100_000, ge=1, description="client addresses whose failures are remembered (LRU bound)"
    )
    envoy_access_log: Path | None = Field(
        None,
        description="file the Envoy data plane writes one JSON line per request to, shipped "
        "into the routing log; default: data_dir/envoy-access.log",
    )
    envoy_access_log_flush_ms: int = Field(
        1000,
        ge=1,
        le=60000,
        description="milliseconds Envoy buffers access-log lines before writing them (Envoy "
        "never fsyncs them): a kill -9 of Envoy loses at most this long's records; Envoy's own "
        "default is 10000",
    )
    envoy_otlp_endpoint: str = Field(
        "",
        description="OTLP/gRPC collector (http://host:port) the Envoy data plane exports its "
        "spans to, as service `<OTEL_SERVICE_NAME>-envoy`; empty: Envoy does not trace",
    )
    admin_url: str = Field(
        "http://127.0.0.1:8080", description="gateway base URL the `gateway regions` CLI talks to"
    )
    admin_token: SecretStr | None = Field(
        None, description="operator token (admin or operator role) the `gateway regions` CLI sends"
    )
    otel_traces_exporter: Literal["otlp", "console", "none"] = Field(
        "none",
        description="otlp, console or none (OTEL_EXPORTER_OTLP_* configure otlp)",
        validation_alias=AliasChoices("OTEL_TRACES_EXPORTER", "GATEWAY_OTEL_TRACES_EXPORTER"),
    )
    otel_service_name: str = Field(
        "residency-gateway",
        description="service name on spans and metrics",
        validation_alias=AliasChoices("OTEL_SERVICE_NAME", "GATEWAY_OTEL_SERVICE_NAME"),
    )

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _parse_networks(cls, value: object) -> object:
        return _split_list(value)

    @field_validator("trusted_proxies")
    @classmethod
    def _check_networks(cls, value: list[str]) -> list[str]:
        # Checked here, not first in a worker's app factory, so every entry point refuses it
        # with one line naming the variable (host bits may be set, as TrustedProxies allows).
        for entry in value:
            try:
                ipaddress.ip_network(entry, strict=False)
            except ValueError:
                raise ValueError(f"{entry!r} is not an IP address or CIDR network") from None
        return value

    @field_validator("audit_trusted_keys", mode="before")
    @classmethod
    def _parse_key_files(cls, value: object) -> object:
        return _split_list(value)

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to `<data_dir>/gateway.db` (SQLite)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'gateway.db').resolve()}"

    @property
    def resolved_audit_spool_dir(self) -> Path:
        """The routing-record spool directory (`<data_dir>/audit-spool` by default)."""
        return self.audit_spool_dir or self.data_dir / "audit-spool"

    @property
    def resolved_envoy_access_log(self) -> Path:
        """The Envoy access log (`<data_dir>/envoy-access.log` by default)."""
        return self.envoy_access_log or self.data_dir / "envoy-access.log"

    @property
    def resolved_audit_signing_key(self) -> Path:
        """The audit signing key file (`<data_dir>/audit-signing-key.pem` by default)."""
        return self.audit_signing_key or self.data_dir / "audit-signing-key.pem"


def setting_error(exc: ValidationError) -> str:
    """One line naming the environment variable of the first invalid setting and the problem."""
    first = exc.errors()[0]
    field = str(first["loc"][0]) if first["loc"] else ""
    message = str(first["msg"]).removeprefix("Value error, ")
    given: Any = first.get("input")
    shown = repr(given)
    if field not in _NOT_ECHOED and isinstance(given, str | int | float) and len(shown) < 80:
        message += "" if shown in message else f" (got {shown})"
    return f"{_variable(field)}: {message}"


_NOT_ECHOED = frozenset({"database_url", "admin_token", "audit_hmac_key"})
"""Settings that may hold a secret: their value is never repeated in an error."""


def _variable(field: str) -> str:
    info = Settings.model_fields.get(field)
    if info is None:  # an alias (OTEL_*) is reported under its own name
        return field.upper()
    alias = info.validation_alias
    if isinstance(alias, AliasChoices):
        return " or ".join(str(choice) for choice in alias.choices)
    return f"{ENV_PREFIX}{field.upper()}"
