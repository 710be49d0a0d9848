"""Hostile HTTP against a real gateway process: oversized and slow headers, stalled bodies,
malformed requests and idle-connection floods each get a JSON error and a closed connection,
and leave the gateway serving with every region healthy."""

from __future__ import annotations

import contextlib
import selectors
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from tests.integration.conftest import GatewayProcess, readiness
from tests.integration.raw_http import (
    HANG_BOUND,
    RawResponse,
    assert_closed_with_error,
    chat_head,
    connect,
    exchange,
    post_chat,
    read_response,
    request_with_header_block,
    stalled_body_answer,
    trickled_header_answer,
)

pytestmark = pytest.mark.integration

HEADER_LIMIT = 60 * 1024  # the default GATEWAY_MAX_REQUEST_HEADER_BYTES
TIMEOUT = 1.0  # header and body idle timeouts of `limits_gateway`, in seconds
CONNECTION_LIMIT = 50


@pytest.fixture(scope="module")
def limits_gateway(
    catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway with 1 s header and body idle timeouts (and the default header size limit)."""
    overrides = {
        "GATEWAY_REQUEST_HEADER_TIMEOUT": str(TIMEOUT),
        "GATEWAY_REQUEST_BODY_IDLE_TIMEOUT": str(TIMEOUT),
    }
    with GatewayProcess(catalog, tmp_path_factory.mktemp("limits-gw"), overrides) as running:
        yield running


@pytest.fixture(scope="module")
def flood_gateway(
    catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway holding at most CONNECTION_LIMIT client connections."""
    overrides = {"GATEWAY_MAX_CONNECTIONS": str(CONNECTION_LIMIT)}
    with GatewayProcess(catalog, tmp_path_factory.mktemp("flood-gw"), overrides) as running:
        yield running


def assert_serving(gateway: GatewayProcess) -> None:
    """A real request is served and every region is healthy (on a connection of its own)."""
    with httpx.Client(timeout=HANG_BOUND, trust_env=False) as client:
        response = post_chat(gateway, client)
        assert response.status_code == 200, response.text
        report = client.get(f"{gateway.base_url}/readyz").json()
    assert report["regions_healthy"] == report["regions_total"], report
    output = gateway.output()
    assert "is now unhealthy" not in output
    assert "Traceback" not in output


# -- header size --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [HEADER_LIMIT + 1, 1024 * 1024], ids=["one-byte-over", "one-mebibyte"]
)
def test_header_block_over_the_limit_is_431_and_closed(
    limits_gateway: GatewayProcess, size: int
) -> None:
    at_limit = request_with_header_block(HEADER_LIMIT)
    assert len(at_limit) == HEADER_LIMIT
    served = exchange(limits_gateway, at_limit)
    assert served.status == 200, served.body
    assert orjson.loads(served.body) == {"status": "ok"}

    response = exchange(limits_gateway, request_with_header_block(size))
    assert response.status == 431, response.body
    assert response.closed
    assert response.headers["connection"] == "close"
    error = response.error()
    assert error["code"] == "request_headers_too_large"
    assert f"limit of {HEADER_LIMIT} bytes" in error["message"]
    assert_serving(limits_gateway)


def test_one_huge_header_line_is_431_without_reading_it_whole(
    limits_gateway: GatewayProcess,
) -> None:
    """8 MiB of a single header value: refused after the limit, the rest is never parsed."""
    with connect(limits_gateway) as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: gateway\r\nX-Huge: ")
        with contextlib.suppress(OSError):  # the gateway may close before all of it is sent
            for _ in range(128):
                sock.sendall(b"h" * 65536)
        response = read_response(sock, until_closed=True)
    assert response.status == 431
    assert response.error()["code"] == "request_headers_too_large"
    assert_serving(limits_gateway)


# -- slow headers and bodies --------------------------------------------------------------


