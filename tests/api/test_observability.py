"""/metrics in Prometheus's text format (checked by promtool), /healthz and /readyz."""

from __future__ import annotations

import os
import shutil
import subprocess
from datetime import UTC, datetime

import pytest

from driftpilot.memory.decisions import record_decision


def _decide(sessions, agent: str, action: str, outcome: str, diagnosis=None) -> None:
    with sessions() as session:
        record_decision(
            session=session,
            model_id=1,
            run_id=f"r-{agent}-{outcome}",
            agent=agent,
            time=datetime(2026, 3, 1, 12, tzinfo=UTC),
            trigger={},
            evidence={},
            diagnosis=diagnosis or {},
            policy_verdicts=[],
            action=action,
            outcome=outcome,
            rationale="test",
        )


def test_metrics_count_what_the_loop_decided_from_the_log(service) -> None:
    client, sessions, headers, _ = service
    _decide(sessions, "monitor", "check", "healthy")
    first = client.get("/metrics", headers=headers["auditor"]).text
    _decide(sessions, "monitor", "check", "finding")
    _decide(sessions, "diagnostician", "diagnose", "retrain", {"cause": "covariate_drift"})
    _decide(sessions, "release_manager", "rollback", "rolled_back")
    second = client.get("/metrics", headers=headers["auditor"]).text

    assert 'driftpilot_checks_total{model="ont-offline",outcome="healthy"} 1.0' in first
    assert 'driftpilot_checks_total{model="ont-offline",outcome="finding"} 1.0' in second
    assert 'driftpilot_checks_total{model="ont-offline",outcome="healthy"} 1.0' in second  # read once, not twice
    assert 'driftpilot_findings_total{cause="covariate_drift",model="ont-offline"} 1.0' in second
    assert 'driftpilot_rollbacks_total{model="ont-offline"} 1.0' in second
    assert (
        'driftpilot_decisions_total{action="diagnose",agent="diagnostician",model="ont-offline",outcome="retrain"} 1.0'
        in second
    )
    assert "driftpilot_last_check_timestamp_seconds" in second


def test_promtool_accepts_the_exposition(service, tmp_path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing: .ci/run installs Debian's prometheus package")
        pytest.skip("promtool is not installed (Debian's prometheus package)")
    client, sessions, headers, _ = service
    _decide(sessions, "monitor", "check", "healthy")
    client.post("/hooks/alertmanager", json={"version": "4", "alerts": []}, headers=headers["ingest"])
    client.post("/models/ont-offline/labels", json={"labels": [{"key": "k", "label": "x"}]}, headers=headers["ingest"])
    client.get("/tokens", headers=headers["admin"])
    client.post("/models/nope/events", json={"events": [{}]}, headers=headers["ingest"])
    exposition = client.get("/metrics", headers=headers["auditor"]).content

    checked = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60)

    assert checked.returncode == 0, (checked.stdout + checked.stderr).decode()
    assert b"driftpilot_requests_refused_total" in exposition


def test_health_is_open_and_readiness_needs_a_token(service) -> None:
    client, _, headers, _ = service

    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 401
    assert client.get("/readyz", headers=headers["ingest"]).json() == {"status": "ready"}
