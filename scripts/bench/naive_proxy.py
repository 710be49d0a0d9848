"""The naive passthrough reference: a few-line ASGI proxy with no logic, same stack as the gateway.

uvicorn (uvloop + httptools) in front, one pooled aiohttp session behind; it forwards method,
path, body and two headers, and relays the response unbuffered. What the gateway adds beyond
this is the cost of its own work (auth, GeoIP, policy, selection, tracing, routing record).

Run: `python scripts/bench/naive_proxy.py --port P --upstream http://127.0.0.1:U`.
"""

from __future__ import annotations

import argparse
from typing import Any

import aiohttp
import uvicorn

HOP_BY_HOP = frozenset({b"connection", b"keep-alive", b"transfer-encoding", b"date", b"server"})
FORWARDED = frozenset({b"content-type", b"authorization", b"accept"})


def make_app(upstream: str) -> Any:
    """The ASGI callable."""
    session: aiohttp.ClientSession | None = None

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal session
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":  # startup, then shutdown
                session = aiohttp.ClientSession(
                    connector=aiohttp.TCPConnector(limit=1024), auto_decompress=False
                )
                await send({"type": "lifespan.startup.complete"})
            if session is not None:
                await session.close()
            await send({"type": "lifespan.shutdown.complete"})
            return
        assert session is not None
        body, more = b"", True
        while more:
            message = await receive()
            body += message.get("body", b"")
            more = message.get("more_body", False)
        headers = {k.decode(): v.decode() for k, v in scope["headers"] if k in FORWARDED}
        async with session.request(
            scope["method"], upstream + scope["path"], data=body or None, headers=headers
        ) as response:
            raw = [(k.lower(), v) for k, v in response.raw_headers if k.lower() not in HOP_BY_HOP]
            await send({"type": "http.response.start", "status": response.status, "headers": raw})
            async for chunk in response.content.iter_any():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b""})

    return app


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--upstream", required=True, help="base URL, e.g. http://127.0.0.1:9000")
    args = parser.parse_args()
    uvicorn.run(
        make_app(args.upstream.rstrip("/")),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
