"""Cleaning a training set: what to hold out of a retrain, and why, row by row.

A retrain learns whatever its rows say, broken readings and wrong labels included. Before the
Curator hands a snapshot to the Trainer, each step here finds rows that would teach the model
something false and says why; nothing is deleted: the Curator quarantines the rows (they stay
in memory, out of the snapshot) and records the report in its decision.

The steps, in the order :func:`clean` runs them:

* **missing** (:func:`missing_values`): values absent per field. They are filled, not dropped:
  the model's encoding fills a missing field with the method stored with its version, the same
  way at training and at serving. Only a row that lacks most of its fields is quarantined (more
  of it would be invented than measured).
* **stuck** (:func:`stuck_runs`): an entity whose field repeats one reading over a run of
  readings where the field normally moves: a frozen sensor or a relay replaying its last value.
  (:func:`~driftpilot.tools.quality.data_quality` raises the fault for the window; this finds
  the rows.)
* **duplicates** (:func:`duplicates`): the same row or text seen again (identical, or for texts
  near-identical by sentence-embedding similarity): one is kept; repeats weigh a row twice and
  leak between training and holdout.
* **outliers** (:func:`outliers`): numbers far outside their class's range (Tukey's far-out
  fences), flagged for review: a broken value and a rare real event look alike here.
* **labels** (:func:`suspicious_labels`): labels that held-out models confidently contradict
  (confident learning, Northcutt, Jiang and Chuang, JAIR 2021, with cleanlab's
  ``find_label_issues`` on out-of-fold probabilities).

Every function returns positions in its input (row 0 is the first row given); :func:`clean`
maps them to the caller's ids.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable, Collection, Sequence
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from driftpilot.models.tabular_mlp import Preprocessor, fit_scaling
from driftpilot.tools.quality import STUCK_RUN

__all__ = [
    "STEPS",
    "Action",
    "CleaningReport",
    "DuplicateGroup",
    "Duplicates",
    "Finding",
    "LabelIssue",
    "LabelIssues",
    "MissingValues",
    "ModelFactory",
    "Outlier",
    "Outliers",
    "Step",
    "StepReport",
    "StuckRun",
    "StuckRuns",
    "clean",
    "duplicates",
    "missing_values",
    "outliers",
    "stuck_runs",
    "suspicious_labels",
]

Step = Literal["missing", "stuck", "duplicates", "outliers", "labels"]
Action = Literal["quarantine", "impute", "review", "keep"]
#: Every step, in the order :func:`clean` runs them.
STEPS: tuple[Step, ...] = ("missing", "stuck", "duplicates", "outliers", "labels")

#: Held-out folds for the out-of-fold probabilities: each model learns from 80 % of the rows,
#: close to what the final model sees, and every row is judged by a model that never saw it.
FOLDS = 5
#: Passes of confident learning. The first pass's probabilities come from models trained on the
#: noisy labels, whose noise bends them toward the very labels to be found (most under
#: class-conditional noise, where one confusable class absorbs another's mislabelled rows). The
#: second refits the fold models without the rows the first flagged and judges every row again:
#: "prune, then learn" of the confident-learning paper, applied to the judge itself. On Banking77
#: with 10 % of labels flipped it raised the flips caught from 77 % to 81 % (uniform flips) and
#: from 78 % to 82 % (flips to the nearest class), and the precision on the latter from 74 % to
#: 81 %; a third round changed little at half as much time again (``evals/results/cleaning_bench.md``).
ROUNDS = 2
#: cleanlab's filter. ``"both"`` flags a row only when it is among its given class's least likely
#: rows (``prune_by_class``) and among the likeliest members of an off-diagonal of the confident
#: joint (``prune_by_noise_rate``): a label is called wrong only when two readings agree.
#: cleanlab's default (``prune_by_noise_rate`` alone) flagged a quarter more rows on Banking77 with
#: flips to the nearest class, at 68 % precision.
FILTER_BY = "both"
#: Fewest rows (of classes common enough to judge) for the label step: below it each held-out
#: fold holds a handful of rows and the fold models are too weak to contradict anyone.
MIN_LABEL_ROWS = 50
#: Regularisation strengths (``C``) tried for the default label model, half a decade apart, from
#: the strongest up; the walk stops at the first that does worse on held-out log-loss. The best
#: held-out log-loss gives the best-calibrated probabilities, and confident learning reads the
#: probabilities themselves, not only their argmax.
STRENGTHS: tuple[float, ...] = tuple(float(10.0**k) for k in np.arange(-3.0, 2.01, 0.5))
#: Cosine similarity of two texts' sentence vectors (all-MiniLM-L6-v2) at or above which they are
#: near duplicates. On Banking77's queries, pairs at 0.98 and above differ by a word or a mark
#: ("How can I" / "How do I", a trailing "yet"); at 0.95 they are already paraphrases, which a
#: model learns from.
NEAR_DUPLICATE = 0.98
#: Tukey's "far out" fences: below Q1 - 3 IQR or above Q3 + 3 IQR (Tukey, Exploratory Data
#: Analysis, 1977). A normal sample crosses them about twice in a million values.
FAR_OUT = 3.0
#: Fewest values of a class (and field) to draw its fences from; a rarer class is not judged:
#: its rows are what the model must learn, and a handful of them has no range to be outside of.
MIN_GROUP_VALUES = 30
#: A field whose median entity repeats its previous reading more often than this is discrete or
#: often idle (a count of restarts, a counter at zero): runs of one value are its normal state and
#: it is not checked for stuck runs. Below it, a healthy entity holds one value for ``STUCK_RUN``
#: readings with a chance under 0.1 ** 7.
MAX_REPEAT_RATE = 0.1
#: A row missing more than this share of its features is quarantined rather than filled.
MAX_MISSING_SHARE = 0.5


class ProbabilisticClassifier(Protocol):
    """What the label step needs of a model: scikit-learn's ``fit`` and ``predict_proba``."""

    classes_: Any

    def fit(self, x: Any, y: Any) -> Any: ...

    def predict_proba(self, x: Any) -> Any: ...


