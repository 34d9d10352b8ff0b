"""The node's model: a version's ``edge.onnx`` in onnxruntime, swapped in only once it has proved
itself, so that a bad download never replaces the model that works.

:meth:`EdgeModel.swap` checks the file's sha256 against the one the server assigned, opens it in
onnxruntime, reads the columns and classes from its metadata, and runs it once on a probe row (every
reading missing, every category unknown: the one input any version must take) expecting one
probability per class summing to 1. Only then does it replace the running session, in one
assignment, so a request in flight finishes on the version it started with and none is dropped.
Any failure leaves the running version in place and says why.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftpilot.models.edge_export import edge_feeds

__all__ = ["EdgeModel", "Loaded", "SwapRefused"]


class SwapRefused(RuntimeError):
    """A version that could not be swapped in; the running one keeps serving."""


@dataclass(frozen=True)
class Loaded:
    """One version ready to serve: its session and what its graph's metadata says it reads."""

    version: int
    sha256: str
    session: Any
    meta: dict[str, str]
    classes: list[str]

    def predict_proba(self, events: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """Class probabilities for raw events (a missing or ``None`` number is a missing reading;
        a missing category is unknown, a missing text empty)."""
        (probabilities,) = self.session.run(["probabilities"], edge_feeds(self.meta, events))
        return np.asarray(probabilities)


class EdgeModel:
    """The version a node serves, and the swap to the next (see the module's note)."""

    def __init__(self) -> None:
        self._current: Loaded | None = None
        self._swapping = threading.Lock()

    @property
    def current(self) -> Loaded | None:
        """The version serving now (``None`` before the first swap)."""
        return self._current

    def swap(self, path: Path | str, *, version: int, sha256: str) -> Loaded:
        """Serve ``path`` (version ``version``) from now on, if it checks out.

        Raises
        ------
        SwapRefused
            Naming what failed: the sum, loading, the metadata or the probe. The running version
            is untouched.
        """
        with self._swapping:
            loaded = _load(Path(path), version, sha256)
            self._current = loaded
            return loaded

    def predict(self, events: Sequence[Mapping[str, Any]]) -> tuple[Loaded, np.ndarray]:
        """The serving version and its probabilities for ``events`` (one version for the whole
        batch, even if a swap lands meanwhile)."""
        loaded = self._current
        if loaded is None:
            raise LookupError("no version loaded yet")
        return loaded, loaded.predict_proba(events)


def _load(path: Path, version: int, sha256: str) -> Loaded:
    import onnxruntime as ort

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SwapRefused(f"version {version}: cannot read {path}: {exc}") from exc
    actual = hashlib.sha256(data).hexdigest()
    if actual != sha256:
        raise SwapRefused(f"version {version}: {path.name} has sha256 {actual}, the server assigned {sha256}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # a node's cores are few and serve requests one by one
    try:
        session = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        meta = dict(session.get_modelmeta().custom_metadata_map)
        classes = list(json.loads(meta["driftpilot.classes"]))
    except Exception as exc:  # onnxruntime raises its own types; any of them means "do not serve"
        raise SwapRefused(f"version {version}: {path.name} does not load as an edge model: {exc}") from exc
    loaded = Loaded(version, sha256, session, meta, classes)
    try:
        probe = loaded.predict_proba([{}])
    except Exception as exc:
        raise SwapRefused(f"version {version}: {path.name} fails on a probe row: {exc}") from exc
    if probe.shape != (1, len(classes)) or not np.isclose(probe.sum(), 1.0, atol=1e-3):
        raise SwapRefused(
            f"version {version}: {path.name} gave {probe.shape} probabilities summing to {probe.sum():.4f} on a "
            f"probe row; expected one per class ({len(classes)}) summing to 1"
        )
    return loaded
