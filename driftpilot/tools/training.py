"""Training a candidate: how to update the champion, chosen from the evidence and the policy.

:func:`plan_update` turns what the Diagnostician found (its cause), what the data holds (classes
the champion never saw) and the policy's training settings into an :class:`UpdatePlan`, with the
reasons a person reads in the decision. :func:`train_candidate` carries the plan out on any model
family.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any, Literal

import numpy as np
import pandas as pd

from driftpilot.models.base import Columns, EpochCallback, TorchClassifier
from driftpilot.tools.augment import Augmented, augment_tabular, augment_texts

Strategy = Literal["auto", "incremental", "full"]

#: Causes whose change is local to the decision layer: the features did not move, only how
#: often each class occurs. Updating the output layer alone follows them without touching what
#: the network learnt to see.
HEAD_ONLY_CAUSES = frozenset({"prior_shift"})


@dataclass(frozen=True)
class UpdatePlan:
    """How a candidate is trained: from scratch, or as an update of the champion."""

    mode: Literal["update", "scratch", "reuse", "federated"]
    scope: Literal["all", "head"] = "all"
    penalty: Literal["ewc", "l2sp", "none"] = "none"
    strength: float = 0.0
    reasons: list[str] = field(default_factory=list)
    #: The hidden layers of a fit from scratch: None keeps the parent's; () is a linear model
    #: (a logistic regression on the family's encoding).
    hidden: tuple[int, ...] | None = None
    #: The earlier version served again (mode ``reuse``): a world that comes back (a season, a
    #: rule restored) finds the model that knew it.
    version: int | None = None
    #: Trained on the training set with synthetic rows for its rare classes (:func:`augmented_set`).
    augment: bool = False

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        what = self._training()
        return f"{what}, on the training set augmented for its rare classes" if self.augment else what

    def _training(self) -> str:
        if self.mode == "federated":
            return "a federated training across edge nodes (Flower), each on its own rows"
        if self.mode == "reuse":
            return f"version {self.version} again, as it served before (nothing trained)"
        if self.mode == "scratch":
            if self.hidden is None:
                return "a full retrain from scratch"
            if not self.hidden:
                return "a full retrain from scratch of a linear model (no hidden layer)"
            return f"a full retrain from scratch with hidden layers {list(self.hidden)}"
        part = "the output layer only" if self.scope == "head" else "the whole network"
        held = (
            f", held to the champion's weights by {self.penalty.upper()} (strength {self.strength:g})"
            if self.penalty != "none"
            else ""
        )
        return f"an incremental update of {part}{held}"


def plan_update(
    *,
    strategy: Strategy,
    cause: str | None,
    parent: TorchClassifier,
    labels: Sequence[str] | np.ndarray,
    updates_since_scratch: int,
    full_every: int,
    penalty: Literal["ewc", "l2sp", "none"] = "ewc",
    strength: float = 1.0,
) -> UpdatePlan:
    """Choose between an update of ``parent`` and a fit from scratch, and how much to update.

    - ``strategy="full"``: always from scratch (the policy says so).
    - Under ``"auto"``, from scratch after ``full_every`` updates in a row (small errors of
      successive updates add up; a periodic fresh start bounds them).
    - Otherwise an update: of the output layer alone when the cause is local
      (:data:`HEAD_ONLY_CAUSES`) and no class is new, of the whole network otherwise; held to
      the parent's weights by ``penalty``.

    >>> from driftpilot.models.tabular_mlp import TabularMLP
    >>> parent = TabularMLP([("a", "number")], ["no", "yes"])
    >>> plan = plan_update(strategy="auto", cause="prior_shift", parent=parent,
    ...                    labels=["no", "yes"], updates_since_scratch=0, full_every=8)
    >>> plan.mode, plan.scope, plan.penalty
    ('update', 'head', 'ewc')
    >>> plan_update(strategy="auto", cause="concept_drift", parent=parent,
    ...             labels=["no"], updates_since_scratch=8, full_every=8).reasons[0]
    '8 updates in a row since the last fit from scratch (the policy refreshes every 8)'
    >>> linear = TabularMLP([("a", "number")], ["no", "yes"], hidden=())
    >>> plan_update(strategy="auto", cause="concept_drift", parent=linear,
    ...             labels=["no"], updates_since_scratch=0, full_every=8).mode
    'scratch'
    """
    if strategy == "full":
        return UpdatePlan("scratch", reasons=["the policy's training strategy is 'full'"])
    if not parent.hidden:
        # Without hidden layers there is nothing an update keeps that a refit would not find
        # again (the problem is convex), and new inputs would have to grow the output layer.
        return UpdatePlan("scratch", reasons=["the champion is linear: it is refit, not updated"])
    if strategy == "auto" and updates_since_scratch >= full_every:
        return UpdatePlan(
            "scratch",
            reasons=[
                f"{updates_since_scratch} updates in a row since the last fit from scratch "
                f"(the policy refreshes every {full_every})"
            ],
        )
    new = sorted({str(v) for v in labels} - set(parent.classes))
    reasons = [f"the policy's training strategy is '{strategy}'"]
    if new:
        reasons.append(f"new classes {new[:5]}{' …' if len(new) > 5 else ''} grow the output layer")
    if cause in HEAD_ONLY_CAUSES and not new:
        scope: Literal["all", "head"] = "head"
        reasons.append(f"the cause ({cause}) is local to the decision layer: only the output layer is updated")
    else:
        scope = "all"
        reasons.append(f"the cause ({cause or 'unknown'}) may reach every layer: the whole network is updated")
    if penalty != "none":
        reasons.append(f"{penalty.upper()} holds the weights that mattered to the champion")
    return UpdatePlan("update", scope, penalty, float(strength) if penalty != "none" else 0.0, reasons)


def train_candidate(
    parent: TorchClassifier,
    columns: Columns,
    labels: Sequence[str] | np.ndarray,
    plan: UpdatePlan,
    *,
    class_weight: str | None = "balanced",
    on_epoch: EpochCallback | None = None,
) -> TorchClassifier:
    """Train a candidate of ``parent``'s family as ``plan`` says; labels the parent never saw
    become new classes. Raises ``ValueError`` (naming the problem) on a set it cannot train on.
    A plan to reuse an earlier version is the caller's to load: nothing is trained for it.
    ``class_weight`` is the candidate's (see :class:`~driftpilot.models.base.TorchClassifier`),
    whatever its parent's was: the policy's metric of today decides, not the first version's."""
    if plan.mode in ("reuse", "federated"):
        raise ValueError(f"a {plan.mode} candidate is the caller's to make: nothing is trained here")
    config = parent.config() | {"class_weight": class_weight}
    if plan.mode == "scratch" and plan.hidden is not None:
        config["hidden"] = list(plan.hidden)
    fresh = type(parent).from_config(config)
    encoder = getattr(parent, "encoder", None)
    if encoder is not None:
        # A text family's sentence encoder (and its cache) is shared, not loaded again.
        fresh.encoder = encoder  # type: ignore[attr-defined]
    if plan.mode == "scratch":
        return fresh.fit(columns, labels, new_classes="grow", on_epoch=on_epoch)
    return fresh.fit(
        columns,
        labels,
        warm_start=parent,
        scope=plan.scope,
        penalty=plan.penalty,
        strength=plan.strength,
        new_classes="grow",
        on_epoch=on_epoch,
    )


