"""The training sets a retrain's augmented rival learns from: tabular rows of the parent's
features, and a text family's varied texts encoded as the family encodes them."""

from __future__ import annotations

import zlib
from types import SimpleNamespace

import numpy as np
import pandas as pd

from driftpilot.models.tabular_mlp import TabularMLP
from driftpilot.tools.training import augmented_set, augmented_texts


class _Encoder:
    """Stands in for the sentence encoder: each text its own vector (seeded by the text)."""

    def encode(self, texts):  # noqa: ANN001, ANN202
        return np.asarray([np.random.default_rng(zlib.crc32(t.encode())).normal(size=3) for t in texts])


def test_a_tabular_set_gets_smote_rows_on_the_parents_features_only() -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"a": rng.normal(size=42), "b": ["x", "y"] * 21, "other": range(42)})
    labels = np.array(["p"] * 20 + ["q"] * 20 + ["r"] * 2)
    parent = TabularMLP([("a", "number"), ("b", "category")], ["p", "q", "r"])

    augmented = augmented_set(parent, frame, labels, seed=0)

    assert augmented is not None and augmented.added == {"r": 8}  # raised to half the median class
    assert list(augmented.rows.columns) == ["a", "b"]
    assert augmented_set(parent, frame, np.array(["p", "q"] * 21), seed=0) is None  # nothing rare


def test_a_text_set_gets_variants_of_its_rare_texts_encoded_by_the_parents_encoder() -> None:
    texts = ["where is my card"] * 6 + ["what is my balance"] * 6 + ["card declined abroad"]
    labels = np.array(["card"] * 6 + ["balance"] * 6 + ["declined"])
    encoder = _Encoder()
    frame = pd.DataFrame(encoder.encode(texts), columns=["query_e000", "query_e001", "query_e002"])
    parent = SimpleNamespace(features=[("query", "text")], encoder=encoder)

    augmented = augmented_texts(parent, frame, texts, labels, seed=0)

    assert (
        augmented is not None and augmented.method == "text" and augmented.added == {"declined": 1}
    )  # one variant a text
    synthetic = augmented.rows[augmented.synthetic]
    assert len(synthetic) == 1 and list(augmented.labels[augmented.synthetic]) == ["declined"]
    # Each synthetic row is the encoding of a variant, not a copy of its source's vector.
    assert not (synthetic.to_numpy() == frame.iloc[12].to_numpy()).all(axis=1).any()
    assert augmented_texts(parent, frame, [*texts[:-1], None], labels, seed=0) is None  # a text missing
    assert augmented_texts(SimpleNamespace(features=[("query", "text")]), frame, texts, labels, seed=0) is None
