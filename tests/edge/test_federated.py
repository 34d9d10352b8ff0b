"""Federated rounds through driftpilot's Flower app, on the in-process grid."""

from __future__ import annotations

import logging
import math

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from driftpilot.edge import strategy
from driftpilot.edge.client_app import app as client
from driftpilot.edge.server_app import FederatedSettings, read_outcome, write_outcome
from driftpilot.edge.simulation import simulate
from driftpilot.models.tabular_mlp import TabularMLP

FEATURES = [("a", "number"), ("b", "number"), ("site", "category")]
CLASSES = ["no", "yes"]


@pytest.fixture(autouse=True)
def _quiet_flower():
    logging.getLogger("flwr").setLevel(logging.WARNING)


def rows(n: int, site: str, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    frame = pd.DataFrame({"a": a, "b": b, "site": site})
    return frame, np.where(a + 0.5 * b > 0, "yes", "no")


def start_model() -> TabularMLP:
    """A weak champion: trained on a few rows, to leave the nodes something to teach it."""
    frame, labels = rows(40, "s0", seed=99)
    return TabularMLP(FEATURES, CLASSES, hidden=(8,), epochs=2, seed=0).fit(frame, labels)


#: The server's own labelled rows, that updates are screened on (the Trainer's holdout in the loop).
CHECK = rows(500, "s0", seed=77)


def nodes(n: int = 5, size: int = 400) -> dict[str, tuple[pd.DataFrame, np.ndarray]]:
    return {f"s{i}": rows(size, f"s{i}", seed=i) for i in range(n)}


def accuracy(model: TabularMLP) -> float:
    frame, labels = rows(2000, "s0", seed=1234)
    return float(np.mean(model.predict(frame) == labels))


def log_loss(model: TabularMLP) -> float:
    frame, labels = rows(2000, "s0", seed=1234)
    proba = model.predict_proba(frame)[np.arange(len(labels)), (labels == "yes").astype(int)]
    return float(-np.mean(np.log(np.clip(proba, 1e-9, 1))))


def test_rounds_make_a_better_model_and_record_what_they_did():
    start = start_model()
    done = simulate(start, nodes(), FederatedSettings(rounds=3, seed=0), check=CHECK)
    # The nodes' 1,600 training rows teach the linear rule well; the start saw 40 rows for 2 epochs.
    assert accuracy(done.model) > max(0.93, accuracy(start) + 0.05)
    record = done.record
    assert record["nodes"] == [f"s{i}" for i in range(5)]
    assert record["samples"] == {f"s{i}": 320 for i in range(5)}  # 80 % of each node's 400 rows
    assert record["strategy"] in ("fedavg", "fedprox") and record["reasons"]
    assert record["outliers"] == [] and record["dropped"] == {}
    # What travels is the weights' own bytes and Flower's framing of them, once to each node and back.
    weights = ArrayRecord(start.weights()).count_bytes()
    assert weights >= sum(a.nbytes for a in start.weights())
    assert record["bytes_per_round"] == [{"sent": 5 * weights, "received": 5 * weights}] * 3
    assert set(record["rounds"][0]["spread"]) == {"train-loss", "accuracy-before", "accuracy-after"}
    assert sorted(record["federated_accuracy"]) == [1, 2, 3]
    assert record["dp"] is None and record["secure_aggregation"] is False


def test_the_result_is_written_whole_and_read_back(tmp_path):
    done = simulate(start_model(), nodes(3, 200), FederatedSettings(rounds=1, seed=0))
    write_outcome(done, tmp_path / "out")
    back = read_outcome(tmp_path / "out")
    frame, _ = rows(50, "s0", seed=5)
    assert np.allclose(back.model.predict_proba(frame), done.model.predict_proba(frame), atol=1e-6)
    assert back.record["nodes"] == done.record["nodes"]
    assert not (tmp_path / "out.partial").exists()
    with pytest.raises(FileNotFoundError, match="no federated result"):
        read_outcome(tmp_path / "missing")


def _failing(msg: Message, context: Context) -> Message:
    raise ConnectionError("the gateway lost its uplink")


def _wrong_shape(msg: Message, context: Context) -> Message:
    arrays = [
        np.zeros((a.shape[0] + 1, *a.shape[1:]), dtype=np.float32) for a in msg.content["arrays"].to_numpy_ndarrays()
    ]
    metrics = MetricRecord(
        {"num-examples": 10, "train-loss": 0.1, "accuracy-before": 0.5, "accuracy-after": 0.5, "class-counts": [5, 5]}
    )
    return Message(RecordDict({"arrays": ArrayRecord(arrays), "metrics": metrics}), reply_to=msg)


def _app(train) -> ClientApp:
    """A node whose training is ``train`` and whose evaluation is driftpilot's."""
    app = ClientApp()
    app.train()(train)
    app.evaluate()(lambda msg, context: client(msg, context))
    return app


def test_a_node_that_fails_or_sends_the_wrong_shape_is_dropped_with_its_reason():
    apps = {"s3": _app(_failing), "s4": _app(_wrong_shape)}
    done = simulate(start_model(), nodes(), FederatedSettings(rounds=2, seed=0), apps=apps)
    assert done.record["nodes"] == ["s0", "s1", "s2"]
    dropped = done.record["dropped"]
    assert set(dropped) == {"round 1", "round 2"}
    assert "ConnectionError: the gateway lost its uplink" in dropped["round 1"]["s3"]
    assert "wrong shape" in dropped["round 1"]["s4"]
    # The round completed with the others: the model learnt from them.
    assert accuracy(done.model) > 0.9


def test_a_node_without_data_says_why(tmp_path):
    app_nodes = nodes(3, 200)
    done = simulate(start_model(), app_nodes, FederatedSettings(rounds=1, seed=0, target="label"))
    assert done.record["dropped"] == {}
    bad = {name: (frame, np.full(len(labels), "maybe")) for name, (frame, labels) in nodes(1, 50).items()}
    mixed = app_nodes | {"odd": bad["s0"]}
    done = simulate(start_model(), mixed, FederatedSettings(rounds=1, seed=0))
    assert "labels ['maybe'] are not among the classes" in done.record["dropped"]["round 1"]["odd"]


def test_poisoned_nodes_are_flagged_and_left_out_under_auto_not_under_fedavg():
    parts = nodes(8, 300)
    for name in ("s1", "s5"):
        frame, labels = parts[name]
        parts[name] = (frame, np.where(labels == "yes", "no", "yes"))
    auto = simulate(start_model(), parts, FederatedSettings(rounds=3, seed=0), check=CHECK)
    plain = simulate(start_model(), parts, FederatedSettings(rounds=3, strategy="fedavg", seed=0), check=CHECK)
    assert auto.record["outliers"] == ["s1", "s5"]
    assert auto.record["rounds"][0]["excluded"] == ["s1", "s5"]
    assert auto.record["final_strategy"] == "fedtrimmedavg"
    # Applied alone to the round's model, a flipped node's update costs it most of its accuracy.
    first = auto.record["rounds"][0]["nodes"]
    assert (
        min(first[n]["harm"] for n in ("s1", "s5"))
        > 0.3
        > max(first[n]["harm"] for n in first if n not in ("s1", "s5"))
    )
    assert plain.record["rounds"][0]["excluded"] == []
    # Left out, the flipped labels cost the model nothing; averaged in, they blur its answers
    # (on a linear rule the majority still wins the argmax, not the confidence).
    assert accuracy(auto.model) > 0.95
    assert log_loss(auto.model) < 0.85 * log_loss(plain.model)


def test_the_strategy_is_chosen_from_how_the_nodes_differ():
    alike = {"a": {"accuracy": 0.9, "class-counts": [50, 50]}, "b": {"accuracy": 0.91, "class-counts": [48, 52]}}
    skewed = {"a": {"accuracy": 0.9, "class-counts": [90, 10]}, "b": {"accuracy": 0.7, "class-counts": [10, 90]}}
    assert strategy.choose("auto", alike).strategy == "fedavg"
    chosen = strategy.choose("auto", skewed)
    assert (chosen.strategy, chosen.proximal_mu, chosen.exclude_outliers) == ("fedprox", strategy.PROXIMAL_MU, True)
    assert chosen.evidence == {"label_distance": 0.4, "input_shift": 0.0, "accuracy_spread": 0.2, "nodes": 2}
    # Alike labels and accuracy, but one node's inputs sit half a standard deviation off: FedProx.
    shifted = {n: r | {"num-rows": 100, "input-means": [0.0, 0.0]} for n, r in alike.items()}
    shifted["b"]["input-means"] = [1.0, 0.0]
    chosen = strategy.choose("auto", shifted)
    assert (chosen.strategy, chosen.evidence["input_shift"]) == ("fedprox", 0.5)
    named = strategy.choose("krum", skewed)
    assert (named.strategy, named.exclude_outliers) == ("krum", False)
    with pytest.raises(ValueError, match="unknown federated strategy 'median'"):
        strategy.choose("median", alike)


def test_outliers_need_enough_updates_to_judge():
    updates = {n: [np.full(3, 0.1 * i)] for i, n in enumerate("abc")}
    assert strategy.flag_outliers(updates) == ([], {})
    updates = {n: [np.full(3, 0.01 * i)] for i, n in enumerate("abcdef")} | {"far": [np.full(3, 5.0)]}
    flagged, z = strategy.flag_outliers(updates)
    assert flagged == ["far"] and z["far"] > strategy.OUTLIER_Z and max(v for k, v in z.items() if k != "far") < 2


def test_dp_noise_is_applied_and_its_epsilon_recorded():
    # RDP of the Gaussian mechanism: with sigma 1, one round, delta 1e-5, the best order gives
    # alpha/2 + log(1e5)/(alpha - 1), minimal near alpha = 1 + sqrt(2 log 1e5): about 5.30.
    assert strategy.dp_epsilon(1.0, 1, 1e-5) == pytest.approx(0.5 + math.sqrt(2 * math.log(1e5)), abs=0.01)
    assert strategy.dp_epsilon(2.0, 5, 1e-5) < strategy.dp_epsilon(1.0, 5, 1e-5) < strategy.dp_epsilon(1.0, 10, 1e-5)
    assert strategy.dp_epsilon(0.0, 1, 1e-5) == math.inf
    done = simulate(start_model(), nodes(4, 200), FederatedSettings(rounds=2, seed=0, dp_noise=1.0, dp_clip=0.5))
    assert done.record["dp"] == {
        "noise_multiplier": 1.0,
        "clipping_norm": 0.5,
        "delta": 1e-5,
        "epsilon": round(strategy.dp_epsilon(1.0, 2, 1e-5), 3),
    }


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("rounds", 0, "at least one round"),
        ("local_epochs", 0, "local_epochs"),
        ("strategy", "best", "unknown federated strategy"),
        ("min_nodes", 0, "min_nodes"),
        ("dp_noise", -1.0, "dp_noise"),
    ],
)
def test_bad_settings_are_refused(field, value, message):
    with pytest.raises(ValueError, match=message):
        FederatedSettings(**{field: value})


def test_too_few_nodes_is_a_clear_error():
    with pytest.raises(RuntimeError, match="only 2 node.s. connected .* needs 3"):
        simulate(start_model(), nodes(2, 100), FederatedSettings(rounds=1, min_nodes=3, wait_seconds=0))
