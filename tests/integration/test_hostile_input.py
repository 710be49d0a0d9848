"""Hostile request input against a real gateway: repeated routing headers, oversized and
unauthenticated bodies, huge fields, and non-ASCII values that Unicode would normalise."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import DEMO_KEY, HTTP, IP_US, GatewayProcess, sim_requests

pytestmark = pytest.mark.integration

MAX_BODY = 2 * 1024 * 1024
MAX_MODEL_CHARS = 256  # the documented limit (gateway.intake.MAX_MODEL_CHARS)
KEY = f"Bearer {DEMO_KEY}"
CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
EXPLAIN_BODY = {"ip": IP_US, "model": "gpt-4o-mini"}
Headers = list[tuple[str, str | bytes]]


@pytest.fixture(scope="module")
def hostile_gateway(
    catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway accepting request bodies of at most MAX_BODY bytes."""
    overrides = {"GATEWAY_MAX_BODY_BYTES": str(MAX_BODY)}
    with GatewayProcess(catalog, tmp_path_factory.mktemp("hostile-gw"), overrides) as running:
        yield running


def _send(gw: GatewayProcess, endpoint: str, headers: Headers) -> httpx.Response:
    """One request to `endpoint` ("chat", "explain" or "models") from a US client."""
    base: Headers = [("X-Forwarded-For", IP_US), ("Authorization", KEY)]
    if endpoint == "models":
        return HTTP.get(f"{gw.base_url}/v1/models", headers=[*base, *headers])
    path, body = {
        "chat": ("/v1/chat/completions", CHAT_BODY),
        "explain": ("/v1/residency/explain", EXPLAIN_BODY),
    }[endpoint]
    return HTTP.post(
        f"{gw.base_url}{path}",
        content=orjson.dumps(body),
        headers=[*base, ("Content-Type", "application/json"), *headers],
    )


