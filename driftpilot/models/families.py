"""The model families by name, as recorded with every managed model and version."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from driftpilot.models.base import TorchClassifier
from driftpilot.models.hashed_mlp import HashedMLP
from driftpilot.models.intent_mlp import IntentMLP
from driftpilot.models.ngram_student import NgramStudent
from driftpilot.models.tabular_mlp import TabularMLP

FAMILIES: dict[str, type[TorchClassifier]] = {
    TabularMLP.family: TabularMLP,
    IntentMLP.family: IntentMLP,
    HashedMLP.family: HashedMLP,
}
#: Families made only by distillation from a teacher, for edge nodes (never a managed model's own).
STUDENTS: dict[str, type[TorchClassifier]] = {NgramStudent.family: NgramStudent}


def family(name: str) -> type[TorchClassifier]:
    """The class of the family called ``name``."""
    try:
        return (FAMILIES | STUDENTS)[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; known: {sorted(FAMILIES)}") from None


def load_model(folder: Path) -> TorchClassifier:
    """A saved model, loaded by the family its ``model.json`` names."""
    meta = json.loads((folder / "model.json").read_text())
    return family(meta["config"]["family"]).load(folder)


def model_from_meta(meta: Mapping[str, Any], arrays: Sequence[np.ndarray] | None = None) -> TorchClassifier:
    """A model rebuilt from its :meth:`~TorchClassifier.meta` (and weights), by the family it names."""
    return family(meta["config"]["family"]).from_meta(meta, arrays)
