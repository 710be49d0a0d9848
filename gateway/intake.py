"""Turn an incoming request into routing facts, rejecting bad input with precise messages."""

from __future__ import annotations

import ipaddress
import itertools
import os
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from compliance.jurisdictions import DataClass
from compliance.model import Tenant
from compliance.snapshot import PolicySnapshot
from gateway.errors import ApiError
from gateway.http.asgi import Scope, header_joined
from gateway.http.client_address import TrustedProxies, resolve_client_ip
from gateway.routing.facts import RequestFacts
from regions.geo import is_country_code
from regions.geoip import GeoIpLocator

if TYPE_CHECKING:
    from gateway.auth_throttle import AuthGuard

SUBJECT_HEADER = b"x-data-subject-country"
DATA_CLASS_HEADER = b"x-data-class"

MAX_MODEL_CHARS = 256
"""Longest model name accepted (400 above it): the name is copied into every routing record."""
MAX_IP_CHARS = 64
"""Longest `ip` accepted by the explain endpoint (the longest IPv6 text form is 45)."""
_SHOWN_CHARS = 64
"""At most this much of a bad value is echoed in an error message."""

# Validated on the raw (latin-1 decoded) value: no Unicode case mapping or whitespace rules
# may turn a byte like 0xDF ("ß" -> "SS") or U+0085 into a valid value.
_COUNTRY_CODE = re.compile(r"[A-Za-z]{2}")
_DATA_CLASS = re.compile(r"[A-Za-z_]+")
_HTTP_SPACE = " \t"


_PROCESS_TAG = os.urandom(2).hex()
_sequence = itertools.count()


def new_request_id() -> str:
    """A time-ordered id, unique across processes (24 hex characters).

    Nanosecond clock, a random per-process tag, and a per-process sequence number.
    """
    return f"{time.time_ns():016x}{_PROCESS_TAG}{next(_sequence) & 0xFFFF:04x}"


@dataclass(frozen=True, slots=True)
class InferenceBody:
    """The only parts of the request body routing needs."""

    model: str
    stream: bool


@dataclass(frozen=True, slots=True)
class ExplainQuery:
    """The body of `POST /v1/residency/explain`: both fields optional."""

    ip: str | None = None
    model: str | None = None


def _shown(value: str) -> str:
    """`value` quoted for an error message, cut short if long."""
    if len(value) <= _SHOWN_CHARS:
        return repr(value)
    return f"{value[:_SHOWN_CHARS]!r}... ({len(value)} characters)"


def _json_object(body: bytes) -> dict[str, Any]:
    if not body:
        raise ApiError(400, "request body is empty; expected a JSON object", "invalid_json")
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"request body is not valid JSON: {exc}", "invalid_json") from None
    if not isinstance(document, dict):
        raise ApiError(400, "request body must be a JSON object", "invalid_json")
    return document


def check_model(model: object) -> str:
    """A model name: a non-empty string of at most MAX_MODEL_CHARS characters; 400 otherwise."""
    if not isinstance(model, str) or not model:
        raise ApiError(400, "'model' must be a non-empty string", "invalid_model", "model")
    if len(model) > MAX_MODEL_CHARS:
        raise ApiError(
            400,
            f"'model' is {len(model)} characters long; the limit is {MAX_MODEL_CHARS}",
            "model_too_long",
            "model",
        )
    return model


def parse_inference_body(body: bytes) -> InferenceBody:
    """Read `model` and `stream` from a JSON body; the body itself is forwarded unchanged."""
    document = _json_object(body)
    model = document.get("model")
    if model is None:
        raise ApiError(400, "missing required field 'model'", "missing_model", "model")
    model = check_model(model)
    stream = document.get("stream", False)
    if not isinstance(stream, bool):
        raise ApiError(400, "'stream' must be true or false", "invalid_stream", "stream")
    return InferenceBody(model, stream)


def parse_explain_body(body: bytes) -> ExplainQuery:
    """Read the explain endpoint's optional `ip` and `model`; an empty body asks for defaults."""
    if not body.strip() or body.strip() == b"null":
        return ExplainQuery()
    document = _json_object(body)
    unknown = sorted(set(document) - {"ip", "model"})
    if unknown:
        raise ApiError(
            400,
            f"{_shown(unknown[0])}: unknown field; expected only 'ip' and 'model'",
            "unknown_field",
            unknown[0][:_SHOWN_CHARS],
        )
    model = document.get("model")
    ip = document.get("ip")
    if ip is None:
        return ExplainQuery(None, None if model is None else check_model(model))
    if not isinstance(ip, str):
        raise ApiError(400, "'ip' must be a string", "invalid_ip", "ip")
    if len(ip) > MAX_IP_CHARS:
        raise ApiError(
            400,
            f"'ip' is {len(ip)} characters long; the limit is {MAX_IP_CHARS}",
            "ip_too_long",
            "ip",
        )
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        raise ApiError(
            400, f"'ip': {_shown(ip)} is not an IP address", "invalid_ip", "ip"
        ) from None
    return ExplainQuery(str(address), None if model is None else check_model(model))