def _error(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text[:500]
    assert response.headers["content-type"].startswith("application/json")
    error: dict[str, Any] = response.json()["error"]
    assert error["code"] == code, error
    assert "Traceback" not in response.text
    return error


def _all_requests(fleet: SimulatorFleet) -> dict[str, int]:
    return {spec.region_id: sim_requests(fleet, spec.region_id) for spec in fleet.specs}


ENDPOINTS = ("chat", "explain", "models")
REPEATS = {
    # US client; the first value would allow us-virginia, the second forbids it.
    "subject-twice": [
        ("X-Data-Class", "payment"),
        ("X-Data-Subject-Country", "US"),
        ("X-Data-Subject-Country", "IN"),
    ],
    "class-twice": [("X-Data-Class", "public"), ("X-Data-Class", "payment")],
    "subject-list": [("X-Data-Class", "payment"), ("X-Data-Subject-Country", "US, IN")],
    "class-list": [("X-Data-Class", "public,payment")],
}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize("case", sorted(REPEATS))
def test_repeated_routing_header_is_400_naming_it(
    hostile_gateway: GatewayProcess, fleet: SimulatorFleet, endpoint: str, case: str
) -> None:
    before = _all_requests(fleet)
    headers: Headers = list(REPEATS[case])
    named = "X-Data-Subject-Country" if case.startswith("subject") else "X-Data-Class"
    error = _error(_send(hostile_gateway, endpoint, headers), 400, "repeated_header")
    assert error["param"] == named
    assert error["message"].startswith(f"{named}: ")
    assert _all_requests(fleet) == before  # nothing was forwarded
    # Each value alone is fine: it is the repetition that is refused.
    others: Headers = [(k, v) for k, v in headers if k != named]
    values = [str(v) for k, v in headers if k == named]
    for value in (part.strip() for v in values for part in v.split(",")):
        alone = _send(hostile_gateway, endpoint, [*others, (named, value)])
        assert alone.status_code == 200, alone.text


@pytest.mark.parametrize("endpoint", ENDPOINTS)
def test_repeated_authorization_is_400(hostile_gateway: GatewayProcess, endpoint: str) -> None:
    error = _error(
        _send(hostile_gateway, endpoint, [("Authorization", "Bearer rg-other")]),
        400,
        "repeated_header",
    )
    assert error["param"] == "Authorization"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
@pytest.mark.parametrize(
    ("header", "raw", "code"),
    [
        # Byte 0xDF is 'ß' in latin-1, and 'ß'.upper() is 'SS' (South Sudan).
        pytest.param("X-Data-Subject-Country", b"\xdf", "invalid_subject_country", id="eszett"),
        # Byte 0xA0 is U+00A0 (no-break space), which str.strip() removes too.
        pytest.param("X-Data-Subject-Country", b"\xa0US", "invalid_subject_country", id="nbsp-us"),
        # Byte 0x85 is U+0085 (NEL), which str.strip() removes.
        pytest.param("X-Data-Class", b"public\x85", "invalid_data_class", id="public-nel"),
        pytest.param("X-Data-Subject-Country", b"\x85US", "invalid_subject_country", id="nel-us"),
    ],
)  # fmt: skip
def test_non_ascii_routing_header_is_400(
    hostile_gateway: GatewayProcess, endpoint: str, header: str, raw: bytes, code: str
) -> None:
    headers: Headers = [("X-Data-Class", "payment"), (header, raw)]
    if header == "X-Data-Class":
        headers = [(header, raw)]
    error = _error(_send(hostile_gateway, endpoint, headers), 400, code)
    assert error["param"] == header


# -- bodies and fields -----------------------------------------------------------------------


def _status_line(port: int, request: bytes, timeout: float = 10.0) -> str:
    """Send raw bytes and return the response's status line; the timeout bounds a hang."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(request)
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(65536)
            if not chunk:
                break
            received += chunk
    return received.split(b"\r\n", 1)[0].decode("latin-1")


def _head(path: str, framing: str, authorization: str | None) -> bytes:
    lines = [
        f"POST {path} HTTP/1.1",
        "Host: 127.0.0.1",
        "Content-Type: application/json",
        framing,
        *([f"Authorization: {authorization}"] if authorization else []),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


HUGE = 100 * 1024 * 1024


@pytest.mark.parametrize("path", ["/v1/residency/explain", "/v1/chat/completions"])
@pytest.mark.parametrize(
    ("framing", "first_bytes"),
    [
        (f"Content-Length: {HUGE}", b'{"model": "' + b"x" * 4096),
        ("Transfer-Encoding: chunked", b'1000\r\n{"model": "' + b"x" * 4085 + b"\r\n"),
    ],
    ids=["content-length", "chunked"],
)
def test_unauthenticated_huge_body_is_401_before_it_is_read(
    hostile_gateway: GatewayProcess, path: str, framing: str, first_bytes: bytes
) -> None:
    """Only the first 4 KiB of a 100 MiB body are sent: the answer must not wait for more."""
    request = _head(path, framing, None) + first_bytes
    assert _status_line(hostile_gateway.port, request).startswith("HTTP/1.1 401 ")


def test_authenticated_declared_oversized_explain_is_413_at_once(
    hostile_gateway: GatewayProcess,
) -> None:
    request = _head("/v1/residency/explain", f"Content-Length: {HUGE}", KEY) + b"{"
    assert _status_line(hostile_gateway.port, request).startswith("HTTP/1.1 413 ")


def test_authenticated_chunked_oversized_explain_is_413(hostile_gateway: GatewayProcess) -> None:
    """Valid JSON padded with whitespace past the limit, without a Content-Length."""

    def chunks() -> Iterator[bytes]:
        yield orjson.dumps(EXPLAIN_BODY)
        for _ in range(MAX_BODY // 65536 + 1):
            yield b" " * 65536

    response = HTTP.post(
        f"{hostile_gateway.base_url}/v1/residency/explain",
        content=chunks(),
        headers={"Authorization": KEY, "Content-Type": "application/json"},
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    error = _error(response, 413, "request_too_large")
    assert f"{MAX_BODY} bytes" in error["message"]


@pytest.mark.parametrize("endpoint", ["chat", "explain"])
@pytest.mark.parametrize("length", [MAX_MODEL_CHARS + 1, 1024 * 1024])
def test_oversized_model_name_is_400(
    hostile_gateway: GatewayProcess, endpoint: str, length: int
) -> None:
    body = {**(CHAT_BODY if endpoint == "chat" else EXPLAIN_BODY), "model": "m" * length}
    path = "/v1/chat/completions" if endpoint == "chat" else "/v1/residency/explain"
    headers = {"Authorization": KEY, "X-Forwarded-For": IP_US}
    response = HTTP.post(f"{hostile_gateway.base_url}{path}", json=body, headers=headers)
    error = _error(response, 400, "model_too_long")
    assert error["param"] == "model"
    assert len(response.content) < 1024  # the name is not echoed back
    longest = {**body, "model": "m" * MAX_MODEL_CHARS}  # still accepted: an unknown model
    response = HTTP.post(f"{hostile_gateway.base_url}{path}", json=longest, headers=headers)
    if endpoint == "chat":
        _error(response, 404, "model_not_found")
    else:
        assert response.status_code == 200, response.text
        assert response.json()["facts"]["model"] == longest["model"]


def test_oversized_ip_field_is_400(hostile_gateway: GatewayProcess) -> None:
    response = HTTP.post(
        f"{hostile_gateway.base_url}/v1/residency/explain",
        json={"ip": "1" * (1024 * 1024)},
        headers={"Authorization": KEY},
    )
    error = _error(response, 400, "ip_too_long")
    assert error["param"] == "ip"
    assert len(response.content) < 1024


def test_input_refused_before_any_decision_names_no_decision(gateway: GatewayProcess) -> None:
    """A 400 at intake made no routing decision, so it names none (the header promises a record)."""
    response = HTTP.post(
        f"{gateway.base_url}/v1/chat/completions",
        content=b'{"model": ',
        headers={"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": "193.99.144.80"},
    )
    assert response.status_code == 400
    assert "x-residency-decision" not in response.headers
    assert response.headers["traceparent"]
