"""aiohttp application implementing the simulated OpenAI-compatible region."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import orjson
from aiohttp import web

from regions.simulator import responses as r
from regions.simulator.config import Behaviour, SimulatorConfig
from regions.simulator.state import STATE_KEY, ApiError, SimulatorState

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

_SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_HANG_POLL_S = 0.25


def _json(payload: Any, status: int = 200) -> web.Response:
    return web.Response(body=orjson.dumps(payload), status=status, content_type="application/json")


def _drop_connection(request: web.BaseRequest) -> None:
    """Close the client connection without completing the HTTP response."""
    transport = request.transport
    if transport is not None:
        transport.close()


# --------------------------------------------------------------------------- plumbing


async def _on_response_prepare(request: web.Request, response: web.StreamResponse) -> None:
    headers = response.headers
    config = request.app[STATE_KEY].config
    headers["x-simulator-region"] = config.region_id
    if config.instance:
        headers["x-simulator-instance"] = config.instance
    traceparent = request.headers.get("traceparent")
    if traceparent is not None:
        headers["x-received-traceparent"] = traceparent
    decision = request.headers.get("x-residency-decision")
    if decision is not None:
        headers["x-received-decision"] = decision


async def _on_shutdown(app: web.Application) -> None:
    state = app[STATE_KEY]
    state.closing = True
    state.set_behaviour(state.behaviour)  # wake hung requests so shutdown is prompt


def _client_gone(request: web.BaseRequest) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def _hang(request: web.Request, state: SimulatorState) -> bool:
    """Park while ``hang`` is on. Return False if the client left or the server is closing."""
    while state.behaviour.hang:
        if _client_gone(request):
            state.aborted += 1
            return False
        if state.closing:
            return False
        await state.wait_for_change(_HANG_POLL_S)
    return True


@web.middleware
async def _middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count /v1 traffic, apply faults, and render errors OpenAI-style."""
    state = request.app[STATE_KEY]
    is_api = request.path.startswith("/v1/")
    if is_api:
        resource = request.match_info.route.resource
        key = resource.canonical if resource is not None else "<unmatched>"
        state.requests += 1
        state.by_path[key] = state.by_path.get(key, 0) + 1
        state.in_flight += 1
    try:
        if is_api:
            behaviour = state.behaviour
            if behaviour.down:
                raise ApiError(503, f"region {state.config.region_id} is down", code="region_down")
            if behaviour.hang:
                if not await _hang(request, state):
                    _drop_connection(request)
                    return web.Response(status=503)
                behaviour = state.behaviour
            if behaviour.error_rate > 0 and state.random.random() < behaviour.error_rate:
                raise ApiError(
                    behaviour.error_status,
                    f"simulated fault in region {state.config.region_id}",
                    code="simulated_fault",
                )
            if behaviour.drop_after_chunks == 0:
                _drop_connection(request)
                return web.Response(status=500)
        return await handler(request)
    except asyncio.CancelledError:  # the client left (the server cancels its handler)
        if is_api:
            state.aborted += 1
        raise
    except ApiError as exc:
        return _json(exc.body, exc.status)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = f"{exc.reason}: {request.method} {request.path}"
        body = r.error_body(message, type_=r.error_type_for_status(exc.status))
        response = _json(body, exc.status)
        for name in ("Allow", "Location"):
            if name in exc.headers:
                response.headers[name] = exc.headers[name]
        return response
    finally:
        if is_api:
            state.in_flight -= 1


# --------------------------------------------------------------------------- request parsing


async def _read_json(request: web.Request) -> dict[str, Any]:
    raw = await request.read()
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ApiError(400, f"We could not parse the JSON body of your request: {exc}") from None
    if not isinstance(body, dict):
        raise ApiError(400, "The request body must be a JSON object.")
    return body


