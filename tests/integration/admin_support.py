"""Helpers for admin API and `gateway regions` tests: tokens, API calls, the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from typing import Any

import httpx
import pytest

from compliance.store.access_store import AccessStore, Role
from gateway.cli import main
from tests.integration.conftest import HTTP, PROJECT_ROOT, GatewayProcess


def create_tokens(gateway: GatewayProcess) -> dict[str, str]:
    """One operator token per role (keyed by role name) in the gateway's database."""
    store = AccessStore(gateway.database_url)
    try:
        return {role.value: store.create(f"{role.value}-1", role) for role in Role}
    finally:
        store.close()


class Admin:
    """Calls a gateway's admin API with one token (or none)."""

    def __init__(self, gateway: GatewayProcess, token: str | None) -> None:
        self.base = f"{gateway.base_url}/admin"
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def __call__(self, method: str, path: str, body: Any = None, **headers: str) -> httpx.Response:
        return HTTP.request(
            method, self.base + path, json=body, headers={**self.headers, **headers}
        )


def run_cli(
    gateway: GatewayProcess | None,
    token: str | None,
    *args: str,
    env: Mapping[str, str] | None = None,
    timeout: float = 60.0,
) -> subprocess.CompletedProcess[str]:
    """`gateway <args>` as a subprocess pointed at `gateway`'s admin API."""
    environment = {
        k: v for k, v in os.environ.items() if k not in ("GATEWAY_ADMIN_URL", "GATEWAY_ADMIN_TOKEN")
    }
    environment["PYTHONPATH"] = str(PROJECT_ROOT)
    if gateway is not None:
        environment["GATEWAY_ADMIN_URL"] = gateway.base_url
    if token is not None:
        environment["GATEWAY_ADMIN_TOKEN"] = token
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        env=environment,
        timeout=timeout,
        check=False,
    )


def start_cli(gateway: GatewayProcess, token: str, *args: str) -> subprocess.Popen[str]:
    """`gateway <args>` started in the background (read its output with communicate())."""
    environment = {
        **os.environ,
        "PYTHONPATH": str(PROJECT_ROOT),
        "GATEWAY_ADMIN_URL": gateway.base_url,
        "GATEWAY_ADMIN_TOKEN": token,
    }
    return subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=environment,
    )


def call_cli(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    gateway: GatewayProcess | None,
    token: str | None,
    *args: str,
    admin_url: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """`gateway <args>` run in this process (same code as the console script, faster)."""
    with monkeypatch.context() as patch:
        for name, value in (
            ("GATEWAY_ADMIN_URL", admin_url or (gateway.base_url if gateway else None)),
            ("GATEWAY_ADMIN_TOKEN", token),
        ):
            if value is None:
                patch.delenv(name, raising=False)
            else:
                patch.setenv(name, value)
        capsys.readouterr()
        code = main(list(args))
        out, err = capsys.readouterr()
    return subprocess.CompletedProcess(["gateway", *args], code, out, err)
