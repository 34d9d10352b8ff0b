"""The tabular MLP family: fit, warm start, save/load, ONNX parity, clear refusals."""

from __future__ import annotations

import numpy as np
import pytest

from driftpilot.models.registry import ArtifactError, Registry, verify_artifacts
from driftpilot.models.tabular_mlp import TabularMLP

FEATURES = [("a", "number"), ("b", "number"), ("c", "category")]


def _data(n: int, seed: int, categories=("u", "v")):
    rng = np.random.default_rng(seed)
    x = {"a": rng.normal(size=n), "b": rng.exponential(size=n) * 100, "c": rng.choice(categories, n)}
    y = np.where(x["a"] + (x["c"] == "u") > 0.5, "yes", "no")
    return x, y


def test_fit_is_seeded_and_learns():
    x, y = _data(600, 0)

    one = TabularMLP(FEATURES, ["no", "yes"], epochs=20, seed=1).fit(x, y)
    two = TabularMLP(FEATURES, ["no", "yes"], epochs=20, seed=1).fit(x, y)

    assert np.array_equal(one.predict_proba(x), two.predict_proba(x))
    assert (one.predict(x) == y).mean() > 0.95


def test_warm_start_grows_for_new_categories_and_starts_from_the_parent():
    x, y = _data(600, 0)
    parent = TabularMLP(FEATURES, ["no", "yes"], epochs=20, seed=1).fit(x, y)
    new_x, new_y = _data(300, 1, categories=("u", "v", "w"))

    grown, _masks = parent._grown_from(parent, parent.preprocessor_.extended(new_x))
    child = TabularMLP(FEATURES, ["no", "yes"], seed=1).fit(new_x, new_y, warm_start=parent)

    assert child.preprocessor_.vocab["c"] == ["u", "v", "w"]
    # Before any step, the widened network answers exactly as its parent on known inputs.
    import torch

    known = {k: v[:50] for k, v in x.items()}
    with torch.no_grad():
        logits = grown(torch.from_numpy(parent.preprocessor_.extended(new_x).transform(known)))
    assert np.allclose(torch.softmax(logits, 1).numpy(), parent.predict_proba(known), atol=1e-6)
    assert (child.predict(new_x) == new_y).mean() > 0.9


def test_the_learning_rate_does_not_shrink_generation_after_generation():
    # Each update used to take half its parent's rate: version 20 learnt at 1/16 of version 2's.
    # Now every update of a lineage takes half the rate of its last training from scratch.
    x, y = _data(600, 0)
    scratch = TabularMLP(FEATURES, ["no", "yes"], epochs=5, seed=1).fit(x, y)
    lineage = [scratch]
    for generation in range(3):
        new_x, new_y = _data(600, 10 + generation)
        lineage.append(TabularMLP(FEATURES, ["no", "yes"], seed=1).fit(new_x, new_y, warm_start=lineage[-1]))
    base = scratch.report_
    assert base.base_lr == base.lr and base.base_batch_size == base.batch_size
    for child in lineage[1:]:
        report = child.report_
        scale = (report.batch_size / base.batch_size) ** 0.5
        assert report.lr == pytest.approx(base.lr / 2 * scale)
        assert (report.base_lr, report.base_batch_size) == (base.lr, base.batch_size)


def _sea(n: int, seed: int):
    """SEA's concept (Street & Kim, 2001): ``x0 + x1 <= 8`` on uniform [0, 10] numbers, 10 % noise."""
    rng = np.random.default_rng(seed)
    x = {f"x{i}": rng.uniform(0, 10, n) for i in range(3)}
    y = np.where(x["x0"] + x["x1"] <= 8, "yes", "no")
    flip = rng.random(n) < 0.1
    return x, np.where(flip, np.where(y == "yes", "no", "yes"), y)