def test_trickled_header_gets_408_and_is_closed(limits_gateway: GatewayProcess) -> None:
    response = trickled_header_answer(limits_gateway, b"GET /healthz HTTP/1.1")
    assert_closed_with_error(
        response, 408, "request_timeout", "request header block not received within 1 seconds"
    )
    assert_serving(limits_gateway)


def test_connection_sending_nothing_is_closed(limits_gateway: GatewayProcess) -> None:
    with connect(limits_gateway) as sock:
        response = read_response(sock, until_closed=True)
    assert response.closed
    assert response.status == 0  # nothing was asked, nothing is answered
    assert_serving(limits_gateway)


def test_stalled_body_gets_408_and_is_closed(limits_gateway: GatewayProcess) -> None:
    response = stalled_body_answer(limits_gateway)
    assert_closed_with_error(
        response, 408, "request_timeout", "request body stalled: no data for 1 seconds"
    )
    assert_serving(limits_gateway)


# -- malformed HTTP -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("request_bytes", "reason"),
    [
        pytest.param(b"GARBAGE\r\n\r\n", "Invalid method", id="bad-request-line"),
        pytest.param(b"GET / HTTP/9.9\r\n\r\n", "Invalid HTTP version", id="bad-version"),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nHo st: a\r\n\r\n", "Invalid header token", id="bad-name"
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\nX: a\x00b\r\n\r\n", "Invalid header value", id="nul-value"
        ),
        pytest.param(
            b"GET /healthz HTTP/1.1\r\n Folded: x\r\n\r\n", "Unexpected space", id="folded"
        ),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "Transfer-Encoding can't be present with Content-Length",
            id="smuggling-cl-te",
        ),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Content-Length: 4\r\n\r\nabcd",
            "Duplicate Content-Length",
            id="duplicate-content-length",
        ),
        pytest.param(
            chat_head(0).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked") + b"zz\r\n",
            "Invalid character in chunk size",
            id="bad-chunk-size",
        ),
    ],
)  # fmt: skip
def test_malformed_http_is_a_json_400_and_closed(
    limits_gateway: GatewayProcess, request_bytes: bytes, reason: str
) -> None:
    response = exchange(limits_gateway, request_bytes)
    assert response.status == 400, response.body
    assert response.closed
    error = response.error()
    assert error["code"] == "invalid_http_request"
    assert error["type"] == "invalid_request_error"
    assert error["message"].startswith("malformed HTTP request: ")
    assert reason in error["message"]
    assert_serving(limits_gateway)


# -- connection floods --------------------------------------------------------------------


def test_idle_connection_flood_is_refused_cleanly(flood_gateway: GatewayProcess) -> None:
    held: list[socket.socket] = []
    try:
        held += [connect(flood_gateway) for _ in range(CONNECTION_LIMIT - 10)]
        assert_serving(flood_gateway)  # within the limit, requests are served
        flood = [connect(flood_gateway) for _ in range(200 - len(held))]
        held += flood
        refused = _refused(flood, expected=len(flood) - 10)
        assert len(refused) >= len(flood) - 10, f"{len(refused)} of {len(flood)} refused"
        for response in refused:
            assert response.status == 503
            assert response.headers["retry-after"] == "1"
            assert response.error()["code"] == "too_many_connections"
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + HANG_BOUND  # the gateway sees the closes a little later
    while True:
        try:
            assert_serving(flood_gateway)
            break
        except (AssertionError, httpx.HTTPError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    assert readiness(flood_gateway)["ready"]


def _refused(socks: list[socket.socket], expected: int) -> list[RawResponse]:
    """Read the answers of the connections the gateway refuses (until `expected` or a bound)."""
    answers: list[RawResponse] = []
    with selectors.DefaultSelector() as selector:
        for sock in socks:
            selector.register(sock, selectors.EVENT_READ)
        deadline = time.monotonic() + HANG_BOUND
        while len(answers) < expected and time.monotonic() < deadline:
            for key, _ in selector.select(timeout=0.5):
                selector.unregister(key.fileobj)
                assert isinstance(key.fileobj, socket.socket)
                answers.append(read_response(key.fileobj, until_closed=True))
    return answers
