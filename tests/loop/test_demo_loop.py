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

#: The whole demo driver runs once for the module (about 30 s on two cores).
pytestmark = pytest.mark.slow

#: A small fleet's policy file, with the ONT operator's metric (the demo's ONT_CHOICES, which a
#: policy file given to the demo states for itself).
POLICY = """
name: small-fleet
evaluation: {metric: balanced_accuracy}
monitor: {min_labelled: 100}
training: {min_training_labels: 300}
release: {steps: [0.25, 0.5], min_shadow_samples: 50, shadow_until: samples, min_step_samples: 30,
          min_canary_samples: 60}
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

    full_turn = [
        ("diagnostician", "diagnose", "retrain"),
        ("curator", "curate", "snapshot"),
        ("trainer", "retrain", "candidate"),
        ("release_manager", "start_canary", "shadow_started"),
        ("release_manager", "start_canary", "canary_step"),
        ("release_manager", "start_canary", "canary_step"),
        ("release_manager", "promote", "promoted"),
    ]
    turns = [i for i in range(len(steps)) if steps[i : i + len(full_turn)] == full_turn]
    assert turns, steps
    promotion = next(d for d in logged if d["action"] == "promote")
    overall = promotion["evidence"]["overall"]
    assert overall["n"] >= 60
    # The default policy promotes a candidate shown better, or ahead on both measures and shown
    # worse by nothing (release.promote_when: ahead).
    ahead = overall["candidate_score"] >= overall["champion_score"] and overall["wins"] >= overall["losses"]
    assert overall["verdict"] == "better" or (overall["verdict"] == "undecided" and ahead)
    assert promotion["evidence"]["worse_slices"] == {}
    assert {v["rule"] for v in promotion["policy_verdicts"][0]["verdicts"]} >= {
        "autonomy",
        "canary_samples",
        "canary_gate",
        "sequential_test",
        "slice_test",
    }
    served = pd.read_csv(demo.files["predictions"])["served_version"]
    assert served.max() >= 2


def test_decision_log_is_an_intact_hash_chain(demo):
    sessions = db.connect(f"sqlite:///{demo.out / 'driftpilot.sqlite'}")

    with sessions() as session:
        report = verify_chain(session=session)

    assert report.ok, report.reason
    assert report.checked == len(_decisions(demo.out))


def test_the_served_model_beats_the_never_updated_one_after_the_rollout(demo):
    # This test used to pin the seeded run's figures (62439 events; 2 retrains, 1 promotion,
    # 1 rollback; balanced accuracy 0.7238 static and 0.809 served on days 11-30). The event count
    # comes from the seeded simulator alone and stays exact; the rest are learned figures, which
    # move with the CPU's float kernels and with every change to what the loop decides, so they are
    # asserted as what they showed: the rollout hurts the never-updated model, the loop recovers a
    # clear part of it, and it got there by retraining and promoting (a release may be rolled back).
    s = demo.summary
    accuracy = s["balanced_accuracy"]

    assert s["events"] == 62439
    assert s["retrains"] >= 1
    assert s["promotions"] >= 1
    assert s["promotions"] + s["rollbacks"] <= s["retrains"]  # every release ends at most one way
    # Version 1 learned the fleet before the rollout (0.96 when pinned)...
    assert accuracy["static_days_0_9"] >= 0.9
    # ...which then hurts it by far more than noise (24 points when pinned)...
    assert accuracy["static_days_0_9"] - accuracy["static_days_11_30"] >= 0.1
    # ...and the served model wins much of that back (8.4 points when pinned).
    assert accuracy["served_days_11_30"] - accuracy["static_days_11_30"] >= 0.05
    champion = [v["number"] for v in s["versions"] if v["stage"] == "champion"]
    assert len(champion) == 1 and champion[0] >= 2


def test_the_firmware_slice_is_named_by_a_diagnosis(demo):
    # The rollout of day 10 brings firmware v2.0 to part of the fleet: the Diagnostician must say
    # that the drift sits in that slice, not only that the inputs drifted.
    diagnoses = [d for d in _decisions(demo.out) if d["agent"] == "diagnostician" and d["action"] == "diagnose"]

    named = [d for d in diagnoses if "firmware=v2.0" in json.dumps(d)]
    assert named, [d["rationale"] for d in diagnoses]
    assert named[0]["time"] >= "2026-03-11"  # day 10 of a fleet that starts on 2026-03-01


def test_cli_audit_and_models_read_the_demo(demo, capsys):
    from driftpilot.cli import main

    assert main(["--home", str(demo.out), "audit", "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert main(["--home", str(demo.out), "models"]) == 0
    listing = capsys.readouterr().out

    assert {d["action"] for d in lines} >= {"bootstrap", "retrain", "start_canary", "promote"}
    assert all(d["hash"] and "rationale" in d for d in lines)
    assert listing.startswith("ont-offline (tabular_classification, tabular_mlp")
    assert " champion " in listing


def test_cli_rollback_goes_through_the_policy_and_refuses_unknown_versions(demo, tmp_path, capsys):
    import shutil

    from driftpilot.cli import main

    home = tmp_path / "copy"
    shutil.copytree(demo.out, home)

    assert main(["--home", str(home), "rollback", "ont-offline", "99"]) == 2
    assert "99" in capsys.readouterr().err
    assert main(["--home", str(home), "rollback", "ont-offline", "1", "--who", "alice"]) == 0
    out = capsys.readouterr().out
    assert "alice rolled 'ont-offline' back" in out
    assert main(["--home", str(home), "models"]) == 0
    assert "v1    champion" in capsys.readouterr().out
    last = _decisions_of(home)[-1]
    assert (last["agent"], last["action"], last["outcome"]) == ("operator", "rollback", "rolled_back")
    assert last["policy_verdicts"][0]["allowed"] is True

    # The serving history answers for any entity and time: before the rollback, after it.
    assert main(["--home", str(home), "served", "ont-offline", "ont-0001", "--at", "2026-03-09T00:30:00"]) == 0
    early = capsys.readouterr().out
    assert early.startswith("ont-0001 at 2026-03-09T00:30:00+00:00: version 1 (champion) since 2026-03-08T23:45:00")
    assert "why: Version 1 serves everyone: the first champion" in early
    assert main(["--home", str(home), "served", "ont-offline", "ont-0001", "--json"]) == 0
    now = json.loads(capsys.readouterr().out)
    assert (now["version"], now["role"], now["decision_id"]) == (1, "champion", last["id"])
    assert now["reason"] == last["rationale"]


def _decisions_of(home: Path) -> list[dict]:
    from driftpilot.memory.decisions import decision_as_dict, list_decisions

    sessions = db.connect(f"sqlite:///{home / 'driftpilot.sqlite'}")
    with sessions() as session:
        return [decision_as_dict(d) for d in list_decisions(session=session)]


def test_the_model_reads_rolling_features_derived_from_each_modems_readings(demo):
    from driftpilot.loop.demo import MODEL_NAME, schema_of_ont
    from driftpilot.memory import events, managed, versions
    from driftpilot.memory.rolling import RollingHistory
    from driftpilot.models.registry import Registry

    sessions = db.connect(f"sqlite:///{demo.out / 'driftpilot.sqlite'}")
    with sessions() as session:
        model = managed.get_model(session=session, name=MODEL_NAME)
        stored = events.window(session=session, model_id=model.id, start=None, end=None)
        first = versions.get_version(session=session, model_id=model.id, number=1)
    schema = schema_of_ont()
    derived = [f.name for f in schema.derived_features]
    # Derived again from the stored readings, in time order: what the demo stored with them.
    again = RollingHistory(schema).derive(
        stored["entity"].tolist(), stored["time"].tolist(), {n: stored[n] for n in schema.rolling_numbers}
    )

    for name in derived:
        pd.testing.assert_series_equal(stored[name], pd.Series(again[name], name=name), check_exact=True)
    assert stored["rx_power__delta"].notna().mean() > 0.95
    # Version 1 reads them.
    assert set(derived) <= {name for name, _ in Registry(demo.out / "artifacts").load(first).features}