def single_header(scope: Scope, name: bytes, display: str) -> str | None:
    """The one value of header `name`, or None; 400 if it is sent twice or holds a list.

    A repeated routing header must not be resolved by picking one of its values: whichever
    one is picked, a client or an intermediary meant the other.
    """
    values = [value for key, value in scope["headers"] if key == name]
    if not values:
        return None
    if len(values) > 1:
        raise ApiError(
            400,
            f"{display}: sent {len(values)} times; send it once, with one value",
            "repeated_header",
            display,
        )
    return str(values[0].decode("latin-1"))


def _single_value(scope: Scope, name: bytes, display: str) -> str | None:
    value = single_header(scope, name, display)
    if value is not None and "," in value:
        raise ApiError(
            400,
            f"{display}: {_shown(value)} is a list; send exactly one value",
            "repeated_header",
            display,
        )
    return value


def bearer_token(scope: Scope) -> str | None:
    """The API key from `Authorization: Bearer <key>`, or None."""
    value = single_header(scope, b"authorization", "Authorization")
    if value is None:
        return None
    scheme, _, token = value.partition(" ")
    token = token.strip()
    return token if scheme.lower() == "bearer" and token else None


def authenticate(scope: Scope, policy: PolicySnapshot, guard: AuthGuard | None = None) -> Tenant:
    """The tenant owning the request's API key; 401 otherwise.

    With a `guard`, a throttled address gets 429 before its key is looked at, and a wrong key
    counts against its address.
    """
    if guard is not None:
        guard.check(scope)
    token = bearer_token(scope)
    if token is None:
        raise ApiError(
            401, "missing API key: send 'Authorization: Bearer <key>'", "missing_api_key"
        )
    tenant = policy.tenant_for_key(token)
    if tenant is None:
        if guard is not None:
            guard.failed(scope, token)
        raise ApiError(401, "invalid API key", "invalid_api_key")
    return tenant


def parse_subject_country(value: str | None) -> str | None:
    """Validate X-Data-Subject-Country (ISO 3166-1 alpha-2, ASCII letters, any case)."""
    if value is None:
        return None
    stripped = value.strip(_HTTP_SPACE)
    code = stripped.upper() if _COUNTRY_CODE.fullmatch(stripped) else ""
    if not is_country_code(code):
        raise ApiError(
            400,
            f"X-Data-Subject-Country: {_shown(value)} is not an ISO 3166-1 alpha-2 country code",
            "invalid_subject_country",
            "X-Data-Subject-Country",
        )
    return code


def parse_data_class_header(value: str | None) -> DataClass:
    """Validate X-Data-Class (one ASCII class name, any case); `personal` when absent."""
    if value is None:
        return DataClass.PERSONAL
    stripped = value.strip(_HTTP_SPACE)
    if _DATA_CLASS.fullmatch(stripped):
        try:
            return DataClass(stripped.lower())
        except ValueError:
            pass
    valid = ", ".join(c.value for c in DataClass)
    raise ApiError(
        400,
        f"X-Data-Class: unknown data class {_shown(value)}; expected one of: {valid}",
        "invalid_data_class",
        "X-Data-Class",
    )


class FactsBuilder:
    """Builds RequestFacts at the edge: client address, GeoIP, declared headers."""

    def __init__(self, locator: GeoIpLocator, trusted: TrustedProxies) -> None:
        self._locator = locator
        self._trusted = trusted

    def client_ip(self, scope: Scope) -> str | None:
        """The client's address, honouring X-Forwarded-For only from trusted proxies."""
        client = scope.get("client")
        if not client:
            return None
        peer = str(client[0])
        return resolve_client_ip(peer, header_joined(scope, b"x-forwarded-for"), self._trusted)

    def build(
        self,
        scope: Scope,
        tenant: Tenant | None,
        model: str | None,
        request_id: str,
        client_ip: str | None = None,
    ) -> RequestFacts:
        """Facts for routing; raises ApiError for a bad routing header."""
        subject = parse_subject_country(
            _single_value(scope, SUBJECT_HEADER, "X-Data-Subject-Country")
        )
        data_class = parse_data_class_header(
            _single_value(scope, DATA_CLASS_HEADER, "X-Data-Class")
        )
        ip = client_ip if client_ip is not None else self.client_ip(scope)
        location = self._locator.locate(ip) if ip else None
        coordinates = None
        if (
            location is not None
            and location.latitude is not None
            and location.longitude is not None
        ):
            coordinates = (location.latitude, location.longitude)
        return RequestFacts(
            request_id=request_id,
            at=datetime.now(UTC),
            tenant_id=tenant.id if tenant else None,
            client_ip=ip,
            client_country=location.country if location else None,
            client_coordinates=coordinates,
            subject_country=subject,
            data_class=data_class,
            model=model,
        )
