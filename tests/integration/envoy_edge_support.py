"""Both data planes side by side: a real Python gateway and a real deciding Envoy, same fleet."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from regions.simulator.fleet import SimulatorFleet
from tests.integration.conftest import GatewayProcess
from tests.integration.envoy_decision_support import (
    DecidingEnvoy,
    catalog_policy,
    deciding_envoy,
    decision_options,
)

CLIENT = httpx.Client(timeout=30.0, trust_env=False)
FIRST_BYTE_TIMEOUT = 2.0
"""Both planes' wait for a region's response headers (GatewayProcess's default)."""


@dataclass
class TwoPlanes:
    """The Python gateway and the deciding Envoy, both in front of the same simulators."""

    python: GatewayProcess
    envoy: DecidingEnvoy

    def post_both(
        self, body: object, headers: dict[str, str]
    ) -> tuple[httpx.Response, httpx.Response]:
        """The same POST /v1/chat/completions to each plane: (Python's answer, Envoy's)."""
        url = "/v1/chat/completions"
        python = CLIENT.post(f"{self.python.base_url}{url}", json=body, headers=headers)
        return python, self.envoy.post(body, headers, url)


@contextmanager
def two_planes(
    catalog: Path, fleet: SimulatorFleet, directory: Path, node: str
) -> Iterator[TwoPlanes]:
    """Start both planes over `catalog` (every region healthy in each before yielding)."""
    del fleet  # the catalog points at it; the parameter keeps the fixture order explicit
    options = dataclasses.replace(decision_options(), first_byte_timeout=FIRST_BYTE_TIMEOUT)
    policy = catalog_policy(catalog)
    regions = tuple(r.id for r in policy.regions)
    with (
        GatewayProcess(catalog, directory / "python") as python,
        deciding_envoy(policy, directory, node, regions, options) as envoy,
    ):
        yield TwoPlanes(python, envoy)


def error_of(response: httpx.Response) -> dict[str, Any]:
    """The OpenAI-style error object of a JSON error answer (checking the shape)."""
    assert response.headers["content-type"].startswith("application/json"), response.text
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert {"message", "type", "param", "code"} <= set(error), error
    return error


NOT_PUSHED = {"candidates"}
"""residency members Envoy does not give (per-region verdicts are not pushed to Envoy)."""


def assert_same_answer(
    python: httpx.Response, envoy: httpx.Response, *, same_text: bool, decided_alike: bool = True
) -> None:
    """Same status, error type and code, error members, residency members and headers.

    `same_text`: the messages and reasons must match word for word too. `decided_alike`: the
    decisions' outcome and status too (not so where Python knew a region was down before
    deciding and Envoy's filter routed to it, its clusters knowing it is down).
    """
    assert envoy.status_code == python.status_code, (python.text, envoy.text)
    ours, theirs = error_of(python), error_of(envoy)
    assert (theirs["type"], theirs["code"], theirs["param"]) == (
        ours["type"],
        ours["code"],
        ours["param"],
    ), (ours, theirs)
    assert set(theirs) == set(ours), (ours, theirs)
    if "residency" in ours:
        assert set(theirs["residency"]) == set(ours["residency"]) - NOT_PUSHED
        assert set(theirs["residency"]["facts"]) == set(ours["residency"]["facts"])
        for key in ("outcome", "status", "jurisdictions")[0 if decided_alike else 2 :]:
            assert theirs["residency"][key] == ours["residency"][key], key
        assert theirs["decision_id"] == envoy.headers["x-residency-decision"]
        assert theirs["residency"]["decision_id"] == theirs["decision_id"]
    if same_text:
        assert theirs["message"] == ours["message"]
        assert theirs.get("reasons") == ours.get("reasons")
        if "residency" in ours:
            assert theirs["residency"]["regimes"] == ours["residency"]["regimes"]
    for name in ("x-residency-decision", "x-residency-region"):
        assert (name in envoy.headers) == (name in python.headers), name
    assert "x-residency-local-reply" not in envoy.headers  # the filter's marker stays inside
