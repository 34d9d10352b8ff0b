"""The same checks on every model family: learn, reproduce, persist, export, update, refuse."""

from __future__ import annotations

import numpy as np
import pytest

from driftpilot.models.families import FAMILIES, family, load_model
from driftpilot.models.hashed_mlp import HashedMLP
from driftpilot.models.intent_mlp import IntentMLP
from driftpilot.models.tabular_mlp import TabularMLP

TABULAR = [("a", "number"), ("b", "number"), ("c", "category")]
CENTRES = np.random.default_rng(99).normal(size=(4, 384))


def _tabular(n: int, seed: int, *, classes=("no", "yes"), categories=("u", "v")):
    rng = np.random.default_rng(seed)
    x = {"a": rng.normal(size=n), "b": rng.exponential(size=n) * 100, "c": rng.choice(categories, n)}
    score = x["a"] + (x["c"] == "u")
    y = np.where(score > 0.5, "yes", "no").astype(object)
    if "maybe" in classes:
        y[x["c"] == "w"] = "maybe"
    return x, y.astype(str)


def _texts(n: int, seed: int, *, classes=("balance", "card_lost")):
    rng = np.random.default_rng(seed)
    which = rng.integers(0, len(classes), n)
    vectors = CENTRES[which] + rng.normal(scale=2.0, size=(n, 384))
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    columns = {f"query_e{j:03d}": vectors[:, j].astype(np.float32) for j in range(384)}
    return columns, np.asarray(classes)[which]


CASES = {
    "tabular_mlp": (lambda **kw: TabularMLP(TABULAR, ["no", "yes"], **kw), _tabular, "maybe"),
    "hashed_mlp": (lambda **kw: HashedMLP(TABULAR, ["no", "yes"], **kw), _tabular, "maybe"),
    # The intent family is linear by default; these checks train its shape with hidden layers,
    # the one the Trainer lets compete (the linear shape of every family is checked below).
    "intent_mlp": (
        lambda **kw: IntentMLP([("query", "text")], ["balance", "card_lost"], **({"hidden": (256,)} | kw)),
        _texts,
        "refund",
    ),
}


def _data_with_new_class(name: str, n: int, seed: int):
    if name == "intent_mlp":
        return _texts(n, seed, classes=("balance", "card_lost", "refund"))
    return _tabular(n, seed, classes=("no", "yes", "maybe"), categories=("u", "v", "w"))


def test_every_family_is_covered():
    assert sorted(CASES) == sorted(FAMILIES)
    with pytest.raises(ValueError, match="unknown model family 'forest'"):
        family("forest")


@pytest.mark.parametrize("name", sorted(CASES))
def test_fit_learns_and_is_reproducible(name):
    make, data, _new = CASES[name]
    x, y = data(800, 0)

    one = make(epochs=25, seed=1).fit(x, y)
    two = make(epochs=25, seed=1).fit(x, y)

    assert np.array_equal(one.predict_proba(x), two.predict_proba(x))
    test_x, test_y = data(400, 1)
    assert (one.predict(test_x) == test_y).mean() > 0.85
    report = one.report_
    assert report.mode == "scratch" and report.validation_rows == 80 and report.rows == 720
    assert len(report.curves) == report.epochs <= 25
    assert all(c.val_loss is not None for c in report.curves)


def test_the_intent_head_is_linear_unless_told_and_its_rival_has_a_hidden_layer():
    x, y = _texts(400, 0)
    model = IntentMLP([("query", "text")], ["balance", "card_lost"], seed=0).fit(x, y)
    again = IntentMLP([("query", "text")], ["balance", "card_lost"], seed=5).fit(x, y)

    assert model.hidden == () and model.report_ is not None and model.report_.validation_rows == 0
    assert "L-BFGS" in model.report_.lr_source  # convex, solved to convergence on every row
    # Convex: another seed (another starting point) converges to the same model, to the solver tolerance.
    assert np.abs(model.predict_proba(x) - again.predict_proba(x)).max() < 5e-3
    assert (IntentMLP.hidden_layers, TabularMLP.default_hidden) == ((256,), TabularMLP.hidden_layers)


