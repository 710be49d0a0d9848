"""Command line entry point: ``python -m regions.simulator``."""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import signal
import sys
from collections.abc import Sequence

from aiohttp import web

from regions.simulator.config import DEFAULT_MODELS, Behaviour, SimulatorConfig
from regions.simulator.server import create_app


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for the simulator CLI."""
    p = argparse.ArgumentParser(
        prog="python -m regions.simulator",
        description="OpenAI-compatible fake inference server standing in for one GPU region.",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9101, help="0 picks a free port")
    p.add_argument("--region-id", required=True)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated model ids")
    p.add_argument("--ttft-ms", type=float, default=0.0, help="time to first token")
    p.add_argument("--tokens-per-second", type=float, default=0.0, help="0 = no inter-token delay")
    p.add_argument("--completion-tokens", type=int, default=16)
    p.add_argument("--error-rate", type=float, default=0.0, help="0..1 share of failing requests")
    p.add_argument("--error-status", type=int, default=500)
    p.add_argument("--hang", action="store_true", help="accept /v1 requests, never answer")
    p.add_argument(
        "--drop-after-chunks",
        type=int,
        default=None,
        metavar="N",
        help="close the connection after N SSE events (0: also non-streaming)",
    )
    p.add_argument("--down", action="store_true", help="healthz and /v1 answer 503")
    p.add_argument("--embedding-dimensions", type=int, default=16)
    p.add_argument("--seed", type=int, default=None, help="seed for error-rate sampling")
    p.add_argument("--access-log", action="store_true", help="log every request to stderr")
    p.add_argument(
        "--instance",
        default="",
        help="token echoed in the x-simulator-instance header and /_sim/stats, so a launcher "
        "can tell its own process from another one on the same port",
    )
    return p


def config_from_args(args: argparse.Namespace) -> SimulatorConfig:
    """Build a :class:`SimulatorConfig` from parsed arguments (``ValueError`` if invalid)."""
    behaviour = Behaviour(
        ttft_ms=args.ttft_ms,
        tokens_per_second=args.tokens_per_second,
        completion_tokens=args.completion_tokens,
        error_rate=args.error_rate,
        error_status=args.error_status,
        hang=args.hang,
        drop_after_chunks=args.drop_after_chunks,
        down=args.down,
    )
    models = tuple(m.strip() for m in args.models.split(",") if m.strip())
    return SimulatorConfig(
        region_id=args.region_id,
        models=models,
        host=args.host,
        port=args.port,
        behaviour=behaviour,
        embedding_dimensions=args.embedding_dimensions,
        seed=args.seed,
        instance=args.instance,
    )


class ListenError(OSError):
    """The simulator cannot listen on its address; the message is one line naming the port."""


def _listen_problem(exc: OSError, host: str, port: int) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"port {port} is in use on {host}"
    if exc.errno == errno.EACCES:
        return f"port {port} on {host} needs privileges this process lacks"
    return f"cannot listen on {host} port {port}: {exc.strerror or exc}"


async def serve(config: SimulatorConfig, *, access_log: bool = False) -> None:
    """Serve ``config`` until SIGINT/SIGTERM; print the ready line once listening."""
    runner = web.AppRunner(
        create_app(config),
        handle_signals=False,
        handler_cancellation=True,
        shutdown_timeout=2.0,
        access_log=logging.getLogger("aiohttp.access") if access_log else None,
    )
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port, backlog=4096, reuse_address=True)
        try:
            await site.start()
        except OSError as exc:
            raise ListenError(_listen_problem(exc, config.host, config.port)) from None
        port = runner.addresses[0][1] if runner.addresses else config.port
        host = f"[{config.host}]" if ":" in config.host else config.host
        print(f"simulator {config.region_id} listening on http://{host}:{port}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()
    finally:
        await runner.cleanup()


def main(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the simulator; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        config = config_from_args(args)
    except ValueError as exc:
        parser.error(str(exc))
    logging.basicConfig(
        level=logging.INFO if args.access_log else logging.WARNING,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a project dependency on POSIX
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    try:
        with asyncio.Runner(loop_factory=loop_factory) as runner:
            runner.run(serve(config, access_log=args.access_log))
    except ListenError as exc:
        print(f"{parser.prog}: error: {exc}", file=sys.stderr, flush=True)
        return 2
    return 0
