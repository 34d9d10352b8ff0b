"""``driftpilot fl start``: the loop trains its champion over a real Flower SuperLink's nodes, and
the candidate is gated and released like any other, with every step in the decision log.

One ``flower-superlink`` and three ``flower-supernode`` processes on loopback (flwr's own
commands), each node holding one region's labelled readings. Skipped only where flwr's commands
are missing and CI is not set.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from driftpilot.cli import main
from driftpilot.config import Settings
from driftpilot.edge.deployment import LocalFederation, flower_executable
from driftpilot.loop.demo import MODEL_NAME
from driftpilot.memory import db, decisions, versions
from driftpilot.memory.ingest import ingest_labels
from driftpilot.models.registry import Registry
from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.scenarios.ont import CLASSES, FEATURES, OntScenarioConfig, OntSimulator
from tests.ont_world import ingest_ticks, register_ont

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        flower_executable("flower-superlink") is None and os.environ.get("CI", "").lower() != "true",
        reason="flower-superlink is not installed (flwr's deployment commands); CI runs this test",
    ),
]


def _ticks(seed: int):
    # The day just past: ``fl start`` runs now, and the Curator looks at the recent labels.
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(days=1, hours=1)
    return list(OntSimulator(OntScenarioConfig(n_onts=150, days=1.0, seed=seed, outages=(), start=start)).ticks())


def _world(home):
    """The server: the ONT model with an under-trained champion (1,500 rows, 3 epochs) and a day of
    labelled events, whose newest the Curator holds out to judge candidates."""
    settings = Settings(home=home)
    sessions = db.connect(settings.db_url)
    ticks = _ticks(seed=5)
    features = {k: np.concatenate([t.features[k] for t in ticks]) for k in ticks[0].features}
    labels = np.concatenate([t.labels for t in ticks])
    with sessions() as session:
        model = register_ont(session)
        keys = ingest_ticks(session, ticks)
        now = ticks[-1].time + timedelta(minutes=5)
        assert now < datetime.now(UTC)
        ingest_labels(
            session=session,
            model=MODEL_NAME,
            labels=[{"event_key": k, "value": str(v), "time": now} for k, v in zip(keys, labels, strict=True)],
        )
        sample = np.arange(0, len(labels) // 2, len(labels) // 3000)[:1500]
        champion = TabularMLP(FEATURES, CLASSES, epochs=3, seed=0).fit(
            {k: v[sample] for k, v in features.items()}, labels[sample]
        )
        Registry(settings.artifact_dir).register(
            session=session,
            model_id=model.id,
            model_name=MODEL_NAME,
            model=champion,
            time=ticks[0].time,
            stage="champion",
            metrics={"reference_balanced_accuracy": 0.9},
        )
    return settings, sessions, model.id


def _node_files(folder) -> dict[str, str]:
    """Three edge nodes, each with one region's labelled readings of another fleet."""
    ticks = _ticks(seed=11)
    frame = pd.DataFrame({k: np.concatenate([t.features[k] for t in ticks]) for k in ticks[0].features})
    frame = frame[[name for name, _ in FEATURES]].assign(label=np.concatenate([t.labels for t in ticks]).astype(str))
    folder.mkdir()
    files = {}
    for region in sorted(frame["region"].unique())[:3]:
        path = folder / f"{region}.parquet"
        frame[frame["region"] == region].to_parquet(path, index=False)
        files[str(region)] = str(path)
    return files


def test_fl_start_makes_a_federated_candidate_that_is_gated_and_released_like_any_other(tmp_path, capsys):
    settings, sessions, model_id = _world(tmp_path / "home")
    with LocalFederation(_node_files(tmp_path / "nodes"), workdir=tmp_path / "federation") as federation:
        try:
            code = main(
                ["--home", str(settings.home), "fl", "start", MODEL_NAME, "--superlink", federation.control_address]
                + ["--rounds", "2", "--min-nodes", "3"]
            )
        except Exception:
            print(federation.log_tails())
            raise
    printed = capsys.readouterr().out
    assert code == 0, printed
    with sessions() as session:
        run = [decisions.decision_as_dict(d) for d in decisions.list_decisions(session=session, model_id=model_id)]
        stages = {v.number: v.stage for v in versions.list_versions(session=session, model_id=model_id)}
    steps = [(d["agent"], d["action"], d["outcome"]) for d in run]
    # The Curator's snapshot, the rounds on the SuperLink, the gate, then a release as for any candidate.
    assert steps[0] == ("curator", "curate", "snapshot")
    assert ("trainer", "federate", "trained") in steps
    assert ("trainer", "retrain", "candidate") in steps
    assert steps[-1][0] == "release_manager" and steps[-1][2] in ("shadow_started", "canary_started")
    federated = next(d for d in run if d["action"] == "federate")["evidence"]
    assert federated["mode"] == "superlink" and federated["nodes"] == ["r0", "r1", "r2"]
    assert federated["rounds_run"] == 2 and all(n > 0 for n in federated["samples"].values())
    # The server's holdout travelled to the ServerApp: every update was screened on it.
    assert all("harm" in node for node in federated["rounds"][0]["nodes"].values())
    retrain = next(d for d in run if d["action"] == "retrain")
    assert [a["plan"]["mode"] for a in retrain["evidence"]["attempts"]] == ["federated"]
    assert retrain["policy_verdicts"][1]["action"] == "start_canary" and retrain["policy_verdicts"][1]["allowed"]
    candidate = retrain["evidence"]["version"]
    assert stages[candidate] in ("shadow", "canary") and stages[1] == "champion"
    assert f"candidate version {candidate}" in printed
