"""The node's model: a version is swapped in only once it checks out; the last good keeps serving."""

from __future__ import annotations

import hashlib
import threading

import numpy as np
import pytest

from driftpilot.edge.predictor import EdgeModel, SwapRefused
from driftpilot.models.tabular_mlp import TabularMLP

FEATURES = [("a", "number"), ("b", "number"), ("c", "category")]


def _version(tmp_path, seed: int, flip: bool = False):
    rng = np.random.default_rng(seed)
    x = {"a": rng.normal(size=300), "b": rng.exponential(size=300), "c": rng.choice(["u", "v"], 300)}
    y = np.where((x["a"] > 0) ^ flip, "yes", "no")
    model = TabularMLP(FEATURES, ["no", "yes"], epochs=5, seed=seed).fit(x, y)
    path = model.save(tmp_path / f"v{seed}")["edge"]
    return model, path, hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_node_serves_what_python_would_and_missing_fields_are_missing_readings(tmp_path):
    model, path, digest = _version(tmp_path, 1)
    node = EdgeModel()
    node.swap(path, version=1, sha256=digest)
    events = [{"a": 0.5, "b": 1.0, "c": "u"}, {"a": None, "c": "unseen"}, {}]
    loaded, proba = node.predict(events)
    columns = {"a": [0.5, np.nan, np.nan], "b": [1.0, np.nan, np.nan], "c": ["u", "unseen", ""]}
    assert (loaded.version, loaded.classes) == (1, ["no", "yes"])
    assert np.abs(proba - model.predict_proba(columns)).max() < 1e-5


def test_a_bad_version_is_refused_and_the_last_good_one_keeps_serving(tmp_path):
    _, good, good_sum = _version(tmp_path, 1)
    _, other, other_sum = _version(tmp_path, 2, flip=True)
    node = EdgeModel()
    node.swap(good, version=1, sha256=good_sum)
    garbage = tmp_path / "garbage.onnx"
    garbage.write_bytes(b"not a model")

    with pytest.raises(SwapRefused, match="version 2: edge.onnx has sha256 .* the server assigned 0+"):
        node.swap(other, version=2, sha256="0" * 64)
    with pytest.raises(SwapRefused, match="version 3: garbage.onnx does not load as an edge model"):
        node.swap(garbage, version=3, sha256=hashlib.sha256(b"not a model").hexdigest())
    with pytest.raises(SwapRefused, match="cannot read"):
        node.swap(tmp_path / "gone.onnx", version=4, sha256=good_sum)
    assert node.current is not None and node.current.version == 1

    node.swap(other, version=2, sha256=other_sum)
    assert node.predict([{"a": 2.0, "b": 1.0, "c": "u"}])[0].version == 2


def test_requests_in_flight_during_swaps_all_get_answers(tmp_path):
    versions = [_version(tmp_path, seed) for seed in (1, 2)]
    node = EdgeModel()
    node.swap(versions[0][1], version=0, sha256=versions[0][2])
    answered: list[int] = []
    failures: list[BaseException] = []
    stop = threading.Event()

    def ask() -> None:
        while not stop.is_set():
            try:
                loaded, proba = node.predict([{"a": 0.1, "b": 0.2, "c": "v"}])
                assert proba.shape == (1, 2)
                answered.append(loaded.version)
            except BaseException as exc:  # noqa: BLE001 - any failure is the test's finding
                failures.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for i in range(20):
        _, path, digest = versions[i % 2]
        node.swap(path, version=i % 2, sha256=digest)
    stop.set()
    for t in threads:
        t.join()
    assert failures == [] and set(answered) <= {0, 1} and len(answered) > 0