ModelFactory = Callable[[], ProbabilisticClassifier]


# --- reports ------------------------------------------------------------------------------


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True)


class LabelIssue(_Frozen):
    """A label that held-out models contradict: the row, its label, what they suggest, and why."""

    row: int
    given: str
    suggested: str
    self_confidence: float
    why: str


class LabelIssues(_Frozen):
    """The suspicious labels, most suspicious first, and how they were found.

    ``unjudged`` rows belong to classes too rare to judge (fewer members than folds); ``reason``
    says what was done, or why nothing could be.
    """

    issues: list[LabelIssue]
    judged: int
    unjudged: list[int]
    out_of_fold_accuracy: float | None
    settings: dict[str, float | int | str]
    reason: str

    @property
    def rows(self) -> list[int]:
        return [issue.row for issue in self.issues]


class DuplicateGroup(_Frozen):
    """Rows holding the same content: the one kept, the ones dropped, and the labels seen."""

    kind: Literal["exact", "near"]
    kept: int | None
    dropped: list[int]
    conflicting: list[int]
    labels: dict[str, int]
    similarity: float
    why: str


class Duplicates(_Frozen):
    groups: list[DuplicateGroup]
    settings: dict[str, float | int | str]

    @property
    def dropped(self) -> list[int]:
        return sorted(row for group in self.groups for row in group.dropped)


class Outlier(_Frozen):
    """One value beyond its class's far-out fence."""

    row: int
    feature: str
    value: float
    low: float
    high: float
    group: str


class Outliers(_Frozen):
    findings: list[Outlier]
    skipped: dict[str, str]

    @property
    def rows(self) -> list[int]:
        return sorted({o.row for o in self.findings})


class StuckRun(_Frozen):
    """An entity's field holding one value: the first reading (a real one, kept) and the repeats."""

    entity: str
    feature: str
    value: float
    first: int
    repeats: list[int]


class StuckRuns(_Frozen):
    """Stuck runs found, the fields checked, and the fields skipped with the reason."""

    runs: list[StuckRun]
    checked: list[str]
    skipped: dict[str, str]

    @property
    def rows(self) -> list[int]:
        return sorted({row for run in self.runs for row in run.repeats})


class MissingValues(_Frozen):
    """Missing values per field, the value a median (numbers) or most-frequent (categories) fill
    would put in, and the rows lacking so much that they are quarantined instead."""

    counts: dict[str, int]
    rows: dict[str, list[int]]
    fill: dict[str, float | str | None]
    quarantine: list[int]


class Finding(_Frozen):
    """One row's finding in a cleaning report, in words the decision log can show."""

    id: int
    step: Step
    action: Action
    feature: str | None
    reason: str


class StepReport(_Frozen):
    """What one step found and did."""

    step: Step
    ran: bool
    found: int
    quarantined: int
    imputed: int
    summary: str
    settings: dict[str, float | int | str]


class CleaningReport(_Frozen):
    """All steps' findings. ``quarantine`` holds the ids to leave out of the training snapshot
    (held in memory, not deleted); ``imputed`` counts, per field, the values the model's encoding
    fills, and ``fill`` shows what a median / most-frequent fill of the kept rows puts there."""

    rows: int
    steps: list[StepReport]
    findings: list[Finding]
    quarantine: list[int]
    imputed: dict[str, int]
    fill: dict[str, float | str | None]

    def step(self, name: Step) -> StepReport:
        return next(s for s in self.steps if s.step == name)

    def ids(self, step: Step, action: Action | None = None) -> list[int]:
        """Ids a step found (with ``action``, only those it gave that action)."""
        return sorted({f.id for f in self.findings if f.step == step and (action is None or f.action == action)})


# --- labels -------------------------------------------------------------------------------