def test_a_linear_model_is_solved_to_convergence_like_a_logistic_regression():
    # A linear model from scratch used to take a dozen epochs of Adam on log-scaled numbers:
    # 0.82 on SEA where scikit-learn's logistic regression scores 0.89.
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    x, y = _sea(2000, 0)
    test_x, test_y = _sea(4000, 1)
    features = [(name, "number") for name in x]
    linear = TabularMLP(features, ["no", "yes"], hidden=(), seed=0).fit(x, y)
    matrix, test_matrix = (np.column_stack(list(v.values())) for v in (x, test_x))
    scaler = StandardScaler().fit(matrix)
    # The family weighs classes by the square root of their inverse frequency; so does the reference.
    labels, counts = np.unique(y, return_counts=True)
    weights = {str(c): float(np.sqrt(len(y) / (len(labels) * n))) for c, n in zip(labels, counts, strict=True)}
    reference = LogisticRegression(class_weight=weights).fit(scaler.transform(matrix), y)

    ours = (linear.predict(test_x) == test_y).mean()
    theirs = (reference.predict(scaler.transform(test_matrix)) == test_y).mean()
    assert abs(ours - theirs) < 0.01 and ours > 0.85
    assert linear.report_.lr_source.startswith("none: L-BFGS") and linear.report_.validation_rows == 0
    with pytest.raises(ValueError, match="a linear model is refit from scratch, not updated"):
        TabularMLP(features, ["no", "yes"], hidden=(), seed=0).fit(test_x, test_y, warm_start=linear)


def test_a_linear_model_logs_only_heavy_tailed_numbers_and_old_encodings_still_read():
    from driftpilot.models.tabular_mlp import Preprocessor

    x, y = _data(600, 0)  # "a" is normal, "b" exponential times 100: a tail
    model = TabularMLP(FEATURES, ["no", "yes"], hidden=(), seed=1).fit(x, y)
    assert model.preprocessor_.log == [False, True]
    # Hidden layers bend the numbers as they need: every one is logged for them, as always.
    assert TabularMLP(FEATURES, ["no", "yes"], epochs=1, seed=1).fit(x, y).preprocessor_.log == [True, True]
    # An encoding saved before the choice was made logged every number, and still does.
    saved = {k: v for k, v in model.preprocessor_.to_dict().items() if k != "log"}
    old = Preprocessor.from_dict(saved)
    assert old.log is None
    assert np.allclose(
        old.transform(x)[:, 0], (np.log1p(np.abs(x["a"])) * np.sign(x["a"]) - old.mean[0]) / old.scale[0]
    )


@pytest.mark.parametrize("family", ["tabular_mlp", "hashed_mlp"])
def test_a_missing_reading_is_imputed_as_at_training_and_the_method_is_saved(tmp_path, family):
    from driftpilot.models.hashed_mlp import HashedMLP

    x, y = _data(600, 0)
    x["b"][::7] = np.nan  # a field that sometimes does not come
    kind = TabularMLP if family == "tabular_mlp" else HashedMLP
    model = kind(FEATURES, ["no", "yes"], epochs=10, seed=1).fit(x, y)
    model.save(tmp_path / "v1")
    loaded = kind.load(tmp_path / "v1")
    encoding = model.preprocessor_ if family == "tabular_mlp" else model.encoding_
    median_b = float(np.nanmedian(x["b"]))
    gone = {"a": np.array([0.3, -2.0]), "b": np.array([np.nan, np.nan]), "c": np.array(["u", "v"])}
    filled = {**gone, "b": np.array([median_b, median_b])}

    assert encoding.to_dict()["impute"] == {
        "method": "median",
        "values": [pytest.approx(float(np.nanmedian(x["a"]))), pytest.approx(median_b)],
    }
    assert np.isfinite(model.predict_proba(x)).all()
    assert np.array_equal(loaded.predict_proba(gone), model.predict_proba(filled))
    assert (model.predict(x) == y).mean() > 0.9


