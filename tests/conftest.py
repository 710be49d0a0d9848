"""Suite-wide hooks."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

REQUIRED_SERVICES_ENV = "RG_REQUIRE_SERVICES"
"""Set (as CI does) to turn skips for a missing PostgreSQL, Chromium or terraform into failures."""
_MISSING_SERVICE = ("unreachable", "not installed", "is absent", "not found")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """Where the services must be present, a test skipped for their absence fails instead."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get(REQUIRED_SERVICES_ENV) and report.skipped:
        reason = str(report.longrepr)
        if any(phrase in reason for phrase in _MISSING_SERVICE):
            report.outcome = "failed"
            report.longrepr = f"required service missing (CI): {reason}"


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, None]:
    """The same for a whole module skipped at collection (e.g. no browser)."""
    outcome = yield
    report: pytest.CollectReport = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get(REQUIRED_SERVICES_ENV) and report.skipped:
        reason = str(report.longrepr)
        if any(phrase in reason for phrase in _MISSING_SERVICE):
            report.outcome = "failed"
            report.longrepr = f"required service missing (CI): {reason}"