def _model(state: SimulatorState, body: dict[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise ApiError(400, "You must provide a model parameter.", param="model")
    if model not in state.models:
        raise ApiError(
            404,
            f"The model `{model}` does not exist in region {state.config.region_id}.",
            code="model_not_found",
            param="model",
            type_="invalid_request_error",
        )
    return model


def _token_budget(default: int, body: dict[str, Any], keys: tuple[str, ...]) -> tuple[int, str]:
    """Completion token count and finish reason after applying ``max_tokens``-style caps."""
    tokens, finish = default, "stop"
    for key in keys:
        cap = body.get(key)
        if cap is None:
            continue
        if isinstance(cap, bool) or not isinstance(cap, int) or cap < 1:
            raise ApiError(400, f"{key} must be a positive integer.", param=key)
        if cap < tokens:
            tokens, finish = cap, "length"
    return tokens, finish


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    if options is None:
        return False
    if not isinstance(options, dict):
        raise ApiError(400, "stream_options must be an object.", param="stream_options")
    return bool(options.get("include_usage"))


# --------------------------------------------------------------------------- generation


async def _stream(
    request: web.Request, behaviour: Behaviour, events: Iterator[tuple[int, bytes]]
) -> web.StreamResponse:
    """Write ``(token_index, event)`` pairs as SSE, paced by ``behaviour``, then ``[DONE]``."""
    response = web.StreamResponse(headers=_SSE_HEADERS)
    loop = asyncio.get_running_loop()
    start = loop.time() + behaviour.ttft_ms / 1000.0
    interval = behaviour.token_interval
    limit = behaviour.drop_after_chunks
    sent = 0
    try:
        await response.prepare(request)
        for index, event in events:
            if limit is not None and sent >= limit:
                break
            wait = start + index * interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            await response.write(event)
            sent += 1
        else:
            await response.write(r.SSE_DONE)
            return response
    except ConnectionResetError:  # the client went away
        request.app[STATE_KEY].aborted += 1
        return response
    _drop_connection(request)
    return response


async def _generate(request: web.Request, *, chat: bool) -> web.StreamResponse:
    state = request.app[STATE_KEY]
    body = await _read_json(request)
    model = _model(state, body)
    behaviour = state.behaviour
    region = state.config.region_id
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ApiError(400, "messages must be a non-empty array.", param="messages")
        prompt_tokens = r.count_tokens(messages)
        caps: tuple[str, ...] = ("max_tokens", "max_completion_tokens")
    else:
        prompt_tokens = r.count_tokens(body.get("prompt", ""))
        caps = ("max_tokens",)
    tokens, finish = _token_budget(behaviour.completion_tokens, body, caps)
    usage = r.usage(prompt_tokens, tokens)
    id_ = r.new_id("chatcmpl" if chat else "cmpl")
    created = int(time.time())

    if body.get("stream"):
        include_usage = _include_usage(body)

        def events() -> Iterator[tuple[int, bytes]]:
            pieces = r.stream_pieces(region, tokens)
            last = len(pieces) - 1
            for i, piece in enumerate(pieces):
                reason = finish if i == last else None
                if chat:
                    chunk = r.chat_chunk(
                        id_=id_,
                        created=created,
                        model=model,
                        region_id=region,
                        piece=piece,
                        first=i == 0,
                        finish_reason=reason,
                        with_usage=include_usage,
                    )
                else:
                    chunk = r.text_completion(
                        id_=id_,
                        created=created,
                        model=model,
                        text=piece,
                        finish_reason=reason,
                        usage_=None,
                    )
                    if include_usage:
                        chunk["usage"] = None
                yield i, r.sse_event(chunk)
            if include_usage:
                object_ = "chat.completion.chunk" if chat else "text_completion"
                final = r.usage_chunk(
                    id_=id_, created=created, model=model, object_=object_, usage_=usage
                )
                yield last, r.sse_event(final)

        return await _stream(request, behaviour, events())

    delay = behaviour.generation_time(tokens)
    if delay > 0:
        await asyncio.sleep(delay)
    text = r.completion_text(region, tokens)
    if chat:
        payload = r.chat_completion(
            id_=id_,
            created=created,
            model=model,
            region_id=region,
            content=text,
            finish_reason=finish,
            usage_=usage,
        )
    else:
        payload = r.text_completion(
            id_=id_, created=created, model=model, text=text, finish_reason=finish, usage_=usage
        )
    return _json(payload)


# --------------------------------------------------------------------------- handlers


async def chat_completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/chat/completions``."""
    return await _generate(request, chat=True)


async def completions(request: web.Request) -> web.StreamResponse:
    """``POST /v1/completions``."""
    return await _generate(request, chat=False)


async def embeddings(request: web.Request) -> web.StreamResponse:
    """``POST /v1/embeddings``: deterministic hash-derived unit vectors."""
    state = request.app[STATE_KEY]
    body = await _read_json(request)
    model = _model(state, body)
    raw = body.get("input")
    items: list[Any] = raw if isinstance(raw, list) else [raw]
    if isinstance(raw, list) and raw and all(isinstance(x, int) for x in raw):
        items = [raw]  # a single pre-tokenised input
    if not items or not all(isinstance(x, str | list) for x in items):
        raise ApiError(400, "input must be a string or an array of strings.", param="input")
    inputs = [x if isinstance(x, str) else orjson.dumps(x).decode() for x in items]
    dimensions = body.get("dimensions", state.config.embedding_dimensions)
    if (
        isinstance(dimensions, bool)
        or not isinstance(dimensions, int)
        or not 1 <= dimensions <= 4096
    ):
        raise ApiError(400, "dimensions must be an integer in 1..4096.", param="dimensions")
    encoding = body.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise ApiError(400, "encoding_format must be 'float' or 'base64'.", param="encoding_format")
    payload = r.embeddings(
        model=model,
        inputs=inputs,
        dimensions=dimensions,
        encoding_format=encoding,
        prompt_tokens=r.count_tokens(items),
    )
    return _json(payload)


async def list_models(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models``."""
    state = request.app[STATE_KEY]
    return _json(r.models_list(state.config.models, state.config.region_id, state.created))


async def retrieve_model(request: web.Request) -> web.StreamResponse:
    """``GET /v1/models/{model}``."""
    state = request.app[STATE_KEY]
    model = _model(state, {"model": request.match_info["model"]})
    return _json(r.model_object(model, state.config.region_id, state.created))


async def healthz(request: web.Request) -> web.StreamResponse:
    """``GET /healthz``: 200 when up, 503 when ``down``."""
    state = request.app[STATE_KEY]
    if state.behaviour.down:
        return _json({"status": "down", "region": state.config.region_id}, 503)
    return _json({"status": "ok", "region": state.config.region_id})


async def sim_state(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/state``."""
    return _json(request.app[STATE_KEY].snapshot())


async def sim_faults(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/faults``: apply a partial behaviour update."""
    state = request.app[STATE_KEY]
    body = await _read_json(request)
    try:
        state.set_behaviour(state.behaviour.updated(body))
    except ValueError as exc:
        raise ApiError(400, str(exc)) from None
    return _json(state.snapshot())


async def sim_reset(request: web.Request) -> web.StreamResponse:
    """``POST /_sim/reset``: restore startup behaviour and zero counters."""
    state = request.app[STATE_KEY]
    state.reset()
    return _json(state.snapshot())


async def sim_stats(request: web.Request) -> web.StreamResponse:
    """``GET /_sim/stats``."""
    return _json(request.app[STATE_KEY].stats())


def create_app(config: SimulatorConfig) -> web.Application:
    """Build the simulator application for ``config``."""
    app = web.Application(middlewares=[_middleware], client_max_size=16 * 1024 * 1024)
    app[STATE_KEY] = SimulatorState(config)
    app.on_response_prepare.append(_on_response_prepare)
    app.on_shutdown.append(_on_shutdown)
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_post("/v1/completions", completions)
    app.router.add_post("/v1/embeddings", embeddings)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/v1/models/{model}", retrieve_model)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/_sim/state", sim_state)
    app.router.add_post("/_sim/faults", sim_faults)
    app.router.add_post("/_sim/reset", sim_reset)
    app.router.add_get("/_sim/stats", sim_stats)
    return app
