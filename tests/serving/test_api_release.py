"""The API's prediction routing, rollback and serving-history routes, over HTTP (TestClient)."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
from fastapi.testclient import TestClient

from driftpilot.api import create_app
from driftpilot.loop.demo import MODEL_NAME
from driftpilot.memory import events, releases, versions

from .test_release_serving import START, world  # noqa: F401 - the fixture


def _events(tick, n: int, prefix: str) -> list[dict]:
    return [
        {
            "key": f"{prefix}/{i}",
            "time": (START + timedelta(hours=1)).isoformat(),
            "entity": str(tick.entities[i]),
            "group": str(tick.groups[i]),
            "features": {k: (v[i].item() if isinstance(v[i], np.generic) else v[i]) for k, v in tick.features.items()},
        }
        for i in range(n)
    ]


def test_predict_routes_records_and_rolls_back_over_http(world, bearer):  # noqa: F811
    sessions, registry, model_id, tick = world
    with sessions() as session:
        v2 = versions.get_version(session=session, model_id=model_id, number=2)
        releases.restore_version(session=session, model_id=model_id, version_id=v2.id, at=START, run_id="r", reason="2")
    client = TestClient(create_app(sessions, registry), headers=bearer(sessions, "admin", "bob"))

    first = client.post(f"/models/{MODEL_NAME}/predict", json={"events": _events(tick, 5, "a")})
    again = client.post(f"/models/{MODEL_NAME}/predict", json={"events": _events(tick, 5, "a")})
    rolled = client.post(f"/models/{MODEL_NAME}/rollback", json={"version": 1})
    after = client.post(f"/models/{MODEL_NAME}/predict", json={"events": _events(tick, 5, "b")})

    assert first.status_code == 200, first.text
    assert {a["version"] for a in first.json()["answers"]} == {2}
    assert again.json() == first.json()  # the same keys: the answers first given, nothing stored twice
    assert rolled.status_code == 200 and rolled.json()["outcome"] == "rolled_back"
    assert {a["version"] for a in after.json()["answers"]} == {1}
    with sessions() as session:
        stored = events.window(session=session, model_id=model_id, start=None, end=None, with_features=False)
    assert stored["served_version"].tolist() == [2] * 5 + [1] * 5
    entity = str(tick.entities[0])
    served = client.get(
        f"/models/{MODEL_NAME}/served", params={"entity": entity, "at": (START + timedelta(minutes=30)).isoformat()}
    )
    assert served.json()["version"] == 2 and served.json()["reason"] == "2"
    assert [h["champion"] for h in client.get(f"/models/{MODEL_NAME}/serving-history").json()] == [1, 2, 1]
    assert client.get(f"/models/{MODEL_NAME}/assignment", params={"entity": entity}).json()["version"] == 1


def test_the_api_names_what_was_wrong(world, bearer):  # noqa: F811
    sessions, registry, _, tick = world
    client = TestClient(create_app(sessions, registry), headers=bearer(sessions, "admin"))
    bad = _events(tick, 1, "c")
    del bad[0]["features"]["firmware"]  # a category: no model guesses one
    gone = _events(tick, 1, "e")
    del gone[0]["features"]["rx_power"]  # a reading that did not come: imputed as at training

    missing_version = client.post(f"/models/{MODEL_NAME}/rollback", json={"version": 7})
    unknown_model = client.post("/models/nope/predict", json={"events": _events(tick, 1, "d")})
    missing_feature = client.post(f"/models/{MODEL_NAME}/predict", json={"events": bad})
    empty = client.post(f"/models/{MODEL_NAME}/predict", json={"events": []})
    imputed = client.post(f"/models/{MODEL_NAME}/predict", json={"events": gone})

    assert (missing_version.status_code, missing_version.json()["detail"]) == (
        404,
        "model 'ont-offline' has no version 7",
    )
    assert unknown_model.status_code == 404 and "nope" in unknown_model.json()["detail"]
    assert missing_feature.status_code == 422 and "firmware" in missing_feature.json()["detail"]
    assert imputed.status_code == 200 and len(imputed.json()["answers"]) == 1
    assert empty.status_code == 422


def test_an_edge_node_downloads_the_assigned_artifacts_checked_against_their_sums(world, bearer, tmp_path):  # noqa: F811
    import hashlib
    from pathlib import Path

    sessions, registry, model_id, tick = world
    client = TestClient(create_app(sessions, registry), headers=bearer(sessions, "ingest", "gateway-7"))
    entity = str(tick.entities[0])
    assigned = client.get(f"/models/{MODEL_NAME}/assignment", params={"entity": entity}).json()
    base = f"/models/{MODEL_NAME}/versions/{assigned['version']}/artifacts"

    for name, digest in assigned["artifacts"].items():
        got = client.get(f"{base}/{name}")
        assert got.status_code == 200, got.text
        assert hashlib.sha256(got.content).hexdigest() == digest == got.headers["x-checksum-sha256"]

    unknown = client.get(f"{base}/weights.bin")
    no_version = client.get(f"/models/{MODEL_NAME}/versions/99/artifacts/onnx")
    assert unknown.status_code == 404 and "no artifact 'weights.bin'" in unknown.json()["detail"]
    assert "'onnx'" in unknown.json()["detail"]  # the names it has
    assert (no_version.status_code, no_version.json()["detail"]) == (404, f"model '{MODEL_NAME}' has no version 99")

    with sessions() as session:
        path = Path(
            versions.get_version(session=session, model_id=model_id, number=assigned["version"]).artifacts["onnx"][
                "path"
            ]
        )
    path.write_bytes(path.read_bytes() + b"tampered")
    corrupt = client.get(f"{base}/onnx")
    assert corrupt.status_code == 409 and "artifact 'onnx'" in corrupt.json()["detail"]
    assert "expected " + assigned["artifacts"]["onnx"] in corrupt.json()["detail"]
