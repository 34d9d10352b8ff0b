"""What every model family shares: an encoding of the input, a torch network, and its training.

A family (:mod:`~driftpilot.models.tabular_mlp`, :mod:`~driftpilot.models.intent_mlp`,
:mod:`~driftpilot.models.hashed_mlp`) says how raw columns become one float matrix (its
:class:`Encoding`, learnt at a fit from scratch and saved with the weights) and what the network's
body looks like. Everything else lives here, once:

- **Fit from scratch or update.** :meth:`TorchClassifier.fit` trains from scratch, or, given
  ``warm_start``, starts from the parent's encoding and weights and updates them: the whole
  network (``scope="all"``) or only the output layer (``scope="head"``, for a change the evidence
  says is local: a prior shift, new classes on a representation that still separates them).
- **Against forgetting.** A penalty pulls the weights toward the parent's: EWC (each weight held
  as firmly as the parent's Fisher information says it matters) or L2-SP (all alike). Replay of
  older data is the Curator's part: it mixes a class-balanced sample of the lineage into every
  snapshot (:func:`driftpilot.tools.curation.curate_training_set`).
- **New classes.** With ``new_classes="grow"`` labels the parent never saw become new output
  units appended after the parent's; the parent's units keep their weights.
- **Settings found per run.** The learning rate of a fit from scratch comes from a short range
  test, its batch size from the data size, capped by memory. An update, warm-started near a
  minimum, takes fewer and larger steps: four times its parent's batch (but at least 25 steps an
  epoch), at half its parent's learning rate times the square root of the batch ratio. A
  validation split stops training when its loss stops falling (and lowers the learning rate on a
  plateau before that); the best epoch's weights are kept.
- **Curves.** Every epoch's training loss, validation loss and balanced accuracy, and learning
  rate are kept in :attr:`TorchClassifier.report_` (and saved with the model), and passed to
  ``on_epoch`` as they happen, for a progress bar.
"""

from __future__ import annotations

import copy
import json
import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol

import numpy as np

FeatureList = Sequence[tuple[str, str]]
Columns = Mapping[str, Any]
Scope = Literal["all", "head"]
Penalty = Literal["ewc", "l2sp", "none"]
NewClasses = Literal["grow", "error"]
EpochCallback = Callable[[dict[str, Any]], None]

#: Share of the machine's available memory one training batch's activations may take.
MEMORY_SHARE = 0.05
#: Rows the parent's Fisher information is estimated on (EWC), in batches of FISHER_BATCH.
FISHER_ROWS = 512
FISHER_BATCH = 64
#: An update's batch, in multiples of its parent's: warm-started near a minimum, it can take
#: fewer, larger steps (its learning rate grows by the square root of the factor).
UPDATE_BATCH_FACTOR = 4
#: ... but no larger than leaves this many steps an epoch.
UPDATE_MIN_STEPS = 25
#: Most L-BFGS iterations of a linear fit from scratch (it usually converges in far fewer).
LINEAR_MAX_ITER = 200
#: The strengths ``C`` a linear fit chooses among, half a decade apart from the strongest; the walk
#: stops at the first that does worse on held-out loss. scikit-learn's fixed ``C = 1`` suits a
#: handful of standardised columns, not 384 scaled sentence components: on Banking77 it scored
#: 0.922 on clean labels and 0.827 with 10 % of them flipped, where ``C`` chosen this way (0.1
#: and 0.01 on the scaled vectors, i.e. 38 and 3.8 on unit-length ones) scored 0.931 and 0.917
#: (unsmoothed labels; the intent family now smooths them, see its ``label_smoothing``).
LINEAR_STRENGTHS: tuple[float, ...] = tuple(float(10.0**k) for k in np.arange(-3.0, 1.01, 0.5))
#: Fewest rows for choosing ``C`` on held-out rows (a fifth of them); fewer are fitted at ``C = 1``.
LINEAR_SEARCH_MIN_ROWS = 200
#: The rate an update starts from when its parent's report is lost (half of it, see ``fit``).
DEFAULT_UPDATE_LR = 3e-3
#: The class weighting a fit takes for each metric models are judged by: balanced accuracy
#: counts every class the same, accuracy every row.
CLASS_WEIGHTS: dict[str, str | None] = {"balanced_accuracy": "balanced", "accuracy": None}
#: Steps of the learning-rate range test, from 1e-5 to 1 on a log scale.
RANGE_TEST_STEPS = 60
#: Distillation (Hinton et al., 2015): the share of the loss on the teacher's targets softened at
#: ``DISTIL_TEMPERATURE`` (the rest on the hard labels, where a row has one). α = 0.5 and T = 4 were
#: the best of a grid on a held-out part of Banking77's training split for the n-gram student
#: (docs/research/edge-student.md, 1a): +2 points over hard labels alone.
DISTIL_ALPHA = 0.5
DISTIL_TEMPERATURE = 4.0
#: Epochs of a distillation, with one-cycle learning rates (no early stopping: the soft targets
#: do not overfit as hard labels do), and the rows of one step until an epoch would take more than
#: ``DISTIL_STEPS`` steps.
DISTIL_EPOCHS = 30
DISTIL_BATCH = 128
DISTIL_STEPS = 100
#: ... and at least this many steps in all: a few hundred rows need more epochs to settle.
DISTIL_MIN_STEPS = 1500
#: The L2 weight decay of a distillation (the research's 1e-6·‖W‖²).
DISTIL_WEIGHT_DECAY = 2e-6


class Encoding(Protocol):
    """How a family turns columns into the network's float input."""

    @property
    def width(self) -> int: ...

    def transform(self, columns: Columns) -> np.ndarray: ...

    def to_dict(self) -> dict[str, Any]: ...


@dataclass
class Curve:
    """One epoch of a training run."""

    epoch: int
    train_loss: float
    val_loss: float | None
    val_balanced_accuracy: float | None
    lr: float


