"""A stand-in OpenTelemetry collector for the benchmark: accepts OTLP/HTTP trace exports.

The gateway exports its spans here (protobuf over HTTP, as to a real collector), so tracing is
measured with its export cost. Each export is decoded and its spans counted by name:
- `POST /v1/traces` -> 200 (an `ExportTraceServiceResponse`);
- `GET /stats` -> `{"exports": N, "spans": N, "by_name": {...}}`.

Run: `python scripts/bench/trace_sink.py --port P`.
"""

from __future__ import annotations

import argparse
from collections import Counter

from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

_OK = ExportTraceServiceResponse().SerializeToString()


def make_app() -> web.Application:
    """The sink's aiohttp application."""
    by_name: Counter[str] = Counter()
    exports = 0

    async def receive(request: web.Request) -> web.Response:
        nonlocal exports
        message = ExportTraceServiceRequest.FromString(await request.read())
        for resource_spans in message.resource_spans:
            for scope_spans in resource_spans.scope_spans:
                by_name.update(span.name for span in scope_spans.spans)
        exports += 1
        return web.Response(body=_OK, content_type="application/x-protobuf")

    async def stats(_: web.Request) -> web.Response:
        return web.json_response(
            {"exports": exports, "spans": sum(by_name.values()), "by_name": dict(by_name)}
        )

    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.add_routes(
        [web.post("/v1/traces", receive), web.get("/stats", stats), web.get("/healthz", healthz)]
    )
    return app


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    web.run_app(make_app(), host=args.host, port=args.port, print=None)


if __name__ == "__main__":
    main()
