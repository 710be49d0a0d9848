"""The auditors' web console in headless Chromium (Debian's `chromium`, driven by Playwright).

Signs in with an auditor token, filters, pages, opens decisions, reads their explanation and
trace id, sees the chain status and the jurisdiction x region chart, and screenshots the page;
lists and opens configuration changes, whose count and the decisions' add up to the chain's.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from compliance.audit_query.changes import parse_change_filter
from compliance.audit_query.reader import AuditReader
from compliance.store.access_store import AccessStore, Role
from regions.simulator.fleet import SimulatorFleet
from tests.integration.admin_support import Admin
from tests.integration.conftest import (
    ACME_KEY,
    CHAT,
    DEMO_KEY,
    IP_CN,
    IP_DE,
    IP_GB,
    IP_IN,
    IP_US,
    GatewayProcess,
    openai_client,
    trace_id_of,
)

pytestmark = pytest.mark.integration

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(
        f"{CHROMIUM} is absent: install Debian's 'chromium' package to run the console test",
        allow_module_level=True,
    )

from playwright.sync_api import Page, expect, sync_playwright  # noqa: E402

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
ROUNDS = 4
TRAFFIC: list[tuple[str, dict[str, str], str]] = [
    (IP_DE, {}, DEMO_KEY),
    (IP_DE, {"X-Data-Subject-Country": "CN"}, DEMO_KEY),
    (IP_GB, {"X-Data-Subject-Country": "FR"}, ACME_KEY),
    (IP_IN, {"X-Data-Class": "payment"}, DEMO_KEY),
    (IP_US, {}, DEMO_KEY),
    (IP_CN, {}, DEMO_KEY),
    (IP_GB, {}, DEMO_KEY),
]


class Console:
    """A gateway with ROUNDS x TRAFFIC logged decisions and an auditor token."""

    def __init__(self, gateway: GatewayProcess, token: str) -> None:
        self.gateway = gateway
        self.token = token
        self.decisions: list[dict[str, Any]] = []

    def send(self, ip: str, headers: dict[str, str], key: str) -> None:
        with openai_client(self.gateway, ip, api_key=key, headers=headers) as client:
            try:
                raw = client.chat.completions.with_raw_response.create(
                    model="gpt-4o-mini", messages=CHAT
                )
                response_headers, status = raw.headers, raw.status_code
            except Exception as exc:  # a 451 refusal is an expected answer here
                response = getattr(exc, "response", None)
                assert response is not None, exc
                response_headers, status = response.headers, response.status_code
        self.decisions.append(
            {
                "id": response_headers["x-residency-decision"],
                "trace": trace_id_of(response_headers["traceparent"]),
                "status": status,
                "ip": ip,
                "headers": headers,
            }
        )


@pytest.fixture(scope="module")
def console(
    catalog: Path, fleet: SimulatorFleet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Console]:
    with GatewayProcess(catalog, tmp_path_factory.mktemp("console")) as gateway:
        store = AccessStore(gateway.database_url)
        try:
            token = store.create("console-auditor", Role.AUDITOR)
            admin = store.create("console-admin", Role.ADMIN)
        finally:
            store.close()
        state = Console(gateway, token)
        for _ in range(ROUNDS):
            for ip, headers, key in TRAFFIC:
                state.send(ip, headers, key)
        for decision in state.decisions:
            gateway.record(decision["id"])
        # Configuration changes after the traffic (they join the same chain).
        changed = Admin(gateway, admin)("PATCH", "/regions/in-mumbai", {"weight": 80})
        assert changed.status_code == 200, changed.text
        store = AccessStore(gateway.database_url)
        try:
            store.create("console-temporary", Role.OPERATOR)
            assert store.revoke("console-temporary")
        finally:
            store.close()
        yield state


@pytest.fixture
def page(console: Console) -> Iterator[Page]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            tab = context.new_page()
            tab.set_default_timeout(15_000)
            errors: list[str] = []
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            tab.goto(f"{console.gateway.base_url}/console")
            yield tab
            assert errors == [], f"JavaScript errors: {errors}"
        finally:
            browser.close()


def _sign_in(page: Page, token: str) -> None:
    page.fill("#token", token)
    page.click("#login button[type=submit]")
    expect(page.locator("#app")).to_be_visible()


def _rows(page: Page) -> Any:
    return page.locator("#decisions tbody tr")


def test_sign_in_is_refused_for_a_bad_token(page: Page) -> None:
    page.fill("#token", "rgo_wrong")
    page.click("#login button[type=submit]")
    expect(page.locator("#message")).to_have_text(
        "Sign-in refused: invalid or revoked operator token"
    )
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.length") == 0
    # The sign-in page says how to get a token.
    expect(page.locator("#login-hint")).to_contain_text("tokens create --name")
    expect(page.locator("#login-hint")).to_contain_text("--role auditor")


def test_auditor_uses_the_console(page: Page, console: Console, tmp_path: Path) -> None:
    total = len(console.decisions)
    _sign_in(page, console.token)
    assert page.evaluate("sessionStorage.getItem('rg-audit-token')") == console.token
    expect(page.locator("#login-hint")).to_be_hidden()

    # The list, newest first, 25 a page; paging there and back.
    page.select_option("#filters select[name=limit]", "25")
    page.click("#filters button[type=submit]")
    expect(_rows(page)).to_have_count(25)
    newest = console.decisions[-1]["id"]
    expect(_rows(page).first.locator("a")).to_have_text(newest)
    page.click("#older")
    expect(_rows(page)).to_have_count(total - 25)
    expect(page.locator("#newer")).to_be_enabled()
    expect(page.locator("#older")).to_be_disabled()
    page.click("#newer")
    expect(_rows(page)).to_have_count(25)

    # Filter: refusals only.
    page.select_option("#filters select[name=outcome]", "refused")
    page.click("#filters button[type=submit]")
    refused = [d for d in console.decisions if d["status"] == 451]
    expect(_rows(page)).to_have_count(len(refused))
    expect(page.locator("#decisions td.outcome.refused")).to_have_count(len(refused))

    # Open the newest refusal: explanation in plain words and its trace id.
    _rows(page).first.locator("a").click()
    detail = page.locator("#detail")
    expect(detail).to_be_visible()
    expect(page.locator("#detail-id")).to_have_text(refused[-1]["id"])
    expect(page.locator("#detail-summary")).to_contain_text("Refused (HTTP 451)")
    expect(page.locator("#detail-trace")).to_have_text(refused[-1]["trace"])
    expect(page.locator("#detail-lines li", has_text="Reason: ")).to_have_count(1)

    # Filter by subject jurisdiction and region; open a routed German decision.
    page.click("#filters button[type=reset]")
    page.fill("#filters input[name=jurisdiction]", "de")
    page.fill("#filters input[name=region]", "eu-frankfurt")
    page.click("#filters button[type=submit]")
    german = [d for d in console.decisions if d["ip"] == IP_DE and not d["headers"]]
    expect(_rows(page)).to_have_count(len(german))
    _rows(page).last.locator("a").click()
    expect(page.locator("#detail-id")).to_have_text(german[0]["id"])
    summary = page.locator("#detail-summary")
    expect(summary).to_contain_text("EU data subject (DE, located by client IP) under EU GDPR")
    expect(summary).to_contain_text(
        "us-virginia excluded: US allowed only with attestation EU-US Data Privacy Framework"
    )
    expect(page.locator("#detail-trace")).to_have_text(german[0]["trace"])

    # The report of the filtered period: re-evaluation and the chart.
    expect(page.locator("#reevaluation")).to_contain_text("Re-evaluation: 0 violations")
    expect(page.locator("#report-totals")).to_have_text(
        f"{len(german)} decisions (routed {len(german)})."
    )
    page.click("#filters button[type=reset]")
    expect(page.locator("#report-totals")).to_contain_text(f"{total} decisions")
    chart = page.locator("#matrix-svg")
    expect(chart).to_be_visible()
    expect(chart.locator("rect.segment")).to_have_count(_segments(console))
    expect(chart.locator("text.legend")).to_contain_text(
        ["eu-frankfurt", "in-mumbai", "uk-london", "us-virginia", "not processed"]
    )
    expect(page.locator("#refusals tbody tr")).to_have_count(2)

    # Chain status, verified by the gateway.
    expect(page.locator("#chain-status")).to_have_text(
        re.compile(r"^Verified: chain intact: \d+ records")
    )

    # Export buttons download the log (the export endpoint of the audit chain).
    with page.expect_download() as download:
        page.click("#export-csv")
    saved = tmp_path / "export.csv"
    download.value.save_as(saved)
    exported = saved.read_text()
    assert all(d["id"] in exported for d in console.decisions)
    with page.expect_download() as download:
        page.click("#export-jsonl")
    assert download.value.suggested_filename.endswith(".jsonl")
    expect(page.locator("#message")).to_contain_text("Export downloaded")

    # A screenshot that is not blank: the page and the chart in several colours.
    shot = page.screenshot(full_page=True)
    (tmp_path / "console.png").write_bytes(shot)
    assert _colours(shot) >= 8
    assert _colours(chart.screenshot()) >= 5

    page.click("#logout")
    expect(page.locator("#app")).to_be_hidden()
    assert page.evaluate("sessionStorage.getItem('rg-audit-token')") is None


def _changes(console: Console, **filters: str) -> list[dict[str, Any]]:
    reader = AuditReader(console.gateway.database_url)
    try:
        return reader.search_changes(parse_change_filter(**filters), 1000).changes
    finally:
        reader.close()


def test_configuration_changes_are_listed_and_add_up(page: Page, console: Console) -> None:
    changes = _changes(console)
    assert len(changes) == 5  # 3 tokens created, 1 revoked, 1 region changed
    _sign_in(page, console.token)
    rows = page.locator("#changes tbody tr")
    expect(rows).to_have_count(len(changes))
    expect(rows.first.locator("a")).to_have_text(str(changes[0]["change_id"]))
    expect(rows.first).to_contain_text("token console-temporary")

    # The chain card counts what the two tables list (verified now, not a cached result).
    page.click("#chain-refresh")
    status = page.locator("#chain-status")
    pattern = re.compile(
        r"^Verified: chain intact: (\d+) records \((\d+) decisions, (?:(\d+) write-ahead"
        r"(?: \(\d+ without an outcome recorded\))?, )?(\d+) configuration changes; \d+ signed "
        r"checkpoints\)$"
    )
    expect(status).to_have_text(pattern)
    match = pattern.match(status.inner_text())
    assert match is not None
    records, decisions, written_ahead, configuration = (int(n or 0) for n in match.groups())
    assert (decisions, configuration) == (len(console.decisions), len(changes))
    # Every routed decision was written ahead (default durability) before its record.
    routed = sum(1 for d in console.decisions if d["status"] == 200)
    assert written_ahead >= routed
    assert records == decisions + written_ahead + configuration

    # One change in detail: who, role, before -> after.
    region = next(c for c in changes if c["object_type"] == "region")
    page.locator(f"#changes a[data-change='{region['change_id']}']").click()
    expect(page.locator("#change-detail")).to_be_visible()
    expect(page.locator("#change-summary")).to_have_text(
        "region in-mumbai updated by console-admin (admin): weight"
    )
    expect(page.locator("#change-lines li", has_text="weight: ")).to_have_text("weight: 100 → 80")
    expect(page.locator("#change-json")).not_to_contain_text("rgo_")

    # Filter: token revocations only.
    page.select_option("#change-filters select[name=action]", "revoke")
    page.click("#change-filters button[type=submit]")
    expect(rows).to_have_count(len(_changes(console, action="revoke")))
    expect(rows.first).to_contain_text("revoked_at")


def _segments(console: Console) -> int:
    """Bars drawn: one per (subject jurisdiction, region or 'not processed') pair."""
    pairs = set()
    for d in console.decisions:
        record = console.gateway.record(d["id"])
        who = record["subject_country"] or record["client_country"] or "unknown"
        pairs.add((who, record["served_region"]))
    return len(pairs)


def _colours(png: bytes) -> int:
    """Distinct colours among the most common ones (ignoring anti-aliasing noise)."""
    image = Image.open(io.BytesIO(png)).convert("RGB")
    counts = image.getcolors(maxcolors=1 << 24) or []
    return sum(1 for n, _ in counts if n >= 50)
