"""In-process tests of the region simulator app (aiohttp test utilities)."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import struct
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import pytest_asyncio
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from regions.simulator import Behaviour, SimulatorConfig, create_app
from regions.simulator.cli import build_parser, config_from_args
from regions.simulator.fleet import free_port

REGION = "eu-frankfurt"
CHAT = "/v1/chat/completions"
MODELS = ("gpt-4o-mini", "text-embedding-3-small")

Client = TestClient[web.Request, web.Application]


def _chat(**extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi there"}], **extra}


def _events(raw: bytes) -> list[bytes]:
    """Split an SSE body into events, asserting ``data: ...\\n\\n`` framing."""
    assert raw.endswith(b"\n\n")
    events = raw[:-2].split(b"\n\n")
    for event in events:
        assert event.startswith(b"data: "), event
        assert b"\n" not in event
    return [event.removeprefix(b"data: ") for event in events]


async def _faults(client: Client, **faults: Any) -> dict[str, Any]:
    resp = await client.post("/_sim/faults", json=faults)
    assert resp.status == 200, await resp.text()
    body: dict[str, Any] = await resp.json()
    return body


@pytest_asyncio.fixture(loop_scope="function")
async def client() -> AsyncIterator[Client]:
    config = SimulatorConfig(region_id=REGION, models=MODELS, seed=1)
    async with TestClient(TestServer(create_app(config))) as test_client:
        yield test_client


async def test_models_list(client: Client) -> None:
    resp = await client.get("/v1/models")
    assert resp.status == 200
    body = await resp.json()
    assert body["object"] == "list"
    assert [m["id"] for m in body["data"]] == list(MODELS)
    assert {m["owned_by"] for m in body["data"]} == {REGION}
    assert {m["object"] for m in body["data"]} == {"model"}
    assert resp.headers["x-simulator-region"] == REGION

    one = await client.get("/v1/models/gpt-4o-mini")
    assert (await one.json())["id"] == "gpt-4o-mini"
    assert (await client.get("/v1/models/nope")).status == 404


async def test_chat_non_stream_names_region(client: Client) -> None:
    resp = await client.post(CHAT, json=_chat())
    assert resp.status == 200
    assert resp.headers["x-simulator-region"] == REGION
    body = await resp.json()
    assert body["object"] == "chat.completion"
    assert body["model"] == "gpt-4o-mini"
    choice = body["choices"][0]
    assert choice["message"]["role"] == "assistant"
    content = choice["message"]["content"]
    assert content.startswith(f"Hello from {REGION}.")
    assert len(content.split()) == 16
    assert choice["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 2, "completion_tokens": 16, "total_tokens": 18}


async def test_chat_stream_sse_framing(client: Client) -> None:
    resp = await client.post(CHAT, json=_chat(stream=True))
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/event-stream")
    assert resp.headers["x-simulator-region"] == REGION
    events = _events(await resp.read())
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 16
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert [c["choices"][0]["finish_reason"] for c in chunks] == [None] * 15 + ["stop"]
    assert all("usage" not in c for c in chunks)
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks)
    plain = await (await client.post(CHAT, json=_chat())).json()
    assert text == plain["choices"][0]["message"]["content"]


async def test_chat_stream_include_usage(client: Client) -> None:
    payload = _chat(stream=True, max_tokens=4, stream_options={"include_usage": True})
    events = _events(await (await client.post(CHAT, json=payload)).read())
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert len(chunks) == 5
    assert all(c["usage"] is None for c in chunks[:-1])
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"] == {"prompt_tokens": 2, "completion_tokens": 4, "total_tokens": 6}


async def test_completions_stream_and_not(client: Client) -> None:
    body = {"model": "gpt-4o-mini", "prompt": "say hello", "max_tokens": 3}
    plain = await (await client.post("/v1/completions", json=body)).json()
    assert plain["object"] == "text_completion"
    assert plain["choices"][0]["text"] == f"Hello from {REGION}."
    assert plain["choices"][0]["finish_reason"] == "length"
    assert plain["usage"]["prompt_tokens"] == 2
    resp = await client.post("/v1/completions", json={**body, "stream": True})
    events = _events(await resp.read())
    assert events[-1] == b"[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain["choices"][0]["text"]


async def test_max_tokens_caps_completion(client: Client) -> None:
    body = await (await client.post(CHAT, json=_chat(max_tokens=5))).json()
    assert body["choices"][0]["message"]["content"] == f"Hello from {REGION}. Hello from"
    assert body["choices"][0]["finish_reason"] == "length"
    assert body["usage"]["completion_tokens"] == 5
    capped = await (await client.post(CHAT, json=_chat(max_completion_tokens=2))).json()
    assert capped["usage"]["completion_tokens"] == 2
    larger = await (await client.post(CHAT, json=_chat(max_tokens=1000))).json()
    assert larger["usage"]["completion_tokens"] == 16
    assert larger["choices"][0]["finish_reason"] == "stop"
    stream = await client.post(CHAT, json=_chat(max_tokens=3, stream=True))
    assert len(_events(await stream.read())) == 3 + 1
    assert (await client.post(CHAT, json=_chat(max_tokens=0))).status == 400


async def test_embeddings_deterministic(client: Client) -> None:
    body = {"model": "text-embedding-3-small", "input": ["alpha", "beta"]}
    first = await (await client.post("/v1/embeddings", json=body)).json()
    second = await (await client.post("/v1/embeddings", json=body)).json()
    assert first["data"] == second["data"]
    assert [d["index"] for d in first["data"]] == [0, 1]
    alpha, beta = (d["embedding"] for d in first["data"])
    assert len(alpha) == 16
    assert alpha != beta
    assert math.isclose(math.fsum(v * v for v in alpha), 1.0, rel_tol=1e-5)
    assert first["usage"] == {"prompt_tokens": 2, "total_tokens": 2}

    single = await (
        await client.post("/v1/embeddings", json={**body, "input": "alpha", "dimensions": 16})
    ).json()
    assert single["data"][0]["embedding"] == alpha
    encoded = await (
        await client.post("/v1/embeddings", json={**body, "encoding_format": "base64"})
    ).json()
    raw = base64.b64decode(encoded["data"][0]["embedding"])
    assert list(struct.unpack("<16f", raw)) == alpha
    wide = await (await client.post("/v1/embeddings", json={**body, "dimensions": 64})).json()
    assert len(wide["data"][0]["embedding"]) == 64


async def test_unknown_model_404(client: Client) -> None:
    for path, payload in (
        (CHAT, {**_chat(), "model": "gpt-9"}),
        (CHAT, {**_chat(stream=True), "model": "gpt-9"}),
        ("/v1/embeddings", {"model": "gpt-9", "input": "x"}),
    ):
        resp = await client.post(path, json=payload)
        assert resp.status == 404
        error = (await resp.json())["error"]
        assert error["type"] == "invalid_request_error"
        assert error["code"] == "model_not_found"
        assert "gpt-9" in error["message"]


async def test_bad_json_400(client: Client) -> None:
    for data in (b"{not json", b"[1, 2]"):
        resp = await client.post(CHAT, data=data, headers={"Content-Type": "application/json"})
        assert resp.status == 400
        error = (await resp.json())["error"]
        assert error["type"] == "invalid_request_error"
        assert error["message"]
    resp = await client.post(CHAT, json={"model": "gpt-4o-mini"})
    assert resp.status == 400


async def test_error_rate_returns_configured_status(client: Client) -> None:
    state = await _faults(client, error_rate=1.0, error_status=503)
    assert state["error_rate"] == 1.0
    for _ in range(3):
        resp = await client.post(CHAT, json=_chat())
        assert resp.status == 503
        assert resp.headers["x-simulator-region"] == REGION
        error = (await resp.json())["error"]
        assert error["type"] == "server_error"
        assert error["code"] == "simulated_fault"
    await _faults(client, error_rate=0.5, error_status=429)
    statuses = [(await client.post(CHAT, json=_chat())).status for _ in range(40)]
    assert set(statuses) == {200, 429}


async def test_down(client: Client) -> None:
    await _faults(client, down=True)
    health = await client.get("/healthz")
    assert health.status == 503
    assert (await health.json())["region"] == REGION
    assert (await client.post(CHAT, json=_chat())).status == 503
    assert (await client.get("/v1/models")).status == 503
    await _faults(client, down=False)
    health = await client.get("/healthz")
    assert health.status == 200
    assert await health.json() == {"status": "ok", "region": REGION}


async def test_drop_after_chunks_truncates_stream(client: Client) -> None:
    await _faults(client, drop_after_chunks=3)
    resp = await client.post(CHAT, json=_chat(stream=True))
    assert resp.status == 200
    lines: list[bytes] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async for line in resp.content:
            lines.append(line)
    data = [line for line in lines if line.startswith(b"data: ")]
    assert len(data) == 3
    assert b"data: [DONE]\n" not in lines


async def test_drop_zero_closes_non_streaming(client: Client) -> None:
    await _faults(client, drop_after_chunks=0)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.post(CHAT, json=_chat())


async def test_reset_restores_startup_config(client: Client) -> None:
    startup = await (await client.get("/_sim/state")).json()
    changed = await _faults(client, error_rate=1.0, down=True, ttft_ms=5, drop_after_chunks=2)
    assert changed != startup
    assert (await client.post(CHAT, json=_chat())).status == 503
    resp = await client.post("/_sim/reset")
    assert await resp.json() == startup
    assert await (await client.get("/_sim/state")).json() == startup
    assert (await client.post(CHAT, json=_chat())).status == 200
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["requests"] == 1


async def test_invalid_faults_rejected(client: Client) -> None:
    for bad in ({"error_rate": 2}, {"hang": "yes"}, {"nope": 1}, {"drop_after_chunks": -1}):
        resp = await client.post("/_sim/faults", json=bad)
        assert resp.status == 400, bad
        assert "error" in await resp.json()
    assert (await client.get("/_sim/state")).status == 200


async def test_trace_and_decision_headers_echoed(client: Client) -> None:
    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    headers = {"traceparent": traceparent, "x-residency-decision": "eu:gdpr"}
    for resp in (
        await client.post(CHAT, json=_chat(), headers=headers),
        await client.post(CHAT, json=_chat(stream=True), headers=headers),
        await client.post(CHAT, json={"model": "x"}, headers=headers),
    ):
        await resp.read()
        assert resp.headers["x-received-traceparent"] == traceparent
        assert resp.headers["x-received-decision"] == "eu:gdpr"
    plain = await client.get("/v1/models")
    assert "x-received-traceparent" not in plain.headers
    assert "x-received-decision" not in plain.headers


async def test_stats_and_hang(client: Client) -> None:
    await client.get("/v1/models")
    await client.post(CHAT, json=_chat())
    await client.get("/healthz")
    stats = await (await client.get("/_sim/stats")).json()
    assert stats["requests"] == 2
    assert stats["by_path"] == {"/v1/models": 1, CHAT: 1}
    assert stats["in_flight"] == 0

    async def in_flight() -> int:
        value: int = (await (await client.get("/_sim/stats")).json())["in_flight"]
        return value

    async def wait_in_flight(expected: int) -> None:
        for _ in range(200):
            if await in_flight() == expected:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"in_flight never reached {expected}")

    await _faults(client, hang=True)
    abandoned = asyncio.create_task(client.post(CHAT, json=_chat()))
    await wait_in_flight(1)
    abandoned.cancel()  # the client goes away: the hung request ends
    await wait_in_flight(0)

    released = asyncio.create_task(client.post(CHAT, json=_chat()))
    await wait_in_flight(1)
    assert not released.done()
    await _faults(client, hang=False)  # turning hang off releases parked requests
    resp = await asyncio.wait_for(released, 5)
    assert resp.status == 200


class _VirtualTime:
    """The simulator's view of `asyncio` with a clock that only its own sleeps move: pacing is
    checked as the waits it asks for, not by timing it."""

    CancelledError = asyncio.CancelledError

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(round(delay, 9))
        self.now += delay
        await asyncio.sleep(0)

    def get_running_loop(self) -> _VirtualTime:
        return self

    def time(self) -> float:
        return self.now


async def test_latency_shaping(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = _VirtualTime()
    monkeypatch.setattr("regions.simulator.server.asyncio", clock)
    behaviour = Behaviour(ttft_ms=60, tokens_per_second=100, completion_tokens=5)
    app = create_app(SimulatorConfig(region_id=REGION, behaviour=behaviour))
    async with TestClient(TestServer(app)) as slow:
        resp = await slow.post(CHAT, json=_chat(stream=True))
        chunks = [line async for line in resp.content if line.startswith(b"data: ")]
        assert len(chunks) >= 5
        # The first token after the time to first token, then one every 1/100 s.
        assert clock.sleeps[0] == pytest.approx(0.06)
        assert clock.sleeps[1:] == pytest.approx([0.01] * (len(clock.sleeps) - 1))
        assert sum(clock.sleeps) == pytest.approx(behaviour.generation_time(5))
        clock.sleeps.clear()
        assert (await slow.post(CHAT, json=_chat())).status == 200
        assert clock.sleeps == [pytest.approx(0.06 + 4 * 0.01)]


def test_cli_flags_build_config() -> None:
    args = build_parser().parse_args(
        [
            "--region-id",
            "us-virginia",
            "--port",
            "0",
            "--models",
            "gpt-4o-mini, gpt-4o",
            "--ttft-ms",
            "25",
            "--tokens-per-second",
            "50",
            "--completion-tokens",
            "8",
            "--error-rate",
            "0.25",
            "--error-status",
            "502",
            "--hang",
            "--drop-after-chunks",
            "2",
            "--down",
        ]
    )
    config = config_from_args(args)
    assert config.region_id == "us-virginia"
    assert config.models == ("gpt-4o-mini", "gpt-4o")
    assert config.behaviour == Behaviour(
        ttft_ms=25,
        tokens_per_second=50,
        completion_tokens=8,
        error_rate=0.25,
        error_status=502,
        hang=True,
        drop_after_chunks=2,
        down=True,
    )
    with pytest.raises(ValueError):
        config_from_args(build_parser().parse_args(["--region-id", "x", "--error-rate", "2"]))


def test_free_port_never_hands_out_a_port_twice(monkeypatch: pytest.MonkeyPatch) -> None:
    """The kernel may offer a just-released port again; a fleet must not get it twice."""
    offered = iter([40001, 40001, 40002])

    class _Socket:
        def __init__(self, *_: object) -> None:
            self.port = next(offered)

        def __enter__(self) -> _Socket:
            return self

        def __exit__(self, *_: object) -> None:
            pass

        def bind(self, _: object) -> None:
            pass

        def getsockname(self) -> tuple[str, int]:
            return ("127.0.0.1", self.port)

    monkeypatch.setattr("regions.simulator.fleet.socket.socket", _Socket)
    monkeypatch.setattr("regions.simulator.fleet._HANDED_OUT", set())
    assert [free_port(), free_port()] == [40001, 40002]
