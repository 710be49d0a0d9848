"""Hostile HTTP against a real Envoy listener, with the Python path's limits (EdgeLimits):
oversized headers and bodies, trickled headers, stalled bodies and connection floods each get
the Python path's JSON error (or, for a flood, a closed connection) and leave Envoy serving."""

from __future__ import annotations

import contextlib
import dataclasses
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from gateway.envoy.limits import EdgeLimits
from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import reset_fleet, set_faults
from tests.integration.envoy_decision_support import (
    DecidingEnvoy,
    catalog_policy,
    deciding_envoy,
    decision_options,
)
from tests.integration.raw_http import (
    CHAT_BODY,
    HANG_BOUND,
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

LIMITS = EdgeLimits(header_timeout=1.0, body_idle_timeout=1.0, max_body_bytes=64 * 1024)
CONNECTION_LIMIT = 20


@dataclasses.dataclass
class Listener:
    """The Envoy listener's port (what the raw HTTP helpers connect to)."""

    port: int


def _envoy(
    catalog: Path, directory: Path, node: str, limits: EdgeLimits
) -> contextlib.AbstractContextManager[DecidingEnvoy]:
    options = dataclasses.replace(decision_options(), limits=limits)
    return deciding_envoy(catalog_policy(catalog), directory, node, ("eu-frankfurt",), options)


@pytest.fixture(scope="module")
def limited(
    catalog: Path, fleet: SimulatorFleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DecidingEnvoy]:
    """An Envoy with 1 s header and body idle timeouts and a 64 KiB body limit."""
    with _envoy(catalog, tmp_path_factory.mktemp("hostile-envoy"), "hostile", LIMITS) as plane:
        yield plane


@pytest.fixture(scope="module")
def capped(
    catalog: Path, fleet: SimulatorFleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DecidingEnvoy]:
    """An Envoy holding at most CONNECTION_LIMIT client connections."""
    limits = EdgeLimits(max_connections=CONNECTION_LIMIT)
    with _envoy(catalog, tmp_path_factory.mktemp("capped-envoy"), "capped", limits) as plane:
        yield plane


def listener(plane: DecidingEnvoy) -> Listener:
    return Listener(plane.options.listener_port)


def assert_serving(plane: DecidingEnvoy) -> None:
    """A real request is served (on a connection of its own)."""
    with httpx.Client(timeout=HANG_BOUND, trust_env=False) as client:
        response = post_chat(listener(plane), client)
    assert response.status_code == 200, response.text


# -- header size --------------------------------------------------------------------------


@pytest.mark.parametrize("size", [LIMITS.header_kib * 1024 + 64, 1024 * 1024])
def test_header_block_over_the_limit_is_431(limited: DecidingEnvoy, size: int) -> None:
    at_limit = request_with_header_block(LIMITS.max_header_bytes, b"POST", b"/v1/chat/completions")
    served = exchange(listener(limited), at_limit)
    assert served.status == 401, served.body  # read whole: the decision asks for a key
    response = exchange(listener(limited), request_with_header_block(size))
    assert response.status == 431, response.body
    assert response.closed
    error = response.error()
    assert error["code"] == "request_headers_too_large"
    assert f"limit of {LIMITS.max_header_bytes} bytes" in error["message"]
    assert_serving(limited)


# -- body size ----------------------------------------------------------------------------


def test_body_over_the_limit_is_413(limited: DecidingEnvoy) -> None:
    size = LIMITS.max_body_bytes + 1
    with connect(listener(limited)) as sock:
        sock.sendall(chat_head(size))
        with contextlib.suppress(OSError):  # Envoy may answer and close before all is sent
            sock.sendall(b" " * size)
        response = read_response(sock)
    assert response.status == 413, response.body
    error = response.error()
    assert error["code"] == "request_too_large"
    assert f"limit of {LIMITS.max_body_bytes} bytes" in error["message"]
    assert "x-residency-decision" not in response.headers
    assert_serving(limited)


def test_chunked_body_over_the_limit_is_413(limited: DecidingEnvoy) -> None:
    head = chat_head(0).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked")
    chunk = b"%x\r\n%s\r\n" % (16 * 1024, b" " * 16 * 1024)
    with connect(listener(limited)) as sock:
        sock.sendall(head)
        with contextlib.suppress(OSError):
            for _ in range(LIMITS.max_body_bytes // (16 * 1024) + 2):
                sock.sendall(chunk)
        response = read_response(sock)
    assert response.status == 413, response.body
    assert response.error()["code"] == "request_too_large"


# -- slow headers and bodies --------------------------------------------------------------


def test_trickled_header_gets_408_and_is_closed(limited: DecidingEnvoy) -> None:
    response = trickled_header_answer(listener(limited), b"POST /v1/chat/completions HTTP/1.1")
    assert_closed_with_error(
        response, 408, "request_timeout", "request header block not received within 1 seconds"
    )
    assert_serving(limited)


def test_connection_sending_nothing_is_closed(limited: DecidingEnvoy) -> None:
    with connect(listener(limited)) as sock:
        response = read_response(sock, until_closed=True)
    assert response.closed
    assert response.status == 0


def test_stalled_body_gets_408_and_is_closed(limited: DecidingEnvoy) -> None:
    response = stalled_body_answer(listener(limited))
    assert_closed_with_error(
        response, 408, "request_timeout", "request body stalled: no data for 1 seconds"
    )
    assert_serving(limited)


@pytest.mark.parametrize(
    "request_bytes",
    [
        pytest.param(b"GARBAGE\r\n\r\n", id="bad-request-line"),
        pytest.param(b"GET / HTTP/9.9\r\n\r\n", id="bad-version"),
        pytest.param(b"GET /v1/models HTTP/1.1\r\nHo st: a\r\n\r\n", id="bad-name"),
        pytest.param(b"GET /v1/models HTTP/1.1\r\nX: a\x00b\r\n\r\n", id="nul-value"),
        pytest.param(b"GET /v1/models HTTP/1.1\r\n Folded: x\r\n\r\n", id="folded"),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            id="smuggling-cl-te",
        ),
        pytest.param(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
            b"Content-Length: 4\r\n\r\nabcd",
            id="duplicate-content-length",
        ),
        pytest.param(
            chat_head(0).replace(b"Content-Length: 0", b"Transfer-Encoding: chunked") + b"zz\r\n",
            id="bad-chunk-size",
        ),
    ],
)
def test_malformed_http_is_a_json_400(limited: DecidingEnvoy, request_bytes: bytes) -> None:
    response = exchange(listener(limited), request_bytes)
    assert response.status == 400, response.body
    assert response.closed
    error = response.error()
    assert error["code"] == "invalid_http_request"
    assert error["message"].startswith("malformed HTTP request: ")


# -- connection floods --------------------------------------------------------------------


def _closed_without_answer(sock: socket.socket) -> bool:
    readable, _, _ = select.select([sock], [], [], HANG_BOUND)
    if not readable:
        return False
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True


def test_connections_beyond_the_cap_are_closed_at_once(capped: DecidingEnvoy) -> None:
    held: list[socket.socket] = []
    try:
        held += [connect(listener(capped)) for _ in range(CONNECTION_LIMIT)]
        flood = [connect(listener(capped)) for _ in range(30)]
        held += flood
        refused = [sock for sock in flood if _closed_without_answer(sock)]
        assert len(refused) == len(flood)
        # the connections within the cap are still served
        held[0].sendall(
            chat_head(len(CHAT_BODY)).replace(b"\r\n\r\n", b"\r\nConnection: close\r\n\r\n")
            + CHAT_BODY
        )
        assert read_response(held[0]).status == 200
    finally:
        for sock in held:
            sock.close()
    deadline = time.monotonic() + HANG_BOUND  # Envoy sees the closes a little later
    while True:
        try:
            assert_serving(capped)
            break
        except (AssertionError, httpx.HTTPError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


def test_a_slow_region_is_not_the_clients_stalled_body(
    limited: DecidingEnvoy, fleet: SimulatorFleet
) -> None:
    """Once decided, the wait is for the region: the body idle timeout no longer applies."""
    set_faults(fleet, "eu-frankfurt", ttft_ms=2500)  # 2.5 x the body idle timeout
    try:
        assert_serving(limited)
    finally:
        reset_fleet(fleet)
