"""driftpilot's Flower app run for real: a flower-superlink and three flower-supernode processes on
loopback, the run submitted over the SuperLink's Control API (:mod:`driftpilot.edge.deployment`).

Slow (about a minute: Flower's processes poll for work, some seconds per step). Skipped only where
flwr's commands are missing and CI is not set; on CI a missing flower-superlink fails.
"""

from __future__ import annotations

import logging
import os
import time

import numpy as np
import pandas as pd
import pytest
from flwr.app import ArrayRecord

from driftpilot.edge.deployment import LocalFederation, flower_executable, run_on_superlink
from driftpilot.edge.server_app import FederatedSettings
from driftpilot.models.tabular_mlp import TabularMLP

FEATURES = [("a", "number"), ("b", "number"), ("site", "category")]
CLASSES = ["no", "yes"]
#: Each node's rows; a node trains on 80 % of them and holds the rest out.
SIZES = {"north": 300, "south": 400, "east": 500}

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        flower_executable("flower-superlink") is None and os.environ.get("CI", "").lower() != "true",
        reason="flower-superlink is not installed (flwr's deployment commands); CI runs this test",
    ),
]


def rows(n: int, site: str, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=n), rng.normal(size=n)
    return pd.DataFrame({"a": a, "b": b, "site": site}), np.where(a + 0.5 * b > 0, "yes", "no")


def accuracy(model: TabularMLP) -> float:
    frame, labels = rows(2000, "north", seed=1234)
    return float(np.mean(model.predict(frame) == labels))


def test_a_run_on_a_superlink_trains_on_its_nodes_and_a_failed_run_says_why(tmp_path):
    logging.getLogger("flwr").setLevel(logging.WARNING)
    # A weak champion: 40 rows, 2 epochs, to leave the nodes something to teach it.
    frame, labels = rows(40, "north", seed=99)
    start = TabularMLP(FEATURES, CLASSES, hidden=(8,), epochs=2, seed=0).fit(frame, labels)
    start.save(tmp_path / "champion")
    data = {}
    for i, (name, size) in enumerate(SIZES.items()):
        frame, labels = rows(size, name, seed=i)
        data[name] = tmp_path / f"{name}.parquet"
        frame.assign(label=labels).to_parquet(data[name], index=False)

    settings = FederatedSettings(rounds=2, local_epochs=1, min_nodes=3, round_timeout=120.0, seed=0)
    with LocalFederation(data, workdir=tmp_path / "federation") as federation:
        began = time.perf_counter()
        try:
            done = run_on_superlink(
                tmp_path / "champion",
                settings,
                control_address=federation.control_address,
                out_dir=tmp_path / "out",
                timeout=300,
            )
        except RuntimeError:
            print(federation.log_tails())
            raise
        took = time.perf_counter() - began
        # A run whose starting model is not there fails on the SuperLink, and says why.
        with pytest.raises(RuntimeError, match=r"failed: .*No such file or directory.*nowhere"):
            run_on_superlink(
                tmp_path / "nowhere",
                settings,
                control_address=federation.control_address,
                out_dir=tmp_path / "out-2",
                timeout=120,
            )
    print(f"two rounds on three SuperNodes took {took:.1f} s")

    # The nodes' 960 training rows teach the linear rule; the start saw 40 rows for 2 epochs.
    # Two rounds of one epoch are few: what matters is that the model the SuperLink wrote learnt
    # from the nodes, clearly (5 points on 2,000 held-out rows is well beyond chance).
    assert accuracy(done.model) > max(0.85, accuracy(start) + 0.05)
    record = done.record
    assert record["nodes"] == sorted(SIZES)
    assert record["samples"] == {name: int(size * 0.8) for name, size in SIZES.items()}
    assert record["strategy"] in ("fedavg", "fedprox") and record["reasons"]
    assert record["dropped"] == {} and record["outliers"] == []
    weights = ArrayRecord(start.weights()).count_bytes()
    assert record["bytes_per_round"] == [{"sent": 3 * weights, "received": 3 * weights}] * 2
    assert sorted(record["federated_accuracy"]) == ["1", "2"]  # JSON keys, read back from the file
    assert (tmp_path / "out" / "model").is_dir() and not (tmp_path / "out-2").exists()


def test_an_unreachable_superlink_is_named(tmp_path):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(RuntimeError, match=f"cannot reach the SuperLink's Control API at 127.0.0.1:{port}"):
        run_on_superlink(
            tmp_path, FederatedSettings(), control_address=f"127.0.0.1:{port}", out_dir=tmp_path / "out", timeout=5
        )
