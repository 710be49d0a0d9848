"""Configuration changes in the chain, against a real gateway and the real `gateway` command:
`tokens create|revoke` enter the chain (and sign it), `audit changes`, `audit show` of a change,
`GET /audit/changes`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from compliance.store.access_store import hash_token
from tests.integration.admin_support import Admin
from tests.integration.conftest import HTTP, PROJECT_ROOT, GatewayProcess

pytestmark = pytest.mark.integration


def gateway_cli(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """`gateway <args>` in a subprocess, on the gateway's data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    env.update(PYTHONPATH=str(PROJECT_ROOT), GATEWAY_DATA_DIR=str(data_dir))
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    return result


def ok(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = gateway_cli(data_dir, *args)
    assert result.returncode == 0, result.stderr
    return result


class Changed:
    """A running gateway on which the CLI created and revoked tokens and an admin changed a
    region."""

    def __init__(self, gateway: GatewayProcess) -> None:
        self.gateway = gateway
        self.data_dir = gateway.data_dir
        made = ok(self.data_dir, "tokens", "create", "--name", "chg-admin", "--role", "admin")
        self.create_stderr = made.stderr
        self.admin = made.stdout.strip()
        self.auditor = ok(
            self.data_dir, "tokens", "create", "--name", "chg-auditor", "--role", "auditor"
        ).stdout.strip()
        self.operator = ok(
            self.data_dir, "tokens", "create", "--name", "chg-operator", "--role", "operator"
        ).stdout.strip()
        self.temporary = ok(
            self.data_dir, "tokens", "create", "--name", "chg-temporary", "--role", "auditor"
        ).stdout.strip()
        self.revoke_stdout = ok(self.data_dir, "tokens", "revoke", "chg-temporary").stdout

    def get(self, path: str, token: str | None = None, **params: Any) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token or self.auditor}"}
        return HTTP.get(f"{self.gateway.base_url}{path}", params=params, headers=headers)


@pytest.fixture(scope="module")
def changed(catalog: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Changed]:
    with GatewayProcess(catalog, tmp_path_factory.mktemp("changes")) as gateway:
        state = Changed(gateway)
        response = Admin(gateway, state.admin)("PATCH", "/regions/eu-frankfurt", {"weight": 70})
        assert response.status_code == 200, response.text
        yield state


def test_token_changes_join_the_chain_which_stays_intact(changed: Changed) -> None:
    assert changed.admin.startswith("rgo_") and "\n" not in changed.admin
    assert changed.create_stderr.startswith("audit chain: signed checkpoint")
    assert changed.revoke_stdout == "revoked chg-temporary\n"
    listed = json.loads(
        ok(changed.data_dir, "audit", "changes", "--object-type", "token", "--json").stdout
    )["changes"]
    assert [(c["action"], c["object_id"]) for c in listed] == [
        ("revoke", "chg-temporary"),
        ("create", "chg-temporary"),
        ("create", "chg-operator"),
        ("create", "chg-auditor"),
        ("create", "chg-admin"),
    ]
    assert {c["actor"].split(":")[:2] == ["cli", "tokens"] for c in listed} == {True}
    assert {c["role"] for c in listed} == {"admin"}
    # Neither a token nor its hash is anywhere in the log.
    exported = ok(changed.data_dir, "audit", "export", "--format", "jsonl", "-o", "-").stdout
    assert "chg-temporary" in exported
    for token in (changed.admin, changed.auditor, changed.temporary):
        assert token not in exported and hash_token(token) not in exported
    verified = ok(changed.data_dir, "audit", "verify")
    assert verified.stdout.startswith("chain intact: ")
    assert " 0 decisions, 6 configuration changes; " in verified.stdout
    # The revoked token no longer opens the audit API.
    assert changed.get("/audit/changes", changed.temporary).status_code == 401