def augmented_set(
    parent: TorchClassifier, frame: Any, labels: Sequence[str] | np.ndarray, seed: int
) -> Augmented | None:
    """The training set with synthetic rows for its rare classes (:func:`augment_tabular` on the
    parent's features), or None when no class is rare or the family reads other than numbers and
    categories (a text family's set is :func:`augmented_texts`')."""
    kinds = dict(parent.features)
    if any(kind not in ("number", "category") for kind in kinds.values()):
        return None
    if any(name not in frame for name in kinds):
        return None
    augmented = augment_tabular(
        frame[list(kinds)].reset_index(drop=True),
        np.asarray(labels),
        numbers=[n for n, k in kinds.items() if k == "number"],
        categories=[n for n, k in kinds.items() if k == "category"],
        seed=seed,
    )
    return None if augmented.method == "none" else augmented


def augmented_texts(
    parent: TorchClassifier,
    frame: Any,
    texts: Sequence[str | None],
    labels: Sequence[str] | np.ndarray,
    seed: int,
) -> Augmented | None:
    """A text family's training set with variants of its rare classes' texts (typos, words
    dropped or swapped, paraphrase templates: :func:`augment_texts`), each encoded as the family
    encodes its texts, or None when no class is rare, a text is missing, or the family reads more
    than one text or has no encoder."""
    kinds = dict(parent.features)
    encoder = getattr(parent, "encoder", None)
    if list(kinds.values()) != ["text"] or encoder is None or any(t is None for t in texts):
        return None
    augmented = augment_texts([str(t) for t in texts], np.asarray(labels), seed=seed)
    if augmented.method == "none":
        return None
    (name,) = kinds
    vectors = np.asarray(encoder.encode(augmented.rows["text"][augmented.synthetic].tolist()), dtype=np.float64)
    columns = [f"{name}_e{j:03d}" for j in range(vectors.shape[1])]
    rows = pd.concat([frame[columns].reset_index(drop=True), pd.DataFrame(vectors, columns=columns)], ignore_index=True)
    return replace(augmented, rows=rows)
