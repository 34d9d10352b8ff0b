"""Two edge nodes and the server on loopback, over real HTTP: each node serves the student of the
version its cohort is assigned, answers through a server outage and loses no prediction, takes a
rollback at its next poll, and refuses a corrupt artifact while it keeps serving."""

from __future__ import annotations

import hashlib
import json
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa

from driftpilot.api import create_app
from driftpilot.edge.node import EdgeNode
from driftpilot.edge.serve import node_app
from driftpilot.loop.demo import MODEL_NAME, schema_of_ont
from driftpilot.memory import db, managed, releases, versions
from driftpilot.memory.tables import Event
from driftpilot.models.edge_export import EDGE_ARTIFACT
from driftpilot.models.registry import Registry
from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.scenarios.ont import CLASSES, FEATURES, OntScenarioConfig, OntSimulator
from driftpilot.serving.routing import assignment
from driftpilot.tools.distill import distil_student
from tests.live import free_port, serving

START = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def fleet(tmp_path):
    sessions = db.connect(f"sqlite:///{tmp_path / 'm.sqlite'}")
    registry = Registry(tmp_path / "artifacts")
    ticks = list(OntSimulator(OntScenarioConfig(n_onts=120, days=0.25, seed=3, outages=())).ticks())
    frame = pd.DataFrame({k: np.concatenate([t.features[k] for t in ticks]) for k in ticks[0].features})
    labels = np.concatenate([t.labels for t in ticks]).astype(str)
    with sessions() as session:
        model = managed.register_model(
            session=session,
            name=MODEL_NAME,
            task="tabular_classification",
            family="tabular_mlp",
            schema=schema_of_ont(),
        )
        for seed in (0, 1, 2):
            teacher = TabularMLP(FEATURES, CLASSES, epochs=4, seed=seed, hidden=(16,)).fit(frame, labels)
            made = distil_student(teacher, frame.iloc[::2], labels[::2], frame.iloc[1::2])
            registry.register(
                session=session,
                model_id=model.id,
                model_name=MODEL_NAME,
                model=teacher,
                time=START,
                stage="champion" if seed == 0 else "candidate",
                student=made.student,
            )
        releases.log_serving(session=session, model_id=model.id, at=START, run_id="boot", reason="version 1 serves")
        v1, v2 = (versions.get_version(session=session, model_id=model.id, number=n) for n in (1, 2))
        # Version 2 goes out to half of the groups (OLT ports): one node's group is among them.
        releases.start_release(
            session=session,
            model_id=model.id,
            version_id=v2.id,
            baseline_version_id=v1.id,
            started_at=START,
            plan=[0.5],
            cohort="group",
            salt="s",
            run_id="release-2",
            reason="version 2 to half of the groups",
        )
        by_version: dict[int, str] = {}
        for i in range(200):
            group = f"olt-{i}"
            by_version.setdefault(assignment(session, model=MODEL_NAME, entity="any", group=group)["version"], group)
    return {"sessions": sessions, "registry": registry, "model_id": model.id, "frame": frame, "groups": by_version}


def _events(frame: pd.DataFrame, prefix: str, rows: range) -> list[dict]:
    out = []
    for i in rows:
        features = {k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in frame.iloc[i].items()}
        features = {k: (v.item() if isinstance(v, np.generic) else v) for k, v in features.items()}
        out.append({"key": f"{prefix}/{i}", "time": (START + timedelta(minutes=i)).isoformat(), "features": features})
    return out


def _post(url: str, body: dict) -> dict:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return json.loads(answer.read())


def _stored(sessions, model_id) -> dict[str, tuple[int, str]]:
    with sessions() as session:
        rows = session.execute(
            sa.select(Event.key, Event.served_version, Event.answered_by).where(Event.model_id == model_id)
        )
        return {key: (version, by) for key, version, by in rows}