@dataclass
class TrainingReport:
    """What a fit did and why: the settings it chose and the curve it followed."""

    mode: str
    scope: str
    penalty: str
    strength: float
    lr: float
    lr_source: str
    batch_size: int
    batch_reason: str
    rows: int
    validation_rows: int
    max_epochs: int
    epochs: int
    best_epoch: int
    stopped_early: bool
    new_classes: list[str]
    seconds: float
    device: str
    curves: list[Curve] = field(default_factory=list)
    #: The learning rate and batch of the last training from scratch in the lineage: each update
    #: sets its own from them, so settings chosen per run do not compound across generations
    #: (None in reports written before they were kept: the parent's own are used then).
    base_lr: float | None = None
    base_batch_size: int | None = None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["curves"] = [{k: _round(v) for k, v in c.items()} for c in out["curves"]]
        return {k: _round(v) for k, v in out.items()}


def _round(value: Any) -> Any:
    return round(value, 6) if isinstance(value, float) else value


def resolve_device(device: str) -> str:
    """``"auto"`` is CUDA when torch sees a GPU, else the CPU; anything else is passed through."""
    if device == "auto":
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"
    if device not in ("cpu", "cuda") and not device.startswith("cuda:"):
        raise ValueError(f"device must be 'auto', 'cpu' or 'cuda[:n]', got {device!r}")
    return device


def auto_batch_size(
    rows: int, width: int, hidden: Sequence[int], available_bytes: int | None = None
) -> tuple[int, str]:
    """A batch size for ``rows`` training rows: about a hundred steps an epoch, 32 to 1,024 rows,
    and no more than :data:`MEMORY_SHARE` of the available memory for one batch's activations.

    >>> auto_batch_size(500, 20, (64, 32), available_bytes=1 << 30)[0]
    32
    >>> auto_batch_size(200_000, 20, (64, 32), available_bytes=1 << 30)[0]
    1024
    >>> auto_batch_size(200_000, 20, (64, 32), available_bytes=1 << 24)[0]
    512
    """
    wanted = 2 ** int(round(math.log2(max(rows / 100, 1))))
    size = int(min(1024, max(32, wanted)))
    if available_bytes is None:
        available_bytes = _available_memory()
    # Activations and their gradients, float32, for the input and every layer.
    per_row = 4 * 2 * (width + sum(hidden) + 8)
    cap = max(8, int(available_bytes * MEMORY_SHARE // per_row))
    if cap < size:
        capped = 2 ** int(math.log2(cap))
        return capped, f"{rows} rows would take {size} a batch; memory caps it at {capped}"
    return size, f"{rows} rows: about {max(1, rows // size)} steps an epoch at {size} a batch"


def update_batch(parent_batch: int, rows: int, cap: int) -> int:
    """An update's batch: up to UPDATE_BATCH_FACTOR times its parent's (warm-started near a
    minimum, it takes fewer, larger steps; a small network's time on a CPU goes into steps, not
    rows), at most ``cap``, but leaving at least UPDATE_MIN_STEPS steps an epoch, or a small
    snapshot gets a handful."""
    per_epoch = 2 ** int(math.log2(max(rows / UPDATE_MIN_STEPS, 32)))
    return min(UPDATE_BATCH_FACTOR * parent_batch, cap, per_epoch)


def update_rate(report: TrainingReport | None, batch: int, fallback: float | None = None) -> tuple[float, float, int]:
    """An update's learning rate, and the rate and batch of the lineage's last full training it
    comes from: half that rate (not the parent's own, which halving every generation would shrink
    to nothing), scaled by the square root of the batch ratio. A parent saved without its report
    starts from ``fallback``, else :data:`DEFAULT_UPDATE_LR`."""
    base_lr, base_batch = fallback, batch
    if report is not None:
        base_lr, base_batch = report.base_lr or report.lr, report.base_batch_size or report.batch_size
    if not base_lr:
        base_lr, base_batch = DEFAULT_UPDATE_LR, batch
    return base_lr / 2 * math.sqrt(batch / base_batch), base_lr, base_batch


def _available_memory() -> int:
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:  # pragma: no cover - psutil comes with the dependencies, but be safe
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))


class Network:
    """Builds ``body`` + ``head`` as one torch module (imported lazily, like torch itself)."""

    @staticmethod
    def make(body: Any, head: Any) -> Any:
        import torch.nn as nn

        class _Net(nn.Module):
            def __init__(self) -> None:
                super().__init__()
                self.body = body
                self.head = head

            def forward(self, x: Any) -> Any:
                return self.head(self.body(x))

        return _Net()


def mlp_body(width: int, hidden: Sequence[int]) -> Any:
    """Linear + ReLU layers of the given widths."""
    import torch.nn as nn

    layers: list[Any] = []
    previous = width
    for size in hidden:
        layers += [nn.Linear(previous, size), nn.ReLU()]
        previous = size
    return nn.Sequential(*layers)


