"""An edge node: the version its cohort is assigned, served on the node, every answer kept until
the server has it, and the requests its student is least sure of deferred to the server's teacher.

- :meth:`EdgeNode.poll` asks ``GET /models/{name}/assignment`` what the node (its id and group)
  must run, downloads the assigned student's int8 graph from the artifact route when it is not the
  one running, checks it against the assigned sha256 and swaps it in
  (:class:`~driftpilot.edge.predictor.EdgeModel`). A download or a graph that fails any check is
  refused with the reason (:attr:`EdgeNode.refusals`) and the running version keeps serving; a
  rollback on the server is just another assignment, taken at the next poll. The graph last swapped
  in is kept on disk and served again after a restart, before the server is reached.
- :meth:`EdgeNode.answer` (the cascade) answers with the student when its top probability reaches
  the threshold that travels in the graph (``driftpilot.defer_below``, chosen when the student was
  distilled so that a set share of requests is answered here) and sends the others to the
  server's ``POST /models/{name}/predict``, where the teacher answers and the server stores them.
  When the server cannot be reached, the student answers those too. What the student answered is
  put in the node's outbox (SQLite, durable before the answer is returned) with ``answered_by``
  saying so; :meth:`EdgeNode.upload` sends the outbox to the events route.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import numpy as np

from driftpilot.edge.http import detail, get, post_json
from driftpilot.edge.outbox import Outbox
from driftpilot.edge.predictor import EdgeModel, SwapRefused
from driftpilot.edge.uploader import Sent, Uploader

__all__ = ["EdgeNode"]

#: Refusals a node remembers (the newest).
_KEEP_REFUSALS = 20


class EdgeNode:
    """One node of ``model`` (see the module's note).

    Parameters
    ----------
    server
        The server's base URL.
    node_id, group
        Who the node is: the entity and group the server assigns versions by (a canary by group
        reaches every node of the group).
    token
        A bearer token of the ``ingest`` role.
    folder
        The node's own disk: the graphs it downloaded, the outbox and what it runs.
    defer
        Whether to defer unsure requests to the server's teacher (the cascade).
    """

    def __init__(
        self,
        *,
        server: str,
        model: str,
        node_id: str,
        token: str,
        folder: Path,
        group: str | None = None,
        timeout: float = 5.0,
        defer: bool = True,
    ) -> None:
        self.server = server.rstrip("/")
        self.model_name = model
        self.node_id = node_id
        self.group = group
        self.token = token
        self.folder = Path(folder)
        self.timeout = timeout
        self.defer = defer
        (self.folder / "versions").mkdir(parents=True, exist_ok=True)
        self.model = EdgeModel()
        self.outbox = Outbox(self.folder / "outbox.sqlite")
        self.uploader = Uploader(self.outbox, self.server, model, token, timeout=timeout)
        self.refusals: list[dict[str, Any]] = []
        self.last_poll: dict[str, Any] = {}
        self._polling = threading.Lock()
        self._resume()

    # -- what it runs ------------------------------------------------------------------------
    def _resume(self) -> None:
        """Serve again the graph last swapped in (checked as any other) after a restart."""
        current = self.folder / "current.json"
        if current.exists():
            kept = json.loads(current.read_text())
            try:
                self.model.swap(self.folder / kept["file"], version=int(kept["version"]), sha256=kept["sha256"])
            except SwapRefused as exc:
                self._refused(int(kept["version"]), f"after a restart: {exc}")

    def poll(self) -> str:
        """Take the assignment; what happened, in words (also kept in :attr:`last_poll`)."""
        with self._polling:
            outcome = self._poll()
            self.last_poll = {"at": datetime.now(UTC).isoformat(), "outcome": outcome}
            return outcome

    def _poll(self) -> str:
        query = urlencode({"entity": self.node_id} | ({"group": self.group} if self.group else {}))
        status, body, _ = get(f"{self._model_url()}/assignment?{query}", self.token, timeout=self.timeout)
        if status != 200:
            return f"no assignment (HTTP {status}): {detail(status, body)}; serving {self._serving()}"
        assigned = json.loads(body)
        version, edge = int(assigned["version"]), assigned.get("edge") or {}
        if not edge.get("artifact"):
            return f"version {version} has no edge model ({edge.get('reason')}); serving {self._serving()}"
        # The student is a version of its own: the node serves (and reports) that number.
        student = int(edge["version"])
        which = f"version {student} (the student of version {version})"
        current = self.model.current
        if current is not None and current.sha256 == edge["sha256"]:
            return f"{which} already serving"
        url = f"{self._model_url()}/versions/{student}/artifacts/{quote(edge['artifact'])}"
        status, data, _ = get(url, self.token, timeout=max(self.timeout, 30.0))
        if status != 200:
            return self._refused(student, f"download refused (HTTP {status}): {detail(status, data)}")
        file = self.folder / "versions" / f"v{student}-{edge['sha256'][:16]}.onnx"
        _write_atomically(file, data)
        try:
            self.model.swap(file, version=student, sha256=edge["sha256"])
        except SwapRefused as exc:
            file.unlink(missing_ok=True)
            return self._refused(student, str(exc))
        kept = {"version": student, "sha256": edge["sha256"], "file": str(file.relative_to(self.folder))}
        _write_atomically(self.folder / "current.json", json.dumps(kept).encode())
        return f"{which} swapped in"

    def _refused(self, version: int, reason: str) -> str:
        self.refusals = [*self.refusals, {"version": version, "reason": reason}][-_KEEP_REFUSALS:]
        return f"version {version} refused: {reason}; serving {self._serving()}"

    def _serving(self) -> str:
        current = self.model.current
        return f"version {current.version}" if current else "nothing yet"

    def _model_url(self) -> str:
        return f"{self.server}/models/{quote(self.model_name)}"

    # -- answering ---------------------------------------------------------------------------
    def answer(self, events: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Answer ``events`` (``{"key", "time"?, "entity"?, "group"?, "features"}`` each; entity
        and group default to the node's): see the module's note. Raises ``LookupError`` before a
        first version is loaded and ``ValueError`` for an event without a key or features."""
        completed = [self._complete(e) for e in events]
        loaded, probabilities = self.model.predict([e["features"] for e in completed])
        threshold = loaded.meta.get("driftpilot.defer_below")
        sure = probabilities.max(axis=1) >= (float(threshold) if threshold and self.defer else 0.0)
        unsure = [i for i in range(len(completed)) if not sure[i]]
        answers: dict[int, dict[str, Any]] = {}
        why_here = f"edge:{self.node_id}"
        if unsure:
            status, body, _ = post_json(
                f"{self._model_url()}/predict",
                self.token,
                {"events": [completed[i] for i in unsure]},
                timeout=self.timeout,
            )
            if status == 200:
                for i, given in zip(unsure, json.loads(body)["answers"], strict=True):
                    answers[i] = given | {"answered_by": "server"}
            else:
                why_here += f" (server did not answer: HTTP {status})" if status else " (server unreachable)"
        records = []
        for i, event in enumerate(completed):
            if i in answers:
                continue
            row = probabilities[i]
            answer = {
                "key": event["key"],
                "version": loaded.version,
                "prediction": loaded.classes[int(np.argmax(row))],
                "probabilities": {c: round(float(p), 6) for c, p in zip(loaded.classes, row, strict=True)},
                "answered_by": f"edge:{self.node_id}" if sure[i] else why_here,
            }
            answers[i] = answer
            records.append(
                event
                | {
                    "served_version": loaded.version,
                    "prediction": answer["prediction"],
                    "probabilities": answer["probabilities"],
                    "answered_by": answer["answered_by"],
                }
            )
        self.outbox.put(records)  # durable before anyone hears the answer
        return [answers[i] for i in range(len(completed))]

    def _complete(self, event: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(event.get("key"), str) or not event["key"]:
            raise ValueError(f"an event needs a non-empty 'key', got {event!r}")
        if not isinstance(event.get("features"), Mapping):
            raise ValueError(f"event {event['key']!r} needs 'features' mapping names to values")
        completed = {
            "key": event["key"],
            "time": event.get("time") or datetime.now(UTC).isoformat(),
            "entity": event.get("entity") or self.node_id,
            "features": dict(event["features"]),
        }
        group = event.get("group") or self.group
        return completed | ({"group": group} if group else {})

    # -- reporting ---------------------------------------------------------------------------
    def upload(self) -> Sent:
        """Send the outbox to the server until it is empty or the server stops taking it."""
        return self.uploader.drain()

    def status(self) -> dict[str, Any]:
        """What the node serves, its last poll, what it refused and why, and its outbox."""
        current = self.model.current
        return {
            "node": self.node_id,
            "group": self.group,
            "model": self.model_name,
            "version": current.version if current else None,
            "sha256": current.sha256 if current else None,
            "defer_below": current.meta.get("driftpilot.defer_below") if current else None,
            "last_poll": self.last_poll,
            "refusals": self.refusals,
            "outbox": len(self.outbox),
            "refused_records": len(self.outbox.refused()),
        }

    def close(self) -> None:
        self.outbox.close()


def _write_atomically(path: Path, data: bytes) -> None:
    """``path`` holds ``data`` whole or keeps what it held: written beside it, then renamed."""
    partial = path.with_name(path.name + ".part")
    partial.write_bytes(data)
    os.replace(partial, path)
