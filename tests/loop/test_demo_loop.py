"""One full turn of the loop on a small simulated fleet, through the demo driver.

Sixty ONTs for twelve days: version 1 learns days 0-7, the firmware rollout of day 10 hurts
it, and the loop must notice, retrain, canary and promote, leaving every step in the log.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from driftpilot.loop.demo import DemoConfig, run_demo
from driftpilot.memory import db
from driftpilot.memory.audit import verify_chain

POLICY = """
name: small-fleet
monitor: {min_labelled: 100}
training: {min_training_labels: 300}
release: {canary_share: 0.5, min_canary_samples: 60}
"""


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    folder = tmp_path_factory.mktemp("demo")
    policy = folder / "policy.yaml"
    policy.write_text(POLICY)
    return run_demo(DemoConfig(out=folder / "out", onts=60, days=12, seed=3, policy_path=policy))


def _decisions(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "decisions.jsonl").read_text().splitlines()]


def test_outputs_are_written_with_the_promised_columns(demo):
    predictions = pd.read_csv(demo.files["predictions"])

    assert list(predictions.columns) == [
        "event_id",
        "time",
        "entity",
        "served_version",
        "prediction",
        "static_prediction",
        "label",
    ]
    assert len(predictions) == demo.summary["events"]
    assert predictions["event_id"].is_unique
    assert set(demo.files) == {"predictions", "decisions", "summary", "report"}
    assert "<svg" in demo.files["report"].read_text()


def test_the_loop_retrains_canaries_and_promotes(demo):
    logged = _decisions(demo.out)
    steps = [(d["agent"], d["action"], d["outcome"]) for d in logged if d["action"] != "check"]

    first_retrain = steps.index(("diagnostician", "diagnose", "retrain"))
    turn = steps[first_retrain : first_retrain + 5]
    assert turn == [
        ("diagnostician", "diagnose", "retrain"),
        ("curator", "curate", "snapshot"),
        ("trainer", "retrain", "candidate"),
        ("release_manager", "start_canary", "canary_started"),
        ("release_manager", "promote", "promoted"),
    ]
    promotion = next(d for d in logged if d["action"] == "promote")
    assert promotion["evidence"]["n_labelled"] >= 60
    assert {v["rule"] for v in promotion["policy_verdicts"][0]["verdicts"]} >= {
        "autonomy",
        "canary_samples",
        "canary_gate",
    }
    served = pd.read_csv(demo.files["predictions"])["served_version"]
    assert served.max() >= 2


def test_decision_log_is_an_intact_hash_chain(demo):
    sessions = db.connect(f"sqlite:///{demo.out / 'driftpilot.sqlite'}")

    with sessions() as session:
        report = verify_chain(session=session)

    assert report.ok, report.reason
    assert report.checked == len(_decisions(demo.out))


def test_pinned_outcome_on_seeded_fleet(demo):
    s = demo.summary

    assert s["events"] == 68124
    assert (s["retrains"], s["promotions"], s["rollbacks"]) == (0, 0, 0)
