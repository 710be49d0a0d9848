"""A region that sends its headers and then breaks off before any body byte: nothing reached the
client, so the gateway fails over to the next allowed region instead of passing on a broken 200."""

from __future__ import annotations

import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import (
    CHAT,
    IP_DE,
    GatewayProcess,
    fleet_specs,
    openai_client,
    write_catalog,
)

pytestmark = pytest.mark.integration


class _HeadersThenHangUp(socketserver.BaseRequestHandler):
    """Health checks pass; an inference request gets a 200 promising 100 bytes, then a close."""

    def handle(self) -> None:
        request = b""
        while b"\r\n\r\n" not in request:
            data = self.request.recv(65536)
            if not data:
                return
            request += data
        if request.startswith(b"GET"):
            body = b'{"status":"ok"}'
            self.request.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\nconnection: close\r\n"
                b"content-length: %d\r\n\r\n%s" % (len(body), body)
            )
            return
        self.request.sendall(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n"
        )


@pytest.fixture(scope="module")
def broken_frankfurt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    directory: Path = tmp_path_factory.mktemp("broken-body")
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _HeadersThenHangUp)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        with SimulatorFleet(fleet_specs()) as own_fleet:
            catalog = write_catalog(directory / "catalog.yaml", own_fleet)
            document = yaml.safe_load(catalog.read_text("utf-8"))
            for region in document["regions"]:
                if region["id"] == "eu-frankfurt":
                    region["base_url"] = f"http://127.0.0.1:{server.server_address[1]}"
            catalog.write_text(yaml.safe_dump(document), "utf-8")
            with GatewayProcess(catalog, directory / "gw") as gateway:
                yield gateway
    finally:
        server.shutdown()
        server.server_close()


def test_region_breaking_off_before_the_body_fails_over(broken_frankfurt: GatewayProcess) -> None:
    with openai_client(broken_frankfurt, IP_DE) as client:
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=CHAT)
    assert raw.headers["x-residency-region"] == "uk-london"
    assert raw.headers.get_list("x-residency-region") == ["uk-london"]
    assert "uk-london" in (raw.parse().choices[0].message.content or "")
    record = broken_frankfurt.record(raw.headers["x-residency-decision"])
    assert record["outcome"] == "routed"
    assert record["served_region"] == "uk-london"
    assert [(a["region"], a["result"]) for a in record["attempts"]] == [
        ("eu-frankfurt", "protocol_error"),
        ("uk-london", "ok"),
    ]
    assert "Traceback" not in broken_frankfurt.output()
