"""Alerts out: what needs a person, read from the decision log and pushed to Prometheus
Alertmanager and/or a webhook, with retries, on a thread of its own.

The decisions that need a person are named by their ``(action, outcome)`` in :data:`RULES`:

===========================================  ==============================  ========
decision (action, outcome)                   alert                           severity
===========================================  ==============================  ========
``diagnose``, ``fix_data``                   DriftpilotDataFault             critical
``diagnose``, ``quarantined``                DriftpilotOutageQuarantined     warning
``diagnose``, ``quarantine_denied``          DriftpilotOutageNotQuarantined  critical
``rollback``, ``rolled_back``                DriftpilotRollback              warning
``start_canary``, ``awaiting_approval``      DriftpilotApprovalRequested     warning
``promote``, ``awaiting_approval``           DriftpilotApprovalRequested     warning
``check``, ``blind``                         DriftpilotBlind                 warning
``retrain``, ``failed``                      DriftpilotTrainingFailed        warning
===========================================  ==============================  ========

A blind check raises an alert only when the model turns blind (its check before was not): a
model stays blind for many checks, and a person needs telling once. Every alert carries the
labels ``alertname``, ``model``, ``severity`` and ``decision`` (its decision's id, so that two
rollbacks of one model are two alerts in Alertmanager, not one updated), and the annotations
``summary`` (the decision's rationale), ``decision_id``, ``agent``, ``action``, ``outcome`` and
``decision_time``, with what the kind adds (the fixes of a data fault, the groups quarantined, the
approval request, the training error).

Delivery is at least once: a failed attempt (no connection, a status other than 2xx) is retried
with back-off (:func:`driftpilot.memory.alerts.retry_delay`) against every target, so a webhook
may see an alert twice; its ``key`` tells the copies apart. Loops sharing a database each run a
sender: each alert is claimed for one attempt at a time (:func:`driftpilot.memory.alerts.claim_alert`).
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, NamedTuple

from sqlalchemy.orm import Session, sessionmaker

from driftpilot.config import Settings
from driftpilot.memory import alerts, decisions, managed
from driftpilot.memory.tables import AlertOut, Decision
from driftpilot.memory.times import utcnow

__all__ = ["RULES", "AlertRule", "AlertSender", "Scan", "alerts_from_decisions"]

logger = logging.getLogger(__name__)


def _nothing(decision: Decision) -> dict[str, str]:
    return {}


def _fixes(decision: Decision) -> dict[str, str]:
    return {"fix": "; ".join((decision.diagnosis or {}).get("fixes", []))}


def _groups(decision: Decision) -> dict[str, str]:
    return {"groups": ", ".join((decision.diagnosis or {}).get("quarantine_groups", []))}


def _approval(decision: Decision) -> dict[str, str]:
    return {"approval_id": str((decision.evidence or {}).get("approval", ""))}


def _error(decision: Decision) -> dict[str, str]:
    return {"error": str((decision.evidence or {}).get("error", ""))}


@dataclass(frozen=True)
class AlertRule:
    """The alert a kind of decision raises: its name, severity, the annotations it adds from the
    decision, and whether it is raised only when the outcome is new for the model (a state that
    lasts, such as blindness)."""

    name: str
    severity: str
    details: Callable[[Decision], dict[str, str]] = _nothing
    on_change: bool = False


_APPROVAL = AlertRule("DriftpilotApprovalRequested", "warning", _approval)

#: What needs a person: ``(action, outcome)`` of a decision, as the agents record it.
RULES: dict[tuple[str, str], AlertRule] = {
    # Diagnostician: a data-quality fault (the data owner must fix the feature), an upstream outage.
    ("diagnose", "fix_data"): AlertRule("DriftpilotDataFault", "critical", _fixes),
    ("diagnose", "quarantined"): AlertRule("DriftpilotOutageQuarantined", "warning", _groups),
    ("diagnose", "quarantine_denied"): AlertRule("DriftpilotOutageNotQuarantined", "critical", _groups),
    # Release Manager (a canary that hurt) and a person's manual rollback (serving.rollback).
    ("rollback", "rolled_back"): AlertRule("DriftpilotRollback", "warning"),
    # Release Manager at autonomy L3: a release or a promotion waits for a person's answer.
    ("start_canary", "awaiting_approval"): _APPROVAL,
    ("promote", "awaiting_approval"): _APPROVAL,
    # Monitor: a check that cannot judge.
    ("check", "blind"): AlertRule("DriftpilotBlind", "warning", on_change=True),
    # Trainer: a snapshot the model family could not train on.
    ("retrain", "failed"): AlertRule("DriftpilotTrainingFailed", "warning", _error),
}


class Scan(NamedTuple):
    """What one read of the decision log raised, and the id of the last decision it read."""

    alerts: list[AlertOut]
    last_id: int


def alerts_from_decisions(*, session: Session, after_id: int, at: datetime, limit: int = 500) -> Scan:
    """Raise an alert, due from ``at``, for each decision newer than ``after_id`` that needs a
    person (see :data:`RULES`); idempotent by decision, so reading a decision again raises nothing
    new. Read on from the returned ``last_id``."""
    found = decisions.decisions_after(session=session, after_id=after_id, kinds=RULES.keys(), limit=limit)
    raised = []
    for decision in found:
        alert = _raise(session, decision, at)
        if alert is not None:
            raised.append(alert)
    return Scan(raised, found[-1].id if found else after_id)


def _raise(session: Session, decision: Decision, at: datetime) -> AlertOut | None:
    """The alert of one decision, or None when its state is not new (still blind)."""
    rule = RULES[(decision.action, decision.outcome)]
    if rule.on_change and decisions.previous_outcome(session=session, decision=decision) == decision.outcome:
        return None
    model = None
    if decision.model_id is not None:
        model = managed.get_model_by_id(session=session, model_id=decision.model_id).name
    labels = {"alertname": rule.name, "model": model, "severity": rule.severity, "decision": str(decision.id)}
    annotations = {
        "summary": decision.rationale,
        "decision_id": str(decision.id),
        "agent": decision.agent,
        "action": decision.action,
        "outcome": decision.outcome,
        "decision_time": _iso(decision.time),
        **rule.details(decision),
    }
    return alerts.raise_alert(
        session=session,
        key=f"decision:{decision.id}",
        name=rule.name,
        severity=rule.severity,
        labels=labels,
        annotations={name: text for name, text in annotations.items() if text},
        starts_at=decision.time,
        at=at,
        model_id=decision.model_id,
        decision_id=decision.id,
    )


def _iso(moment: datetime) -> str:
    """RFC 3339 in UTC, as Alertmanager's API reads it."""
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def alertmanager_payload(alert: AlertOut, now: datetime) -> list[dict[str, Any]]:
    """The body of ``POST /api/v2/alerts`` for one alert.

    ``startsAt`` is the decision's time, but no later than ``now``: Alertmanager refuses an
    alert that starts after it ends, and a simulated clock may run ahead of the wall clock.
    Without ``endsAt`` Alertmanager resolves the alert after its ``resolve_timeout``.
    """
    body: dict[str, Any] = {
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": _iso(min(alert.starts_at, now)),
    }
    if alert.ends_at is not None:
        body["endsAt"] = _iso(alert.ends_at)
    return [body]