def test_a_linear_fit_chooses_its_strength_on_held_out_rows(monkeypatch):
    from driftpilot.models import base

    x, y = _texts(600, 3)
    noisy = y.copy()
    noisy[::6] = np.where(y[::6] == "balance", "card_lost", "balance")  # a sixth of the labels flipped
    test_x, test_y = _texts(600, 4)
    chosen = IntentMLP([("query", "text")], ["balance", "card_lost"], seed=0).fit(x, noisy)
    few = IntentMLP([("query", "text")], ["balance", "card_lost"], seed=0).fit(
        {k: v[:150] for k, v in x.items()}, noisy[:150]
    )
    monkeypatch.setattr(base, "LINEAR_STRENGTHS", (1.0,))  # scikit-learn's fixed default
    fixed = IntentMLP([("query", "text")], ["balance", "card_lost"], seed=0).fit(x, noisy)

    assert chosen.report_ is not None and "held-out rows" in chosen.report_.lr_source
    strength = float(chosen.report_.lr_source.split("C = ")[1].split(" ")[0])
    assert strength < 1.0  # 384 noisy dimensions and 480 rows want more than the default penalty
    assert (chosen.predict(test_x) == test_y).mean() > (fixed.predict(test_x) == test_y).mean()
    assert few.report_ is not None and "C = 1 (scikit-learn's default: fewer than 200 rows" in few.report_.lr_source


def test_the_intent_family_smooths_its_labels_so_that_no_label_is_worth_certainty():
    class Unsmoothed(IntentMLP):
        label_smoothing = 0.0

    rng = np.random.default_rng(7)
    which = rng.integers(0, 2, 400)
    vectors = CENTRES[which] + rng.normal(scale=0.3, size=(400, 384))  # far apart: every row is easy
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    x = {f"query_e{j:03d}": vectors[:, j].astype(np.float32) for j in range(384)}
    y = np.array(["balance", "card_lost"])[which]
    smoothed = IntentMLP([("query", "text")], ["balance", "card_lost"], seed=0).fit(x, y)
    plain = Unsmoothed([("query", "text")], ["balance", "card_lost"], seed=0).fit(x, y)

    assert IntentMLP.label_smoothing == 0.1 and TabularMLP.label_smoothing == 0.0
    assert smoothed.report_ is not None and "labels smoothed by 0.1" in smoothed.report_.lr_source
    # Smoothed by 0.1 over two classes, the best a fit can aim for is 0.95 on the right class.
    assert smoothed.predict_proba(x).max() < 0.96 < plain.predict_proba(x).max()
    assert (smoothed.predict(x) == y).all() and (plain.predict(x) == y).all()


@pytest.mark.parametrize("name", sorted(CASES))
def test_every_family_also_comes_linear(name, tmp_path):
    # The Trainer lets a linear model (no hidden layer) of the champion's family compete: each
    # family builds, learns, saves and exports one.
    import onnxruntime as ort

    make, data, _new = CASES[name]
    x, y = data(800, 0)
    model = make(epochs=25, seed=1, hidden=()).fit(x, y)
    assert model.hidden == () and (model.predict(x) == y).mean() > 0.8
    paths = model.save(tmp_path / "linear")
    loaded = type(model).load(tmp_path / "linear")
    assert loaded.hidden == () and np.allclose(loaded.predict_proba(x), model.predict_proba(x), atol=1e-6)
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].name == "x"


