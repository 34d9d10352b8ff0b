"""A node's side of a federated round (Flower's ``ClientApp``): train the round's model on the
node's own rows and send back its weights, or evaluate it there.

Run by ``flower-supernode`` on each edge node (``--node-config "data-path='/var/lib/driftpilot/
rows.parquet' node-name='north'"``: Flower reads the values as TOML, so strings are quoted), or
in-process by :mod:`driftpilot.edge.simulation`. A node that
cannot take part (no data file, labels outside the model's classes) answers with an error that
names why; the server drops it from that round and logs the reason.
"""

from __future__ import annotations

import zlib
from typing import Any

from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp

from driftpilot.edge import task

app = ClientApp()


def _node_data(msg: Message, context: Context) -> tuple[task.NodeData, Any]:
    config = _config(msg)
    path = context.node_config.get("data-path")
    if not path:
        raise ValueError("this node was started without a data-path in its --node-config")
    frame, labels = task.read_rows(str(path), str(config.get("target", "label")))
    # Each node holds out its own rows, the same ones every round of the run.
    seed = int(config.get("seed", 0)) + zlib.crc32(str(path).encode())
    meta = str(msg.content.config_records["model"]["meta"])
    model = task.load_model(meta, msg.content.array_records["arrays"].to_numpy_ndarrays())
    return task.split(frame, labels, seed), model


@app.train()
def train(msg: Message, context: Context) -> Message:
    """Train the round's model on this node's rows; reply with the new weights and metrics."""
    config = _config(msg)
    data, model = _node_data(msg, context)
    metrics = task.train(
        model,
        data,
        epochs=int(config.get("local-epochs", task.LOCAL_EPOCHS)),
        proximal_mu=float(config.get("proximal-mu", 0.0)),
        seed=int(config.get("seed", 0)) + int(config.get("server-round", 0)),
        class_weights=[float(w) for w in config["class-weights"]] if "class-weights" in config else None,
    )
    content = RecordDict(
        {"arrays": ArrayRecord(model.weights()), "metrics": MetricRecord(metrics), "node": _name(context)}
    )
    return Message(content=content, reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    """Evaluate the round's model on this node's held-out rows (and describe the node's data at
    the server's first look, round 0)."""
    data, model = _node_data(msg, context)
    metrics = task.evaluate(model, data, describe=int(_config(msg).get("server-round", -1)) == 0)
    content = RecordDict({"metrics": MetricRecord(metrics), "node": _name(context)})
    return Message(content=content, reply_to=msg)


def _config(msg: Message) -> dict[str, Any]:
    """The round's configuration as plain values."""
    return dict(msg.content.config_records["config"])


def _name(context: Context) -> ConfigRecord:
    """The node's name in the server's records (``node-name`` of its configuration)."""
    return ConfigRecord({"name": str(context.node_config.get("node-name", f"node-{context.node_id}"))})
