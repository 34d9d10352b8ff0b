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
from driftpilot.loop.demo import MODEL_NAME
from driftpilot.memory import db, releases, versions
from driftpilot.memory.tables import Event
from driftpilot.models.edge_export import EDGE_ARTIFACT
from driftpilot.models.registry import Registry
from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.scenarios.ont import CLASSES, FEATURES, OntScenarioConfig, OntSimulator
from driftpilot.serving.routing import assignment
from driftpilot.tools.distill import distil_student
from tests.live import free_port, serving
from tests.ont_world import register_ont

START = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture
def fleet(tmp_path):
    sessions = db.connect(f"sqlite:///{tmp_path / 'm.sqlite'}")
    registry = Registry(tmp_path / "artifacts")
    ticks = list(OntSimulator(OntScenarioConfig(n_onts=120, days=0.25, seed=3, outages=())).ticks())
    frame = pd.DataFrame({k: np.concatenate([t.features[k] for t in ticks]) for k in ticks[0].features})
    labels = np.concatenate([t.labels for t in ticks]).astype(str)
    with sessions() as session:
        model = register_ont(session)
        for seed in (0, 1, 2):  # versions 1, 3 and 5, their students 2, 4 and 6
            teacher = TabularMLP(FEATURES, CLASSES, epochs=4, seed=seed, hidden=(16,)).fit(frame, labels)
            made = distil_student(teacher, frame.iloc[::2], labels[::2], frame.iloc[1::2])
            common = {"session": session, "model_id": model.id, "model_name": MODEL_NAME, "time": START}
            version = registry.register(model=teacher, stage="champion" if seed == 0 else "candidate", **common)
            registry.register(model=made.student, stage="student", parent_id=version.id, **common)
        releases.log_serving(session=session, model_id=model.id, at=START, run_id="boot", reason="version 1 serves")
        v1, v2 = (versions.get_version(session=session, model_id=model.id, number=n) for n in (1, 3))
        # Version 3 goes out to half of the groups (OLT ports): one node's group is among them.
        releases.start_release(
            session=session,
            model_id=model.id,
            version_id=v2.id,
            baseline_version_id=v1.id,
            started_at=START,
            plan=[0.5],
            cohort="group",
            salt="s",
            run_id="release-3",
            reason="version 3 to half of the groups",
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


#: Each teacher version's student: a version of its own, registered right after it.
STUDENT = {1: 2, 3: 4, 5: 6}


def test_two_nodes_serve_their_cohorts_versions_through_an_outage_and_lose_nothing(fleet, bearer, tmp_path):
    sessions, registry, model_id, frame = fleet["sessions"], fleet["registry"], fleet["model_id"], fleet["frame"]
    assert set(fleet["groups"]) == {1, 3}  # one group on each side of the release
    token = bearer(sessions, "ingest", "edge-fleet")["Authorization"].removeprefix("Bearer ")
    port = free_port()
    server = f"http://127.0.0.1:{port}"
    nodes = {
        teacher: EdgeNode(
            server=server,
            model=MODEL_NAME,
            node_id=f"gw-{teacher}",
            token=token,
            folder=tmp_path / f"gw-{teacher}",
            group=group,
            timeout=3,
        )
        for teacher, group in fleet["groups"].items()
    }
    sent: dict[int, list[str]] = {1: [], 3: []}
    with serving(node_app(nodes[1]), free_port()) as url1, serving(node_app(nodes[3]), free_port()) as url3:
        urls = {1: url1, 3: url3}
        with serving(create_app(sessions, registry), port):
            for teacher, node in nodes.items():
                which = f"version {STUDENT[teacher]} (the student of version {teacher})"
                assert node.poll() == f"{which} swapped in"
                assert node.poll() == f"{which} already serving"
            for teacher, url in urls.items():
                events = _events(frame, f"up-{teacher}", range(0, 60))
                answers = _post(f"{url}/predict", {"events": events})["answers"]
                sent[teacher] += [e["key"] for e in events]
                here = f"edge:gw-{teacher}"
                # The student answers most; what it is least sure of, the server's teacher does.
                local = [a for a in answers if a["answered_by"] == here]
                assert len(local) >= len(answers) // 2
                assert {a["version"] for a in local} == {STUDENT[teacher]}
                assert {a["version"] for a in answers if a["answered_by"] == "server"} <= {teacher}

        # The server is down: the nodes keep answering with their students, and keep every answer.
        for teacher, url in urls.items():
            events = _events(frame, f"down-{teacher}", range(60, 100))
            answers = _post(f"{url}/predict", {"events": events})["answers"]
            sent[teacher] += [e["key"] for e in events]
            assert {a["version"] for a in answers} == {STUDENT[teacher]}
            assert all(a["answered_by"].startswith(f"edge:gw-{teacher}") for a in answers)
            assert "unreachable" in nodes[teacher].poll()
            assert nodes[teacher].model.current.version == STUDENT[teacher]
            assert len(nodes[teacher].outbox) > 0

        # Back: the outboxes drain, every prediction is on the server once, with who answered it.
        with serving(create_app(sessions, registry), port):
            for node in nodes.values():
                done = node.upload()
                assert done.error is None and done.refused == 0
                assert len(node.outbox) == 0
            stored = _stored(sessions, model_id)
            assert sorted(stored) == sorted(sent[1] + sent[3])
            for teacher, keys in sent.items():
                # Each answered by the node's student or by the teacher of its cohort.
                assert {stored[k][0] for k in keys} <= {teacher, STUDENT[teacher]}
            answered_by = {by for _, by in stored.values()}
            assert {"server", "edge:gw-1", "edge:gw-3"} <= answered_by
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
                    reason="version 3 hurt",
                )
            assert nodes[3].poll() == "version 2 (the student of version 1) swapped in"

            # A corrupt artifact: version 5's student is damaged on the server's disk. The server
            # will not send it, the node says why, and keeps serving version 1's student.
            with sessions() as session:
                v5 = versions.get_version(session=session, model_id=model_id, number=5)
                student = versions.get_version(session=session, model_id=model_id, number=6)
                path = Path(student.artifacts[EDGE_ARTIFACT]["path"])
                releases.restore_version(
                    session=session,
                    model_id=model_id,
                    version_id=v5.id,
                    at=START + timedelta(days=2),
                    run_id="release-5",
                    reason="version 5",
                )
            path.write_bytes(path.read_bytes()[:-100] + b"x" * 100)
            outcome = nodes[1].poll()
            assert outcome.startswith("version 6 refused: download refused (HTTP 409)"), outcome
            assert "serving version 2" in outcome
            assert nodes[1].status()["refusals"][-1]["version"] == 6
            answers = _post(f"{url1}/predict", {"events": _events(frame, "after", range(100, 120))})["answers"]
            # The node's student is still version 1's; what it defers, the server's version 5 answers.
            assert {a["version"] for a in answers if a["answered_by"] == "edge:gw-1"} == {2}
            assert {a["version"] for a in answers if a["answered_by"] == "server"} <= {5}


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
        assert node.poll() == "version 2 (the student of version 1) swapped in"
    node.close()

    # Restarted while the server is down: the node serves what it ran, checked again.
    again = EdgeNode(
        server=f"http://127.0.0.1:{port}", model=MODEL_NAME, node_id="gw", token=token, folder=folder, group=group
    )
    assert again.model.current is not None and again.model.current.version == 2
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


def test_a_student_is_never_a_rollback_target_on_the_server(fleet, bearer):
    from fastapi.testclient import TestClient

    sessions = fleet["sessions"]
    client = TestClient(create_app(sessions, fleet["registry"]), headers=bearer(sessions, "operator", "ops"))

    refused = client.post(f"/models/{MODEL_NAME}/rollback", json={"version": 2})

    assert refused.status_code in (409, 422), refused.text
    assert "version 2 of 'ont-offline' was never served (student)" in refused.json()["detail"]