class TorchClassifier:
    """Base of the model families: build, fit, update, predict, save, load, export to ONNX.

    Parameters
    ----------
    features
        ``(name, kind)`` pairs; which kinds a family takes is its own business.
    classes
        The class names, one output unit each in this order (a fit may append new ones).
    hidden
        Widths of the hidden layers.
    epochs
        Most epochs of a fit from scratch; ``warm_epochs`` those of an update. Early stopping
        usually ends a fit sooner.
    lr
        Learning rate of a fit from scratch; ``None`` finds it with a range test.
    batch_size
        ``None`` chooses it from the data size and memory (:func:`auto_batch_size`).
    validation_share
        Share of the rows held out for early stopping (none below 200 rows).
    patience
        Epochs without a better validation loss before training stops.
    min_warm_steps
        An update on a small snapshot may repeat epochs until it has taken this many steps.
    device
        ``"cpu"``, ``"cuda"`` or ``"auto"`` (CUDA when present) for training; predictions run on
        the CPU, where the serving loop and the edge are.
    seed
        Seeds initialisation, splits and batch order: fits are reproducible.
    class_weight
        ``"balanced"``: each class's rows weigh the square root of its inverse frequency in the
        loss, so that rare classes (offline ONTs, new intents) count without a handful of rows
        dominating — what balanced accuracy asks; ``None``: every row weighs the same — what
        accuracy asks. The policy's ``evaluation.metric`` chooses (:data:`CLASS_WEIGHTS`).
    """

    family: ClassVar[str] = ""
    #: The hidden layers a model of the family has unless told otherwise.
    default_hidden: ClassVar[tuple[int, ...]] = (64, 32)
    #: The family's hidden layers when it has some: the shape the Trainer lets compete with a
    #: linear champion (see :func:`driftpilot.agents.trainer`).
    hidden_layers: ClassVar[tuple[int, ...]] = (64, 32)
    #: Share of each row's target spread evenly over the classes (PyTorch's ``label_smoothing``):
    #: a wrong label then costs the fit a bounded loss, not an unbounded one. Zero for a family
    #: unless its data call for it (see the intent family).
    label_smoothing: ClassVar[float] = 0.0
    #: What the last fit did (``None`` for a model loaded without one).
    report_: TrainingReport | None = None
    #: An edge student's confidence below which a node defers a request to the server's teacher
    #: (chosen when it is distilled, see :mod:`driftpilot.tools.distill`); ``None`` for others.
    defer_below_: float | None = None
    #: The learnt feature encoding and the network (set by ``fit`` or ``load``).
    encoding_: Encoding
    net_: Any

    def __init__(
        self,
        features: FeatureList,
        classes: Sequence[str],
        *,
        hidden: tuple[int, ...] | None = None,
        epochs: int = 12,
        lr: float | None = None,
        batch_size: int | None = None,
        warm_epochs: int = 6,
        min_warm_steps: int = 300,
        weight_decay: float = 1e-5,
        validation_share: float = 0.1,
        patience: int = 3,
        device: str = "cpu",
        seed: int = 0,
        class_weight: str | None = "balanced",
    ) -> None:
        self.features = [(str(n), str(k)) for n, k in features]
        self.classes = [str(c) for c in classes]
        self.hidden = tuple(int(h) for h in (self.default_hidden if hidden is None else hidden))
        self.epochs = epochs
        self.lr = lr
        self.batch_size = batch_size
        self.warm_epochs = warm_epochs
        self.min_warm_steps = min_warm_steps
        self.weight_decay = weight_decay
        self.validation_share = validation_share
        self.patience = patience
        self.device = device
        self.seed = seed
        if class_weight not in (None, "balanced"):
            raise ValueError(f"class_weight must be 'balanced' or None, got {class_weight!r}")
        self.class_weight = class_weight
        self._check_features()

    # -- what a family provides ------------------------------------------------------------
    def _check_features(self) -> None:
        """Raise ``ValueError`` for feature kinds the family cannot take."""

    def _fit_encoding(self, columns: Columns) -> Encoding:
        raise NotImplementedError

    def _extend_encoding(self, parent: Encoding, columns: Columns) -> Encoding:
        """The parent's encoding, extended for what ``columns`` hold that it never saw."""
        return parent

    def _encoding_from_dict(self, data: Mapping[str, Any]) -> Encoding:
        raise NotImplementedError

    def _body(self, encoding: Encoding) -> Any:
        return mlp_body(encoding.width, self.hidden)

    def _body_width(self, encoding: Encoding) -> int:
        """What the body hands the output layer when it has no hidden layer (a linear model)."""
        return encoding.width

    def _inherit_body(self, net: Any, parent: TorchClassifier, encoding: Encoding) -> Any:
        """Copy the parent's body into ``net`` (same shapes unless the family grows inputs);
        return a mask per parameter name of the entries that came from the parent."""
        net.body.load_state_dict(parent.net_.body.state_dict())
        return {}

    def _missing_features(self, columns: Columns) -> list[str]:
        return [name for name, _kind in self.features if name not in columns]

    # -- building ----------------------------------------------------------------------------
    def _build(self, encoding: Encoding, n_classes: int) -> Any:
        import torch.nn as nn

        body = self._body(encoding)
        out = self.hidden[-1] if self.hidden else self._body_width(encoding)
        return Network.make(body, nn.Linear(out, n_classes))

    def _grown_from(self, parent: TorchClassifier, encoding: Encoding) -> tuple[Any, dict[str, Any]]:
        """A network that starts exactly as ``parent`` answers on its own classes.

        Returns the network and, per parameter, the parent's values and a mask of the entries
        the parent had (new inputs and new classes are free; the penalty holds the rest).
        """
        import torch

        net = self._build(encoding, len(self.classes))
        masks = self._inherit_body(net, parent, encoding)
        old = len(parent.classes)
        with torch.no_grad():
            net.head.weight[:old] = parent.net_.head.weight
            net.head.bias[:old] = parent.net_.head.bias
            if len(self.classes) > old:
                # A new class starts as unlikely as the parent's least likely one: the grown
                # network first answers as its parent did, and learns the newcomer from its rows.
                net.head.bias[old:] = parent.net_.head.bias.min()
        head_mask = torch.zeros_like(net.head.weight)
        head_mask[:old] = 1
        bias_mask = torch.zeros_like(net.head.bias)
        bias_mask[:old] = 1
        masks = dict(masks) | {"head.weight": head_mask, "head.bias": bias_mask}
        return net, masks

    # -- fitting -----------------------------------------------------------------------------
    def fit(
        self,
        columns: Columns,
        y: Sequence[str] | np.ndarray,
        *,
        warm_start: TorchClassifier | None = None,
        scope: Scope = "all",
        penalty: Penalty = "none",
        strength: float = 0.0,
        new_classes: NewClasses = "error",
        on_epoch: EpochCallback | None = None,
    ) -> TorchClassifier:
        """Train on ``columns`` and labels ``y``, from scratch or updating ``warm_start``.

        Raises ``ValueError`` naming the problem, before any training, for an empty set, a
        single class, labels outside ``classes`` (unless ``new_classes="grow"``), missing or
        ill-typed features, or a parent of another family or feature list.
        """
        import torch

        started = time.perf_counter()
        y = np.asarray(y).astype(str)
        if len(y) == 0:
            raise ValueError("cannot train on an empty training set")
        if len(set(y)) < 2:
            raise ValueError(f"cannot train on a single class ({y[0]!r}); need at least two")
        if scope not in ("all", "head"):
            raise ValueError(f"scope must be 'all' or 'head', got {scope!r}")
        if penalty not in ("ewc", "l2sp", "none"):
            raise ValueError(f"penalty must be 'ewc', 'l2sp' or 'none', got {penalty!r}")
        if warm_start is not None:
            if warm_start.family != self.family:
                raise ValueError(f"cannot update a {warm_start.family} model as a {self.family} one")
            if not warm_start.hidden:
                raise ValueError(
                    "a linear model is refit from scratch, not updated: its problem is convex, so an "
                    "update keeps nothing a refit would not find again"
                )
            if warm_start.features != self.features:
                raise ValueError(
                    f"the parent's features {warm_start.features} differ from {self.features}: "
                    "a new schema needs a fit from scratch"
                )
            base_classes = list(warm_start.classes)
        else:
            if scope != "all" or penalty != "none":
                raise ValueError("scope and penalty apply to an update: pass warm_start")
            base_classes = list(self.classes)
        missing = self._missing_features(columns)
        if missing:
            raise ValueError(f"features {missing} of the {self.family} schema are missing from the training data")
        unknown = sorted(str(v) for v in set(y) - set(base_classes))
        if unknown and new_classes != "grow":
            raise ValueError(f"labels {unknown} are not among the classes {base_classes}")
        self.classes = base_classes + unknown
        device = resolve_device(self.device)

        torch.manual_seed(self.seed)
        if warm_start is not None:
            encoding = self._extend_encoding(warm_start.encoding_, columns)
            net, masks = self._grown_from(warm_start, encoding)
        else:
            encoding = self._fit_encoding(columns)
            net, masks = self._build(encoding, len(self.classes)), {}
        x = torch.from_numpy(encoding.transform(columns))
        index = {c: i for i, c in enumerate(self.classes)}
        target = torch.from_numpy(np.array([index[v] for v in y], dtype=np.int64))

        rng = np.random.default_rng(self.seed)
        order = rng.permutation(len(y))
        n_val = int(len(y) * self.validation_share) if len(y) >= 200 else 0
        val_idx, fit_idx = order[:n_val], order[n_val:]
        counts = np.bincount(target.numpy()[fit_idx], minlength=len(self.classes))
        loss_fn = torch.nn.CrossEntropyLoss(
            weight=torch.tensor(self.class_loss_weights(counts), dtype=torch.float32),
            label_smoothing=self.label_smoothing,
        )

        if self.batch_size:
            batch_size, batch_reason = self.batch_size, "set by the family's configuration"
        elif warm_start is not None and warm_start.report_ is not None:
            # An update starts from the optimisation its parent converged with, in larger steps:
            # a small network's time on a CPU goes into steps, not rows (incremental_bench: four
            # times the parent's batch cut an update's time by half at the same accuracy).
            cap, _ = auto_batch_size(1 << 30, encoding.width, self.hidden)
            batch_size = update_batch(warm_start.report_.batch_size, len(fit_idx), cap)
            batch_reason = (
                f"up to {UPDATE_BATCH_FACTOR} times the parent's {warm_start.report_.batch_size}, "
                f"leaving at least {UPDATE_MIN_STEPS} steps an epoch"
            )
        else:
            batch_size, batch_reason = auto_batch_size(len(fit_idx), encoding.width, self.hidden)
        params = list(net.head.parameters()) if scope == "head" else list(net.parameters())
        if scope == "head":
            for p in net.body.parameters():
                p.requires_grad_(False)

        anchor = None
        if warm_start is not None and penalty != "none" and strength > 0:
            importance = (
                _fisher(warm_start, net, x, target, masks, loss_fn)
                if penalty == "ewc"
                else {name: masks.get(name, torch.ones_like(p)) for name, p in net.named_parameters()}
            )
            anchor = ({n: p.detach().clone() for n, p in net.named_parameters()}, importance)

        base_lr, base_batch = self.lr, batch_size
        if warm_start is not None:
            lr, base_lr, base_batch = update_rate(warm_start.report_, batch_size, self.lr)
            scale = math.sqrt(batch_size / base_batch)
            lr_source = "half the lineage's last full training's" + (
                f", times {scale:g} for the larger batch" if scale != 1 else ""
            )
            # Warm-started, an update settles in a few epochs: stop one epoch sooner.
            patience = max(1, self.patience - 1)
            # An update on a small snapshot would take only a handful of steps in `warm_epochs`:
            # allow epochs until it has taken `min_warm_steps` (early stopping still ends it).
            steps = -(-len(fit_idx) // batch_size)
            max_epochs = max(self.warm_epochs, -(-self.min_warm_steps // steps))
        elif self.lr is None:
            lr = lr_range_test(net, params, x[fit_idx], target[fit_idx], loss_fn, batch_size, self.seed)
            lr_source = "range test"
            max_epochs, patience = self.epochs, self.patience
        else:
            lr, lr_source, max_epochs = self.lr, "set by the family's configuration", self.epochs
            patience = self.patience

        if not self.hidden and warm_start is None:
            # A linear model from scratch is a convex problem: solve it to convergence on every
            # row (no early stopping to hold rows out for), as scikit-learn's LogisticRegression
            # does, instead of the few noisy epochs of Adam that leave it underfitted.
            return self._fit_linear(net, encoding, x, target, loss_fn, unknown, started, on_epoch)
        net.to(device)
        penalty_grads = _PenaltyGradient(net, *anchor) if anchor is not None else None
        optimizer = torch.optim.Adam(params, lr=lr, weight_decay=self.weight_decay)
        plateau = torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.3, patience=1)
        generator = torch.Generator().manual_seed(self.seed)
        curves: list[Curve] = []
        best = (math.inf, 0, copy.deepcopy(net.state_dict()))
        bad_epochs = 0
        x_fit, t_fit = x[fit_idx], target[fit_idx]
        for epoch in range(1, max_epochs + 1):
            net.train()
            shuffled = torch.randperm(len(fit_idx), generator=generator)
            total = 0.0
            for start in range(0, len(fit_idx), batch_size):
                batch = shuffled[start : start + batch_size]
                optimizer.zero_grad()
                loss = loss_fn(net(x_fit[batch].to(device)), t_fit[batch].to(device))
                loss.backward()
                if penalty_grads is not None:
                    penalty_grads.add(strength)
                optimizer.step()
                total += float(loss.detach()) * len(batch)
            current_lr = optimizer.param_groups[0]["lr"]
            curve = Curve(epoch, total / len(fit_idx), None, None, current_lr)
            if n_val:
                curve.val_loss, curve.val_balanced_accuracy = _validate(
                    net, x[val_idx], target[val_idx], loss_fn, device
                )
                plateau.step(curve.val_loss)
                if curve.val_loss < best[0] - 1e-4:
                    best, bad_epochs = (curve.val_loss, epoch, copy.deepcopy(net.state_dict())), 0
                else:
                    bad_epochs += 1
            curves.append(curve)
            if on_epoch is not None:
                on_epoch(asdict(curve) | {"max_epochs": max_epochs})
            if n_val and bad_epochs >= patience:
                break
        if n_val:
            net.load_state_dict(best[2])
        for p in net.parameters():
            p.requires_grad_(True)
        net.to("cpu").eval()
        self.encoding_ = encoding
        self.net_ = net
        self.report_ = TrainingReport(
            mode="update" if warm_start is not None else "scratch",
            scope=scope,
            penalty=penalty if anchor is not None else "none",
            strength=float(strength) if anchor is not None else 0.0,
            lr=float(lr),
            lr_source=lr_source,
            batch_size=int(batch_size),
            batch_reason=batch_reason,
            rows=int(len(fit_idx)),
            validation_rows=int(n_val),
            max_epochs=int(max_epochs),
            epochs=len(curves),
            best_epoch=int(best[1]) if n_val else len(curves),
            stopped_early=bool(n_val) and len(curves) < max_epochs,
            new_classes=unknown,
            seconds=time.perf_counter() - started,
            device=device,
            curves=curves,
            base_lr=float(base_lr if warm_start is not None and base_lr is not None else lr),
            base_batch_size=int(base_batch),
        )
        return self

    def _fit_linear(
        self,
        net: Any,
        encoding: Encoding,
        x: Any,
        target: Any,
        loss_fn: Any,
        unknown: list[str],
        started: float,
        on_epoch: EpochCallback | None,
    ) -> TorchClassifier:
        """Fit a linear ``net`` by full-batch L-BFGS on the (class-weighted) mean cross-entropy
        plus ``||W||² / (2 C n)``, scikit-learn's penalty, with ``C`` chosen by held-out loss
        (:func:`_linear_strength`).

        Written here rather than delegated to scikit-learn so that the model stays one torch
        network (the same save, update and ONNX export as every family), and the fit gives the
        same answer as ``LogisticRegression`` up to the class weights."""
        import torch

        rows = len(target)
        strength, strength_source = _linear_strength(net, x, target, loss_fn)
        iterations = _lbfgs(net, x, target, loss_fn, strength)
        net.eval()
        with torch.no_grad():
            loss = float(loss_fn(net(x), target))
        curve = Curve(1, loss, None, None, 1.0)
        if on_epoch is not None:
            on_epoch(asdict(curve) | {"max_epochs": 1})
        self.encoding_ = encoding
        self.net_ = net
        self.report_ = TrainingReport(
            mode="scratch",
            scope="all",
            penalty="none",
            strength=0.0,
            lr=0.0,
            lr_source=(
                f"none: L-BFGS to convergence ({iterations} iterations), C = {strength:g} ({strength_source})"
                + (f", labels smoothed by {self.label_smoothing:g}" if self.label_smoothing else "")
            ),
            batch_size=rows,
            batch_reason="full batch (L-BFGS)",
            rows=rows,
            validation_rows=0,
            max_epochs=1,
            epochs=1,
            best_epoch=1,
            stopped_early=False,
            new_classes=unknown,
            seconds=time.perf_counter() - started,
            device="cpu",
            curves=[curve],
            # No rate to pass on (a linear model is never updated).
            base_lr=None,
            base_batch_size=None,
        )
        return self

    def distil(
        self,
        columns: Columns,
        teacher_logits: np.ndarray,
        y: Sequence[str | None] | None = None,
        *,
        alpha: float = DISTIL_ALPHA,
        temperature: float = DISTIL_TEMPERATURE,
        epochs: int = DISTIL_EPOCHS,
    ) -> TorchClassifier:
        """Train from scratch to answer as a teacher does: ``alpha·T²·KL(teacher_T ‖ self_T) +
        (1 − alpha)·CE(y)``, where ``teacher_logits`` (one row per row of ``columns``, one column
        per class of :attr:`classes`) are the teacher's logits and ``y`` the labels (``None`` or
        ``""`` for an unlabelled row, which then teaches through the teacher's targets alone).

        Raises ``ValueError`` naming the problem for an empty set, logits of the wrong shape,
        labels outside :attr:`classes` or missing features.
        """
        import torch
        import torch.nn.functional as F

        started = time.perf_counter()
        logits = np.asarray(teacher_logits, dtype=np.float32)
        n = logits.shape[0] if logits.ndim == 2 else 0
        if n == 0:
            raise ValueError("cannot distil on an empty set")
        if logits.shape != (n, len(self.classes)):
            raise ValueError(f"teacher logits have shape {logits.shape}; expected ({n}, {len(self.classes)})")
        if not 0.0 <= alpha <= 1.0 or temperature <= 0:
            raise ValueError(f"alpha must be in [0, 1] and temperature positive, got {alpha}, {temperature}")
        labels = ["" if v is None else str(v) for v in (y if y is not None else [None] * n)]
        if len(labels) != n:
            raise ValueError(f"{len(labels)} labels for {n} rows")
        unknown = sorted({v for v in labels if v} - set(self.classes))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the teacher's classes {self.classes}")
        missing = self._missing_features(columns)
        if missing:
            raise ValueError(f"features {missing} of the {self.family} schema are missing from the distillation set")
        index = {c: i for i, c in enumerate(self.classes)}
        target = torch.tensor([index.get(v, -1) for v in labels], dtype=torch.long)
        soft = torch.softmax(torch.from_numpy(logits) / temperature, dim=1)

        torch.manual_seed(self.seed)
        encoding = self._fit_encoding(columns)
        net = self._build(encoding, len(self.classes))
        forward = self._distil_forward(encoding, columns)
        batch = max(DISTIL_BATCH, -(-n // DISTIL_STEPS))
        lr = 1e-2 if not self.hidden else 3e-3
        optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=DISTIL_WEIGHT_DECAY)
        per_epoch = -(-n // batch)
        epochs = max(epochs, -(-DISTIL_MIN_STEPS // per_epoch))
        steps = epochs * per_epoch
        schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=steps, pct_start=0.1)
        generator = torch.Generator().manual_seed(self.seed)
        curves: list[Curve] = []
        for epoch in range(1, epochs + 1):
            net.train()
            total = 0.0
            for rows in torch.randperm(n, generator=generator).split(batch):
                out = forward(net, rows)
                loss = (
                    alpha
                    * temperature**2
                    * F.kl_div(F.log_softmax(out / temperature, dim=1), soft[rows], reduction="batchmean")
                )
                labelled = target[rows] >= 0
                if alpha < 1 and bool(labelled.any()):
                    loss = loss + (1 - alpha) * F.cross_entropy(out[labelled], target[rows][labelled])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                schedule.step()
                total += float(loss.detach()) * len(rows)
            curves.append(Curve(epoch, total / n, None, None, optimizer.param_groups[0]["lr"]))
        net.eval()
        self.encoding_ = encoding
        self.net_ = net
        self.report_ = TrainingReport(
            mode="distilled",
            scope="all",
            penalty="none",
            strength=0.0,
            lr=lr,
            lr_source=(
                f"one cycle up to {lr:g}; distilled at T = {temperature:g} with {alpha:g} of the loss on the teacher"
            ),
            batch_size=batch,
            batch_reason=f"{DISTIL_BATCH} rows, more when an epoch would take over {DISTIL_STEPS} steps",
            rows=n,
            validation_rows=0,
            max_epochs=epochs,
            epochs=epochs,
            best_epoch=epochs,
            stopped_early=False,
            new_classes=[],
            seconds=time.perf_counter() - started,
            device="cpu",
            curves=curves,
        )
        return self

    def _distil_forward(self, encoding: Encoding, columns: Columns) -> Callable[[Any, Any], Any]:
        """The network's logits on a batch of row indexes (dense encoded rows by default)."""
        import torch

        x = torch.from_numpy(encoding.transform(columns))
        return lambda net, rows: net(x[rows])

    @property
    def history_(self) -> list[float]:
        """Training loss per epoch of the last fit."""
        return [c.train_loss for c in self.report_.curves] if self.report_ else []

    # -- predicting --------------------------------------------------------------------------
    def predict_proba(self, columns: Columns) -> np.ndarray:
        """Class probabilities, one column per class in :attr:`classes` order."""
        import torch

        x = torch.from_numpy(self.encoding_.transform(columns))
        with torch.no_grad():
            return torch.softmax(self.net_(x), dim=1).numpy()

    def predict(self, columns: Columns) -> np.ndarray:
        return np.asarray(self.classes)[self.predict_proba(columns).argmax(axis=1)]

    def size_bytes(self) -> int:
        """Bytes of the network's parameters (what an edge device downloads, before ONNX framing)."""
        return int(sum(p.numel() * p.element_size() for p in self.net_.parameters()))

    # -- federated rounds --------------------------------------------------------------------
    def class_loss_weights(self, counts: Sequence[int] | np.ndarray) -> np.ndarray:
        """The loss's weight of each class, given how many rows of each (in ``classes`` order).

        Balanced: classes weighted by the square root of their inverse frequency (offline ONTs
        and rare intents count, without letting a handful of rows dominate the loss). A class
        absent from the rows weighs nothing either way.
        """
        counts = np.asarray(counts, dtype=np.float64)
        if self.class_weight is None:
            return (counts > 0).astype(np.float64)
        weights = np.where(counts > 0, counts.sum() / (len(self.classes) * np.maximum(counts, 1)), 0.0)
        return np.sqrt(weights)

    def weights(self) -> list[np.ndarray]:
        """The network's parameters as NumPy arrays, in ``state_dict`` order: what a federated
        round sends (Flower's ``ArrayRecord`` carries them)."""
        return [t.detach().cpu().numpy().copy() for t in self.net_.state_dict().values()]

    def set_weights(self, arrays: Sequence[np.ndarray]) -> None:
        """Load ``arrays`` (as :meth:`weights` gives them) into the network.

        Raises ``ValueError`` naming the first array whose count or shape differs: an update
        from a node with another model is refused whole, never loaded in part.
        """
        import torch

        state = self.net_.state_dict()
        if len(arrays) != len(state):
            raise ValueError(f"expected {len(state)} weight arrays, got {len(arrays)}")
        for (name, tensor), array in zip(state.items(), arrays, strict=True):
            if tuple(np.shape(array)) != tuple(tensor.shape):
                shape = tuple(np.shape(array))
                raise ValueError(f"weights {name!r} have shape {shape}, expected {tuple(tensor.shape)}")
        pairs = zip(state.items(), arrays, strict=True)
        self.net_.load_state_dict({name: torch.as_tensor(np.asarray(a), dtype=t.dtype) for (name, t), a in pairs})

    def train_locally(
        self,
        columns: Columns,
        y: Sequence[str] | np.ndarray,
        *,
        epochs: int,
        proximal_mu: float = 0.0,
        class_weights: Sequence[float] | None = None,
        seed: int = 0,
    ) -> dict[str, float]:
        """One node's part of a federated round: a few epochs on its own rows from the weights
        it was sent, the encoding kept (every node must send weights of one shape).

        With ``proximal_mu > 0`` the loss gains FedProx's proximal term
        ``mu/2 * ||w - w_round||^2`` (Li et al., MLSys 2020), which keeps a node whose data
        differ from the others' from drifting far from the round's model. The steps are an
        update's (:func:`update_batch`, :func:`update_rate`), from a fresh Adam each round.

        ``class_weights`` are the loss's weights per class: the ones the pooled class counts of
        all nodes give (:meth:`class_loss_weights`), so that every node minimises its share of
        one objective, the one training on the union would; without them the node's own counts
        set them. Labels outside ``classes`` are refused: a round cannot grow the output layer
        on one node alone. Returns the training loss, the rows trained on and the rate.
        """
        import torch

        y = np.asarray(y).astype(str)
        if len(y) == 0:
            raise ValueError("cannot train on an empty training set")
        unknown = sorted(str(v) for v in set(y) - set(self.classes))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the classes {self.classes}")
        missing = self._missing_features(columns)
        if missing:
            raise ValueError(f"features {missing} of the {self.family} schema are missing from the training data")
        x = torch.from_numpy(self.encoding_.transform(columns))
        index = {c: i for i, c in enumerate(self.classes)}
        target = torch.from_numpy(np.array([index[v] for v in y], dtype=np.int64))
        weights = (
            self.class_loss_weights(np.bincount(target.numpy(), minlength=len(self.classes)))
            if class_weights is None
            else np.asarray(class_weights, dtype=np.float64)
        )
        if len(weights) != len(self.classes):
            raise ValueError(f"{len(weights)} class weights given for {len(self.classes)} classes")
        loss_fn = torch.nn.CrossEntropyLoss(
            weight=torch.tensor(weights, dtype=torch.float32), label_smoothing=self.label_smoothing
        )
        # The steps an update of the lineage takes, as ``fit`` takes them.
        report = self.report_
        width = self.encoding_.width
        if report is not None:
            batch = update_batch(report.batch_size, len(y), auto_batch_size(1 << 30, width, self.hidden)[0])
        else:
            batch = auto_batch_size(len(y), width, self.hidden)[0]
        lr, _base_lr, _base_batch = update_rate(report, batch, self.lr)
        torch.manual_seed(seed)
        net = self.net_
        net.train()
        for p in net.parameters():
            p.requires_grad_(True)
        anchor = {n: p.detach().clone() for n, p in net.named_parameters()}
        proximal = (
            _PenaltyGradient(net, anchor, {n: torch.ones_like(p) for n, p in anchor.items()})
            if proximal_mu > 0
            else None
        )
        optimizer = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=self.weight_decay)
        generator = torch.Generator().manual_seed(seed)
        total = 0.0
        for _epoch in range(max(1, epochs)):
            total = 0.0
            for batch_idx in torch.randperm(len(y), generator=generator).split(batch):
                optimizer.zero_grad()
                loss = loss_fn(net(x[batch_idx]), target[batch_idx])
                loss.backward()
                if proximal is not None:
                    proximal.add(proximal_mu)
                optimizer.step()
                total += float(loss.detach()) * len(batch_idx)
        net.eval()
        return {"train_loss": total / len(y), "rows": float(len(y)), "lr": float(lr)}

    def meta(self) -> dict[str, Any]:
        """Everything but the weights: settings, encoding, training report, edge threshold (what
        ``model.json`` holds, and what a federated round sends its nodes once)."""
        return {
            "config": self.config(),
            "encoding": self.encoding_.to_dict(),
            "training": self.report_.as_dict() if self.report_ else None,
            "defer_below": self.defer_below_,
        }

    @classmethod
    def from_meta(cls, meta: Mapping[str, Any], arrays: Sequence[np.ndarray] | None = None) -> TorchClassifier:
        """A model rebuilt from :meth:`meta`, with ``arrays`` as its weights when given (else the
        network's fresh initialisation)."""
        model = cls.from_config(meta["config"])
        model.encoding_ = model._encoding_from_dict(meta["encoding"])
        model.net_ = model._build(model.encoding_, len(model.classes))
        if arrays is not None:
            model.set_weights(arrays)
        model.net_.eval()
        training = meta.get("training")
        model.report_ = _report_from_dict(training) if training else None
        model.defer_below_ = meta.get("defer_below")
        return model

    # -- persistence -------------------------------------------------------------------------
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
            "min_warm_steps": self.min_warm_steps,
            "weight_decay": self.weight_decay,
            "validation_share": self.validation_share,
            "patience": self.patience,
            "device": self.device,
            "seed": self.seed,
            "class_weight": self.class_weight,
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> TorchClassifier:
        """An unfitted model with the settings of :meth:`config` (e.g. a parent's)."""
        params = dict(config)
        family = params.pop("family", cls.family)
        if family != cls.family:
            raise ValueError(f"config of a {family} model given to {cls.family}")
        features = [tuple(f) for f in params.pop("features")]
        classes = params.pop("classes")
        params["hidden"] = tuple(params["hidden"])
        return cls(features, classes, **params)

    def save(self, folder: Path) -> dict[str, Path]:
        """Write ``weights.pt``, ``model.json`` (settings, encoding, training report) and
        ``model.onnx``."""
        import torch

        folder.mkdir(parents=True, exist_ok=True)
        paths = {"weights": folder / "weights.pt", "config": folder / "model.json", "onnx": folder / "model.onnx"}
        torch.save(self.net_.state_dict(), paths["weights"])
        paths["config"].write_text(json.dumps(self.meta(), indent=2, sort_keys=True))
        self.export_onnx(paths["onnx"])
        edge = self.edge_onnx(paths["onnx"])
        if edge is not None:
            import onnx

            if self.defer_below_ is not None:
                edge.metadata_props.add(key="driftpilot.defer_below", value=repr(float(self.defer_below_)))
            paths["edge"] = folder / "edge.onnx"
            onnx.save(edge, str(paths["edge"]))
        return paths

    def edge_onnx(self, net_path: Path) -> Any:
        """The self-contained graph an edge node runs (raw fields in, see
        :mod:`driftpilot.models.edge_export`), or ``None`` for a family whose encoding has no
        ONNX form yet."""
        return None

    @classmethod
    def load(cls, folder: Path) -> TorchClassifier:
        import torch

        model = cls.from_meta(json.loads((folder / "model.json").read_text()))
        model.net_.load_state_dict(torch.load(folder / "weights.pt", weights_only=True))
        model.net_.eval()
        return model

    def export_onnx(self, path: Path) -> None:
        """Export the network on encoded inputs (``x``, float32) to ONNX; outputs probabilities."""
        import torch

        wrapped = torch.nn.Sequential(self.net_, torch.nn.Softmax(dim=1)).eval()
        example = torch.zeros(1, self.encoding_.width)
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


def _report_from_dict(data: Mapping[str, Any]) -> TrainingReport:
    fields = dict(data)
    fields["curves"] = [Curve(**c) for c in fields.get("curves", [])]
    return TrainingReport(**fields)


def _validate(net: Any, x: Any, target: Any, loss_fn: Any, device: str) -> tuple[float, float]:
    import torch

    net.eval()
    with torch.no_grad():
        logits = net(x.to(device)).cpu()
    loss = float(loss_fn(logits, target))
    predicted = logits.argmax(dim=1).numpy()
    truth = target.numpy()
    recalls = [float(np.mean(predicted[truth == c] == c)) for c in np.unique(truth)]
    return loss, float(np.mean(recalls))


def _fisher(parent: TorchClassifier, net: Any, x: Any, target: Any, masks: Mapping[str, Any], loss_fn: Any) -> dict:
    """Diagonal empirical Fisher information of the parent's weights (Kirkpatrick et al., PNAS
    2017), on up to :data:`FISHER_ROWS` training rows, laid out on the (possibly grown) network.

    Squared gradients of mini-batch means, times the batch size, estimate the per-row squared
    gradients at a fraction of the cost of one backward pass per row. Hand-written (a few lines)
    rather than taken from a continual-learning library: those bring their own training loops.
    """
    import torch

    probe = copy.deepcopy(net).cpu().train()
    rows = torch.randperm(len(target), generator=torch.Generator().manual_seed(0))[:FISHER_ROWS]
    squares = {n: torch.zeros_like(p) for n, p in probe.named_parameters()}
    batches = 0
    for start in range(0, len(rows), FISHER_BATCH):
        batch = rows[start : start + FISHER_BATCH]
        # The parent's own answer on its classes: rows of a new class say nothing of what the
        # parent knew.
        known = target[batch] < len(parent.classes)
        if not bool(known.any()):
            continue
        probe.zero_grad()
        logits = probe(x[batch][known])[:, : len(parent.classes)]
        torch.nn.functional.cross_entropy(logits, target[batch][known]).backward()
        for n, p in probe.named_parameters():
            if p.grad is not None:
                squares[n] += p.grad.detach() ** 2 * int(known.sum())
        batches += 1
    return {n: value / max(batches, 1) * masks.get(n, torch.ones_like(value)) for n, value in squares.items()}


class _PenaltyGradient:
    """Adds the gradient of the penalty ``strength/2 * sum(importance * (w - anchor)**2)`` to
    the weights' gradients after each backward pass.

    Adding ``strength * importance * (w - anchor)`` directly, with torch's fused ``_foreach``
    operations, costs a few kernel calls a step; the same penalty through autograd costs a
    graph of four operations per tensor and doubled the time of an update's step.
    """

    def __init__(self, net: Any, anchor: Mapping[str, Any], importance: Mapping[str, Any]) -> None:
        named = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
        self.params = [p for _n, p in named]
        self.anchor = [anchor[n].to(p.device) for n, p in named]
        self.importance = [importance[n].to(p.device) for n, p in named]

    def add(self, strength: float) -> None:
        import torch

        with torch.no_grad():
            delta = torch._foreach_sub([p.detach() for p in self.params], self.anchor)
            torch._foreach_mul_(delta, self.importance)
            torch._foreach_add_([p.grad for p in self.params], delta, alpha=strength)


def lr_range_test(
    net: Any,
    params: list[Any],
    x: Any,
    target: Any,
    loss_fn: Any,
    batch_size: int,
    seed: int,
    *,
    steps: int = RANGE_TEST_STEPS,
    low: float = 1e-5,
    high: float = 1.0,
) -> float:
    """Leslie Smith's learning-rate range test: raise the rate geometrically over a few batches,
    and take a tenth of the rate where the smoothed loss was lowest. The network's weights are
    restored afterwards.

    Written here (twenty lines) rather than taken from ``torch-lr-finder``: that package wraps
    its own trainer around a DataLoader, and this loop trains on tensors already in memory.
    """
    import torch

    saved = copy.deepcopy(net.state_dict())
    optimizer = torch.optim.Adam(params, lr=low)
    factor = (high / low) ** (1 / max(steps - 1, 1))
    generator = torch.Generator().manual_seed(seed + 1)
    smoothed, best_loss, best_lr, lr = None, math.inf, low, low
    net.train()
    for _step in range(steps):
        batch = torch.randint(len(target), (min(batch_size, len(target)),), generator=generator)
        for group in optimizer.param_groups:
            group["lr"] = lr
        optimizer.zero_grad()
        loss = loss_fn(net(x[batch]), target[batch])
        loss.backward()
        optimizer.step()
        value = float(loss.detach())
        smoothed = value if smoothed is None else 0.8 * smoothed + 0.2 * value
        if not math.isfinite(smoothed) or smoothed > 4 * best_loss:
            break
        if smoothed < best_loss:
            best_loss, best_lr = smoothed, lr
        lr *= factor
    net.load_state_dict(saved)
    return float(min(max(best_lr / 10, low), 0.05))


def _lbfgs(net: Any, x: Any, target: Any, loss_fn: Any, strength: float) -> int:
    """Fit the linear ``net`` in place to convergence: the mean loss plus ``||W||² / (2 C n)``;
    returns the iterations taken."""
    import torch

    penalty = 1.0 / (2 * strength * len(target))
    optimizer = torch.optim.LBFGS(
        net.parameters(), lr=1.0, max_iter=LINEAR_MAX_ITER, tolerance_grad=1e-6, line_search_fn="strong_wolfe"
    )
    net.train()

    def closure() -> Any:
        optimizer.zero_grad()
        loss = loss_fn(net(x), target) + penalty * net.head.weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    return int(optimizer.state[optimizer._params[0]].get("n_iter", 0))


def _linear_strength(net: Any, x: Any, target: Any, loss_fn: Any) -> tuple[float, str]:
    """The ``C`` of :data:`LINEAR_STRENGTHS` with the least loss on a fifth of the rows held out
    (the same fifth for the same rows, whatever the seed: a convex fit then gives one model), and
    how it was chosen. Each strength starts from the previous one's solution; ``net`` is not
    changed."""
    import torch

    rows = len(target)
    if rows < LINEAR_SEARCH_MIN_ROWS:
        return 1.0, f"scikit-learn's default: fewer than {LINEAR_SEARCH_MIN_ROWS} rows to hold some out"
    order = np.random.default_rng(0).permutation(rows)
    held, fit = order[: rows // 5], order[rows // 5 :]
    trial = copy.deepcopy(net)
    best, chosen = math.inf, LINEAR_STRENGTHS[0]
    for strength in LINEAR_STRENGTHS:
        _lbfgs(trial, x[fit], target[fit], loss_fn, strength)
        with torch.no_grad():
            loss = float(loss_fn(trial.eval()(x[held]), target[held]))
        if loss >= best:
            break
        best, chosen = loss, strength
    among = f"{LINEAR_STRENGTHS[0]:g} to {LINEAR_STRENGTHS[-1]:g}"
    return chosen, f"least loss on {len(held):,} held-out rows among {among}"
