"""Hashed-embedding MLP family (the offers propensity model).

Categorical features go through the hashing trick: ``name=value`` is hashed into one of
``buckets`` rows of a shared embedding table, so a product launched tomorrow (``fibre_2g``) or a
new channel needs no new vocabulary, no schema change and no wider input layer: its rows start
from whatever the table holds and the update learns them. Numbers are scaled as in the tabular
family (symmetric log, then standardised). The network sees one float matrix — scaled numbers,
then the bucket indices as floats, which it casts back to integers — so every family exports to
ONNX with the same single input ``x``.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> cats = np.array(["tv", "speed", "mobile"])[rng.integers(0, 3, 600)]
>>> x = {"price": rng.normal(size=600), "offer": cats}
>>> y = np.where((x["offer"] == "tv") ^ (x["price"] > 0), "yes", "no")
>>> model = HashedMLP([("price", "number"), ("offer", "category")], ["no", "yes"], epochs=40, seed=0)
>>> float((model.fit(x, y).predict(x) == y).mean()) > 0.9
True
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftpilot.models.base import Columns, FeatureList, TorchClassifier, mlp_body
from driftpilot.models.tabular_mlp import fit_fill, fit_scaling, impute_values, scaled


def bucket_of(name: str, values: np.ndarray, buckets: int) -> np.ndarray:
    """The hash bucket of each ``name=value``: CRC-32, stable across processes and machines
    (Python's own ``hash`` of a string is salted per process).

    >>> bucket_of("offer", np.array(["tv", "tv", "fibre_2g"]), 1024).tolist()
    [756, 756, 491]
    """
    unique, inverse = np.unique(np.asarray(values).astype(str), return_inverse=True)
    codes = np.array([zlib.crc32(f"{name}={v}".encode()) % buckets for v in unique], dtype=np.int64)
    return codes[inverse.reshape(-1)]


@dataclass
class HashedEncoding:
    """Scaled numbers, then one hash bucket per categorical feature."""

    numeric: list[str]
    categorical: list[str]
    buckets: int
    mean: list[float]
    scale: list[float]
    #: Per numeric feature, whether it goes through the symmetric log (None: all, as saved before).
    log: list[bool] | None = None
    #: Per numeric feature, the value a missing reading takes (see ``tabular_mlp.fit_fill``).
    fill: list[float] | None = None

    @property
    def width(self) -> int:
        return len(self.numeric) + len(self.categorical)

    def transform(self, columns: Columns) -> np.ndarray:
        blocks = [scaled(columns, self.numeric, self.mean, self.scale, self.log, self.fill)] if self.numeric else []
        for name in self.categorical:
            if name not in columns:
                raise ValueError(f"feature '{name}' is missing from the input")
            blocks.append(bucket_of(name, np.asarray(columns[name]), self.buckets)[:, None].astype(np.float64))
        return np.hstack(blocks).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "buckets": self.buckets,
            "mean": self.mean,
            "scale": self.scale,
            "log": self.log,
            "impute": {"method": "median", "values": self.fill} if self.fill is not None else None,
        }


class _HashedBody:
    """Embedding lookups for the bucket columns, concatenated with the numbers, then the MLP."""

    @staticmethod
    def make(n_numeric: int, n_categorical: int, buckets: int, dim: int, hidden: tuple[int, ...]) -> Any:
        import torch
        import torch.nn as nn

        class Body(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.table = nn.Embedding(buckets, dim)
                self.mlp = mlp_body(n_numeric + n_categorical * dim, hidden)

            def forward(self, x: Any) -> Any:
                codes = x[:, n_numeric:].long()
                embedded = self.table(codes).flatten(1)
                return self.mlp(torch.cat([x[:, :n_numeric], embedded], dim=1))

        return Body()


class HashedMLP(TorchClassifier):
    """An MLP over scaled numbers and hashed categorical embeddings.

    Parameters
    ----------
    buckets
        Rows of the shared embedding table (collisions are rare below a tenth of it in use).
    embedding_dim
        Width of each categorical feature's embedding.

    The other parameters are :class:`~driftpilot.models.base.TorchClassifier`'s.
    """

    family = "hashed_mlp"

    def __init__(
        self, features: FeatureList, classes: Any, *, buckets: int = 1024, embedding_dim: int = 8, **kwargs: Any
    ) -> None:
        self.buckets = int(buckets)
        self.embedding_dim = int(embedding_dim)
        super().__init__(features, classes, **kwargs)

    def _check_features(self) -> None:
        odd = [f"{name} ({kind})" for name, kind in self.features if kind not in ("number", "category")]
        if odd:
            raise ValueError(f"the hashed_mlp family takes number and category features, not {odd}")

    def _fit_encoding(self, columns: Columns) -> HashedEncoding:
        numeric = [n for n, k in self.features if k == "number"]
        mean, scale, log = fit_scaling(numeric, columns, linear=not self.hidden)
        categorical = [n for n, k in self.features if k == "category"]
        return HashedEncoding(numeric, categorical, self.buckets, mean, scale, log, fit_fill(numeric, columns))

    def _encoding_from_dict(self, data: Mapping[str, Any]) -> HashedEncoding:
        return HashedEncoding(
            list(data["numeric"]),
            list(data["categorical"]),
            int(data["buckets"]),
            list(data["mean"]),
            list(data["scale"]),
            data.get("log"),
            impute_values(data),
        )

    def _body(self, encoding: Any) -> Any:
        return _HashedBody.make(
            len(encoding.numeric), len(encoding.categorical), encoding.buckets, self.embedding_dim, self.hidden
        )

    def _body_width(self, encoding: Any) -> int:
        # The numbers beside one embedding per category.
        return len(encoding.numeric) + len(encoding.categorical) * self.embedding_dim

    def config(self) -> dict[str, Any]:
        return super().config() | {"buckets": self.buckets, "embedding_dim": self.embedding_dim}
