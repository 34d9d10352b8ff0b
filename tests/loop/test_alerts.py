"""Alerts out: raised once per decision that needs a person, retried with back-off, delivered to a
webhook and to a real Prometheus Alertmanager started on loopback."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.config import Settings
from driftpilot.loop.alerts import RULES, AlertSender, alerts_from_decisions
from driftpilot.memory import alerts, db, decisions, managed
from driftpilot.memory.schemas import FeatureSpec, ModelSchema
from driftpilot.memory.tables import Decision
from tests.live import free_port, serving

T0 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
SCHEMA = ModelSchema(
    features=[FeatureSpec(name="signal", kind="number")],
    target="failed",
    classes=["ok", "failed"],
    entity_key="device",
    group_key="site",
)


@pytest.fixture
def sessions(tmp_path: Path) -> Iterator[sessionmaker[Session]]:
    factory = db.connect(f"sqlite:///{tmp_path / 'memory.sqlite'}")
    yield factory
    factory.kw["bind"].dispose()


@pytest.fixture
def model_id(sessions: sessionmaker[Session]) -> int:
    with sessions() as session:
        model = managed.register_model(session=session, name="gateway", task="tabular", family="mlp", schema=SCHEMA)
        return model.id


def _decide(
    sessions: sessionmaker[Session],
    model_id: int,
    agent: str,
    action: str,
    outcome: str,
    *,
    rationale: str = "",
    evidence: dict[str, Any] | None = None,
    diagnosis: dict[str, Any] | None = None,
    minutes: int = 0,
) -> Decision:
    with sessions() as session:
        return decisions.record_decision(
            session=session,
            model_id=model_id,
            run_id="run-1",
            agent=agent,
            time=T0 + timedelta(minutes=minutes),
            trigger={},
            evidence=evidence or {},
            diagnosis=diagnosis or {},
            policy_verdicts=[],
            action=action,
            outcome=outcome,
            rationale=rationale or f"{agent} {action}: {outcome}",
        )


def _raise(session: Session, key: str = "decision:1", **changes: Any) -> Any:
    fields: dict[str, Any] = {
        "key": key,
        "name": "DriftpilotRollback",
        "severity": "warning",
        "labels": {"alertname": "DriftpilotRollback", "model": "gateway", "severity": "warning"},
        "annotations": {"summary": "Version 3 rolled back."},
        "starts_at": T0,
        "at": NOW,
    }
    return alerts.raise_alert(session=session, **(fields | changes))


# --- the repository ---------------------------------------------------------------------------


def test_raising_a_key_again_returns_the_first_alert_and_changes_nothing(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        first = _raise(session)
        again = _raise(session, severity="critical", annotations={"summary": "other"}, at=NOW + timedelta(hours=1))

        assert again.id == first.id
        assert (again.severity, again.annotations, again.next_attempt_at) == ("warning", first.annotations, NOW)
        assert [a.key for a in alerts.list_alerts(session=session)] == ["decision:1"]
        assert (first.status, first.attempts, first.labels["model"]) == ("pending", 0, "gateway")


def test_a_failed_attempt_waits_longer_each_time_and_the_alert_is_given_up_after_twelve(
    sessions: sessionmaker[Session],
) -> None:
    with sessions() as session:
        alert = _raise(session)
        waits = []
        now = NOW
        for attempt in range(1, alerts.MAX_ATTEMPTS + 1):
            assert [a.id for a in alerts.due_alerts(session=session, now=now)] == [alert.id]
            alert = alerts.mark_failed_attempt(session=session, alert_id=alert.id, error=f"refused {attempt}", now=now)
            if alert.status == "pending":
                waits.append((alert.next_attempt_at - now).total_seconds())
                assert alerts.due_alerts(session=session, now=alert.next_attempt_at - timedelta(seconds=1)) == []
                now = alert.next_attempt_at

        assert waits == [5, 10, 20, 40, 80, 160, 320, 600, 600, 600, 600]
        assert (alert.status, alert.attempts, alert.last_error) == ("failed", 12, "refused 12")
        assert alerts.due_alerts(session=session, now=now + timedelta(days=1)) == []
        assert alerts.list_alerts(session=session, status="failed") == [alert]


def test_a_sent_alert_is_no_longer_due_and_a_late_failure_does_not_undo_it(sessions: sessionmaker[Session]) -> None:
    with sessions() as session:
        alert = _raise(session)
        sent = alerts.mark_sent(session=session, alert_id=alert.id, now=NOW)
        late = alerts.mark_failed_attempt(session=session, alert_id=alert.id, error="timeout", now=NOW)
        again = alerts.mark_sent(session=session, alert_id=alert.id, now=NOW + timedelta(minutes=1))

        assert (late.status, late.attempts, late.sent_at, late.last_error) == ("sent", 1, NOW, "")
        assert again.sent_at == sent.sent_at == NOW
        assert alerts.due_alerts(session=session, now=NOW + timedelta(days=1)) == []
        with pytest.raises(ValueError, match="one of pending, sent, failed"):
            alerts.list_alerts(session=session, status="lost")


# --- from decisions to alerts -----------------------------------------------------------------

#: One real decision of each kind that needs a person, as its agent records it, and its alert.
KINDS: dict[str, tuple[tuple[str, str, str], dict[str, Any], tuple[str, str, dict[str, str]]]] = {
    "data-fault": (
        ("diagnostician", "diagnose", "fix_data"),
        {"diagnosis": {"fixes": ["multiply 'signal' by 1000 to restore its unit"]}},
        ("DriftpilotDataFault", "critical", {"fix": "multiply 'signal' by 1000 to restore its unit"}),
    ),
    "outage-quarantined": (
        ("diagnostician", "diagnose", "quarantined"),
        {"diagnosis": {"quarantine_groups": ["site-4", "site-7"]}},
        ("DriftpilotOutageQuarantined", "warning", {"groups": "site-4, site-7"}),
    ),
    "outage-not-quarantined": (
        ("diagnostician", "diagnose", "quarantine_denied"),
        {"diagnosis": {"quarantine_groups": ["site-4"]}},
        ("DriftpilotOutageNotQuarantined", "critical", {"groups": "site-4"}),
    ),
    "rollback": (
        ("release_manager", "rollback", "rolled_back"),
        {},
        ("DriftpilotRollback", "warning", {}),
    ),
    "manual-rollback": (
        ("operator", "rollback", "rolled_back"),
        {"evidence": {"from": 3, "to": 2, "requested_by": "noc-lead"}},
        ("DriftpilotRollback", "warning", {}),
    ),
    "release-approval": (
        ("release_manager", "start_canary", "awaiting_approval"),
        {"evidence": {"approval": 7, "version": 3}},
        ("DriftpilotApprovalRequested", "warning", {"approval_id": "7"}),
    ),
    "promotion-approval": (
        ("release_manager", "promote", "awaiting_approval"),
        {"evidence": {"approval": 8, "version": 3}},
        ("DriftpilotApprovalRequested", "warning", {"approval_id": "8"}),
    ),
    "blind": (
        ("monitor", "check", "blind"),
        {},
        ("DriftpilotBlind", "warning", {}),
    ),
    "training-failed": (
        ("trainer", "retrain", "failed"),
        {"evidence": {"error": "one class only"}},
        ("DriftpilotTrainingFailed", "warning", {"error": "one class only"}),
    ),
}


@pytest.mark.parametrize(("step", "logged", "expected"), list(KINDS.values()), ids=list(KINDS))
def test_each_decision_that_needs_a_person_raises_its_alert(
    sessions: sessionmaker[Session],
    model_id: int,
    step: tuple[str, str, str],
    logged: dict[str, Any],
    expected: tuple[str, str, dict[str, str]],
) -> None:
    agent, action, outcome = step
    name, severity, details = expected
    decision = _decide(sessions, model_id, agent, action, outcome, rationale="Why it was done.", **logged)

    with sessions() as session:
        scan = alerts_from_decisions(session=session, after_id=0, at=NOW)

    [alert] = scan.alerts
    assert scan.last_id == decision.id
    assert (alert.key, alert.name, alert.severity, alert.decision_id) == (
        f"decision:{decision.id}",
        name,
        severity,
        decision.id,
    )
    assert alert.labels == {"alertname": name, "model": "gateway", "severity": severity, "decision": str(decision.id)}
    assert alert.annotations == {
        "summary": "Why it was done.",
        "decision_id": str(decision.id),
        "agent": agent,
        "action": action,
        "outcome": outcome,
        "decision_time": "2026-03-01T10:00:00.000Z",
        **details,
    }
    assert (alert.starts_at, alert.next_attempt_at, alert.status) == (T0, NOW, "pending")


def test_every_rule_is_a_step_an_agent_records() -> None:
    # The rules name the agents' own words (see the KINDS above): one test per rule.
    assert {(action, outcome) for (_, action, outcome), _, _ in KINDS.values()} == set(RULES)


def test_routine_decisions_raise_nothing_and_reading_again_raises_nothing_new(
    sessions: sessionmaker[Session], model_id: int
) -> None:
    _decide(sessions, model_id, "monitor", "check", "healthy")
    _decide(sessions, model_id, "monitor", "check", "finding")
    _decide(sessions, model_id, "diagnostician", "diagnose", "retrain")
    rollback = _decide(sessions, model_id, "release_manager", "rollback", "rolled_back")
    _decide(sessions, model_id, "release_manager", "promote", "promoted")

    with sessions() as session:
        first = alerts_from_decisions(session=session, after_id=0, at=NOW)
        again = alerts_from_decisions(session=session, after_id=0, at=NOW + timedelta(hours=1))
        later = alerts_from_decisions(session=session, after_id=first.last_id, at=NOW)

        assert [a.decision_id for a in first.alerts] == [rollback.id]
        assert [a.id for a in again.alerts] == [a.id for a in first.alerts]
        assert later == ([], rollback.id)
        assert len(alerts.list_alerts(session=session)) == 1
        assert alerts.last_alerted_decision(session=session) == rollback.id


def test_a_model_turning_blind_raises_one_alert_however_long_it_stays_blind(
    sessions: sessionmaker[Session], model_id: int
) -> None:
    outcomes = ["healthy", "blind", "blind", "blind", "healthy", "blind", "blind"]
    logged = [_decide(sessions, model_id, "monitor", "check", o, minutes=10 * i) for i, o in enumerate(outcomes)]

    with sessions() as session:
        # Read in two parts: the state before a part is read from the log, not remembered.
        head = alerts_from_decisions(session=session, after_id=0, at=NOW, limit=3)
        tail = alerts_from_decisions(session=session, after_id=head.last_id, at=NOW)

    assert [a.decision_id for a in head.alerts + tail.alerts] == [logged[1].id, logged[5].id]
    assert {a.name for a in head.alerts + tail.alerts} == {"DriftpilotBlind"}


# --- delivery ---------------------------------------------------------------------------------


class Receiver:
    """A tiny HTTP server on loopback that records each POST and answers ``status``."""

    def __init__(self, status: int = 200, delay: float = 0.0) -> None:
        self.status = status
        self.delay = delay
        self.requests: list[tuple[str, Any]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((self.path, json.loads(body)))
                time.sleep(receiver.delay)
                self.send_response(receiver.status)
                self.end_headers()
                self.wfile.write(b"no" if receiver.status >= 300 else b"")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def bodies(self, path: str) -> list[Any]:
        return [body for at, body in self.requests if at == path]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    server.thread.start()
    yield server
    server.server.shutdown()
    server.server.server_close()


def test_an_alert_goes_to_alertmanager_as_its_v2_list_and_to_the_webhook_as_json(
    sessions: sessionmaker[Session], model_id: int, receiver: Receiver
) -> None:
    decision = _decide(sessions, model_id, "release_manager", "rollback", "rolled_back", rationale="Canary hurt.")
    sender = AlertSender(sessions, alertmanager_url=receiver.url + "/", webhook_url=receiver.url + "/hook")

    [alert] = sender.run_once(NOW)

    assert (alert.status, alert.attempts, alert.sent_at) == ("sent", 1, NOW)
    [posted] = receiver.bodies("/api/v2/alerts")
    assert posted == [
        {
            "labels": {
                "alertname": "DriftpilotRollback",
                "model": "gateway",
                "severity": "warning",
                "decision": str(decision.id),
            },
            "annotations": alert.annotations,
            "startsAt": "2026-03-01T10:00:00.000Z",
        }
    ]
    [hooked] = receiver.bodies("/hook")
    assert (hooked["key"], hooked["status"]) == (f"decision:{decision.id}", "firing")
    assert hooked["decision_id"] == decision.id
    assert hooked["annotations"]["summary"] == "Canary hurt."
    assert sender.run_once(NOW + timedelta(minutes=1)) == []


def test_two_senders_that_read_the_same_due_alert_deliver_it_once(
    sessions: sessionmaker[Session], model_id: int, receiver: Receiver
) -> None:
    """Loops sharing a database each run a sender: an alert is claimed for one attempt at a time."""
    _decide(sessions, model_id, "release_manager", "rollback", "rolled_back", rationale="Canary hurt.")
    first, second = (AlertSender(sessions, webhook_url=receiver.url + "/hook") for _ in range(2))
    first.raise_new(NOW)
    with sessions() as session:
        [seen_by_first] = alerts.due_alerts(session=session, now=NOW)
        [seen_by_second] = alerts.due_alerts(session=session, now=NOW)
        taken = alerts.claim_alert(session=session, alert=seen_by_first, until=NOW + timedelta(minutes=1))
        again = alerts.claim_alert(session=session, alert=seen_by_second, until=NOW + timedelta(minutes=1))

    assert (taken, again) == (True, False)
    assert second.send_due(NOW) == []  # claimed: not due again before the claim lapses
    [sent] = first.send_due(NOW + timedelta(minutes=1))
    assert sent.status == "sent" and len(receiver.bodies("/hook")) == 1


def test_an_alert_from_a_clock_ahead_of_the_wall_starts_when_it_is_sent(
    sessions: sessionmaker[Session], model_id: int, receiver: Receiver
) -> None:
    _decide(sessions, model_id, "monitor", "check", "blind")
    earlier = T0 - timedelta(hours=1)  # the sender's clock is behind the decision's (simulated) time

    AlertSender(sessions, alertmanager_url=receiver.url).run_once(earlier)

    assert receiver.bodies("/api/v2/alerts")[0][0]["startsAt"] == "2026-03-01T09:00:00.000Z"


def test_a_refusing_endpoint_is_retried_with_back_off_until_it_accepts(
    sessions: sessionmaker[Session], model_id: int, receiver: Receiver
) -> None:
    _decide(sessions, model_id, "trainer", "retrain", "failed")
    receiver.status = 503
    sender = AlertSender(sessions, webhook_url=receiver.url + "/hook")

    [first] = sender.run_once(NOW)
    waiting = sender.run_once(NOW + timedelta(seconds=4))
    [second] = sender.run_once(NOW + timedelta(seconds=5))
    receiver.status = 200
    early = sender.run_once(NOW + timedelta(seconds=14))
    [third] = sender.run_once(NOW + timedelta(seconds=15))

    assert (first.status, first.attempts, first.next_attempt_at) == ("pending", 1, NOW + timedelta(seconds=5))
    assert first.last_error == f"{receiver.url}/hook answered HTTP 503: no"
    assert waiting == early == []
    assert (second.attempts, second.next_attempt_at) == (2, NOW + timedelta(seconds=15))
    assert (third.status, third.attempts, third.last_error) == ("sent", 3, "")
    assert len(receiver.requests) == 3


def test_an_unreachable_alertmanager_is_a_failed_attempt_and_so_is_a_partial_delivery(
    sessions: sessionmaker[Session], model_id: int, receiver: Receiver
) -> None:
    _decide(sessions, model_id, "diagnostician", "diagnose", "fix_data")
    nobody = f"http://127.0.0.1:{free_port()}"
    sender = AlertSender(sessions, alertmanager_url=nobody, webhook_url=receiver.url + "/hook", timeout=2.0)

    [alert] = sender.run_once(NOW)

    assert (alert.status, alert.attempts) == ("pending", 1)
    assert alert.last_error.startswith(f"{nobody}/api/v2/alerts is unreachable: ")
    assert "refused" in alert.last_error
    assert len(receiver.bodies("/hook")) == 1  # the webhook got it; the retry goes to both


def test_without_a_target_alerts_are_raised_and_stay_pending(sessions: sessionmaker[Session], model_id: int) -> None:
    _decide(sessions, model_id, "release_manager", "rollback", "rolled_back")
    sender = AlertSender.from_settings(sessions, Settings(alertmanager_url=None, alert_webhook_url=None))

    assert sender.run_once(NOW) == []

    with sessions() as session:
        assert [(a.status, a.attempts) for a in alerts.list_alerts(session=session)] == [("pending", 0)]


def test_the_sender_thread_delivers_without_holding_up_its_caller(
    sessions: sessionmaker[Session], model_id: int, receiver: Receiver
) -> None:
    receiver.delay = 0.5  # a slow endpoint
    sender = AlertSender(sessions, webhook_url=receiver.url + "/hook", every=0.05)

    started = time.monotonic()
    sender.start()
    decision = _decide(sessions, model_id, "release_manager", "rollback", "rolled_back")
    took = time.monotonic() - started
    deadline = time.monotonic() + 10
    while not receiver.requests and time.monotonic() < deadline:
        time.sleep(0.05)
    sender.stop()

    assert took < 0.5
    assert [body["decision_id"] for body in receiver.bodies("/hook")] == [decision.id]
    assert sender._thread is None
    with sessions() as session:
        assert [a.status for a in alerts.list_alerts(session=session)] == ["sent"]


# --- a real Alertmanager ----------------------------------------------------------------------

ALERTMANAGER = "/usr/bin/prometheus-alertmanager"
ALERTMANAGER_CONFIG = """\
route:
  receiver: "nobody"