def suspicious_labels(
    features: np.ndarray,
    labels: Sequence[str],
    *,
    seed: int = 0,
    folds: int = FOLDS,
    rounds: int = ROUNDS,
    filter_by: str = FILTER_BY,
    model: ModelFactory | None = None,
    min_rows: int = MIN_LABEL_ROWS,
) -> LabelIssues:
    """Rows whose label held-out models confidently contradict, most suspicious first.

    Each row gets class probabilities from a model that never saw it (stratified ``folds``-fold
    cross-validation); cleanlab's ``find_label_issues`` flags the rows whose given label those
    probabilities contradict beyond each class's own level of confidence. With ``rounds`` = 2 the
    fold models are fitted again without the rows the first pass flagged, and every row judged
    again (see :data:`ROUNDS`). Rows are ranked by self-confidence, the probability the held-out
    model gives the label they carry.

    Parameters
    ----------
    features
        One numeric row per label (sentence vectors, an encoded table), no missing values.
    model
        Builds a fresh classifier with ``fit`` and ``predict_proba``. The default standardises
        the features and fits a logistic regression whose strength is chosen on the first fold
        by held-out log-loss (:data:`STRENGTHS`).
    min_rows
        Fewest rows of judged classes needed; below it nothing is flagged and ``reason`` says why.

    A class with fewer members than ``folds`` cannot be held out in every fold: its rows are not
    judged (listed in ``unjudged``) and the fold models do not learn it; such a class is too rare
    to know what its rows look like, and may be one that just appeared.

    Raises
    ------
    ValueError
        When ``features`` is not a matrix with one row per label, holds missing or infinite
        values, or ``folds`` or ``rounds`` is below its least.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> which = rng.integers(0, 3, 300)
    >>> x = rng.normal(size=(300, 2)) + 4 * np.eye(3, 2)[which]
    >>> given = np.array(["a", "b", "c"])[which]
    >>> given[:10] = np.array(["b", "c", "a"])[which[:10]]  # ten planted flips
    >>> found = suspicious_labels(x, given)
    >>> len(set(found.rows) & set(range(10))) >= 8, len(found.rows) <= 14
    (True, True)
    """
    x = _matrix(features, len(labels))
    if folds < 2:
        raise ValueError(f"folds must be at least 2 (a row is judged by a model that did not see it), got {folds}")
    if rounds < 1:
        raise ValueError(f"rounds must be at least 1, got {rounds}")
    given = np.asarray([str(label) for label in labels])
    settings: dict[str, float | int | str] = {"folds": folds, "rounds": rounds, "filter_by": filter_by}
    names, counts = np.unique(given, return_counts=True)
    rare = {str(name): int(count) for name, count in zip(names, counts, strict=True) if count < folds}
    judged = np.flatnonzero(~np.isin(given, list(rare)))
    unjudged = sorted(set(range(len(given))) - set(judged.tolist()))
    rare_note = (
        f"; {len(unjudged)} rows of {len(rare)} {'class' if len(rare) == 1 else 'classes'} with fewer than {folds} "
        f"members not judged ({_listed(rare)})"
        if rare
        else ""
    )

    def nothing(why: str) -> LabelIssues:
        return LabelIssues(
            issues=[], judged=0, unjudged=unjudged, out_of_fold_accuracy=None, settings=settings, reason=why + rare_note
        )

    classes = np.unique(given[judged])
    if len(classes) < 2:
        return nothing(f"nothing flagged: {len(classes)} class with at least {folds} members, none to confuse it with")
    if len(judged) < min_rows:
        return nothing(f"nothing flagged: {len(judged)} rows to judge, fewer than the {min_rows} needed")

    from cleanlab.filter import find_label_issues

    x, y = x[judged], np.searchsorted(classes, given[judged])
    flagged = np.zeros(0, dtype=int)
    probabilities = np.zeros((len(y), len(classes)))
    for round_ in range(rounds):
        probabilities, strength = _out_of_fold(x, y, len(classes), folds, seed, model, exclude=flagged)
        if strength is not None:
            settings["C"] = strength
        mask = find_label_issues(y, probabilities, filter_by=filter_by, n_jobs=1)
        flagged = np.flatnonzero(mask)
        settings[f"flagged_round_{round_ + 1}"] = len(flagged)
    self_confidence = probabilities[np.arange(len(y)), y]
    flagged = flagged[np.argsort(self_confidence[flagged], kind="stable")]
    issues = []
    for i in flagged:
        suggested = int(np.argmax(probabilities[i]))
        issues.append(
            LabelIssue(
                row=int(judged[i]),
                given=str(classes[y[i]]),
                suggested=str(classes[suggested]),
                self_confidence=round(float(self_confidence[i]), 4),
                why=(
                    f"models that never saw this row give its label '{classes[y[i]]}' "
                    f"{self_confidence[i]:.0%} and '{classes[suggested]}' {probabilities[i, suggested]:.0%}; "
                    f"confident learning ({filter_by}) counts it among the mislabelled rows"
                ),
            )
        )
    accuracy = float(np.mean(np.argmax(probabilities, axis=1) == y))
    return LabelIssues(
        issues=issues,
        judged=len(judged),
        unjudged=unjudged,
        out_of_fold_accuracy=round(accuracy, 4),
        settings=settings,
        reason=(
            f"{len(issues)} of {len(judged)} labels flagged by confident learning on {folds}-fold out-of-fold "
            f"probabilities ({rounds} rounds, filter {filter_by}; the held-out models agree with "
            f"{accuracy:.0%} of the given labels){rare_note}"
        ),
    )


def _matrix(features: np.ndarray, n: int) -> np.ndarray:
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] != n:
        raise ValueError(f"features must be a matrix with one row per label: got shape {x.shape} for {n} labels")
    if not np.isfinite(x).all():
        bad = int(np.flatnonzero(~np.isfinite(x).all(axis=1))[0])
        raise ValueError(
            f"features hold missing or infinite values (first in row {bad}): fill them before judging labels"
        )
    return x


def _default_model(strength: float) -> Any:
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=strength, max_iter=2000))


def _probabilities(fitted: Any, x: np.ndarray, n_classes: int) -> np.ndarray:
    """Class probabilities in the columns 0..n_classes-1, whichever classes the model learnt."""
    out = np.zeros((len(x), n_classes))
    out[:, np.asarray(fitted.classes_, dtype=int)] = fitted.predict_proba(x)
    return out


