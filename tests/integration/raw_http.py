"""Raw HTTP/1.1 over a socket, for hostile-input tests of either data plane's listener."""

from __future__ import annotations

import contextlib
import select
import socket
from dataclasses import dataclass, field
from typing import Any, Protocol

import httptools
import httpx
import orjson

from tests.integration.conftest import DEMO_KEY, IP_DE

HANG_BOUND = 15.0  # a test waiting longer than this for an answer has found a hang
CHAT_BODY = orjson.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})


class Listening(Protocol):
    """A server under test: it listens on 127.0.0.1:`port`."""

    @property
    def port(self) -> int: ...


@dataclass
class RawResponse:
    """One HTTP response read off a socket, and whether the server closed the connection."""

    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False
    closed: bool = False

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers[name.decode().lower()] = value.decode()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        self.complete = True

    def error(self) -> dict[str, Any]:
        """The JSON error object, checking the gateway's error shape."""
        assert self.headers["content-type"].startswith("application/json"), self.headers
        body = orjson.loads(self.body)
        assert set(body) == {"error"}, body
        error: dict[str, Any] = body["error"]
        assert {"message", "type", "param", "code"} <= set(error), error
        assert isinstance(error["message"], str) and error["message"]
        return error


def connect(server: Listening) -> socket.socket:
    """A TCP connection to the server, with HANG_BOUND as its read timeout."""
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=HANG_BOUND)
    sock.settimeout(HANG_BOUND)
    return sock


def read_response(sock: socket.socket, *, until_closed: bool = False) -> RawResponse:
    """Read one response (and, with `until_closed`, on until the server closes)."""
    response = RawResponse()
    parser = httptools.HttpResponseParser(response)
    while not response.complete or until_closed:
        try:
            data = sock.recv(65536)
        except ConnectionResetError:
            data = b""
        if not data:
            response.closed = True
            break
        if not response.complete:
            parser.feed_data(data)
            response.status = parser.get_status_code()
    return response


def trickled_header_answer(server: Listening, request_line: bytes) -> RawResponse:
    """Send a header block one line every 0.1 s until the server answers (or fail after
    HANG_BOUND); the answer, read until the server closes."""
    with connect(server) as sock:
        sock.sendall(request_line + b"\r\nHost: gateway\r\n")
        for index in range(int(HANG_BOUND / 0.1)):
            readable, _, _ = select.select([sock], [], [], 0.1)
            if readable:
                return read_response(sock, until_closed=True)
            with contextlib.suppress(OSError):
                sock.sendall(b"X-Slow-%d: 1\r\n" % index)
    raise AssertionError(f"the server kept waiting for a header block trickled for {HANG_BOUND} s")


def stalled_body_answer(server: Listening) -> RawResponse:
    """Send a chat request's headers and 10 bytes of its body, then nothing: the answer."""
    with connect(server) as sock:
        sock.sendall(chat_head(len(CHAT_BODY)) + CHAT_BODY[:10])
        return read_response(sock, until_closed=True)


def assert_closed_with_error(response: RawResponse, status: int, code: str, text: str) -> None:
    """`response` is a JSON error `status`/`code` whose message holds `text`, then a close."""
    assert response.status == status, response.body
    assert response.closed
    error = response.error()
    assert error["code"] == code, error
    assert text in error["message"], error


def post_chat(server: Listening, client: httpx.Client) -> httpx.Response:
    """A real chat completion from a German client (demo key) on a connection of its own."""
    return client.post(
        f"http://127.0.0.1:{server.port}/v1/chat/completions",
        content=CHAT_BODY,
        headers={
            "Authorization": f"Bearer {DEMO_KEY}",
            "X-Forwarded-For": IP_DE,
            "Content-Type": "application/json",
        },
    )


def exchange(server: Listening, request: bytes) -> RawResponse:
    """Send `request` on a new connection; read the answer and on until the server closes."""
    with connect(server) as sock:
        sock.sendall(request)
        return read_response(sock, until_closed=True)


def request_with_header_block(
    size: int, method: bytes = b"GET", path: bytes = b"/healthz"
) -> bytes:
    """A request whose header block (request line to the empty line) is `size` bytes."""
    head = method + b" " + path + b" HTTP/1.1\r\nHost: gateway\r\nX-Pad: "
    tail = b"\r\nConnection: close\r\n\r\n"
    return head + b"p" * (size - len(head) - len(tail)) + tail


def chat_head(content_length: int) -> bytes:
    """The header block of a chat completion POST with a body of `content_length` bytes."""
    return (
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: gateway\r\n"
        b"Authorization: Bearer " + DEMO_KEY.encode() + b"\r\n"
        b"X-Forwarded-For: " + IP_DE.encode() + b"\r\n"
        b"Content-Type: application/json\r\n"
        b"Content-Length: " + str(content_length).encode() + b"\r\n\r\n"
    )
