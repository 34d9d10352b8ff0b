"""Curation: which labelled events a retrain learns from, and which it is judged on."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd


@dataclass(frozen=True)
class CuratedSet:
    """Event ids (and their labels) split into training and the two holdouts."""

    train_ids: list[int]
    train_labels: list[str]
    recent_holdout_ids: list[int]
    old_holdout_ids: list[int]
    stats: dict[str, object]


def curate_training_set(
    recent: pd.DataFrame,
    replay_pool: pd.DataFrame,
    *,
    max_recent: int,
    replay_share: float,
    holdout_share: float = 0.2,
    held_out: pd.DataFrame | None = None,
    max_old_holdout: int = 2000,
    seed: int = 0,
) -> CuratedSet:
    """Recent labelled events plus a class-balanced replay sample of older ones.

    The newest ``holdout_share`` of the recent events (by time) is held out to judge the
    candidate on what it will serve next. The replay sample is drawn class by class (as in
    class-balanced experience replay) so that rare classes — an upstream outage seen once a week —
    are not forgotten.

    Forgetting is measured on older events neither model learnt from: ``held_out``, the events
    the champion was judged on but not trained on (a class-balanced sample of at most
    ``max_old_holdout``). Scoring the champion on its own training rows would flatter it and
    make every candidate look forgetful. Without ``held_out`` a slice of the replay sample is held
    out instead (then the champion has seen those rows: the comparison favours it).

    Examples
    --------
    >>> recent = pd.DataFrame({"id": range(10), "time": range(10), "label": ["a", "b"] * 5})
    >>> old = pd.DataFrame({"id": range(100, 120), "time": range(20), "label": ["a"] * 18 + ["b"] * 2})
    >>> s = curate_training_set(recent, old, max_recent=10, replay_share=0.5, seed=0)
    >>> s.recent_holdout_ids, len(s.train_ids), sorted(set(s.train_labels))
    ([8, 9], 13, ['a', 'b'])
    """
    if not 0 <= replay_share < 1:
        raise ValueError(f"replay_share must be in [0, 1), got {replay_share}")
    if recent.empty:
        raise ValueError("no recent labelled events to curate from")
    recent = recent.sort_values("time").tail(max_recent)
    n_holdout = int(round(len(recent) * holdout_share))
    fit_part = recent.iloc[: len(recent) - n_holdout]
    holdout = recent.iloc[len(recent) - n_holdout :]

    rng = np.random.default_rng(seed)
    n_replay = int(round(len(fit_part) * replay_share / (1 - replay_share)))
    pool = replay_pool[~replay_pool["id"].isin(recent["id"])] if not replay_pool.empty else replay_pool
    if held_out is not None and not held_out.empty:
        held = held_out[~held_out["id"].isin(recent["id"])]
        old_holdout = _balanced_sample(held, max_old_holdout, rng)
        pool = pool[~pool["id"].isin(held["id"])]
        replay = _balanced_sample(pool, n_replay, rng) if n_replay else pool.iloc[:0]
        replay_fit = replay.iloc[rng.permutation(len(replay))] if len(replay) else replay
    else:
        replay = _balanced_sample(pool, n_replay, rng) if n_replay else pool.iloc[:0]
        n_old_holdout = int(round(len(replay) * holdout_share))
        shuffled = replay.iloc[rng.permutation(len(replay))] if len(replay) else replay
        old_holdout = shuffled.iloc[:n_old_holdout]
        replay_fit = shuffled.iloc[n_old_holdout:]

    train = pd.concat([fit_part, replay_fit])
    counts = train["label"].value_counts().sort_index()
    return CuratedSet(
        train_ids=[int(i) for i in train["id"]],
        train_labels=[str(v) for v in train["label"]],
        recent_holdout_ids=[int(i) for i in holdout["id"]],
        old_holdout_ids=[int(i) for i in old_holdout["id"]],
        stats={
            "recent": len(fit_part),
            "replay": len(replay_fit),
            "recent_holdout": len(holdout),
            "old_holdout": len(old_holdout),
            "class_counts": {str(k): int(v) for k, v in counts.items()},
        },
    )


def _balanced_sample(pool: pd.DataFrame, n: int, rng: np.random.Generator) -> pd.DataFrame:
    """Up to ``n`` rows of ``pool``, an equal share per class (all of a class smaller than it)."""
    if pool.empty or n <= 0:
        return pool.iloc[:0]
    classes = sorted(pool["label"].unique())
    per_class = max(1, n // len(classes))
    parts = []
    for name in classes:
        members = pool[pool["label"] == name]
        take = min(len(members), per_class)
        parts.append(members.iloc[rng.choice(len(members), take, replace=False)])
    return pd.concat(parts)


def most_uncertain(frame: pd.DataFrame, probabilities: np.ndarray, n: int) -> pd.DataFrame:
    """The ``n`` rows whose top predicted probability is lowest (uncertainty sampling).

    >>> f = pd.DataFrame({"id": [1, 2, 3]})
    >>> most_uncertain(f, np.array([[0.9, 0.1], [0.5, 0.5], [0.6, 0.4]]), 2)["id"].tolist()
    [2, 3]
    """
    if len(frame) != len(probabilities):
        raise ValueError(f"{len(frame)} rows but {len(probabilities)} probability rows")
    order = np.argsort(probabilities.max(axis=1), kind="stable")[:n]
    return frame.iloc[order]


#: Share of a monitoring sample drawn at random (the rest is the most uncertain).
RANDOM_SHARE = 0.5


def monitoring_sample(
    frame: pd.DataFrame, probabilities: np.ndarray, n: int, *, seed: int = 0
) -> tuple[pd.DataFrame, list[str]]:
    """``n`` rows to ask labels for when a check is blind, and why each was chosen.

    Half are drawn at random, so that the accuracy judged on them is not biased toward hard rows;
    the rest are the most uncertain of the remaining rows, which teach a retrain most.

    >>> f = pd.DataFrame({"id": range(6)})
    >>> p = np.array([[0.9, 0.1], [0.5, 0.5], [0.99, 0.01], [0.6, 0.4], [0.8, 0.2], [0.55, 0.45]])
    >>> chosen, why = monitoring_sample(f, p, 4, seed=0)
    >>> len(chosen), chosen["id"].is_unique, sorted(set(why))
    (4, True, ['random: keeps the judged accuracy unbiased', 'uncertain: lowest top-class probability of the champion'])
    """
    if len(frame) != len(probabilities):
        raise ValueError(f"{len(frame)} rows but {len(probabilities)} probability rows")
    n = min(n, len(frame))
    rng = np.random.default_rng(seed)
    n_random = int(round(n * RANDOM_SHARE))
    drawn = rng.choice(len(frame), size=n_random, replace=False)
    rest = np.setdiff1d(np.arange(len(frame)), drawn)
    uncertain = rest[np.argsort(probabilities[rest].max(axis=1), kind="stable")[: n - n_random]]
    chosen = np.concatenate([drawn, uncertain])
    why = ["random: keeps the judged accuracy unbiased"] * n_random
    why += ["uncertain: lowest top-class probability of the champion"] * len(uncertain)
    return frame.iloc[chosen], why


#: Share of pseudo-labels that must be right: the champion's answers at or above the confidence
#: threshold must have been this often right on the labelled events of the same window.
PSEUDO_PRECISION = 0.99
#: Fewest labelled events at or above a threshold to judge its precision on (with 50 all right,
#: the 95 % lower bound of the precision is still about 0.94).
MIN_JUDGED = 50


@dataclass(frozen=True)
class PseudoLabels:
    """Pool rows given a pseudo-label, and the evidence the threshold was chosen on."""

    indices: np.ndarray
    labels: list[str]
    confidences: np.ndarray
    threshold: float | None
    precision: float | None
    judged: int
    reason: str


def pseudo_labels(
    pool_probabilities: np.ndarray,
    labelled_probabilities: np.ndarray,
    labelled_truth: np.ndarray,
    classes: list[str],
    *,
    at_most: int,
    precision: float = PSEUDO_PRECISION,
    min_judged: int = MIN_JUDGED,
    agree: np.ndarray | None = None,
) -> PseudoLabels:
    """Pseudo-labels for the unlabelled pool rows a model is sure of: the ``at_most`` most
    confident rows at or above the lowest confidence threshold whose answers were right at least
    ``precision`` of the time on labelled rows of the same window (at least ``min_judged`` of
    them). The threshold is read off the model's own record on this stream, not set by hand: a
    model that is often wrong even when sure gives no pseudo-labels at all. ``agree`` (a mask of
    the pool) keeps only rows where a second model (a distilled student) gives the same answer.

    >>> labelled = np.array([[0.99, 0.01]] * 60 + [[0.6, 0.4]] * 40)
    >>> truth = np.array(["a"] * 60 + ["b"] * 40)
    >>> pool = np.array([[0.995, 0.005], [0.7, 0.3], [0.02, 0.98]])
    >>> chosen = pseudo_labels(pool, labelled, truth, ["a", "b"], at_most=10)
    >>> chosen.indices.tolist(), chosen.labels, chosen.threshold, chosen.precision
    ([0], ['a'], 0.99, 1.0)
    """
    if labelled_probabilities.shape[0] != len(labelled_truth):
        raise ValueError(f"{labelled_probabilities.shape[0]} probability rows for {len(labelled_truth)} labels")
    none = np.zeros(0, dtype=np.int64)
    if at_most <= 0 or not len(pool_probabilities):
        return PseudoLabels(none, [], np.zeros(0), None, None, 0, "no pseudo-labels wanted or no unlabelled events")
    confidence = labelled_probabilities.max(axis=1)
    right = np.asarray(classes, dtype=object)[labelled_probabilities.argmax(axis=1)] == np.asarray(labelled_truth)
    order = np.argsort(-confidence, kind="stable")
    hits = np.cumsum(right[order])
    counted = np.arange(1, len(order) + 1)
    # Ties share a threshold: judge only at the last row of each run of equal confidence.
    sorted_confidence = confidence[order]
    last_of_tie = np.append(sorted_confidence[1:] != sorted_confidence[:-1], True)
    good = (counted >= min_judged) & (hits >= precision * counted) & last_of_tie
    if not good.any():
        return PseudoLabels(
            none,
            [],
            np.zeros(0),
            None,
            None,
            len(order),
            f"no confidence at which the model was right {precision:.0%} of the time on {min_judged}+ labelled "
            f"events ({len(order)} labelled): no pseudo-labels",
        )
    k = int(np.flatnonzero(good)[-1])
    threshold = float(sorted_confidence[k])
    judged, measured = int(counted[k]), float(hits[k] / counted[k])
    pool_confidence = pool_probabilities.max(axis=1)
    eligible = pool_confidence >= threshold
    if agree is not None:
        eligible &= np.asarray(agree, dtype=bool)
    candidates = np.flatnonzero(eligible)
    chosen = candidates[np.argsort(-pool_confidence[candidates], kind="stable")][:at_most]
    labels = [classes[i] for i in pool_probabilities[chosen].argmax(axis=1)]
    return PseudoLabels(
        chosen,
        labels,
        pool_confidence[chosen],
        threshold,
        measured,
        judged,
        f"{len(chosen)} unlabelled events pseudo-labelled at confidence ≥ {threshold:.3f}, where the model was "
        f"right {measured:.1%} of the time on {judged} labelled events"
        + (
            f" ({len(candidates) - len(chosen)} more eligible, over the cap of {at_most})"
            if len(candidates) > len(chosen)
            else ""
        ),
    )
