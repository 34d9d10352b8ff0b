"""Federated rounds on one machine: every node's ClientApp called in-process, one after another.

Flower's own simulation engine runs ClientApps in Ray actors; Ray is a 70 MB dependency that
starts a cluster (seconds, and workers that each import torch) for what here is a few small
networks trained for seconds, inside a loop that must run on one modest server and in
``make demo``. So the embedded default drives the same ClientApp and the same strategies
through Flower's ``Grid`` interface, in this process: what differs from a deployment is only
how messages travel. Each node's rows are written to a Parquet file its ClientApp reads, as a
``flower-supernode`` reads its own.
"""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from flwr.app import Context, Error, Message, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid
from flwr.supercore.run import Run

from driftpilot.edge.client_app import app as default_client
from driftpilot.edge.server_app import FederatedOutcome, FederatedSettings, run_rounds
from driftpilot.models.base import TorchClassifier

#: The node id the server's messages come from (Flower's SuperLink uses 0).
SERVER_NODE = 0


class LocalGrid(Grid):
    """A ``Grid`` whose nodes are ClientApps in this process (``clients``: node name → app and
    its node configuration)."""

    def __init__(self, clients: Mapping[str, tuple[ClientApp, dict[str, str | int | float | bool]]]) -> None:
        self._run = Run.create_empty(run_id=1)
        self._nodes = {i + 1: (name, app, config) for i, (name, (app, config)) in enumerate(clients.items())}
        self._contexts = {
            i: Context(run_id=1, node_id=i, node_config=dict(config), state=RecordDict(), run_config={})
            for i, (_name, _app, config) in self._nodes.items()
        }
        self._replies: dict[str, Message] = {}

    def set_run(self, run: Run) -> None:
        self._run = run

    @property
    def run(self) -> Run:
        return self._run

    def create_message(
        self, content: RecordDict, message_type: str, dst_node_id: int, group_id: str, ttl: float | None = None
    ) -> Message:
        return Message(content, dst_node_id, message_type, ttl=ttl, group_id=group_id)

    def get_node_ids(self) -> Iterable[int]:
        return list(self._nodes)

    def push_messages(self, messages: Iterable[Message]) -> Iterable[str]:
        ids = []
        for msg in messages:
            # Set what a SuperLink sets on a message it accepts (as Flower's InMemoryGrid does).
            msg.metadata.__dict__["_run_id"] = self._run.run_id
            msg.metadata.__dict__["_src_node_id"] = SERVER_NODE
            msg.metadata.__dict__["_message_id"] = str(uuid.uuid4())
            node = msg.metadata.dst_node_id
            if node not in self._nodes:
                raise ValueError(f"no node {node} in this grid")
            _name, app, _config = self._nodes[node]
            try:
                reply = app(msg, self._contexts[node])
            except Exception as exc:  # a node's failure is its reply, as a SuperNode's would be
                reply = Message(Error(code=0, reason=f"{type(exc).__name__}: {exc}"), reply_to=msg)
            self._replies[msg.metadata.message_id] = reply
            ids.append(msg.metadata.message_id)
        return ids

    def pull_messages(self, message_ids: Iterable[str]) -> Iterable[Message]:
        return [self._replies.pop(i) for i in message_ids if i in self._replies]

    def send_and_receive(self, messages: Iterable[Message], *, timeout: float | None = None) -> Iterable[Message]:
        return self.pull_messages(list(self.push_messages(messages)))


def simulate(
    start: TorchClassifier,
    partitions: Mapping[str, tuple[pd.DataFrame, np.ndarray]],
    settings: FederatedSettings,
    *,
    apps: Mapping[str, ClientApp] | None = None,
    check: tuple[pd.DataFrame, np.ndarray] | None = None,
    workdir: Path | None = None,
) -> FederatedOutcome:
    """Federated training of ``start`` over ``partitions`` (node name → its rows and labels), each
    node running ``apps[name]`` (the driftpilot ClientApp unless given: tests pass faulty ones);
    ``check``: the server's own labelled rows, to screen updates on."""
    if not partitions:
        raise ValueError("a federated run needs at least one node's rows")
    with tempfile.TemporaryDirectory(dir=workdir) as tmp:
        clients: dict[str, tuple[ClientApp, dict[str, str | int | float | bool]]] = {}
        for name, (frame, labels) in partitions.items():
            path = Path(tmp) / f"node-{len(clients)}.parquet"
            frame.assign(**{settings.target: np.asarray(labels).astype(str)}).to_parquet(path, index=False)
            app = (apps or {}).get(name, default_client)
            clients[name] = (app, {"data-path": str(path), "node-name": name})
        return run_rounds(LocalGrid(clients), start, settings, check)