def test_save_load_and_onnx_agree(tmp_path):
    import onnxruntime as ort

    x, y = _data(400, 2)
    model = TabularMLP(FEATURES, ["no", "yes"], epochs=5, seed=0).fit(x, y)

    paths = model.save(tmp_path / "v1")
    loaded = TabularMLP.load(tmp_path / "v1")
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    (onnx_proba,) = session.run(None, {"x": model.preprocessor_.transform(x)})

    assert np.allclose(loaded.predict_proba(x), model.predict_proba(x))
    assert np.allclose(onnx_proba, model.predict_proba(x), atol=1e-5)


@pytest.mark.parametrize(
    ("x", "y", "message"),
    [
        ({"a": [], "b": [], "c": []}, [], "empty training set"),
        ({"a": [1.0, 2.0], "b": [1.0, 2.0], "c": ["u", "v"]}, ["no", "no"], "single class"),
        ({"a": [1.0, 2.0], "b": [1.0, 2.0]}, ["no", "yes"], r"features \['c'\] of the tabular_mlp schema are missing"),
        ({"a": [1.0, 2.0], "b": [1.0, 2.0], "c": ["u", "v"]}, ["no", "maybe"], "not among the classes"),
    ],
)
def test_bad_training_sets_are_refused(x, y, message):
    with pytest.raises(ValueError, match=message):
        TabularMLP(FEATURES, ["no", "yes"]).fit(x, y)


def test_registry_refuses_an_artifact_that_fails_its_checksum(tmp_path):
    from driftpilot.memory import db, managed
    from driftpilot.memory.schemas import FeatureSpec, ModelSchema

    sessions = db.connect(f"sqlite:///{tmp_path / 'm.sqlite'}")
    x, y = _data(200, 3)
    model = TabularMLP(FEATURES, ["no", "yes"], epochs=2).fit(x, y)
    schema = ModelSchema(
        features=[FeatureSpec(name=n, kind=k) for n, k in FEATURES],
        target="t",
        classes=["no", "yes"],
        entity_key="id",
    )
    with sessions() as session:
        row = managed.register_model(
            session=session, name="m", task="tabular_classification", family="tabular_mlp", schema=schema
        )
        from datetime import UTC, datetime

        version = Registry(tmp_path / "art").register(
            session=session, model_id=row.id, model_name="m", model=model, time=datetime(2026, 1, 1, tzinfo=UTC)
        )
    verify_artifacts(version)
    weights = version.artifacts["weights"]["path"]
    with open(weights, "ab") as handle:
        handle.write(b"tampered")

    with pytest.raises(ArtifactError, match="artifact 'weights'.*sha256"):
        Registry(tmp_path / "art").load(version)


def test_the_edge_graph_takes_raw_fields_and_encodes_them_as_the_model_does(tmp_path):
    import json

    import onnx
    import onnxruntime as ort

    x, y = _data(400, 2)
    model = TabularMLP(FEATURES, ["no", "yes"], epochs=5, seed=0).fit(x, y)
    paths = model.save(tmp_path / "v1")
    prep = model.preprocessor_
    test, _ = _data(200, 3)
    test = {k: np.array(v, dtype=object if k in prep.categorical else np.float64) for k, v in test.items()}
    for name in prep.numeric:
        test[name][::7] = np.nan  # readings that did not come: the stored median, as in Python
    test[prep.categorical[0]][::5] = "never-seen"  # all zeros, as in Python

    session = ort.InferenceSession(str(paths["edge"]), providers=["CPUExecutionProvider"])
    meta = onnx.load(str(paths["edge"])).metadata_props
    props = {p.key: json.loads(p.value) for p in meta}
    numbers = np.column_stack([test[n] for n in props["driftpilot.numbers"]]).astype(np.float32)
    categories = np.column_stack([test[n].astype(str) for n in props["driftpilot.categories"]]).astype(object)
    (proba,) = session.run(None, {"numbers": numbers, "categories": categories})

    assert (props["driftpilot.numbers"], props["driftpilot.categories"]) == (prep.numeric, prep.categorical)
    assert props["driftpilot.classes"] == model.classes
    assert np.abs(proba - model.predict_proba(test)).max() < 1e-5
