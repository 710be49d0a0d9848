"""The control plane of `serve --data-plane envoy`: every policy the runtime routes on is
translated (the decision by today's law) and pushed to the Envoys over ADS.

Translation runs on its own thread, so the event loop only hands over a policy; policies that
arrive while one is being translated coalesce (the newest wins). The policy's only dates are
its rules' (`tables.valid_until`): the tables are re-translated on the UTC day one comes into
or goes out of force, checked at every UTC midnight. Fail closed: a policy reaches this module
only from the database or the verified cache, and a translation error keeps the last pushed
configuration (never a wider one) and shows on /readyz.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from typing import Any

from compliance.snapshot import PolicySnapshot
from gateway.envoy.tables import valid_until
from gateway.envoy.translate import EnvoyOptions, translate
from gateway.envoy.xds_server import XdsServer

logger = logging.getLogger(__name__)

Clock = Callable[[], datetime]


def utc_now() -> datetime:
    """The wall clock in UTC (the decision date's clock)."""
    return datetime.now(UTC)


def seconds_to_next_day(now: datetime) -> float:
    """Seconds from `now` (aware) to the next UTC midnight."""
    now = now.astimezone(UTC)
    midnight = datetime.combine(now.date() + timedelta(days=1), datetime.min.time(), UTC)
    return (midnight - now).total_seconds()


@dataclass(frozen=True, slots=True)
class Published:
    """What was last pushed: the xDS version, the policy and date it was translated from."""

    version: str
    policy_version: int
    decided_on: date
    valid_until: date | None


class EnvoyControlPlane:
    """Translates each policy handed to `on_policy` and serves the result on `xds`."""

    def __init__(self, xds: XdsServer, options: EnvoyOptions, clock: Clock = utc_now) -> None:
        self.xds = xds
        self._options = options
        self._clock = clock
        self._wake = threading.Condition()
        self._pending: PolicySnapshot | None = None
        self._policy: PolicySnapshot | None = None
        self._stopping = False
        self._thread: threading.Thread | None = None
        self.published: Published | None = None
        self.error: str | None = None
        """The last translation error (None once a translation succeeds)."""

    def on_policy(self, policy: PolicySnapshot) -> None:
        """Hand over a policy to translate and push (returns at once)."""
        with self._wake:
            self._pending = policy
            self._wake.notify()

    def start(self) -> None:
        """Start the translating thread."""
        self._thread = threading.Thread(target=self._run, name="envoy-control-plane", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop the translating thread (a translation under way finishes first)."""
        with self._wake:
            self._stopping = True
            self._wake.notify()
        if self._thread is not None:
            self._thread.join(timeout)

    def publish(self, policy: PolicySnapshot, today: date) -> Published:
        """Translate `policy` as in force on `today` and serve it (the thread's one step)."""
        options = replace(self._options, decision_on=today)
        resources = translate(policy, options)
        self.xds.set_snapshot(resources.version, resources.by_type())
        published = Published(
            resources.version, policy.version, today, valid_until(policy.regimes, today)
        )
        self.published, self.error = published, None
        logger.info("Envoy configuration %s pushed (policy v%d)", published.version, policy.version)
        return published

    def due(self, today: date) -> bool:
        """True when the pushed tables no longer hold on `today` (a rule's date arrived)."""
        published = self.published
        if published is None:
            return False
        return published.valid_until is not None and today >= published.valid_until

    def _run(self) -> None:
        while True:
            with self._wake:
                if self._pending is None and not self._stopping:
                    self._wake.wait(seconds_to_next_day(self._clock()) + 1.0)
                if self._stopping:
                    return
                policy, self._pending = self._pending, None
            today = self._clock().date()
            if policy is None:
                if self._policy is None or not self.due(today):
                    continue
                policy = self._policy
                logger.info("a rule's date arrived (%s): re-translating the decision tables", today)
            self._policy = policy
            try:
                self.publish(policy, today)
            except Exception as exc:  # keep serving the last pushed configuration
                logger.exception(
                    "translating policy v%d failed; Envoy keeps the last", policy.version
                )
                self.error = f"translating policy v{policy.version} failed: {exc}"

    def serves(self, policy_version: int) -> bool:
        """True once a configuration of `policy_version` or newer is pushed and every connected
        Envoy accepted it whole (False with no Envoy connected)."""
        published = self.published
        if published is None or published.policy_version < policy_version:
            return False
        statuses = self.xds.statuses()
        connected = self.xds.connected()
        return bool(connected) and all(
            bool(types := statuses.get(node, {}))
            and all(s.accepted == published.version for s in types.values())
            for node in connected
        )

    def status(self) -> dict[str, Any]:
        """For /readyz: what is pushed, and what each connected Envoy accepted or refused."""
        published, current = self.published, self.xds.version
        connected = self.xds.connected()
        envoys: dict[str, dict[str, Any]] = {}
        running: list[bool] = []  # per Envoy: runs some configuration
        for node, types in self.xds.statuses().items():
            if node not in connected:
                continue
            accepted = {t.rsplit(".", 1)[-1]: s.accepted for t, s in types.items()}
            running.append(any(v is not None for v in accepted.values()))
            nacks = [s for s in types.values() if s.error]
            envoys[node] = {
                "accepted": accepted,
                "current": bool(types) and all(s.accepted == current for s in types.values()),
                "last_nack": nacks[-1].error if nacks else None,
            }
        current_everywhere = bool(envoys) and all(e["current"] for e in envoys.values())
        status = "ok"
        if self.error:
            status = f"degraded: {self.error}; Envoy runs the last pushed configuration"
        elif published is None:
            status = "not ready: no Envoy configuration translated yet"
        elif not envoys:
            status = "not ready: no Envoy connected to the control plane"
        elif not current_everywhere:
            status = f"degraded: an Envoy does not run the current configuration {current}"
        return {
            "ready": published is not None
            and any(any(v is not None for v in e["accepted"].values()) for e in envoys.values()),
            "status": status,
            "version": current,
            "policy_version": published.policy_version if published else None,
            "decided_on": published.decided_on.isoformat() if published else None,
            "valid_until": (
                published.valid_until.isoformat() if published and published.valid_until else None
            ),
            "connected": sorted(connected),
            "envoys": envoys,
        }
