"""Region lifecycle through the admin API and CLI: active -> draining -> removed while a stream
is in flight, and weights splitting traffic among equally near regions (canary rollout)."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from regions.simulator.fleet import SimulatorFleet
from tests.integration.admin_support import Admin, call_cli, create_tokens, run_cli
from tests.integration.conftest import (
    CHAT,
    IP_DE,
    GatewayProcess,
    openai_client,
    set_faults,
    sim_post,
    sim_requests,
)

pytestmark = pytest.mark.integration

STREAM_TOKENS, TOKENS_PER_SECOND = 15, 5.0
"""A stream that lasts about three seconds: long enough to drain around it."""


@pytest.fixture(scope="module")
def lifecycle_gateway(
    catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway of its own: these tests drain and delete regions."""
    with GatewayProcess(catalog, tmp_path_factory.mktemp("lifecycle-gw")) as running:
        yield running


@pytest.fixture(scope="module")
def tokens(lifecycle_gateway: GatewayProcess) -> dict[str, str]:
    return create_tokens(lifecycle_gateway)


@pytest.fixture
def admin(lifecycle_gateway: GatewayProcess, tokens: dict[str, str], catalog: Path) -> Admin:
    """Admin API access; eu-frankfurt is back as in the catalog before each test.

    An admin token: re-creating a deleted region states its country (a legal fact).
    """
    admin = Admin(lifecycle_gateway, tokens["admin"])
    regions = yaml.safe_load(catalog.read_text())["regions"]
    frankfurt = next(r for r in regions if r["id"] == "eu-frankfurt")
    assert admin("PUT", "/regions/eu-frankfurt", frankfurt).status_code in (200, 201)
    return admin


class StreamReader(threading.Thread):
    """Reads the rest of a chat completion stream in the background."""

    def __init__(self, stream: Any) -> None:
        super().__init__(daemon=True)
        self.stream = stream
        self.text: list[str] = []
        self.finish_reason: str | None = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            for chunk in self.stream:
                for choice in chunk.choices:
                    self.text.append(choice.delta.content or "")
                    self.finish_reason = choice.finish_reason or self.finish_reason
        except BaseException as exc:  # reported by the test
            self.error = exc


def served_by(gateway: GatewayProcess, count: int) -> Counter[str]:
    """Which region served each of `count` chat completions from a German client."""
    regions: Counter[str] = Counter()
    with openai_client(gateway, IP_DE) as client:
        for _ in range(count):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=CHAT
            )
            regions[raw.headers["x-residency-region"]] += 1
    return regions


def test_drain_lets_a_stream_finish_and_sends_nothing_new(
    lifecycle_gateway: GatewayProcess,
    tokens: dict[str, str],
    admin: Admin,
    fleet: SimulatorFleet,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    sim_post(fleet.spec("eu-frankfurt"), "/_sim/reset")
    set_faults(
        fleet,
        "eu-frankfurt",
        completion_tokens=STREAM_TOKENS,
        tokens_per_second=TOKENS_PER_SECOND,
    )
    with openai_client(lifecycle_gateway, IP_DE, timeout=30) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=CHAT, stream=True
        )
        assert raw.headers["x-residency-region"] == "eu-frankfurt"
        stream = iter(raw.parse())
        first = next(stream)
        reader = StreamReader(stream)
        reader.start()
        assert admin("GET", "/regions/eu-frankfurt").json()["in_flight"] == 1

        # A bounded wait that runs out while the stream is still going: exit status 3.
        token = tokens["operator"]
        hurried = call_cli(
            monkeypatch, capsys, lifecycle_gateway, token, "regions", "drain", "eu-frankfurt",
            "--wait", "0.2",
        )  # fmt: skip
        assert hurried.returncode == 3, hurried.stderr
        assert hurried.stderr == (
            "gateway: region eu-frankfurt still has 1 request(s) in flight after 0.2s\n"
        )
        state = admin("GET", "/regions/eu-frankfurt").json()
        assert (state["status"], state["serving_status"]) == ("draining", "draining")

        # No new request goes to the draining region; the stream keeps going.
        assert "eu-frankfurt" not in served_by(lifecycle_gateway, 5)
        assert sim_requests(fleet, "eu-frankfurt") == 1
        assert reader.is_alive()

        # As Terraform's destroy does: drain and wait (real process), then delete.
        waited = run_cli(
            lifecycle_gateway, token, "regions", "drain", "eu-frankfurt", "--wait", "30"
        )
        assert waited.returncode == 0, waited.stderr
        assert waited.stdout.splitlines() == [
            "region eu-frankfurt is draining: it takes no new requests",
            "region eu-frankfurt drained: no requests in flight",
        ]
        reader.join(timeout=10)
    assert reader.error is None and not reader.is_alive()
    assert reader.finish_reason == "stop"
    assert len(first.choices) == 1 and len(reader.text) >= STREAM_TOKENS - 1
    record = lifecycle_gateway.record(raw.headers["x-residency-decision"])
    assert (record["outcome"], record["served_region"]) == ("routed", "eu-frankfurt")
    assert admin("GET", "/regions/eu-frankfurt").json()["in_flight"] == 0

    deleted = call_cli(
        monkeypatch, capsys, lifecycle_gateway, token, "regions", "delete", "eu-frankfurt"
    )
    assert deleted.returncode == 0, deleted.stderr
    assert admin("GET", "/regions/eu-frankfurt").status_code == 404
    assert "eu-frankfurt" not in served_by(lifecycle_gateway, 3)
    assert sim_requests(fleet, "eu-frankfurt") == 1


def test_weights_split_traffic_among_equally_near_regions(
    lifecycle_gateway: GatewayProcess, admin: Admin, fleet: SimulatorFleet
) -> None:
    frankfurt = admin("GET", "/regions/eu-frankfurt").json()
    canary = {
        **{k: frankfurt[k] for k in ("country", "models", "attestations")},
        "name": "Frankfurt canary",
        "latitude": 50.12,  # about a kilometre away: equally near for every client
        "longitude": 8.69,
        "base_url": fleet.spec("uk-london").base_url,
        "weight": 0,
    }
    assert admin("PUT", "/regions/eu-canary", canary).status_code == 201
    try:
        assert served_by(lifecycle_gateway, 20) == {"eu-frankfurt": 20}
        admin("PATCH", "/regions/eu-canary", {"weight": 100})
        admin("PATCH", "/regions/eu-frankfurt", {"weight": 0})
        assert served_by(lifecycle_gateway, 20) == {"eu-canary": 20}
        admin("PATCH", "/regions/eu-frankfurt", {"weight": 50})
        admin("PATCH", "/regions/eu-canary", {"weight": 50})
        split = served_by(lifecycle_gateway, 40)
        assert set(split) == {"eu-frankfurt", "eu-canary"}, split  # P(miss) = 2 * 2^-40
    finally:
        admin("DELETE", "/regions/eu-canary")
