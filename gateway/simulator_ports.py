"""The local ports of simulated regions: `gateway demo --simulator-ports BASE|auto`.

A region is simulated when its base URL is on this machine's loopback with an explicit port.
The flag rewrites those ports in the catalog that seeds an empty database (the demo catalog,
or `GATEWAY_SEED_CATALOG`); afterwards the simulators follow the catalog in the database.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import socket
from collections.abc import Iterable, Sequence
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from regions.catalog import Region

LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
AUTO: Literal["auto"] = "auto"

SimulatorPorts = int | Literal["auto"]
"""A base port (the simulated regions get consecutive ports from it, in catalog order), or
`auto` (free ports, chosen when the database is seeded)."""


class SimulatedRegionsError(RuntimeError):
    """The simulated regions cannot run as asked; the message is one line naming region/port."""


def parse_simulator_ports(text: str) -> SimulatorPorts:
    """The `--simulator-ports` value: `auto` or a port number."""
    if text.strip().lower() == AUTO:
        return AUTO
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a port number or 'auto', got {text!r}"
        ) from None
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port {port} is not between 1 and 65535")
    return port


def loopback_port(base_url: str) -> int | None:
    """The port of a loopback base URL with an explicit port (a simulated region), else None."""
    url = urlsplit(base_url)
    if url.hostname in LOOPBACK_HOSTS:
        return url.port
    return None


def _free_ports(count: int) -> list[int]:
    """`count` distinct ports free a moment ago (all held at once, so none repeats)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in sockets]


def _with_port(base_url: str, port: int) -> str:
    url = urlsplit(base_url)
    host = url.hostname or ""
    host = f"[{host}]" if ":" in host else host
    userinfo = url.netloc.rpartition("@")[0]
    netloc = f"{userinfo}@{host}:{port}" if userinfo else f"{host}:{port}"
    return urlunsplit(url._replace(netloc=netloc))


def assign_ports(regions: Sequence[Region], ports: SimulatorPorts) -> tuple[Region, ...]:
    """`regions` with the simulated ones moved to `ports` (consecutive from a base, or free)."""
    simulated = [i for i, r in enumerate(regions) if loopback_port(r.base_url)]
    if ports == AUTO:
        chosen = _free_ports(len(simulated))
    else:
        chosen = list(range(ports, ports + len(simulated)))
        if chosen and chosen[-1] > 65535:
            raise SimulatedRegionsError(
                f"--simulator-ports {ports}: {len(simulated)} simulated regions need ports up to "
                f"{chosen[-1]}, beyond 65535"
            )
    moved = list(regions)
    for index, port in zip(simulated, chosen, strict=True):
        moved[index] = dataclasses.replace(
            regions[index], base_url=_with_port(regions[index].base_url, port)
        )
    return tuple(moved)


def check_existing(ports_in_use: Iterable[int], wanted: SimulatorPorts) -> None:
    """An existing database keeps its ports; a base port it does not use is an error."""
    have = sorted(ports_in_use)
    if wanted == AUTO or have == list(range(wanted, wanted + len(have))):
        return
    shown = ", ".join(str(p) for p in have) or "none"
    raise SimulatedRegionsError(
        f"--simulator-ports {wanted}: the database already has its catalog, with simulated "
        f"regions on ports {shown}; the flag applies only when a new database is seeded "
        "(use another GATEWAY_DATA_DIR or --database-url)"
    )