receivers:
  - name: "nobody"
"""


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"Alertmanager exited with {process.returncode}:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(url + "/-/ready", timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    pytest.fail(f"Alertmanager was not ready within 30 s:\n{log.read_text()}")


@contextmanager
def running_alertmanager(tmp_path: Path, config_text: str = ALERTMANAGER_CONFIG) -> Iterator[str]:
    """The base URL of a Prometheus Alertmanager of this test's own, on loopback."""
    binary = shutil.which("prometheus-alertmanager") or ALERTMANAGER
    if not Path(binary).exists():
        message = f"{ALERTMANAGER} is not installed (apt-get install -y prometheus-alertmanager)"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    config = tmp_path / "alertmanager.yml"
    config.write_text(config_text)
    log = tmp_path / "alertmanager.log"
    url = f"http://127.0.0.1:{free_port()}"
    command = [
        binary,
        f"--config.file={config}",
        f"--storage.path={tmp_path / 'alertmanager'}",
        f"--web.listen-address={url.removeprefix('http://')}",
        "--cluster.listen-address=",  # no gossip: a single instance
    ]
    with log.open("wb") as output:
        process = subprocess.Popen(command, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_ready(url, process, log)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[str]:
    with running_alertmanager(tmp_path) as url:
        yield url


def test_a_driftpilot_alert_arrives_in_a_real_alertmanager(
    sessions: sessionmaker[Session], model_id: int, alertmanager: str
) -> None:
    decision = _decide(
        sessions, model_id, "release_manager", "rollback", "rolled_back", rationale="Version 3 rolled back."
    )
    sender = AlertSender(sessions, alertmanager_url=alertmanager)

    [alert] = sender.run_once(datetime.now(UTC))

    assert (alert.status, alert.last_error) == ("sent", "")
    query = urllib.parse.urlencode({"filter": 'alertname="DriftpilotRollback"'})
    [held] = _get_json(f"{alertmanager}/api/v2/alerts?{query}")
    assert held["labels"] == {
        "alertname": "DriftpilotRollback",
        "model": "gateway",
        "severity": "warning",
        "decision": str(decision.id),
    }
    assert held["annotations"]["summary"] == "Version 3 rolled back."
    assert held["annotations"]["decision_id"] == str(decision.id)
    assert held["startsAt"].startswith("2026-03-01T10:00:00")
    assert held["status"]["state"] in ("active", "unprocessed")


ROUND_TRIP_CONFIG = """\
route:
  receiver: "driftpilot"
  group_by: ["alertname", "model", "decision"]
  group_wait: 0s
  group_interval: 1s
receivers:
  - name: "driftpilot"
    webhook_configs:
      - url: "{hook}"
        send_resolved: true
        http_config:
          authorization:
            type: Bearer
            credentials: "{token}"
"""


def test_alertmanager_hands_driftpilot_s_alert_back_through_the_hook_as_an_alarm(
    sessions: sessionmaker[Session], model_id: int, tmp_path: Path
) -> None:
    """driftpilot → Alertmanager's API → Alertmanager's webhook receiver → ``/hooks/alertmanager``
    on a live server: the alarm path a deployment wires up, end to end, over real HTTP."""
    from driftpilot.api import create_app
    from driftpilot.config import Settings
    from driftpilot.memory.tables import Alarm
    from driftpilot.memory.tokens import create_token
    from driftpilot.models.registry import Registry

    with sessions() as session:
        _, token = create_token(session=session, name="alertmanager", role="ingest")
    app = create_app(sessions, Registry(tmp_path / "artifacts"), settings=Settings(home=tmp_path))
    with serving(app, free_port()) as base:
        config = ROUND_TRIP_CONFIG.format(hook=f"{base}/hooks/alertmanager", token=token)
        with running_alertmanager(tmp_path, config) as alertmanager:
            _decide(sessions, model_id, "release_manager", "rollback", "rolled_back", rationale="v3 rolled back.")
            [sent] = AlertSender(sessions, alertmanager_url=alertmanager).run_once(datetime.now(UTC))
            deadline = time.monotonic() + 30
            alarms: list[Alarm] = []
            while time.monotonic() < deadline and not alarms:
                with sessions() as session:
                    alarms = list(session.scalars(sa.select(Alarm)))
                time.sleep(0.2)

    assert sent.status == "sent"
    [alarm] = alarms
    assert (alarm.name, alarm.status, alarm.model_id) == ("DriftpilotRollback", "firing", model_id)
    assert alarm.labels["annotation.summary"] == "v3 rolled back."
