"""A real simulator subprocess driven by the official ``openai`` client."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator

import openai
import pytest

from regions.simulator import SimulatorFleet, SimulatorSpec, SimulatorStartError, free_port

pytestmark = pytest.mark.integration

REGION = "eu-frankfurt"
MODELS = ("gpt-4o-mini", "text-embedding-3-small")
EXPECTED = " ".join((["Hello", "from", f"{REGION}."] * 6)[:16])


@pytest.fixture(scope="module")
def fleet() -> Iterator[SimulatorFleet]:
    spec = SimulatorSpec(region_id=REGION, port=free_port(), models=MODELS)
    with SimulatorFleet([spec]) as running:
        yield running


@pytest.fixture(scope="module")
def client(fleet: SimulatorFleet) -> Iterator[openai.OpenAI]:
    spec = fleet.spec(REGION)
    with openai.OpenAI(base_url=f"{spec.base_url}/v1", api_key="x", max_retries=0) as oai:
        yield oai


def test_fleet_process_running(fleet: SimulatorFleet) -> None:
    assert fleet.process(REGION).poll() is None
    assert f"simulator {REGION} listening on {fleet.spec(REGION).base_url}" in fleet.output(REGION)
    with urllib.request.urlopen(f"{fleet.spec(REGION).base_url}/healthz") as resp:
        assert json.load(resp) == {"status": "ok", "region": REGION}
        assert resp.headers["x-simulator-region"] == REGION


def test_models_list(client: openai.OpenAI) -> None:
    models = list(client.models.list())
    assert [m.id for m in models] == list(MODELS)
    assert {m.owned_by for m in models} == {REGION}


def test_chat_non_streaming(client: openai.OpenAI) -> None:
    completion = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "Where are you?"}]
    )
    assert completion.choices[0].message.content == EXPECTED
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.completion_tokens == 16
    assert completion.usage.prompt_tokens == 3


def test_chat_streaming_with_usage(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "Where are you?"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=6,
    )
    chunks = list(stream)
    content_chunks = [c for c in chunks if c.choices]
    assert len(content_chunks) == 6
    text = "".join(c.choices[0].delta.content or "" for c in content_chunks)
    assert text == f"Hello from {REGION}. Hello from {REGION}."
    assert content_chunks[-1].choices[0].finish_reason == "length"
    usage = chunks[-1].usage
    assert usage is not None
    assert (usage.prompt_tokens, usage.completion_tokens) == (3, 6)


def test_completions(client: openai.OpenAI) -> None:
    completion = client.completions.create(model="gpt-4o-mini", prompt="Say hello", max_tokens=3)
    assert completion.choices[0].text == f"Hello from {REGION}."
    stream = client.completions.create(model="gpt-4o-mini", prompt="Say hello", stream=True)
    assert "".join(c.choices[0].text for c in stream) == EXPECTED


def test_embeddings(client: openai.OpenAI) -> None:
    # The SDK asks for base64 by default and decodes it; both encodings must agree.
    default = client.embeddings.create(model="text-embedding-3-small", input=["alpha", "beta"])
    floats = client.embeddings.create(
        model="text-embedding-3-small", input=["alpha", "beta"], encoding_format="float"
    )
    assert [d.embedding for d in default.data] == [d.embedding for d in floats.data]
    assert len(default.data) == 2
    assert len(default.data[0].embedding) == 16
    assert default.data[0].embedding != default.data[1].embedding
    again = client.embeddings.create(model="text-embedding-3-small", input="alpha")
    assert again.data[0].embedding == default.data[0].embedding


def test_headers_and_errors(client: openai.OpenAI) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "hi"}],
        extra_headers={"traceparent": traceparent},
    )
    assert raw.headers["x-simulator-region"] == REGION
    assert raw.headers["x-received-traceparent"] == traceparent
    with pytest.raises(openai.NotFoundError) as excinfo:
        client.chat.completions.create(model="gpt-9", messages=[{"role": "user", "content": "hi"}])
    assert excinfo.value.code == "model_not_found"


def test_fleet_reports_startup_failure() -> None:
    spec = SimulatorSpec(region_id="broken", port=free_port(), extra_args=("--error-rate", "7"))
    fleet = SimulatorFleet([spec], startup_timeout=10)
    with pytest.raises(SimulatorStartError, match="error_rate"):
        fleet.start()
    assert fleet.process("broken").poll() is not None


def test_fleet_stop_terminates() -> None:
    spec = SimulatorSpec(region_id="us-virginia", port=free_port(), extra_args=("--down",))
    with SimulatorFleet([spec]) as fleet:
        process = fleet.process("us-virginia")
        assert process.poll() is None
    assert process.poll() is not None
    fleet.stop()  # idempotent
