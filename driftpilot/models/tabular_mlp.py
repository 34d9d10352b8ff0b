"""Tabular MLP family (the ONT model): preprocessing plus a small torch MLP, exportable to ONNX.

The preprocessing (symmetric-log and standard scaling of numbers, one-hot encoding of
categories) is learned at a fit from scratch and saved with the weights. An update keeps the
parent's preprocessing and weights, and only grows the input layer for category values the
parent never saw (their weights start at zero, so the updated network first answers exactly as
its parent did). Training itself is :class:`~driftpilot.models.base.TorchClassifier`'s.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> x = {"a": rng.normal(size=400), "c": np.where(rng.random(400) < 0.5, "u", "v")}
>>> y = np.where((x["a"] > 0) ^ (x["c"] == "u"), "yes", "no")
>>> mlp = TabularMLP([("a", "number"), ("c", "category")], ["no", "yes"], epochs=30, seed=0)
>>> float((mlp.fit(x, y).predict(x) == y).mean()) > 0.95
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from driftpilot.models.base import Columns, FeatureList, TorchClassifier


def _symlog(x: np.ndarray) -> np.ndarray:
    # Counters (CRC, FEC) span orders of magnitude; a symmetric log keeps them on one scale
    # without losing their sign for quantities like Rx power deltas.
    return np.sign(x) * np.log1p(np.abs(x))


@dataclass
class Preprocessor:
    """Learned feature encoding: numbers scaled, categories one-hot."""

    numeric: list[str]
    categorical: list[str]
    mean: list[float] = field(default_factory=list)
    scale: list[float] = field(default_factory=list)
    vocab: dict[str, list[str]] = field(default_factory=dict)
    #: Per numeric feature, whether it goes through the symmetric log (None: all, as saved before).
    log: list[bool] | None = None
    #: Per numeric feature, the value a missing reading takes (its training median; None: the
    #: training mean, as saved before imputation was stored).
    fill: list[float] | None = None

    @classmethod
    def fit(cls, features: FeatureList, columns: Columns, *, linear: bool = False) -> Preprocessor:
        numeric = [name for name, kind in features if kind == "number"]
        categorical = [name for name, kind in features if kind == "category"]
        prep = cls(numeric=numeric, categorical=categorical)
        prep.mean, prep.scale, prep.log = fit_scaling(numeric, columns, linear=linear)
        prep.fill = fit_fill(numeric, columns)
        prep.vocab = {name: sorted({str(v) for v in columns[name]}) for name in categorical}
        return prep

    def extended(self, columns: Columns) -> Preprocessor:
        """A copy that also knows the category values of ``columns`` (appended at the end)."""
        vocab = {}
        for name in self.categorical:
            known = list(self.vocab[name])
            seen = set(known)
            known.extend(sorted({str(v) for v in columns[name]} - seen))
            vocab[name] = known
        return Preprocessor(
            self.numeric, self.categorical, list(self.mean), list(self.scale), vocab, self.log, self.fill
        )

    @property
    def width(self) -> int:
        return len(self.numeric) + sum(len(v) for v in self.vocab.values())

    def column_names(self) -> list[str]:
        names = list(self.numeric)
        for name in self.categorical:
            names.extend(f"{name}={value}" for value in self.vocab[name])
        return names

    def transform(self, columns: Columns) -> np.ndarray:
        """Encode ``columns`` (a mapping or DataFrame) into a float32 matrix."""
        blocks = [scaled(columns, self.numeric, self.mean, self.scale, self.log, self.fill)] if self.numeric else []
        for name in self.categorical:
            values = np.asarray(columns[name]).astype(str)
            vocab = np.asarray(self.vocab[name])
            # Unknown values encode as all zeros: the network falls back on the other features.
            blocks.append((values[:, None] == vocab[None, :]).astype(np.float32))
        return np.hstack(blocks).astype(np.float32)

    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "mean": self.mean,
            "scale": self.scale,
            "vocab": self.vocab,
            "log": self.log,
            "impute": {"method": "median", "values": self.fill} if self.fill is not None else None,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        return cls(
            numeric=list(data["numeric"]),
            categorical=list(data["categorical"]),
            mean=list(data["mean"]),
            scale=list(data["scale"]),
            vocab={k: list(v) for k, v in data["vocab"].items()},
            log=data.get("log"),
            fill=impute_values(data),
        )


#: A number whose values skew beyond this is heavy-tailed: it is scaled after a symmetric log.
HEAVY_TAIL_SKEW = 2.0


def fit_scaling(
    numeric: list[str], columns: Columns, *, linear: bool = False
) -> tuple[list[float], list[float], list[bool]]:
    """Mean and spread of each numeric feature (spread 1 if constant), and whether it is taken
    through the symmetric log first. For a network with hidden layers, every number is (they bend
    it as they need). For a ``linear`` model only a heavy-tailed one (a counter spanning orders
    of magnitude), whose tail the log tames: a bounded or bell-shaped number stays linear, so that
    the model can still draw a straight boundary on it (the log of ``x0 + x1 <= 8`` is not a
    straight line: a linear model on SEA scored 0.82 for a logistic regression's 0.89)."""
    mean, scale, log = [], [], []
    for name in numeric:
        raw = _as_float(columns, name)
        raw = raw[~np.isnan(raw)]  # the spread of the readings that came
        if not len(raw):
            raw = np.zeros(1)
        logged = _symlog(raw)
        heavy = not linear or (abs(_skew(raw)) > HEAVY_TAIL_SKEW and abs(_skew(logged)) < abs(_skew(raw)))
        values = logged if heavy else raw
        mean.append(float(values.mean()))
        scale.append(float(values.std()) or 1.0)
        log.append(bool(heavy))
    return mean, scale, log


def fit_fill(numeric: list[str], columns: Columns) -> list[float]:
    """The value each numeric feature's missing readings take: the median of its readings at
    training (robust to the outliers a telemetry field carries; 0 if none came), stored with the
    version so that serving imputes exactly as training did.

    >>> fit_fill(["rx"], {"rx": [-20.0, float("nan"), -22.0, -30.0]})
    [-22.0]
    """
    fill = []
    for name in numeric:
        raw = _as_float(columns, name)
        raw = raw[~np.isnan(raw)]
        fill.append(float(np.median(raw)) if len(raw) else 0.0)
    return fill


def impute_values(encoding: Mapping[str, Any]) -> list[float] | None:
    """The stored imputation values of a saved encoding (None for one saved before imputation)."""
    impute = encoding.get("impute")
    return [float(v) for v in impute["values"]] if impute else None


def _skew(values: np.ndarray) -> float:
    spread = values.std()
    return float(((values - values.mean()) ** 3).mean() / spread**3) if spread > 0 else 0.0


def scaled(
    columns: Columns,
    numeric: list[str],
    mean: list[float],
    scale: list[float],
    log: list[bool] | None = None,
    fill: list[float] | None = None,
) -> np.ndarray:
    """The numeric features, missing readings imputed (``fill``, else the training mean),
    symmetric-logged where ``log`` says (all of them when ``log`` is None: encodings saved before
    the choice was made) and standardised, one column each."""
    flags = log if log is not None else [True] * len(numeric)
    raw = np.column_stack([_as_float(columns, name) for name in numeric])
    missing = np.isnan(raw)
    if fill is not None and missing.any():
        raw = np.where(missing, np.asarray(fill, dtype=np.float64), raw)
    numbers = np.column_stack([_symlog(raw[:, j]) if flag else raw[:, j] for j, flag in enumerate(flags)])
    standard = (numbers - np.asarray(mean)) / np.asarray(scale)
    # Without stored fill values a missing reading takes the training mean (0 once standardised).
    return np.where(np.isnan(standard), 0.0, standard) if missing.any() else standard


def _as_float(columns: Columns, name: str) -> np.ndarray:
    if name not in columns:
        raise ValueError(f"feature '{name}' is missing from the input")
    try:
        return np.asarray(columns[name], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"feature '{name}' must hold numbers: {exc}") from None


class TabularMLP(TorchClassifier):
    """A multi-layer perceptron classifier over mixed numeric and categorical features.

    Features are ``(name, kind)`` pairs, kind ``"number"`` or ``"category"``; the other
    parameters are :class:`~driftpilot.models.base.TorchClassifier`'s.
    """

    family = "tabular_mlp"

    def _check_features(self) -> None:
        odd = [f"{name} ({kind})" for name, kind in self.features if kind not in ("number", "category")]
        if odd:
            raise ValueError(f"the tabular_mlp family takes number and category features, not {odd}")

    def _fit_encoding(self, columns: Columns) -> Preprocessor:
        return Preprocessor.fit(self.features, columns, linear=not self.hidden)

    def _extend_encoding(self, parent: Any, columns: Columns) -> Preprocessor:
        return parent.extended(columns)

    encoding_: Preprocessor

    def _encoding_from_dict(self, data: Mapping[str, Any]) -> Preprocessor:
        return Preprocessor.from_dict(data)

    def _inherit_body(self, net: Any, parent: TorchClassifier, encoding: Any) -> dict[str, Any]:
        """The parent's body, its first layer widened for new one-hot columns (zero weights)."""
        import torch

        state = {k: v for k, v in parent.net_.body.state_dict().items() if not k.startswith("0.")}
        net.body.load_state_dict(state, strict=False)
        assert isinstance(parent.encoding_, Preprocessor), "a tabular body grows from a tabular parent"
        old_index = {name: i for i, name in enumerate(parent.encoding_.column_names())}
        first, old_first = net.body[0], parent.net_.body[0]
        mask = torch.zeros_like(first.weight)
        with torch.no_grad():
            first.weight.zero_()
            for j, name in enumerate(encoding.column_names()):
                if name in old_index:
                    first.weight[:, j] = old_first.weight[:, old_index[name]]
                    mask[:, j] = 1
            first.bias.copy_(old_first.bias)
        return {"body.0.weight": mask}

    def edge_onnx(self, net_path: Any) -> Any:
        """Raw numbers and categories in: :func:`~driftpilot.models.edge_export.tabular_edge_graph`."""
        from driftpilot.models.edge_export import tabular_edge_graph

        return tabular_edge_graph(self.encoding_, net_path, self.classes)

    @property
    def preprocessor_(self) -> Preprocessor:
        """The learnt feature encoding (an alias of ``encoding_``)."""
        return self.encoding_
