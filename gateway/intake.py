"""Turn an incoming request into routing facts, rejecting bad input with precise messages."""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson

from compliance.jurisdictions import DataClass, parse_data_class
from compliance.model import Tenant
from compliance.snapshot import PolicySnapshot
from gateway.asgi import Scope, header, header_joined
from gateway.client_address import TrustedProxies, resolve_client_ip
from gateway.routing.facts import RequestFacts
from regions.geo import is_country_code
from regions.geoip import GeoIpLocator

if TYPE_CHECKING:
    from gateway.auth_throttle import AuthGuard

SUBJECT_HEADER = b"x-data-subject-country"
DATA_CLASS_HEADER = b"x-data-class"


class RequestRejected(Exception):
    """Bad input: answered with `status` and an OpenAI-style error naming the problem.

    `headers` go out with the answer (e.g. Retry-After on a 429).
    """

    def __init__(
        self,
        status: int,
        message: str,
        code: str,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.param = param
        self.headers: Mapping[str, str] = headers or {}


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


def parse_inference_body(body: bytes) -> InferenceBody:
    """Read `model` and `stream` from a JSON body; the body itself is forwarded unchanged."""
    if not body:
        raise RequestRejected(400, "request body is empty; expected a JSON object", "invalid_json")
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise RequestRejected(
            400, f"request body is not valid JSON: {exc}", "invalid_json"
        ) from None
    if not isinstance(document, dict):
        raise RequestRejected(400, "request body must be a JSON object", "invalid_json")
    model = document.get("model")
    if model is None:
        raise RequestRejected(400, "missing required field 'model'", "missing_model", "model")
    if not isinstance(model, str) or not model:
        raise RequestRejected(400, "'model' must be a non-empty string", "invalid_model", "model")
    stream = document.get("stream", False)
    if not isinstance(stream, bool):
        raise RequestRejected(400, "'stream' must be true or false", "invalid_stream", "stream")
    return InferenceBody(model, stream)


def bearer_token(scope: Scope) -> str | None:
    """The API key from `Authorization: Bearer <key>`, or None."""
    value = header(scope, b"authorization")
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
        raise RequestRejected(
            401, "missing API key: send 'Authorization: Bearer <key>'", "missing_api_key"
        )
    tenant = policy.tenant_for_key(token)
    if tenant is None:
        if guard is not None:
            guard.failed(scope, token)
        raise RequestRejected(401, "invalid API key", "invalid_api_key")
    return tenant


def parse_subject_country(value: str | None) -> str | None:
    """Validate X-Data-Subject-Country (ISO 3166-1 alpha-2)."""
    if value is None:
        return None
    code = value.strip().upper()
    if not is_country_code(code):
        raise RequestRejected(
            400,
            f"X-Data-Subject-Country: {value!r} is not an ISO 3166-1 alpha-2 country code",
            "invalid_subject_country",
            "X-Data-Subject-Country",
        )
    return code


def parse_data_class_header(value: str | None) -> DataClass:
    """Validate X-Data-Class; `personal` when absent."""
    if value is None:
        return DataClass.PERSONAL
    try:
        return parse_data_class(value)
    except ValueError as exc:
        raise RequestRejected(
            400, f"X-Data-Class: {exc}", "invalid_data_class", "X-Data-Class"
        ) from None


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
        """Facts for routing; raises RequestRejected for a bad routing header."""
        subject = parse_subject_country(header(scope, SUBJECT_HEADER))
        data_class = parse_data_class_header(header(scope, DATA_CLASS_HEADER))
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