def test_two_nodes_serve_their_cohorts_versions_through_an_outage_and_lose_nothing(fleet, bearer, tmp_path):
    sessions, registry, model_id, frame = fleet["sessions"], fleet["registry"], fleet["model_id"], fleet["frame"]
    assert set(fleet["groups"]) == {1, 2}  # one group on each side of the release
    token = bearer(sessions, "ingest", "edge-fleet")["Authorization"].removeprefix("Bearer ")
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    nodes = {
        version: EdgeNode(
            server=server,
            model=MODEL_NAME,
            node_id=f"gw-{version}",
            token=token,
            folder=tmp_path / f"gw-{version}",
            group=group,
            timeout=3,
        )
        for version, group in fleet["groups"].items()
    }
    sent: dict[int, list[str]] = {1: [], 2: []}
    with serving(node_app(nodes[1]), free_port()) as url1, serving(node_app(nodes[2]), free_port()) as url2:
        urls = {1: url1, 2: url2}
        with serving(create_app(sessions, registry), port):
            for version, node in nodes.items():
                assert node.poll() == f"version {version} swapped in"
                assert node.poll() == f"version {version} already serving"
            for version, url in urls.items():
                events = _events(frame, f"up-{version}", range(0, 60))
                answers = _post(f"{url}/predict", {"events": events})["answers"]
                sent[version] += [e["key"] for e in events]
                assert {a["version"] for a in answers} == {version}
                by = {a["answered_by"] for a in answers}
                # The student answers most; what it is least sure of, the server's teacher does.
                assert f"edge:gw-{version}" in by
                local = sum(a["answered_by"] == f"edge:gw-{version}" for a in answers)
                assert local >= len(answers) // 2

        # The server is down: the nodes keep answering with their students, and keep every answer.
        for version, url in urls.items():
            events = _events(frame, f"down-{version}", range(60, 100))
            answers = _post(f"{url}/predict", {"events": events})["answers"]
            sent[version] += [e["key"] for e in events]
            assert {a["version"] for a in answers} == {version}
            assert all(a["answered_by"].startswith(f"edge:gw-{version}") for a in answers)
            assert "unreachable" in nodes[version].poll()
            assert nodes[version].model.current.version == version
            assert len(nodes[version].outbox) > 0

        # Back: the outboxes drain, every prediction is on the server once, with who answered it.
        with serving(create_app(sessions, registry), port):
            for node in nodes.values():
                done = node.upload()
                assert done.error is None and done.refused == 0
                assert len(node.outbox) == 0
            stored = _stored(sessions, model_id)
            for version, keys in sent.items():
                assert {stored[k][0] for k in keys} == {version}
            assert sorted(stored) == sorted(sent[1] + sent[2])
            answered_by = {by for _, by in stored.values()}
            assert "server" in answered_by and "edge:gw-2" in answered_by
            assert any("unreachable" in (by or "") for by in answered_by)

            # A rollback on the server reaches the node at its next poll.
            with sessions() as session:
                v1 = versions.get_version(session=session, model_id=model_id, number=1)
                releases.restore_version(
                    session=session,
                    model_id=model_id,
                    version_id=v1.id,
                    at=START + timedelta(days=1),
                    run_id="rollback",
                    reason="version 2 hurt",
                )
            assert nodes[2].poll() == "version 1 swapped in"

            # A corrupt artifact: version 3's student is damaged on the server's disk. The server
            # will not send it, the node says why, and keeps serving version 1.
            with sessions() as session:
                v3 = versions.get_version(session=session, model_id=model_id, number=3)
                path = Path(v3.artifacts[EDGE_ARTIFACT]["path"])
                releases.restore_version(
                    session=session,
                    model_id=model_id,
                    version_id=v3.id,
                    at=START + timedelta(days=2),
                    run_id="release-3",
                    reason="version 3",
                )
            path.write_bytes(path.read_bytes()[:-100] + b"x" * 100)
            outcome = nodes[1].poll()
            assert (
                outcome.startswith("version 3 refused: download refused (HTTP 409)") and "serving version 1" in outcome
            )
            assert nodes[1].status()["refusals"][-1]["version"] == 3
            answers = _post(f"{url1}/predict", {"events": _events(frame, "after", range(100, 120))})["answers"]
            # The node's student is still version 1's; what it defers, the server's version 3 answers.
            assert {a["version"] for a in answers if a["answered_by"] == "edge:gw-1"} == {1}
            assert {a["version"] for a in answers if a["answered_by"] == "server"} <= {3}


def test_a_node_refuses_a_graph_that_does_not_match_and_serves_its_last_good_one_after_a_restart(
    fleet, bearer, tmp_path
):
    sessions, registry = fleet["sessions"], fleet["registry"]
    token = bearer(sessions, "ingest", "edge-one")["Authorization"].removeprefix("Bearer ")
    port = free_port()
    group = fleet["groups"][1]
    folder = tmp_path / "gw"
    node = EdgeNode(
        server=f"http://127.0.0.1:{port}", model=MODEL_NAME, node_id="gw", token=token, folder=folder, group=group
    )
    assert node.status()["version"] is None
    with pytest.raises(LookupError):
        node.answer(_events(fleet["frame"], "early", range(1)))
    with serving(create_app(sessions, registry), port):
        assert node.poll() == "version 1 swapped in"
    node.close()

    # Restarted while the server is down: the node serves what it ran, checked again.
    again = EdgeNode(
        server=f"http://127.0.0.1:{port}", model=MODEL_NAME, node_id="gw", token=token, folder=folder, group=group
    )
    assert again.model.current is not None and again.model.current.version == 1
    # Its file damaged on the node's own disk: refused at the restart, and said.
    kept = json.loads((folder / "current.json").read_text())
    (folder / kept["file"]).write_bytes(b"not a graph")
    damaged = EdgeNode(
        server=f"http://127.0.0.1:{port}", model=MODEL_NAME, node_id="gw", token=token, folder=folder, group=group
    )
    assert damaged.model.current is None
    assert "has sha256 " + hashlib.sha256(b"not a graph").hexdigest() in damaged.refusals[0]["reason"]
    with pytest.raises(ValueError, match="needs a non-empty 'key'"):
        again.answer([{"features": {}}])
