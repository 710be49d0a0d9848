"""The audit chain through a running gateway: role checks, public key, chain status, signed
exports verified offline with the CLI, and no prompt or completion content anywhere."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from compliance.store.access_store import AccessStore, Role
from tests.integration.conftest import (
    DEMO_KEY,
    HTTP,
    IP_DE,
    PROJECT_ROOT,
    GatewayProcess,
    openai_client,
)

pytestmark = pytest.mark.integration
ENDPOINTS = ("/audit/public-key", "/audit/chain/status", "/audit/export?format=jsonl")


@pytest.fixture(scope="module")
def tokens(gateway: GatewayProcess) -> dict[str, str]:
    store = AccessStore(gateway.database_url)
    try:
        suffix = uuid.uuid4().hex[:6]
        return {role.value: store.create(f"chain-{role.value}-{suffix}", role) for role in Role}
    finally:
        store.close()


@pytest.fixture(scope="module")
def traffic(gateway: GatewayProcess) -> list[str]:
    """A few answered requests, stored."""
    ids = []
    with openai_client(gateway, IP_DE) as client:
        for _ in range(5):
            raw = client.chat.completions.with_raw_response.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
            )
            ids.append(raw.headers["x-residency-decision"])
    for decision_id in ids:
        gateway.record(decision_id)
    return ids


def get(gateway: GatewayProcess, path: str, token: str | None) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return HTTP.get(gateway.base_url + path, headers=headers)


def cli(*args: str, data_dir: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env["PYTHONPATH"] = str(PROJECT_ROOT)
    env["GATEWAY_DATA_DIR"] = str(data_dir or Path("/nonexistent-offline-auditor"))
    return subprocess.run(
        [sys.executable, "-m", "gateway.cli", "audit", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize("path", ENDPOINTS)
def test_every_chain_endpoint_checks_roles(
    gateway: GatewayProcess, tokens: dict[str, str], path: str
) -> None:
    assert get(gateway, path, None).status_code == 401
    assert get(gateway, path, "not-a-token").status_code == 401
    refused = get(gateway, path, DEMO_KEY)
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "tenant_key_refused"
    operator = get(gateway, path, tokens["operator"])
    assert operator.status_code == 403 and "auditor" in operator.json()["error"]["message"]
    for role in ("auditor", "admin"):
        assert get(gateway, path, tokens[role]).status_code == 200


def test_public_key_and_chain_status(
    gateway: GatewayProcess, tokens: dict[str, str], traffic: list[str], temp_dir: Path
) -> None:
    response = get(gateway, "/audit/public-key", tokens["auditor"])
    assert response.text.startswith("-----BEGIN PUBLIC KEY-----")
    assert len(response.headers["x-audit-key-id"]) == 32
    status = get(gateway, "/audit/chain/status?max_age=0", tokens["auditor"]).json()
    assert status["ok"] is True and status["first_break"] is None
    assert status["summary"] == f"chain intact: {status['records']} records"
    assert status["records"] >= len(traffic)
    exported = cli("public-key", data_dir=gateway.data_dir)
    assert exported.returncode == 0 and exported.stdout == response.text


def test_export_verifies_offline_and_tampering_is_caught(
    gateway: GatewayProcess, tokens: dict[str, str], traffic: list[str], temp_dir: Path
) -> None:
    key_file = temp_dir / "gateway.pub"
    key_file.write_text(get(gateway, "/audit/public-key", tokens["auditor"]).text)
    for fmt in ("jsonl", "csv"):
        response = get(gateway, f"/audit/export?format={fmt}&since=2000-01-01", tokens["auditor"])
        assert response.status_code == 200
        assert f".{fmt}" in response.headers["content-disposition"]
        path = temp_dir / f"export.{fmt}"
        path.write_bytes(response.content)
        result = cli("verify-export", str(path), "--public-key", str(key_file))
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.startswith("export intact: ")
        for decision_id in traffic:
            assert decision_id.encode() in response.content
        path.write_bytes(response.content.replace(b"eu-frankfurt", b"us-virginia", 1))
        tampered = cli("verify-export", str(path), "--public-key", str(key_file))
        assert tampered.returncode == 1 and tampered.stdout.startswith("export broken: ")


def test_cli_export_verify_and_bad_input(
    gateway: GatewayProcess, tokens: dict[str, str], traffic: list[str], temp_dir: Path
) -> None:
    output = temp_dir / "cli.csv"
    made = cli("export", "--format", "csv", "-o", str(output), data_dir=gateway.data_dir)
    assert made.returncode == 0, made.stderr
    checked = cli("verify-export", str(output), data_dir=gateway.data_dir)
    assert checked.returncode == 0 and "export intact" in checked.stdout
    verified = cli("verify", data_dir=gateway.data_dir)
    assert verified.returncode == 0 and verified.stdout.startswith("chain intact: ")
    bad = cli("export", "--format", "csv", "--since", "soon", "-o", str(output))
    assert bad.returncode == 2 and "--since: 'soon' is not an ISO 8601 date" in bad.stderr
    response = get(gateway, "/audit/export?format=xml", tokens["auditor"])
    assert response.status_code == 400 and "format: must be one of csv, jsonl" in response.text
    response = get(gateway, "/audit/export?format=csv&until=never", tokens["auditor"])
    assert response.status_code == 400 and "until: 'never'" in response.text


def files_under(directory: Path) -> Iterator[Path]:
    return (p for p in directory.rglob("*") if p.is_file())


def test_no_prompt_or_completion_content_in_the_log(
    gateway: GatewayProcess, tokens: dict[str, str]
) -> None:
    secret = f"PROMPT-SECRET-{uuid.uuid4().hex}"
    with openai_client(gateway, IP_DE) as client:
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "system", "content": secret}, {"role": "user", "content": secret}],
            user=secret,
        )
        completion = raw.parse().choices[0].message.content
    assert completion and completion.startswith("Hello from")
    record = gateway.record(raw.headers["x-residency-decision"])
    assert secret not in str(record) and "Hello from" not in str(record)
    export = get(gateway, "/audit/export?format=jsonl", tokens["auditor"]).content
    assert secret.encode() not in export and b"Hello from" not in export
    for path in files_under(gateway.data_dir):  # database, WAL, spool segments
        if path.suffix in (".db", ".db-wal", ".spool") or path.name.endswith("-wal"):
            data = path.read_bytes()
            assert secret.encode() not in data, path
            assert b"Hello from" not in data, path