def webhook_payload(alert: AlertOut, now: datetime) -> dict[str, Any]:
    """The JSON a generic webhook receives for one alert."""
    ended = alert.ends_at is not None and alert.ends_at <= now
    return {
        "key": alert.key,
        "status": "resolved" if ended else "firing",
        "name": alert.name,
        "severity": alert.severity,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "startsAt": _iso(alert.starts_at),
        "endsAt": _iso(alert.ends_at) if alert.ends_at is not None else None,
        "model_id": alert.model_id,
        "decision_id": alert.decision_id,
    }


def post_json(url: str, payload: Any, *, timeout: float) -> str | None:
    """POST ``payload`` as JSON to ``url``; None when it answered 2xx, else what went wrong.

    Sent with the standard library's client: one JSON POST needs no more, and httpx is not among
    driftpilot's runtime dependencies.
    """
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode("utf-8"),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode("utf-8", "replace").strip()[:300]
        return f"{url} answered HTTP {exc.code}: {detail or exc.reason}"
    except urllib.error.URLError as exc:
        return f"{url} is unreachable: {exc.reason}"
    except (OSError, ValueError) as exc:  # a timeout while reading, a malformed URL
        return f"{url} failed: {exc}"
    return None


class AlertSender:
    """Turns new decisions into alerts and delivers the due ones, in passes.

    :meth:`run_once` is one pass; :meth:`start` runs a pass every ``every`` seconds on a daemon
    thread, so a slow or absent Alertmanager never holds up the loop (each POST waits at most
    ``timeout`` seconds), and :meth:`stop` ends it. Without any target, alerts are raised and
    stay pending until one is configured.

    Parameters
    ----------
    sessions
        The session factory of memory (each pass opens short sessions of its own).
    alertmanager_url
        Alertmanager's base URL (``http://127.0.0.1:9093``); alerts go to its ``/api/v2/alerts``.
    webhook_url
        A URL that receives each alert as JSON.
    every
        Seconds between passes of the thread.
    timeout
        Seconds one POST may take.
    batch
        Most alerts delivered in one pass.
    from_decisions
        Whether a pass first raises the alerts of new decisions (False: deliver only what
        others raised).
    clock
        The time of a threaded pass (the wall clock).
    """

    def __init__(
        self,
        sessions: sessionmaker[Session],
        *,
        alertmanager_url: str | None = None,
        webhook_url: str | None = None,
        every: float = 1.0,
        timeout: float = 5.0,
        batch: int = 50,
        from_decisions: bool = True,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.sessions = sessions
        self.alertmanager_url = alertmanager_url
        self.webhook_url = webhook_url
        self.every = every
        self.timeout = timeout
        self.batch = batch
        self.from_decisions = from_decisions
        self.clock = clock
        #: The last decision read for alerts (None until the first pass reads memory).
        self.cursor_: int | None = None
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_settings(cls, sessions: sessionmaker[Session], settings: Settings, **options: Any) -> AlertSender:
        """A sender to the targets of ``settings`` (``alertmanager_url``, ``alert_webhook_url``)."""
        return cls(
            sessions, alertmanager_url=settings.alertmanager_url, webhook_url=settings.alert_webhook_url, **options
        )

    def raise_new(self, now: datetime) -> list[AlertOut]:
        """Raise the alerts of the decisions logged since the last pass (after a restart: since
        the last decision alerted)."""
        with self.sessions() as session:
            if self.cursor_ is None:
                self.cursor_ = alerts.last_alerted_decision(session=session)
            scan = alerts_from_decisions(session=session, after_id=self.cursor_, at=now)
        self.cursor_ = scan.last_id
        return scan.alerts

    def send_due(self, now: datetime) -> list[AlertOut]:
        """Deliver the alerts due at ``now`` to every target, and record each success or failed
        attempt; returns the alerts attempted, as recorded."""
        if not (self.alertmanager_url or self.webhook_url):
            return []
        with self.sessions() as session:
            due = alerts.due_alerts(session=session, now=now, limit=self.batch)
        recorded = []
        for alert in due:
            if self._stopping.is_set():
                break
            targets = self._targets(alert, now)
            with self.sessions() as session:
                # Another loop's sender may have read it too: one delivers it, the other moves on.
                until = now + timedelta(seconds=self.timeout * len(targets) + 30)
                if not alerts.claim_alert(session=session, alert=alert, until=until):
                    continue
            posts = [post_json(url, body, timeout=self.timeout) for url, body in targets]
            errors = [error for error in posts if error is not None]
            recorded.append(self._record(alert.id, errors, now))
        return recorded

    def _targets(self, alert: AlertOut, now: datetime) -> list[tuple[str, Any]]:
        """(URL, body) of each configured target for ``alert``."""
        targets: list[tuple[str, Any]] = []
        if self.alertmanager_url:
            url = self.alertmanager_url.rstrip("/") + "/api/v2/alerts"
            targets.append((url, alertmanager_payload(alert, now)))
        if self.webhook_url:
            targets.append((self.webhook_url, webhook_payload(alert, now)))
        return targets

    def _record(self, alert_id: int, errors: list[str], now: datetime) -> AlertOut:
        with self.sessions() as session:
            if not errors:
                return alerts.mark_sent(session=session, alert_id=alert_id, now=now)
            alert = alerts.mark_failed_attempt(session=session, alert_id=alert_id, error="; ".join(errors), now=now)
        if alert.status == "failed":
            logger.warning("alert %s given up after %d attempts: %s", alert.key, alert.attempts, alert.last_error)
        return alert

    def run_once(self, now: datetime | None = None) -> list[AlertOut]:
        """One pass at ``now`` (the clock's time by default): raise, then deliver."""
        moment = now if now is not None else self.clock()
        if self.from_decisions:
            self.raise_new(moment)
        return self.send_due(moment)

    def start(self) -> AlertSender:
        """Run a pass every ``every`` seconds on a daemon thread, until :meth:`stop`."""
        if self._thread is not None and self._thread.is_alive():
            return self
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="driftpilot-alerts", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float | None = None) -> None:
        """End the thread after the POST in flight (waiting at most ``timeout`` seconds)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout if timeout is not None else self.timeout + self.every)
            self._thread = None

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self.run_once()
            except Exception:  # a database hiccup must not end the thread: the next pass retries
                logger.exception("a pass of the alert sender failed")
            self._stopping.wait(self.every)