@pytest.mark.parametrize("name", sorted(CASES))
def test_save_load_and_onnx_give_the_same_probabilities(name, tmp_path):
    import onnxruntime as ort

    make, data, _new = CASES[name]
    x, y = data(400, 2)
    model = make(epochs=5, seed=0).fit(x, y)

    paths = model.save(tmp_path / "v1")
    loaded = load_model(tmp_path / "v1")
    session = ort.InferenceSession(str(paths["onnx"]), providers=["CPUExecutionProvider"])
    (onnx_proba,) = session.run(None, {"x": model.encoding_.transform(x)})

    assert type(loaded) is type(model) and loaded.classes == model.classes
    assert np.allclose(loaded.predict_proba(x), model.predict_proba(x))
    assert np.allclose(onnx_proba, model.predict_proba(x), atol=1e-5)
    assert loaded.report_.as_dict() == model.report_.as_dict()
    assert model.size_bytes() == sum(p.numel() * 4 for p in model.net_.parameters())


@pytest.mark.parametrize("name", sorted(CASES))
def test_an_update_grows_new_classes_and_starts_from_the_parent(name):
    make, data, new = CASES[name]
    x, y = data(600, 3)
    parent = make(epochs=15, seed=0).fit(x, y)
    new_x, new_y = _data_with_new_class(name, 600, 4)

    shell = make(seed=0)
    shell.classes = [*parent.classes, new]
    extended = shell._extend_encoding(parent.encoding_, new_x)
    grown, masks = shell._grown_from(parent, extended)
    child = make(seed=0).fit(new_x, new_y, warm_start=parent, penalty="ewc", strength=1.0, new_classes="grow")

    assert child.classes == [*parent.classes, new]
    assert child.report_.new_classes == [new] and child.report_.mode == "update"
    # Before any step the grown network ranks the parent's classes exactly as the parent does.
    import torch

    with torch.no_grad():
        logits = grown(torch.from_numpy(extended.transform(x)))[:, : len(parent.classes)]
    assert np.allclose(torch.softmax(logits, 1).numpy(), parent.predict_proba(x), atol=1e-5)
    assert float(masks["head.weight"][-1].sum()) == 0.0
    assert (child.predict(new_x) == new_y).mean() > 0.8
    with pytest.raises(ValueError, match=f"labels \\['{new}'\\] are not among the classes"):
        make(seed=0).fit(new_x, new_y, warm_start=parent)


@pytest.mark.parametrize("name", sorted(CASES))
def test_a_head_update_leaves_the_body_alone(name):
    make, data, _new = CASES[name]
    x, y = data(500, 5)
    parent = make(epochs=5, seed=0).fit(x, y)

    child = make(seed=0).fit(x, y, warm_start=parent, scope="head")

    for (key, before), after in zip(
        parent.net_.body.state_dict().items(), child.net_.body.state_dict().values(), strict=True
    ):
        assert np.array_equal(before.numpy(), after.numpy()), key
    assert child.report_.scope == "head"


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_training_sets_are_refused_before_training(name):
    make, data, _new = CASES[name]
    x, y = data(50, 6)
    empty = {k: np.asarray(v)[:0] for k, v in x.items()}
    missing = {k: v for k, v in x.items() if k not in ("c", "query_e000")}

    with pytest.raises(ValueError, match="empty training set"):
        make().fit(empty, y[:0])
    with pytest.raises(ValueError, match="single class"):
        make().fit(x, np.full(len(y), y[0]))
    with pytest.raises(ValueError, match="missing from the training data"):
        make().fit(missing, y)
    parent = make(epochs=1).fit(x, y)
    other = (
        TabularMLP([("a", "number")], parent.classes) if name != "tabular_mlp" else HashedMLP(TABULAR, parent.classes)
    )
    with pytest.raises(ValueError, match="cannot update a"):
        other.fit(x, y, warm_start=parent)


def test_families_refuse_feature_kinds_they_cannot_take():
    with pytest.raises(ValueError, match="intent_mlp family takes exactly one text feature"):
        IntentMLP([("a", "number")], ["x", "y"])
    with pytest.raises(
        ValueError, match=r"tabular_mlp family takes number and category features, not \['q \(text\)'\]"
    ):
        TabularMLP([("q", "text")], ["x", "y"])
    with pytest.raises(ValueError, match="hashed_mlp family"):
        HashedMLP([("q", "text")], ["x", "y"])
