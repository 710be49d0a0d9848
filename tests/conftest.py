"""Suite-wide hooks."""

from __future__ import annotations

import os
from collections.abc import Generator

import pytest

REQUIRED_SERVICES_ENV = "RG_REQUIRE_SERVICES"
"""Set (as CI does) to turn skips for a missing PostgreSQL or Chromium into failures."""
_SERVICE_WORDS = ("PostgreSQL", "postgres", "chromium", "Chromium")


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, None]:
    """Where the services must be present, a test skipped for their absence fails instead."""
    outcome = yield
    report: pytest.TestReport = outcome.get_result()  # type: ignore[attr-defined]
    if os.environ.get(REQUIRED_SERVICES_ENV) and report.skipped:
        reason = str(report.longrepr)
        if any(word in reason for word in _SERVICE_WORDS):
            report.outcome = "failed"
            report.longrepr = f"required service missing (CI): {reason}"
