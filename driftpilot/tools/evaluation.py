"""Offline evaluation of a candidate against the champion, on recent and old holdouts."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from driftpilot.tools.metrics import balanced_accuracy, per_class_recall

Predictor = Callable[[pd.DataFrame], np.ndarray]


@dataclass(frozen=True)
class Comparison:
    """Balanced accuracy of candidate and champion on each holdout."""

    candidate_recent: float
    champion_recent: float
    candidate_old: float | None
    champion_old: float | None
    n_recent: int
    n_old: int
    candidate_recall: dict[str, float]

    @property
    def gain(self) -> float:
        return self.candidate_recent - self.champion_recent

    def as_dict(self) -> dict[str, object]:
        return asdict(self) | {"gain": self.gain}


def gate_facts(comparison: Mapping[str, Any], share: float) -> dict[str, float | None]:
    """The facts the policy's ``start_canary`` gates judge, from :meth:`Comparison.as_dict`.

    >>> gate_facts({"candidate_recent": 0.9, "champion_recent": 0.8, "candidate_old": None,
    ...             "champion_old": None}, 0.2)["candidate_score"]
    0.9
    """
    return {
        "candidate_score": comparison.get("candidate_recent"),
        "champion_score": comparison.get("champion_recent"),
        "candidate_old_score": comparison.get("candidate_old"),
        "champion_old_score": comparison.get("champion_old"),
        "share": share,
    }


def compare_models(
    candidate: Predictor,
    champion: Predictor,
    recent: pd.DataFrame,
    old: pd.DataFrame,
) -> Comparison:
    """Score both predictors on the recent holdout (what they will serve next) and on the
    old-concept holdout (what the candidate may have forgotten)."""
    if recent.empty:
        raise ValueError("the recent holdout is empty: nothing to judge the candidate on")
    truth = recent["label"].to_numpy()
    cand = candidate(recent)
    champ = champion(recent)
    old_scores: tuple[float | None, float | None] = (None, None)
    if not old.empty:
        old_truth = old["label"].to_numpy()
        old_scores = (
            balanced_accuracy(old_truth, candidate(old)),
            balanced_accuracy(old_truth, champion(old)),
        )
    return Comparison(
        candidate_recent=balanced_accuracy(truth, cand),
        champion_recent=balanced_accuracy(truth, champ),
        candidate_old=old_scores[0],
        champion_old=old_scores[1],
        n_recent=len(recent),
        n_old=len(old),
        candidate_recall=per_class_recall(truth, cand),
    )
