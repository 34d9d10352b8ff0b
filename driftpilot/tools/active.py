"""Active learning: which unlabelled rows to ask people to label, and why each one was chosen.

:func:`select_for_labels` picks ``n`` rows of a pool for a label budget of ``n``:

* **With a model** (its class probabilities on the pool): diverse mini-batch active learning,
  Zhdanov, "Diverse mini-batch Active Learning", arXiv:1901.05954 (2019). The ``10 n`` rows of
  smallest margin (top class probability minus the second's; at most the more uncertain half of
  the pool, so that on a small pool the prefilter still leaves out what the model is sure of)
  are clustered into ``n`` groups by k-means weighted by their uncertainty, and the row nearest
  each group's centre is asked. Uncertainty alone fills a batch with near-copies of one
  confusion (two intents that overlap ask the same question two hundred times); the clusters
  spread the batch over the different confusions, and the centre row is typical of its group
  where the most uncertain row is often an outlier or a garbled query that teaches little (on
  Banking77, taking each group's most uncertain row instead needed 1,354 labels to 97 % of the
  full-data accuracy where the centre row needed 1,154, seeds 0 and 1 of
  ``evals/label_efficiency.py``).
* **Without a model** (cold start): TypiClust, Hacohen et al., "Active Learning on a Budget",
  ICML 2022. The pool is clustered into ``n`` plus as many groups as there are labelled rows
  (at most ``2 n``); of the groups that hold the fewest labelled rows the largest are chosen,
  and from each the row nearest its centre: representative rows of what is not known yet.
* **Drifted slice**: with ``drifted`` given, a ``drift_share`` of the batch (half by default) is
  chosen inside the slice by the same rule, the rest from the whole pool. The slice is where the
  served model is being judged wrong now, but labelling only it would let the rest of the
  population go stale; half is the neutral split, and the policy can move it.

Margin rather than entropy: with dozens of classes entropy ranks a row unsure among ten
unlikely classes above one torn between two, and it is the latter that a label settles (on
Banking77's 77 intents, clustered entropy needed 1,754 labels where clustered margin needed
1,354, same seeds). The labelled rows do not steer the batch once there is a model: what they
teach is in its probabilities (weighting the groups by their distance to labelled rows was tried
on Banking77 and changed nothing).

Every pick comes with one sentence saying why it was chosen, for the label request a person
sees. Rows holding NaN (in the embedding or the probabilities) are never chosen.

Examples
--------
Two tight groups of rows; the model hesitates on the rows of the second group only:

>>> rng = np.random.default_rng(0)
>>> embedding = np.vstack([rng.normal(0, 0.1, (6, 2)), rng.normal(5, 0.1, (6, 2))])
>>> sure, unsure = [0.95, 0.05], [0.55, 0.45]
>>> probabilities = np.array([sure] * 6 + [unsure] * 6)
>>> chosen = select_for_labels(embedding, probabilities, 1, seed=0)
>>> int(chosen.indices[0]) >= 6, chosen.reasons[0][:31]
(True, 'uncertain: margin 0.10 between ')

With no model yet, one representative row from each group:

>>> cold = select_for_labels(embedding, None, 2, seed=0)
>>> sorted(int(i) >= 6 for i in cold.indices)
[False, True]
>>> cold.reasons[0]
'cold start (no model yet): representative of group 1 of 2 (6 rows, none labelled)'
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.exceptions import ConvergenceWarning

__all__ = ["Selection", "Uncertainty", "select_for_labels", "uncertainty_scores"]

Uncertainty = Literal["margin", "entropy"]

#: Share of a batch chosen inside the drifted slice when one is given (the rest from the whole pool).
DRIFT_SHARE = 0.5
#: Most uncertain rows kept as candidates per pick before they are clustered (Zhdanov 2019's beta).
CANDIDATES_PER_PICK = 10
#: Above this many rows to cluster, MiniBatchKMeans (fast enough on 20k x 384) rather than KMeans.
MINIBATCH_ABOVE = 5_000
#: Weight given to a candidate of no uncertainty at all, so that k-means still places it.
_WEIGHT_FLOOR = 1e-6


@dataclass(frozen=True, eq=False)
class Selection:
    """Rows chosen for labelling: ``indices`` into the pool, in pick order (read-only int64),
    and ``reasons``, one sentence per pick saying why it was chosen."""

    indices: np.ndarray
    reasons: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.indices)


def uncertainty_scores(probabilities: np.ndarray, kind: Uncertainty = "margin") -> np.ndarray:
    """How unsure a model is of each row, from 0 (certain) to 1.

    ``margin``: one minus the gap between the two most probable classes. ``entropy``: the
    entropy of the probabilities over its maximum, ``log(classes)``. One class: 0 for every row.

    >>> p = np.array([[0.9, 0.1, 0.0], [0.5, 0.4, 0.1], [1 / 3, 1 / 3, 1 / 3]])
    >>> uncertainty_scores(p).round(2).tolist()
    [0.2, 0.9, 1.0]
    >>> uncertainty_scores(p, "entropy").round(2).tolist()
    [0.3, 0.86, 1.0]
    """
    p = np.asarray(probabilities, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"probabilities must be a 2-D matrix (rows x classes), got shape {p.shape}")
    if p.shape[1] < 2:
        return np.zeros(len(p))
    if kind == "margin":
        top_two = -np.partition(-p, 1, axis=1)[:, :2]
        return 1.0 - (top_two[:, 0] - top_two[:, 1])
    if kind == "entropy":
        positive = np.where(p > 0, p, 1.0)
        entropy = -(p * np.log(positive)).sum(axis=1)
        return entropy / math.log(p.shape[1])
    raise ValueError(f"uncertainty must be 'margin' or 'entropy', got {kind!r}")


def select_for_labels(
    embedding: np.ndarray,
    probabilities: np.ndarray | None,
    n: int,
    *,
    labelled: np.ndarray | None = None,
    drifted: np.ndarray | None = None,
    seed: int = 0,
    classes: Sequence[str] | None = None,
    uncertainty: Uncertainty = "margin",
    drift_share: float = DRIFT_SHARE,
    candidates_per_pick: int = CANDIDATES_PER_PICK,
) -> Selection:
    """The ``n`` rows of a pool most worth a person's label, in pick order, each with its reason.

    Parameters
    ----------
    embedding
        The pool's features, one row per unlabelled candidate: the space in which diversity is
        measured (sentence vectors for text, scaled features for tables).
    probabilities
        The current model's class probabilities on the pool, one row per pool row; ``None``
        when there is no model yet (cold start: representative rows are chosen instead).
    n
        The label budget. Fewer rows come back when the pool has fewer usable rows; none for 0.
    labelled
        Feature rows already labelled (same columns as ``embedding``). At cold start the groups
        they cover are passed over; with a model they are not needed, since what they teach is
        in the probabilities.
    drifted
        Boolean mask of the pool rows in a drifted slice: ``drift_share`` of the batch is chosen
        inside it (all of its usable rows if it holds fewer).
    seed
        Seeds the k-means; the same inputs and seed give the same selection.
    classes
        The class names of the probabilities' columns, to name the two classes a pick hesitates
        between in its reason.
    uncertainty
        ``"margin"`` (the default; see the module's note) or ``"entropy"``.
    drift_share
        Share of the batch reserved for the drifted slice, in [0, 1].
    candidates_per_pick
        How many of the most uncertain rows are clustered per pick (at least 1; 1 is plain
        uncertainty sampling).

    Raises
    ------
    ValueError
        When shapes disagree (naming the argument and both sizes) or a setting is out of range.

    Examples
    --------
    Two groups of uncertain rows, one of sure rows, and a drifted row the model is sure of:

    >>> embedding = np.array([[0, 0], [0.1, 0], [5, 5], [5.1, 5], [5, 0], [5.1, 0], [5.2, 0], [5.3, 0], [9, 0]])
    >>> probabilities = np.array([[0.9, 0.1], [0.8, 0.2], [0.6, 0.4], [0.5, 0.5]] + [[0.99, 0.01]] * 5)
    >>> drifted = np.array([False] * 8 + [True])
    >>> s = select_for_labels(embedding, probabilities, 3, drifted=drifted, classes=["fee", "refund"])
    >>> s.indices.tolist()
    [8, 3, 1]
    >>> for reason in s.reasons:
    ...     print(reason)
    drifted slice: uncertain: margin 0.98 between 'fee' and 'refund'
    uncertain: margin 0.00 between 'fee' and 'refund'; typical of group 1 of 2 (2 of the 4 most uncertain rows)
    uncertain: margin 0.60 between 'fee' and 'refund'; typical of group 2 of 2 (2 of the 4 most uncertain rows)
    """
    points, probs, known, slice_mask = _validated(embedding, probabilities, n, labelled, drifted, classes)
    if not 0.0 <= drift_share <= 1.0:
        raise ValueError(f"drift_share must be in [0, 1], got {drift_share}")
    if candidates_per_pick < 1:
        raise ValueError(f"candidates_per_pick must be at least 1, got {candidates_per_pick}")
    if uncertainty not in ("margin", "entropy"):
        raise ValueError(f"uncertainty must be 'margin' or 'entropy', got {uncertainty!r}")
    usable = np.isfinite(points).all(axis=1)
    scores: np.ndarray | None = None
    if probs is not None:
        usable &= np.isfinite(probs).all(axis=1)
        scores = np.zeros(len(points))
        scores[usable] = uncertainty_scores(probs[usable], uncertainty)
    budget = min(n, int(usable.sum()))
    picks: list[np.ndarray] = []
    reasons: list[str] = []
    if budget and slice_mask is not None and (slice_mask & usable).any():
        inside = np.flatnonzero(slice_mask & usable)
        share = min(len(inside), math.ceil(drift_share * budget))
        if share:
            chosen, why = _choose(points, probs, scores, inside, share, known, seed, classes, candidates_per_pick)
            picks.append(chosen)
            reasons += [f"drifted slice: {reason}" for reason in why]
            usable[chosen] = False
            known = np.vstack([known, points[chosen]])
    rest = budget - sum(len(p) for p in picks)
    if rest > 0:
        chosen, why = _choose(
            points, probs, scores, np.flatnonzero(usable), rest, known, seed, classes, candidates_per_pick
        )
        picks.append(chosen)
        reasons += why
    indices = np.concatenate(picks).astype(np.int64) if picks else np.zeros(0, dtype=np.int64)
    indices.setflags(write=False)
    return Selection(indices, tuple(reasons))


def _validated(
    embedding: np.ndarray,
    probabilities: np.ndarray | None,
    n: int,
    labelled: np.ndarray | None,
    drifted: np.ndarray | None,
    classes: Sequence[str] | None,
) -> tuple[np.ndarray, np.ndarray | None, np.ndarray, np.ndarray | None]:
    """The inputs as float matrices and a boolean mask, or a ValueError naming what disagrees."""
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 0:
        raise ValueError(f"n (the number of rows to choose) must be a whole number >= 0, got {n!r}")
    points = np.asarray(embedding, dtype=float)
    if points.ndim != 2:
        raise ValueError(f"embedding must be a 2-D matrix (pool rows x features), got shape {points.shape}")
    rows, width = points.shape
    probs = None
    if probabilities is not None:
        probs = np.asarray(probabilities, dtype=float)
        if probs.ndim != 2 or len(probs) != rows:
            raise ValueError(
                f"probabilities must have one row per pool row: embedding has {rows} rows, "
                f"probabilities has shape {probs.shape}"
            )
        if classes is not None and len(classes) != probs.shape[1]:
            raise ValueError(f"classes names {len(classes)} classes but probabilities has {probs.shape[1]} columns")
    known = np.zeros((0, width))
    if labelled is not None:
        known = np.asarray(labelled, dtype=float)
        if known.ndim != 2 or known.shape[1] != width:
            raise ValueError(
                f"labelled must have the embedding's {width} columns, got shape {known.shape} "
                "(pass the labelled rows' features in the same space as the pool's)"
            )
        known = known[np.isfinite(known).all(axis=1)]
    mask = None
    if drifted is not None:
        mask = np.asarray(drifted)
        if mask.dtype != bool or mask.shape != (rows,):
            raise ValueError(
                f"drifted must be a boolean mask with one entry per pool row ({rows}), "
                f"got dtype {mask.dtype} and shape {mask.shape}"
            )
    return points, probs, known, mask


def _choose(
    points: np.ndarray,
    probs: np.ndarray | None,
    scores: np.ndarray | None,
    rows: np.ndarray,
    k: int,
    known: np.ndarray,
    seed: int,
    classes: Sequence[str] | None,
    per_pick: int,
) -> tuple[np.ndarray, list[str]]:
    if probs is None or scores is None:
        return _representatives(points, rows, k, known, seed)
    return _diverse_uncertain(points, probs, scores, rows, k, seed, classes, per_pick)


def _kmeans(points: np.ndarray, k: int, seed: int, weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Cluster labels and centres of ``points`` in ``k`` groups (weighted by ``weights``)."""
    model: KMeans | MiniBatchKMeans
    if len(points) > MINIBATCH_ABOVE:
        model = MiniBatchKMeans(n_clusters=k, random_state=seed, n_init=1, batch_size=2048)
    else:
        model = KMeans(n_clusters=k, random_state=seed, n_init=1)
    with warnings.catch_warnings():
        # Fewer distinct rows than groups (duplicates) is handled by the callers' top-up.
        warnings.simplefilter("ignore", ConvergenceWarning)
        labels = model.fit_predict(points, sample_weight=weights)
    return labels, model.cluster_centers_


def _nearest_to_centre(points: np.ndarray, members: np.ndarray, centre: np.ndarray) -> int:
    distances = ((points[members] - centre) ** 2).sum(axis=1)
    return int(members[np.argmin(distances)])


def _diverse_uncertain(
    points: np.ndarray,
    probs: np.ndarray,
    scores: np.ndarray,
    rows: np.ndarray,
    k: int,
    seed: int,
    classes: Sequence[str] | None,
    per_pick: int,
) -> tuple[np.ndarray, list[str]]:
    """Zhdanov (2019): the ``per_pick * k`` most uncertain rows, k-means weighted by
    uncertainty into ``k`` groups, the row nearest each centre."""
    order = rows[np.argsort(-scores[rows], kind="stable")]
    # At most the more uncertain half of the pool: on a small pool (a recent window) the prefilter
    # must still leave out the rows the model is sure of, or the batch becomes a plain
    # representative sample of the pool.
    candidates = order[: min(per_pick * k, max(k, len(rows) // 2))]
    group_of: dict[int, tuple[int, int]] = {}
    if len(candidates) <= k or per_pick == 1:
        chosen = candidates[:k]
    else:
        labels, centres = _kmeans(points[candidates], k, seed, np.maximum(scores[candidates], _WEIGHT_FLOOR))
        picked = []
        for group in range(k):
            members = candidates[labels == group]
            if len(members):
                row = _nearest_to_centre(points, members, centres[group])
                picked.append(row)
                group_of[row] = (group, len(members))
        # k-means leaves a group empty only on duplicate rows; top up with the most uncertain left.
        left = candidates[~np.isin(candidates, picked)]
        chosen = np.concatenate([np.asarray(picked, dtype=np.int64), left[: k - len(picked)]])
        chosen = chosen[np.argsort(-scores[chosen], kind="stable")]
    reasons = []
    for row in chosen:
        reason = _hesitation(probs[row], classes)
        if row in group_of:
            group, size = group_of[row]
            reason += f"; typical of group {group + 1} of {k} ({size} of the {len(candidates):,} most uncertain rows)"
        reasons.append(reason)
    return chosen.astype(np.int64), reasons


def _hesitation(p: np.ndarray, classes: Sequence[str] | None) -> str:
    """'uncertain: margin 0.04 between 'a' and 'b'' for one row's probabilities."""
    if len(p) < 2:
        return "uncertain: the model knows a single class"
    first, second = np.argsort(-p, kind="stable")[:2]
    names = (classes[first], classes[second]) if classes is not None else (f"class {first}", f"class {second}")
    return f"uncertain: margin {p[first] - p[second]:.2f} between {names[0]!r} and {names[1]!r}"


def _representatives(
    points: np.ndarray, rows: np.ndarray, k: int, known: np.ndarray, seed: int
) -> tuple[np.ndarray, list[str]]:
    """TypiClust-style cold start (Hacohen et al. 2022): the largest of the groups holding the
    fewest labelled rows, the row nearest each one's centre."""
    n_groups = min(len(rows), k + min(len(known), k))
    if n_groups == len(rows):
        labels, centres = np.arange(len(rows)), points[rows]
    else:
        labels, centres = _kmeans(points[rows], n_groups, seed)
    sizes = np.bincount(labels, minlength=n_groups)
    covered = np.zeros(n_groups, dtype=np.int64)
    if len(known):
        nearest = _nearest_centres(known, centres)
        covered = np.bincount(nearest, minlength=n_groups)
    # Fewest labelled rows first, then the largest (the most of the pool a label speaks for).
    ranked = np.lexsort((np.arange(n_groups), -sizes, covered))
    chosen: list[int] = []
    reasons: list[str] = []
    for group in ranked:
        if len(chosen) == k:
            break
        members = rows[labels == group]
        if not len(members):
            continue
        chosen.append(_nearest_to_centre(points, members, centres[group]))
        known_note = "none labelled" if covered[group] == 0 else f"{covered[group]} labelled"
        reasons.append(
            f"cold start (no model yet): representative of group {len(chosen)} of {n_groups} "
            f"({sizes[group]} rows, {known_note})"
        )
    if len(chosen) < k:
        # Duplicate rows leave k-means groups empty: top up with the rows nearest their centres.
        left = ~np.isin(rows, chosen)
        distances = ((points[rows[left]] - centres[labels[left]]) ** 2).sum(axis=1)
        extra = rows[left][np.argsort(distances, kind="stable")[: k - len(chosen)]]
        chosen += extra.tolist()
        reasons += ["cold start (no model yet): typical row of a group already asked from (duplicate rows)"] * len(
            extra
        )
    return np.asarray(chosen, dtype=np.int64), reasons


def _nearest_centres(rows: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Index of the nearest centre of each row (squared Euclidean distance, by a matrix product)."""
    distances = (rows**2).sum(axis=1)[:, None] - 2 * rows @ centres.T + (centres**2).sum(axis=1)[None, :]
    return np.argmin(distances, axis=1)