def _out_of_fold(
    x: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    folds: int,
    seed: int,
    model: ModelFactory | None,
    *,
    exclude: np.ndarray,
) -> tuple[np.ndarray, float | None]:
    """Each row's probabilities from a model fitted on the other folds less ``exclude``; and the
    default model's chosen strength (``None`` for the caller's model)."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.metrics import log_loss
    from sklearn.model_selection import StratifiedKFold
    from threadpoolctl import threadpool_limits

    splits = list(StratifiedKFold(folds, shuffle=True, random_state=seed).split(x, y))
    splits = [(train[~np.isin(train, exclude)], held) for train, held in splits]
    out = np.zeros((len(y), n_classes))
    strength = None
    first = 0
    # One BLAS thread while fitting: these problems are too small for threads to pay, and on a
    # busy two-core machine two spinning threads each made the fits fifty times slower (cleaning
    # the tabular part of evals/cleaning_bench.py took 296 s against 6 s). The limit is lifted on
    # leaving the block.
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        # A strength past the best one may stop short of convergence; it is not chosen anyway.
        warnings.simplefilter("ignore", ConvergenceWarning)
        if model is None:
            train, held = splits[0]
            best_loss = np.inf
            for candidate in STRENGTHS:
                fitted = _default_model(candidate).fit(x[train], y[train])
                guess = _probabilities(fitted, x[held], n_classes)
                loss = log_loss(y[held], np.clip(guess, 1e-12, 1.0), labels=np.arange(n_classes))
                if loss >= best_loss:
                    break
                best_loss, strength, out[held] = loss, candidate, guess
            first = 1
        for train, held in splits[first:]:
            fitted = (model() if model is not None else _default_model(strength or 1.0)).fit(x[train], y[train])
            out[held] = _probabilities(fitted, x[held], n_classes)
    return out, strength


def _listed(counts: dict[str, int], most: int = 5) -> str:
    items = [f"'{k}': {v}" for k, v in list(counts.items())[:most]]
    return ", ".join(items) + (f" and {len(counts) - most} more" if len(counts) > most else "")


# --- duplicates ---------------------------------------------------------------------------


def duplicates(
    frame: pd.DataFrame,
    columns: Sequence[str],
    labels: Sequence[str],
    *,
    vectors: np.ndarray | None = None,
    threshold: float = NEAR_DUPLICATE,
) -> Duplicates:
    """Groups of rows holding the same content; the first row of each is kept.

    Exact duplicates: rows equal on ``columns`` (texts compared with case and runs of white space
    set aside). Near duplicates, when ``vectors`` (unit-length sentence vectors, one per row) are
    given: rows whose cosine similarity to an earlier kept row is at least ``threshold``; each row
    joins the group of the first kept row it is that close to, so groups do not chain.

    The first row is kept (in the order given; pass rows oldest first, so that the id earlier
    versions trained on stays). Exact duplicates whose labels disagree keep the first row of the
    most frequent label and drop the others (the same input cannot have two answers); with no
    single most frequent label, all of them are dropped. A near duplicate with another label than
    its kept row is not dropped, only listed as ``conflicting``: close texts may mean different
    things, and the label step judges which is right.

    Raises
    ------
    ValueError
        When a column is not in ``frame``, lengths differ, or ``threshold`` is not in (0, 1].

    Examples
    --------
    >>> frame = pd.DataFrame({"text": ["Lost my card", "lost my  card", "Where is my money?", "LOST MY CARD"]})
    >>> found = duplicates(frame, ["text"], ["lost", "lost", "transfer", "stolen"])
    >>> [(g.kind, g.kept, g.dropped, g.labels) for g in found.groups]
    [('exact', 0, [1, 3], {'lost': 2, 'stolen': 1})]
    """
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"columns {missing} are not in the data (it has {list(frame.columns)})")
    if len(labels) != len(frame):
        raise ValueError(f"{len(labels)} labels for {len(frame)} rows")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold is a cosine similarity in (0, 1], got {threshold}")
    given = np.asarray([str(label) for label in labels])
    groups: list[DuplicateGroup] = []
    keys = pd.DataFrame({c: _normalised(frame[c]) for c in columns})
    codes = keys.groupby(list(columns), sort=False, dropna=False).ngroup().to_numpy()
    representative = np.ones(len(frame), dtype=bool)
    for code in np.flatnonzero(np.bincount(codes) > 1):
        rows = np.flatnonzero(codes == code)
        representative[rows[1:]] = False
        groups.append(_exact_group(rows, given))
    if vectors is not None:
        v = np.asarray(vectors, dtype=np.float64)
        if v.ndim != 2 or len(v) != len(frame):
            raise ValueError(f"vectors must hold one row per data row: got shape {v.shape} for {len(frame)} rows")
        groups.extend(_near_groups(v, given, np.flatnonzero(representative), threshold))
    groups.sort(key=lambda g: g.kept if g.kept is not None else min(g.dropped))
    return Duplicates(groups=groups, settings={"near_duplicate_similarity": threshold})


def _normalised(column: pd.Series) -> pd.Series:
    if column.dtype == object or pd.api.types.is_string_dtype(column):
        return column.map(lambda v: re.sub(r"\s+", " ", v).strip().casefold() if isinstance(v, str) else v)
    return column


def _exact_group(rows: np.ndarray, given: np.ndarray) -> DuplicateGroup:
    names, counts = np.unique(given[rows], return_counts=True)
    tally = {str(n): int(c) for n, c in zip(names, counts, strict=True)}
    top = counts.max()
    if (counts == top).sum() > 1:
        return DuplicateGroup(
            kind="exact",
            kept=None,
            dropped=rows.tolist(),
            conflicting=rows.tolist(),
            labels=tally,
            similarity=1.0,
            why=f"{len(rows)} identical rows labelled {_listed(tally)}: no label is most frequent, none is kept",
        )
    label = names[np.argmax(counts)]
    kept = int(rows[given[rows] == label][0])
    others = [int(r) for r in rows if r != kept]
    conflicting = [r for r in others if given[r] != label]
    why = f"{len(rows)} identical rows; the first is kept"
    if conflicting:
        why = f"{len(rows)} identical rows labelled {_listed(tally)}; the first labelled '{label}' is kept"
    return DuplicateGroup(
        kind="exact", kept=kept, dropped=others, conflicting=conflicting, labels=tally, similarity=1.0, why=why
    )


def _near_groups(v: np.ndarray, given: np.ndarray, candidates: np.ndarray, threshold: float) -> list[DuplicateGroup]:
    """Leader clustering in row order over the rows ``candidates``: a row joins the first earlier
    leader at least ``threshold`` similar, else leads a group of its own."""
    from sklearn.neighbors import NearestNeighbors

    # Brute force in chunks (scikit-learn's radius search): exact, and fast enough for tens of
    # thousands of rows; a tree does not help in 384 dimensions.
    search = NearestNeighbors(radius=1.0 - threshold + 1e-9, metric="cosine", algorithm="brute").fit(v[candidates])
    _, neighbours = search.radius_neighbors(v[candidates])
    leader = np.full(len(candidates), -1)
    for i in range(len(candidates)):
        earlier = neighbours[i][neighbours[i] < i]
        leaders = earlier[leader[earlier] == earlier] if earlier.size else earlier
        leader[i] = int(leaders.min()) if leaders.size else i
    groups = []
    for head in np.flatnonzero(np.bincount(leader, minlength=len(candidates)) > 1):
        members = candidates[np.flatnonzero(leader == head)]
        kept = int(candidates[head])
        others = [int(r) for r in members if r != kept]
        same = [r for r in others if given[r] == given[kept]]
        conflicting = [r for r in others if given[r] != given[kept]]
        names, counts = np.unique(given[members], return_counts=True)
        tally = {str(n): int(c) for n, c in zip(names, counts, strict=True)}
        similarity = float(np.min(v[others] @ v[kept] / (np.linalg.norm(v[others], axis=1) * np.linalg.norm(v[kept]))))
        why = f"{len(others)} near-identical rows (cosine similarity >= {threshold}) of the first"
        if conflicting:
            why += f"; {len(conflicting)} carry another label than its '{given[kept]}' and are left to the label step"
        groups.append(
            DuplicateGroup(
                kind="near",
                kept=kept,
                dropped=same,
                conflicting=conflicting,
                labels=tally,
                similarity=round(similarity, 4),
                why=why,
            )
        )
    return groups


# --- outliers -----------------------------------------------------------------------------


def outliers(
    frame: pd.DataFrame,
    numbers: Sequence[str],
    labels: Sequence[str] | None = None,
    *,
    fence: float = FAR_OUT,
    min_values: int = MIN_GROUP_VALUES,
) -> Outliers:
    """Values beyond Tukey's far-out fences of their field, within their class when ``labels``
    are given (a failing device's readings are normal for its failure, not for the healthy).

    A heavy-tailed field (a count spanning orders of magnitude, a time since the last restart)
    is judged on the symmetric log scale the tabular family reads it on
    (:func:`~driftpilot.models.tabular_mlp.fit_scaling`'s rule for a linear model): on its raw
    scale the fences would cut through its natural tail. ``low`` and ``high`` are reported in the
    field's own units.

    A class (or, without labels, the whole frame) with fewer than ``min_values`` values of a
    field is not judged on it. A field (in a class) whose quartiles coincide is skipped: it
    nearly always holds one value, and any other would fall outside fences of zero width.
    Missing values are neither judged nor used.

    Raises
    ------
    ValueError
        When a field is not a column of ``frame`` or holds text, or lengths differ.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> frame = pd.DataFrame({"level": rng.normal(50, 2, 200).round(2)})
    >>> frame.loc[[7, 99], "level"] = [6553.5, -40.0]  # a sensor's error codes
    >>> [(o.row, o.value) for o in outliers(frame, ["level"]).findings]
    [(7, 6553.5), (99, -40.0)]
    """
    for name in numbers:
        if name not in frame.columns:
            raise ValueError(f"feature '{name}' is not a column of the data")
    if labels is not None and len(labels) != len(frame):
        raise ValueError(f"{len(labels)} labels for {len(frame)} rows")
    groups = np.asarray(["all"] * len(frame) if labels is None else [str(label) for label in labels])
    findings: list[Outlier] = []
    skipped: dict[str, str] = {}
    for name in numbers:
        raw = _numbers(frame, name)
        present = ~np.isnan(raw)
        logged = present.any() and fit_scaling([name], {name: raw[present]}, linear=True)[2][0]
        values = np.sign(raw) * np.log1p(np.abs(raw)) if logged else raw
        for group in np.unique(groups):
            rows = np.flatnonzero((groups == group) & present)
            where = f"'{name}' in class '{group}'" if labels is not None else f"'{name}'"
            if len(rows) < min_values:
                skipped[f"{name}|{group}"] = f"{where}: {len(rows)} values, fewer than {min_values}"
                continue
            q1, q3 = np.quantile(values[rows], [0.25, 0.75])
            if q3 == q1:
                skipped[f"{name}|{group}"] = f"{where}: half its values are one value, no spread to judge by"
                continue
            low, high = q1 - fence * (q3 - q1), q3 + fence * (q3 - q1)
            if logged:
                low, high = np.sign(low) * np.expm1(np.abs(low)), np.sign(high) * np.expm1(np.abs(high))
            for row in rows[(raw[rows] < low) | (raw[rows] > high)]:
                findings.append(
                    Outlier(
                        row=int(row),
                        feature=name,
                        value=float(raw[row]),
                        low=round(float(low), 6),
                        high=round(float(high), 6),
                        group=str(group),
                    )
                )
    findings.sort(key=lambda o: (o.row, o.feature))
    return Outliers(findings=findings, skipped=skipped)


def _numbers(frame: pd.DataFrame, name: str) -> np.ndarray:
    try:
        return pd.to_numeric(frame[name], errors="raise").to_numpy(dtype=np.float64, na_value=np.nan)
    except (TypeError, ValueError):
        bad = frame[name][pd.to_numeric(frame[name], errors="coerce").isna() & frame[name].notna()]
        raise ValueError(f"feature '{name}' must hold numbers, got {bad.iloc[0]!r} at index {bad.index[0]}") from None


# --- stuck runs and missing values --------------------------------------------------------


def stuck_runs(
    frame: pd.DataFrame,
    numbers: Sequence[str],
    *,
    entity: str,
    order: str | None = None,
    run: int = STUCK_RUN,
    max_repeat_rate: float = MAX_REPEAT_RATE,
) -> StuckRuns:
    """Runs of at least ``run`` consecutive readings of one entity holding one value of a field.

    Readings are taken per entity in the order of ``order`` (a time column), else as given;
    missing readings are passed over. The first reading of a run was a real one: only the
    repeats after it are listed. A field is checked only where repeating is abnormal: when its
    median entity repeats its previous reading in at most ``max_repeat_rate`` of its readings
    (see :data:`MAX_REPEAT_RATE`). A field stuck on most entities at once is then skipped: that
    is a broken field, which :func:`~driftpilot.tools.quality.data_quality` reports for repair.

    Raises
    ------
    ValueError
        When ``entity``, ``order`` or a field is not a column of ``frame``, a field holds text,
        or ``run`` is below 2.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> frame = pd.DataFrame({"device": np.repeat(["d1", "d2", "d3"], 12), "level": rng.normal(50, 2, 36).round(2)})
    >>> frame.loc[14:23, "level"] = frame.loc[14, "level"]  # d2 freezes on its third reading
    >>> found = stuck_runs(frame, ["level"], entity="device")
    >>> [(r.entity, r.first, r.repeats[0], len(r.repeats)) for r in found.runs]
    [('d2', 14, 15, 9)]
    """
    if run < 2:
        raise ValueError(f"run must be at least 2 readings, got {run}")
    for name in [entity, *([order] if order else []), *numbers]:
        if name not in frame.columns:
            raise ValueError(f"column '{name}' is not in the data")
    position = np.arange(len(frame))
    sort_by = [entity, order] if order else [entity]
    ordered = frame.assign(_row=position).sort_values(sort_by, kind="stable")
    runs: list[StuckRun] = []
    checked: list[str] = []
    skipped: dict[str, str] = {}
    for name in numbers:
        values = pd.Series(_numbers(ordered, name), index=ordered.index)
        present = ordered.assign(_value=values).dropna(subset=["_value"])
        who, value = present[entity].to_numpy(), present["_value"].to_numpy()
        same_entity = np.r_[False, who[1:] == who[:-1]]
        repeat = same_entity & np.r_[False, value[1:] == value[:-1]]
        pairs = pd.DataFrame({"entity": who[same_entity], "repeat": repeat[same_entity]})
        if pairs.empty:
            skipped[name] = "no entity has two readings of it"
            continue
        rate = float(pairs.groupby("entity")["repeat"].mean().median())
        if rate > max_repeat_rate:
            skipped[name] = (
                f"its median entity repeats its previous reading in {rate:.0%} of readings: runs are its normal state"
            )
            continue
        checked.append(name)
        run_id = np.cumsum(~repeat)
        lengths = np.bincount(run_id)[run_id]
        rows = present["_row"].to_numpy()
        for start in np.flatnonzero(~repeat & (lengths >= run)):
            members = rows[start : start + lengths[start]]
            runs.append(
                StuckRun(
                    entity=str(who[start]),
                    feature=name,
                    value=float(value[start]),
                    first=int(members[0]),
                    repeats=[int(r) for r in members[1:]],
                )
            )
    runs.sort(key=lambda r: (r.first, r.feature))
    return StuckRuns(runs=runs, checked=checked, skipped=skipped)


def missing_values(
    frame: pd.DataFrame,
    features: Sequence[tuple[str, str]],
    *,
    max_missing_share: float = MAX_MISSING_SHARE,
) -> MissingValues:
    """Missing values per field (a field absent from ``frame`` is missing in every row); what a
    median (numbers) or most-frequent (categories, texts) fill of the present values would put
    in; and the rows missing more than ``max_missing_share`` of the features, to quarantine.

    An empty text or category counts as missing, as ``None`` and NaN do.

    Examples
    --------
    >>> frame = pd.DataFrame({"level": [1.0, None, 3.0, None], "kind": ["a", "b", "b", None]})
    >>> found = missing_values(frame, [("level", "number"), ("kind", "category")])
    >>> found.counts, found.fill, found.quarantine
    ({'level': 2, 'kind': 1}, {'level': 2.0, 'kind': 'b'}, [3])
    """
    counts: dict[str, int] = {}
    rows: dict[str, list[int]] = {}
    fill: dict[str, float | str | None] = {}
    absent = np.zeros(len(frame), dtype=int)
    for name, kind in features:
        if name not in frame.columns:
            gone = np.ones(len(frame), dtype=bool)
            fill[name] = None
        elif kind == "number":
            values = _numbers(frame, name)
            gone = np.isnan(values)
            fill[name] = float(np.median(values[~gone])) if (~gone).any() else None
        else:
            column = frame[name]
            gone = (column.isna() | (column.astype(str).str.strip() == "")).to_numpy()
            present = column[~gone].astype(str)
            fill[name] = str(present.value_counts().sort_index().idxmax()) if len(present) else None
        counts[name] = int(gone.sum())
        rows[name] = np.flatnonzero(gone).tolist()
        absent += gone
    share = absent / max(len(features), 1)
    return MissingValues(
        counts=counts, rows=rows, fill=fill, quarantine=np.flatnonzero(share > max_missing_share).tolist()
    )


# --- the whole pass -----------------------------------------------------------------------


def clean(
    frame: pd.DataFrame,
    labels: Sequence[str],
    features: Sequence[tuple[str, str]],
    *,
    ids: Sequence[int] | None = None,
    entity: str | None = None,
    order: str | None = None,
    vectors: np.ndarray | None = None,
    steps: Collection[Step] = STEPS,
    quarantine_outliers: bool = False,
    label_model: ModelFactory | None = None,
    seed: int = 0,
) -> CleaningReport:
    """Run the cleaning ``steps`` over a training set and report, row by row, what to do.

    Steps run in :data:`STEPS` order, each on the rows no earlier step quarantined. Missing
    values are left for the model's encoding to fill (``impute``), except in rows lacking most of
    their fields. Stuck repeats (needs ``entity``), redundant duplicates and suspicious labels are
    quarantined. Outliers are flagged for ``review``, or quarantined with ``quarantine_outliers``.

    Parameters
    ----------
    features
        ``(name, kind)`` pairs, kind ``"number"``, ``"category"`` or ``"text"``.
    ids
        The rows' ids (event ids), reported in the findings; the frame's index by default.
    entity, order
        The column of the reporting entity and of the reading time, for stuck runs.
    vectors
        Sentence vectors of the text feature, one row per row: near duplicates are found on
        them, and the label step judges on them (beside the encoded other features).
    label_model
        The label step's model factory (see :func:`suspicious_labels`).

    Raises
    ------
    ValueError
        When lengths differ, ids repeat, a step is unknown, a feature kind is not one of the
        three, ``stuck`` is asked for without ``entity`` (or its columns are not in ``frame``),
        or ``labels`` for a text feature without ``vectors``.
    """
    n = len(frame)
    if len(labels) != n:
        raise ValueError(f"{len(labels)} labels for {n} rows")
    row_ids = np.asarray(frame.index if ids is None else ids)
    if len(row_ids) != n:
        raise ValueError(f"{len(row_ids)} ids for {n} rows")
    if len(np.unique(row_ids)) != n:
        raise ValueError("ids must be unique: each finding names one row")
    unknown = [s for s in steps if s not in STEPS]
    if unknown:
        raise ValueError(f"unknown cleaning steps {unknown}; the steps are {list(STEPS)}")
    odd = [f"{name} ({kind})" for name, kind in features if kind not in ("number", "category", "text")]
    if odd:
        raise ValueError(f"feature kinds must be 'number', 'category' or 'text', not {odd}")
    if "stuck" in steps and entity is None:
        raise ValueError("the stuck step needs the entity column: pass entity=, or leave 'stuck' out of steps")
    absent = [c for c in (entity, order) if "stuck" in steps and c is not None and c not in frame.columns]
    if absent:
        raise ValueError(f"the stuck step reads columns {absent}, which the data lacks (it has {list(frame.columns)})")
    texts = [name for name, kind in features if kind == "text"]
    if "labels" in steps and texts and vectors is None:
        raise ValueError(f"the label step judges texts on their sentence vectors: pass vectors= for {texts[0]!r}")
    cleaning = _Pass(frame, np.asarray([str(label) for label in labels]), features, row_ids)
    missing = missing_values(frame, features)
    if "missing" in steps:
        cleaning.missing(missing)
    if "stuck" in steps and entity is not None:
        cleaning.stuck(entity, order)
    if "duplicates" in steps:
        cleaning.duplicates(vectors)
    if "outliers" in steps:
        cleaning.outliers(quarantine_outliers)
    if "labels" in steps:
        matrix = _label_matrix(frame.iloc[cleaning.live()], features, missing.fill, vectors, cleaning.live())
        cleaning.labels(matrix, label_model, seed)

    kept = cleaning.live()
    # What a median / most-frequent fill learnt from the rows the snapshot keeps would put in.
    fill = missing_values(frame.iloc[kept], features).fill if "missing" in steps else {}
    return CleaningReport(
        rows=n,
        steps=cleaning.steps,
        findings=cleaning.findings,
        quarantine=sorted(int(row_ids[r]) for r in set(range(n)) - set(kept.tolist())),
        imputed={name: count for name, count in missing.counts.items() if count} if "missing" in steps else {},
        fill={name: value for name, value in fill.items() if missing.counts[name]},
    )


class _Pass:
    """One cleaning pass: each step runs on the rows still in, and its findings are written in
    the caller's ids."""

    def __init__(self, frame: pd.DataFrame, given: np.ndarray, features: Sequence[tuple[str, str]], ids: np.ndarray):
        self.frame = frame
        self.given = given
        self.features = features
        self.numbers = [name for name, kind in features if kind == "number"]
        self.ids = ids
        self.out = np.zeros(len(ids), dtype=bool)
        self.findings: list[Finding] = []
        self.steps: list[StepReport] = []

    def live(self) -> np.ndarray:
        """Positions of the rows no step has quarantined yet."""
        return np.flatnonzero(~self.out)

    def find(self, row: int, step: Step, action: Action, feature: str | None, reason: str) -> None:
        self.findings.append(Finding(id=int(self.ids[row]), step=step, action=action, feature=feature, reason=reason))

    def report(
        self,
        step: Step,
        *,
        found: int,
        quarantined: Sequence[int],
        summary: str,
        settings: dict[str, Any],
        imputed: int = 0,
    ) -> None:
        self.out[np.asarray(quarantined, dtype=int)] = True
        self.steps.append(
            StepReport(
                step=step,
                ran=True,
                found=found,
                quarantined=len(quarantined),
                imputed=imputed,
                summary=summary,
                settings=settings,
            )
        )

    def missing(self, missing: MissingValues) -> None:
        filled = {name: count for name, count in missing.counts.items() if count}
        emptied = set(missing.quarantine)
        imputed = 0
        for name, rows in missing.rows.items():
            for row in rows:
                if row not in emptied:
                    imputed += 1
                    self.find(row, "missing", "impute", name, f"'{name}' missing; the model's encoding fills it")
        for row in missing.quarantine:
            self.find(row, "missing", "quarantine", None, f"more than {MAX_MISSING_SHARE:.0%} of the features missing")
        summary = "no missing values"
        if filled:
            summary = (
                f"{sum(filled.values())} missing values in {len(filled)} fields ({_listed(filled)}): {imputed} left "
                f"for the model's encoding to fill; {len(missing.quarantine)} rows missing most of their fields "
                "quarantined"
            )
        self.report(
            "missing",
            found=len({r for rows in missing.rows.values() for r in rows}),
            quarantined=missing.quarantine,
            imputed=imputed,
            summary=summary,
            settings={"max_missing_share": MAX_MISSING_SHARE},
        )

    def stuck(self, entity: str, order: str | None) -> None:
        live = self.live()
        found = stuck_runs(self.frame.iloc[live], self.numbers, entity=entity, order=order)
        for run in found.runs:
            since = self.ids[live[run.first]]
            for row in run.repeats:
                self.find(
                    live[row],
                    "stuck",
                    "quarantine",
                    run.feature,
                    f"'{run.feature}' of {run.entity} repeats {run.value:g} since id {since} "
                    f"({len(run.repeats) + 1} readings)",
                )
        rows = [live[r] for r in found.rows]
        fields = len({(r.entity, r.feature) for r in found.runs})
        self.report(
            "stuck",
            found=len(rows),
            quarantined=rows,
            summary=(
                f"{len(found.runs)} runs of at least {STUCK_RUN} readings holding one value ({fields} entity-fields): "
                f"{len(rows)} repeats quarantined; fields checked {found.checked}, skipped {sorted(found.skipped)}"
            ),
            settings={"run": STUCK_RUN, "max_repeat_rate": MAX_REPEAT_RATE},
        )

    def duplicates(self, vectors: np.ndarray | None) -> None:
        live = self.live()
        columns = [name for name, _ in self.features if name in self.frame.columns]
        found = duplicates(
            self.frame.iloc[live],
            columns,
            self.given[live],
            vectors=None if vectors is None else np.asarray(vectors)[live],
        )
        conflicts = 0
        for group in found.groups:
            first = "none" if group.kept is None else f"id {self.ids[live[group.kept]]}"
            for row in group.dropped:
                self.find(
                    live[row], "duplicates", "quarantine", None, f"{group.kind} duplicate of {first}: {group.why}"
                )
            for row in sorted(set(group.conflicting) - set(group.dropped)):
                conflicts += 1
                self.find(live[row], "duplicates", "keep", None, f"near duplicate of {first} with another label")
        rows = [live[r] for r in found.dropped]
        self.report(
            "duplicates",
            found=len(rows) + conflicts,
            quarantined=rows,
            summary=(
                f"{len(found.groups)} groups of duplicates: {len(rows)} repeats quarantined, the first of each kept; "
                f"{conflicts} near duplicates with another label kept for the label step"
            ),
            settings=dict(found.settings),
        )

    def outliers(self, quarantine: bool) -> None:
        live = self.live()
        found = outliers(self.frame.iloc[live], self.numbers, self.given[live])
        action: Action = "quarantine" if quarantine else "review"
        for o in found.findings:
            self.find(
                live[o.row],
                "outliers",
                action,
                o.feature,
                f"'{o.feature}' = {o.value:g} outside [{o.low:g}, {o.high:g}], the far-out fences of class '{o.group}'",
            )
        rows = [live[r] for r in found.rows]
        done = "quarantined" if quarantine else "flagged for review (kept: a rare real event looks alike)"
        self.report(
            "outliers",
            found=len(rows),
            quarantined=rows if quarantine else [],
            summary=f"{len(rows)} rows with a value beyond its class's far-out fences, {done}",
            settings={"fence_iqr": FAR_OUT, "min_group_values": MIN_GROUP_VALUES},
        )

    def labels(self, matrix: np.ndarray, model: ModelFactory | None, seed: int) -> None:
        live = self.live()
        found = suspicious_labels(matrix, self.given[live], seed=seed, model=model)
        for issue in found.issues:
            self.find(live[issue.row], "labels", "quarantine", None, issue.why)
        self.report(
            "labels",
            found=len(found.issues),
            quarantined=[live[r] for r in found.rows],
            summary=found.reason,
            settings=dict(found.settings),
        )


def _label_matrix(
    frame: pd.DataFrame,
    features: Sequence[tuple[str, str]],
    fill: dict[str, float | str | None],
    vectors: np.ndarray | None,
    live: np.ndarray,
) -> np.ndarray:
    """What the label step judges on: the text's sentence vectors beside the other features,
    encoded as the tabular family does for a linear model (missing values filled first)."""
    blocks = []
    if any(kind == "text" for _, kind in features) and vectors is not None:
        blocks.append(np.asarray(vectors, dtype=np.float64)[live])
    tabular = [(name, kind) for name, kind in features if kind in ("number", "category")]
    if tabular:
        columns = {}
        for name, kind in tabular:
            if name not in frame.columns:
                continue
            column = frame[name]
            if kind == "number":
                columns[name] = pd.to_numeric(column).fillna(fill.get(name) or 0.0).to_numpy(dtype=np.float64)
            else:
                columns[name] = column.where(column.notna(), fill.get(name) or "").astype(str).to_numpy()
        present = [(name, kind) for name, kind in tabular if name in columns]
        if present:
            blocks.append(Preprocessor.fit(present, columns, linear=True).transform(columns).astype(np.float64))
    if not blocks:
        raise ValueError("the label step needs at least one feature to judge labels on")
    return np.hstack(blocks)
