"""Tabular MLP family: preprocessing plus a small torch MLP, exportable to ONNX.

The preprocessing (symmetric-log and standard scaling of numbers, one-hot encoding of
categories) is learned at the first fit and saved with the weights. A warm start keeps the
parent's preprocessing and weights, and only grows the input layer for category values the
parent never saw (their weights start at zero, so the warm-started network first answers
exactly as its parent did).

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

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

FeatureList = Sequence[tuple[str, str]]
Columns = Mapping[str, Any]


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

    @classmethod
    def fit(cls, features: FeatureList, columns: Columns) -> Preprocessor:
        numeric = [name for name, kind in features if kind == "number"]
        categorical = [name for name, kind in features if kind == "category"]
        prep = cls(numeric=numeric, categorical=categorical)
        mean, scale = [], []
        for name in numeric:
            values = _symlog(_as_float(columns, name))
            mean.append(float(values.mean()))
            scale.append(float(values.std()) or 1.0)
        prep.mean, prep.scale = mean, scale
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
        return Preprocessor(self.numeric, self.categorical, list(self.mean), list(self.scale), vocab)

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
        blocks = []
        if self.numeric:
            numbers = np.column_stack([_symlog(_as_float(columns, name)) for name in self.numeric])
            blocks.append((numbers - np.asarray(self.mean)) / np.asarray(self.scale))
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
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        return cls(
            numeric=list(data["numeric"]),
            categorical=list(data["categorical"]),
            mean=list(data["mean"]),
            scale=list(data["scale"]),
            vocab={k: list(v) for k, v in data["vocab"].items()},
        )


def _as_float(columns: Columns, name: str) -> np.ndarray:
    if name not in columns:
        raise ValueError(f"feature '{name}' is missing from the input")
    try:
        return np.asarray(columns[name], dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"feature '{name}' must hold numbers: {exc}") from None


class TabularMLP:
    """A multi-layer perceptron classifier over mixed numeric and categorical features.

    Parameters
    ----------
    features
        ``(name, kind)`` pairs, kind ``"number"`` or ``"category"``.
    classes
        The class names; the output layer has one unit per class, in this order.
    hidden
        Widths of the hidden layers.
    epochs, lr, batch_size
        Training schedule of a fit from scratch; a warm start uses ``warm_epochs`` and
        ``warm_lr``.
    seed
        Seeds weight initialisation and batch order, so fits are reproducible.
    """

    family = "tabular_mlp"

    def __init__(
        self,
        features: FeatureList,
        classes: Sequence[str],
        *,
        hidden: tuple[int, ...] = (64, 32),
        epochs: int = 12,
        lr: float = 3e-3,
        batch_size: int = 256,
        warm_epochs: int = 6,
        warm_lr: float = 1e-3,
        min_warm_steps: int = 300,
        weight_decay: float = 1e-5,
        seed: int = 0,
    ) -> None:
        self.features = [(str(n), str(k)) for n, k in features]
        self.classes = [str(c) for c in classes]
        self.hidden = tuple(hidden)
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.warm_epochs = warm_epochs
        self.warm_lr = warm_lr
        self.min_warm_steps = min_warm_steps
        self.weight_decay = weight_decay
        self.seed = seed

    # -- building ----------------------------------------------------------------------
    def _build(self, width: int) -> Any:
        import torch.nn as nn

        layers: list[Any] = []
        previous = width
        for size in self.hidden:
            layers += [nn.Linear(previous, size), nn.ReLU()]
            previous = size
        layers.append(nn.Linear(previous, len(self.classes)))
        return nn.Sequential(*layers)

    def _grown_from(self, parent: TabularMLP, prep: Preprocessor) -> Any:
        """The parent's network with an input layer widened for new one-hot columns."""
        import torch

        net = self._build(prep.width)
        net.load_state_dict(
            {k: v for k, v in parent.net_.state_dict().items() if not k.startswith("0.")},
            strict=False,
        )
        old_index = {name: i for i, name in enumerate(parent.preprocessor_.column_names())}
        with torch.no_grad():
            first = net[0]
            first.weight.zero_()
            old_weight = parent.net_[0].weight
            for j, name in enumerate(prep.column_names()):
                if name in old_index:
                    first.weight[:, j] = old_weight[:, old_index[name]]
            first.bias.copy_(parent.net_[0].bias)
        return net

    # -- fitting -----------------------------------------------------------------------
    def fit(
        self,
        columns: Columns,
        y: Sequence[str] | np.ndarray,
        *,
        warm_start: TabularMLP | None = None,
    ) -> TabularMLP:
        """Train on ``columns`` and labels ``y``; warm-start from ``warm_start`` if given.

        Classes are weighted by inverse frequency, since the model is judged on balanced
        accuracy and offline cases are a minority.
        """
        import torch

        y = np.asarray(y).astype(str)
        if len(y) == 0:
            raise ValueError("cannot train on an empty training set")
        unknown = sorted(set(y) - set(self.classes))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classes {self.classes}")
        if len(set(y)) < 2:
            raise ValueError(f"cannot train on a single class ({y[0]!r}); need at least two")
        for name, _kind in self.features:
            if name not in columns:
                raise ValueError(f"feature '{name}' is missing from the training data")

        torch.manual_seed(self.seed)
        if warm_start is not None:
            if warm_start.classes != self.classes:
                raise ValueError("warm start needs the same classes as the parent")
            prep = warm_start.preprocessor_.extended(columns)
            net = self._grown_from(warm_start, prep)
            # A warm start on a small snapshot would take only a handful of optimizer steps
            # in `warm_epochs`: repeat the epochs until it takes at least `min_warm_steps`.
            steps_per_epoch = -(-len(y) // self.batch_size)
            epochs = max(self.warm_epochs, -(-self.min_warm_steps // steps_per_epoch))
            lr = self.warm_lr
        else:
            prep = Preprocessor.fit(self.features, columns)
            net = self._build(prep.width)
            epochs, lr = self.epochs, self.lr

        x = torch.from_numpy(prep.transform(columns))
        index = {c: i for i, c in enumerate(self.classes)}
        target = torch.from_numpy(np.array([index[v] for v in y], dtype=np.int64))
        counts = np.bincount(target.numpy(), minlength=len(self.classes)).astype(np.float64)
        weights = np.where(counts > 0, len(y) / (len(self.classes) * np.maximum(counts, 1)), 0.0)
        loss_fn = torch.nn.CrossEntropyLoss(weight=torch.tensor(np.sqrt(weights), dtype=torch.float32))
        optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=self.weight_decay)
        generator = torch.Generator().manual_seed(self.seed)
        history = []
        net.train()
        for _epoch in range(epochs):
            order = torch.randperm(len(y), generator=generator)
            total = 0.0
            for start in range(0, len(y), self.batch_size):
                batch = order[start : start + self.batch_size]
                optimizer.zero_grad()
                loss = loss_fn(net(x[batch]), target[batch])
                loss.backward()
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            history.append(total / len(y))
        net.eval()
        self.preprocessor_ = prep
        self.net_ = net
        self.history_ = history
        return self

    # -- predicting --------------------------------------------------------------------
    def predict_proba(self, columns: Columns) -> np.ndarray:
        import torch

        x = torch.from_numpy(self.preprocessor_.transform(columns))
        with torch.no_grad():
            return torch.softmax(self.net_(x), dim=1).numpy()

    def predict(self, columns: Columns) -> np.ndarray:
        return np.asarray(self.classes)[self.predict_proba(columns).argmax(axis=1)]

    # -- persistence -------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "family": self.family,
            "features": self.features,
            "classes": self.classes,
            "hidden": list(self.hidden),
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "warm_epochs": self.warm_epochs,
            "warm_lr": self.warm_lr,
            "min_warm_steps": self.min_warm_steps,
            "weight_decay": self.weight_decay,
            "seed": self.seed,
        }

    def save(self, folder: Path) -> dict[str, Path]:
        """Write ``weights.pt``, ``model.json`` (config + preprocessing) and ``model.onnx``."""
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        paths = {
            "weights": folder / "weights.pt",
            "config": folder / "model.json",
            "onnx": folder / "model.onnx",
        }
        torch.save(self.net_.state_dict(), paths["weights"])
        meta = {"config": self.config(), "preprocessor": self.preprocessor_.to_dict()}
        paths["config"].write_text(json.dumps(meta, indent=2, sort_keys=True))
        self.export_onnx(paths["onnx"])
        return paths

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TabularMLP:
        """An unfitted model with the hyper-parameters of :meth:`config` (e.g. a parent's)."""
        params = dict(config)
        params.pop("family", None)
        features = [tuple(f) for f in params.pop("features")]
        classes = params.pop("classes")
        params["hidden"] = tuple(params["hidden"])
        return cls(features, classes, **params)

    @classmethod
    def load(cls, folder: Path) -> TabularMLP:
        import torch

        meta = json.loads((folder / "model.json").read_text())
        model = cls.from_config(meta["config"])
        model.preprocessor_ = Preprocessor.from_dict(meta["preprocessor"])
        model.net_ = model._build(model.preprocessor_.width)
        model.net_.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
        model.net_.eval()
        model.history_ = []
        return model

    def export_onnx(self, path: Path) -> None:
        """Export the network (on preprocessed inputs) to ONNX; outputs class probabilities."""
        import torch

        wrapped = torch.nn.Sequential(self.net_, torch.nn.Softmax(dim=1)).eval()
        example = torch.zeros(1, self.preprocessor_.width)
        # The TorchScript exporter needs only `onnx`; the dynamo one would also need onnxscript.
        torch.onnx.export(
            wrapped,
            (example,),
            str(path),
            input_names=["x"],
            output_names=["probabilities"],
            dynamic_axes={"x": {0: "batch"}, "probabilities": {0: "batch"}},
            dynamo=False,
        )