def test_audit_changes_lists_and_filters(changed: Changed) -> None:
    lines = ok(changed.data_dir, "audit", "changes").stdout.splitlines()
    assert lines[0].split() == [
        "CHANGED_AT",
        "(UTC)",
        "CHANGE",
        "CHAIN",
        "ACTOR",
        "OBJECT",
        "ACTION",
        "WHAT",
    ]
    assert lines[1].split()[4:] == ["region", "eu-frankfurt", "update", "weight"]
    assert lines[1].split()[3] == "chg-admin"
    assert lines[2].split()[5:] == ["chg-temporary", "revoke", "revoked_at"]
    assert lines[-1] == "6 configuration change(s)"
    paged = ok(changed.data_dir, "audit", "changes", "--limit", "4").stdout.splitlines()
    assert paged[-1].startswith("4 configuration change(s); next page: --cursor ")
    rest = ok(changed.data_dir, "audit", "changes", "--cursor", paged[-1].split()[-1])
    assert rest.stdout.splitlines()[-1] == "2 configuration change(s)"
    bad = gateway_cli(changed.data_dir, "audit", "changes", "--since", "someday")
    assert bad.returncode == 2
    assert bad.stderr.startswith("gateway: error: --since: 'someday' is not an ISO 8601 time")
    assert len(bad.stderr.splitlines()) == 1
    # `audit search` stays the decision search.
    searched = ok(changed.data_dir, "audit", "search").stdout.splitlines()
    assert searched[0].split()[2] == "DECISION"


def test_audit_show_explains_a_change(changed: Changed) -> None:
    region = json.loads(
        ok(changed.data_dir, "audit", "changes", "--object-type", "region", "--json").stdout
    )["changes"][0]
    by_id = ok(changed.data_dir, "audit", "show", f"change-{region['change_id']}").stdout
    by_position = ok(changed.data_dir, "audit", "show", f"#{region['chain_seq']}").stdout
    assert by_id == by_position
    lines = by_id.splitlines()
    assert lines[0] == "region eu-frankfurt updated by chg-admin (admin): weight"
    assert lines[2] == (
        f"Configuration change {region['change_id']} (chain #{region['chain_seq']}) at "
        f"{region['changed_at']}: region eu-frankfurt updated."
    )
    assert "weight: 100 → 70" in lines
    document = json.loads(
        ok(changed.data_dir, "audit", "show", str(region["chain_seq"]), "--json").stdout
    )
    assert document["changes"] == [{"field": "weight", "before": 100, "after": 70}]
    missing = gateway_cli(changed.data_dir, "audit", "show", "change-999")
    assert (missing.returncode, missing.stderr) == (
        2,
        "gateway: error: no configuration change 999\n",
    )


def test_get_audit_changes(changed: Changed) -> None:
    every = changed.get("/audit/changes").json()
    assert len(every["changes"]) == 6 and every["next_cursor"] is None
    seen: list[int] = []
    cursor = None
    while True:
        params = {"limit": 2, **({"cursor": cursor} if cursor else {})}
        page = changed.get("/audit/changes", **params).json()
        seen.extend(c["change_id"] for c in page["changes"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [c["change_id"] for c in every["changes"]]
    tokens = changed.get("/audit/changes", object_type="token", actor=every["changes"][1]["actor"])
    assert len(tokens.json()["changes"]) == 5
    one = changed.get(f"/audit/changes/{every['changes'][0]['change_id']}").json()
    assert one["explanation_text"][-1] == "weight: 100 → 70"
    assert one["before"]["weight"] == 100 and one["after"]["weight"] == 70

    unknown = changed.get("/audit/changes", outcome="refused")
    assert unknown.status_code == 400 and unknown.json()["error"]["param"] == "outcome"
    foreign = changed.get("/audit/decisions", limit=1)
    assert foreign.status_code == 200
    assert changed.get("/audit/changes/999").status_code == 404
    assert changed.get("/audit/changes", changed.operator).status_code == 403
    status = changed.get("/audit/chain/status", max_age=0).json()
    assert (status["decisions"], status["config_changes"]) == (0, 6)
    assert status["records"] == 6


def test_cli_signs_when_no_gateway_runs(changed: Changed, tmp_path: Path) -> None:
    """A token made while no gateway runs leaves no unsigned tail behind (the gateway, which
    would sign it, may not start again before the signed cadence runs out)."""
    changed.gateway.stop()  # the last test of the module: the gateway stays stopped
    ok(changed.data_dir, "tokens", "create", "--name", "chg-offline", "--role", "auditor")
    report = json.loads(ok(changed.data_dir, "audit", "verify", "--json").stdout)
    assert report["ok"] and report["unsigned_tail"] == 0, report
    assert report["config_changes"] == 7
