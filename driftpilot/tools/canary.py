"""Release evidence: the candidate and the champion judged on the same live events.

Every event since the release started was answered by both versions: the one serving it, and
the other in shadow. Pairing the two on one set of events removes the cohort-to-cohort variance
that comparing the canary cohort with the control cohort would carry, so fewer labels decide,
and it lets a shadow gather evidence before the candidate serves anyone.

Two kinds of evidence:

- **label-free guards** (:func:`label_free_guards`), which can stop a release before any label
  arrives: disagreement with the champion, the drop of a confidence-based accuracy estimate,
  latency, errors;
- **the sequential test** on labelled events (:func:`release_evidence`), overall and per slice,
  always valid however often it is looked at (:mod:`driftpilot.tools.sequential`).

Both rest on the two versions' answers, paired by event (:func:`paired_answers`, kept from one
look to the next with :func:`unanswered`, :func:`append_answers` and :func:`answers_on`), and
on their prediction times on the same rows (:func:`latencies`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol

import numpy as np
import pandas as pd

from driftpilot.tools.sequential import PairedVerdict, joint_test

__all__ = [
    "ANSWER_COLUMNS",
    "LATENCY_REPEATS",
    "LATENCY_ROWS",
    "GuardCheck",
    "Predictor",
    "ReleaseEvidence",
    "answers",
    "answers_on",
    "append_answers",
    "label_free_guards",
    "latencies",
    "paired_answers",
    "release_evidence",
    "unanswered",
]


class Predictor(Protocol):
    """What a release needs of a version (every family in :mod:`driftpilot.models` has it)."""

    @property
    def classes(self) -> Sequence[str]: ...

    def predict_proba(self, columns: Any) -> np.ndarray: ...


#: The columns of a paired-answers frame besides its slice columns.
ANSWER_COLUMNS = ("candidate", "champion", "candidate_confidence", "champion_confidence")


def answers(model: Predictor, rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """A version's answers and top-class probabilities on ``rows``.

    The answer is None (and its probability 0) where the version failed to answer: on a row
    whose probabilities are not all finite, and on every row if it raised. The guards count
    these as errors, so a failing candidate is stopped rather than crashing the release.

    Examples
    --------
    >>> class Fixed:
    ...     classes = ["no", "yes"]
    ...     def predict_proba(self, rows):
    ...         return np.array([[0.25, 0.75], [np.nan, 0.5]])
    >>> answers(Fixed(), pd.DataFrame({"x": [1.0, 2.0]}))
    (array(['yes', None], dtype=object), array([0.75, 0.  ]))
    """
    if rows.empty:
        return np.array([], dtype=object), np.array([])
    try:
        probabilities = np.asarray(model.predict_proba(rows), dtype=float)
    except Exception:  # noqa: BLE001 - any failure of a candidate is evidence against it, not a crash
        return np.full(len(rows), None, dtype=object), np.zeros(len(rows))
    ok = np.isfinite(probabilities).all(axis=1)
    top = np.asarray(model.classes, dtype=object)[np.nan_to_num(probabilities).argmax(axis=1)]
    top[~ok] = None
    return top, np.where(ok, probabilities.max(axis=1, initial=0.0), 0.0)


def paired_answers(
    candidate: Predictor, champion: Predictor, rows: pd.DataFrame, slice_columns: Sequence[str]
) -> pd.DataFrame:
    """Both versions' answers on the same events, one row per event indexed by its ``id``.

    The columns are :data:`ANSWER_COLUMNS` (answers as in :func:`answers`), then those of
    ``slice_columns`` that ``rows`` has, as strings (None where missing), so that the evidence
    can be cut into slices without reading the events again.

    Examples
    --------
    >>> class Constant:
    ...     classes = ["no", "yes"]
    ...     def __init__(self, p):
    ...         self.p = p
    ...     def predict_proba(self, rows):
    ...         return np.tile(self.p, (len(rows), 1))
    >>> rows = pd.DataFrame({"id": [7, 8], "x": [0.5, 0.1], "colour": ["red", None]})
    >>> paired_answers(Constant([0.2, 0.8]), Constant([0.9, 0.1]), rows, ["colour", "size"])
    ... # doctest: +NORMALIZE_WHITESPACE
       candidate champion  candidate_confidence  champion_confidence colour
    id
    7        yes       no                   0.8                  0.9    red
    8        yes       no                   0.8                  0.9   None
    """
    cand_answers, cand_confidence = answers(candidate, rows)
    champ_answers, champ_confidence = answers(champion, rows)
    index = pd.Index(rows["id"].astype(int), name="id")

    def strings(values: np.ndarray) -> pd.Series:
        # Stated as objects: pandas would infer its string dtype and turn each None into NaN.
        return pd.Series(values, index=index, dtype=object)

    return pd.DataFrame(
        {
            "candidate": strings(cand_answers),
            "champion": strings(champ_answers),
            "candidate_confidence": pd.Series(cand_confidence, index=index),
            "champion_confidence": pd.Series(champ_confidence, index=index),
            **{
                c: strings(np.where(rows[c].notna().to_numpy(), rows[c].astype(str).to_numpy(), None))
                for c in slice_columns
                if c in rows
            },
        }
    )


def unanswered(known: pd.DataFrame | None, ids: Sequence[int] | np.ndarray) -> list[int]:
    """The ids, in their order, that ``known`` (paired answers so far, or None) has no row for.

    >>> known = pd.DataFrame({"candidate": ["a"]}, index=pd.Index([3], name="id"))
    >>> unanswered(known, np.array([3, 4, 5])), unanswered(None, [1])
    ([4, 5], [1])
    """
    index = known.index if known is not None else pd.Index([])
    return [int(i) for i in ids if i not in index]


def append_answers(known: pd.DataFrame | None, fresh: pd.DataFrame) -> pd.DataFrame:
    """``known`` paired answers (None: none yet) followed by ``fresh`` ones, on other events.

    Raises
    ------
    ValueError
        If ``fresh`` answers an event ``known`` already holds: each event is answered once.

    >>> a = pd.DataFrame({"candidate": ["x"]}, index=pd.Index([1], name="id"))
    >>> b = pd.DataFrame({"candidate": ["y"]}, index=pd.Index([2], name="id"))
    >>> append_answers(append_answers(None, a), b)["candidate"].tolist()
    ['x', 'y']
    """
    if known is None:
        return fresh
    twice = known.index.intersection(fresh.index)
    if len(twice):
        raise ValueError(f"events {list(twice[:10])} are answered already; pass only unanswered() ones")
    return pd.concat([known, fresh])


def answers_on(known: pd.DataFrame | None, ids: Sequence[int] | np.ndarray) -> pd.DataFrame:
    """The paired answers on ``ids``, in their order (an empty frame when there are none yet).

    >>> known = pd.DataFrame({"candidate": ["x", "y"]}, index=pd.Index([1, 2], name="id"))
    >>> answers_on(known, [2, 1])["candidate"].tolist(), len(answers_on(None, []))
    (['y', 'x'], 0)
    """
    if known is None:
        known = pd.DataFrame(columns=list(ANSWER_COLUMNS))
    return known.reindex(pd.Index(ids, name="id"))


#: Rows and repeats of the latency measurement: the best of a few runs on the same rows, taken
#: in turns, so that a busy machine slows both versions alike and a pause hits neither's best.
LATENCY_ROWS, LATENCY_REPEATS = 256, 5


def latencies(candidate: Predictor, champion: Predictor, rows: pd.DataFrame) -> tuple[float, float]:
    """Seconds each version takes to answer the first :data:`LATENCY_ROWS` of ``rows``.

    Each is the best of :data:`LATENCY_REPEATS` runs. ``(0.0, 0.0)``, which no latency guard
    judges, when there are no rows or either version raises (its failure is counted as errors
    by :func:`answers` instead).
    """
    head = rows.iloc[:LATENCY_ROWS]
    if head.empty:
        return 0.0, 0.0
    best = [float("inf"), float("inf")]
    for _ in range(LATENCY_REPEATS):
        for i, model in enumerate((candidate, champion)):
            start = time.perf_counter()
            try:
                model.predict_proba(head)
            except Exception:  # noqa: BLE001 - counted as errors by answers()
                return 0.0, 0.0
            best[i] = min(best[i], time.perf_counter() - start)
    return best[0], best[1]


@dataclass(frozen=True)
class GuardCheck:
    """One guard: the value observed, its limit, whether it held, and a sentence saying so."""

    name: str
    observed: float | None
    limit: float
    passed: bool
    reason: str


def _ratio_guard(name: str, what: str, observed: float, limit: float) -> GuardCheck:
    passed = observed <= limit
    return GuardCheck(
        name=name,
        observed=round(observed, 4),
        limit=limit,
        passed=passed,
        reason=f"{what}: {observed:.3g}, " + ("within" if passed else "over") + f" the limit of {limit:g}",
    )


def label_free_guards(
    *,
    candidate: np.ndarray,
    champion: np.ndarray,
    candidate_confidence: np.ndarray,
    champion_confidence: np.ndarray,
    candidate_seconds: float,
    champion_seconds: float,
    errors: int,
    min_events: int,
    max_disagreement: float,
    max_estimated_drop: float,
    max_latency_ratio: float,
    max_error_rate: float,
) -> list[GuardCheck]:
    """The guards on ``n`` events both versions answered (``errors`` of them the candidate
    failed to answer: an exception or non-finite output, counted but not in the arrays).

    Fewer than ``min_events`` events: no guard judges yet (an empty list), except errors, which
    stop a release on the first one beyond ``max_error_rate``.

    The accuracy estimate is the mean of the top class probability: what CBPE estimates for
    accuracy when the probabilities are calibrated (the Trainer's evaluation reports their ECE).

    >>> a = np.array(["x", "y"] * 150)
    >>> conf = np.full(300, 0.9)
    >>> [g.name for g in label_free_guards(candidate=a, champion=a, candidate_confidence=conf,
    ...     champion_confidence=conf, candidate_seconds=0.01, champion_seconds=0.01, errors=0,
    ...     min_events=200, max_disagreement=0.5, max_estimated_drop=0.1, max_latency_ratio=5.0,
    ...     max_error_rate=0.0) if g.passed]
    ['errors', 'disagreement', 'estimated_accuracy', 'latency']
    """
    n = len(candidate) + errors
    checks: list[GuardCheck] = []
    if n == 0:
        return checks
    error_rate = errors / n
    error_check = _ratio_guard("errors", "share of events the candidate failed to answer", error_rate, max_error_rate)
    if not error_check.passed or n < min_events:
        return [error_check] if not error_check.passed else []
    checks.append(error_check)
    answered = len(candidate)
    disagreement = float(np.mean(np.asarray(candidate) != np.asarray(champion))) if answered else 0.0
    checks.append(_ratio_guard("disagreement", "share of events answered differently", disagreement, max_disagreement))
    if answered:
        drop = float(np.mean(champion_confidence) - np.mean(candidate_confidence))
        checks.append(
            _ratio_guard(
                "estimated_accuracy",
                "drop of the confidence-based accuracy estimate below the champion's",
                drop,
                max_estimated_drop,
            )
        )
    if champion_seconds > 0:
        checks.append(
            _ratio_guard(
                "latency",
                "prediction time against the champion's on the same rows",
                candidate_seconds / champion_seconds,
                max_latency_ratio,
            )
        )
    return checks


Verdict = Literal["better", "worse", "worse_on_slice", "guard_failed", "undecided"]
#: Guards that estimate accuracy without labels: labelled evidence of the candidate being better overrides them.
ACCURACY_STAND_INS = frozenset({"disagreement", "estimated_accuracy"})


@dataclass(frozen=True)
class ReleaseEvidence:
    """Everything a release is judged on at one look."""

    overall: PairedVerdict
    slices: dict[str, PairedVerdict]
    guards: list[GuardCheck] = field(default_factory=list)
    #: The test on the prequential pairs alone (labelled events newer than the candidate's
    #: training data and older than its release), when there were any.
    prequential: PairedVerdict | None = None

    @property
    def shown_before(self) -> bool:
        """Whether the candidate was shown better before it answered any live event."""
        return self.prequential is not None and self.prequential.verdict == "better"

    @property
    def worse_slices(self) -> list[str]:
        return [name for name, test in self.slices.items() if test.verdict == "worse"]

    @property
    def failed_guards(self) -> list[GuardCheck]:
        """The guards that failed. Two of them stand in for accuracy while labels are missing
        (:data:`ACCURACY_STAND_INS`): once the labelled pairs show the candidate better, they yield
        to that measurement. (A champion right 45 % of the time after a concept change disagrees
        with any good successor on more than half the events, and is confidently wrong.) Only a
        verdict counts, not a lead on the labelled pairs: labels can lie (a poisoned feedback
        source), and the stand-ins are what stops a candidate that learnt the lie."""
        if self.held_guards:
            return []  # held, not failed
        measured = self.overall.verdict == "better"
        return [g for g in self.guards if not g.passed and not (measured and g.name in ACCURACY_STAND_INS)]

    @property
    def leads(self) -> bool:
        """Whether the labelled pairs put the candidate ahead so far, without a verdict: right
        where the champion was wrong more often than the reverse, and no lower in balanced
        accuracy."""
        o = self.overall
        if o.verdict != "undecided" or o.candidate_score is None or o.champion_score is None:
            return False
        return o.wins > o.losses and o.candidate_score >= o.champion_score

    @property
    def held_guards(self) -> list[GuardCheck]:
        """Stand-in guards that failed while the labelled pairs put the candidate ahead
        (:attr:`leads`): the two disagree, so neither ends the release; it holds where it is
        until the labels decide (better: the stand-ins yield; worse: it is rolled back) or its
        time runs out. After a concept change the champion is confidently wrong and a good
        successor less sure of a harder world: the confidence-based estimate then calls the
        better model worse (agrawal: candidates 8 points ahead on 400 held-out labels were rolled
        back on it at their first look, five times running). Holding costs nothing served (a held
        shadow serves no one) and opens nothing a poisoned label source could not already open:
        the stand-ins still yield only to a verdict."""
        if not self.leads:  # (a lead is undecided: a verdict of better lets the stand-ins yield)
            return []
        failed = [g for g in self.guards if not g.passed]
        return failed if failed and all(g.name in ACCURACY_STAND_INS for g in failed) else []

    @property
    def verdict(self) -> Verdict:
        """``guard_failed``, ``worse`` or ``worse_on_slice`` stop the release; ``better`` lets it
        be promoted once its steps have their evidence; ``undecided`` waits."""
        if self.failed_guards:
            return "guard_failed"
        if self.overall.verdict == "worse":
            return "worse"
        if self.worse_slices:
            return "worse_on_slice"
        return "better" if self.overall.verdict == "better" else "undecided"

    def as_dict(self) -> dict[str, object]:
        return {
            "verdict": self.verdict,
            "overall": self.overall.as_dict(),
            "worse_slices": {name: self.slices[name].as_dict() for name in self.worse_slices},
            "slices_tested": len(self.slices),
            "guards": [asdict(g) for g in self.guards],
            "prequential": self.prequential.as_dict() if self.prequential is not None else None,
        }


def release_evidence(
    truth: np.ndarray,
    candidate: np.ndarray,
    champion: np.ndarray,
    *,
    slices: Mapping[str, np.ndarray] | None = None,
    guards: list[GuardCheck] | None = None,
    alpha: float = 0.05,
    max_slices: int = 20,
    prequential: int = 0,
) -> ReleaseEvidence:
    """The sequential test on labelled pairs, overall and on each slice (boolean masks over the
    pairs), with the guards' results.

    The first ``prequential`` pairs are prequential evidence: events labelled before the release,
    newer than anything the candidate learnt from. They open the pairs the release is judged on
    (the test is valid however much it saw at its first look), and are also tested alone
    (:attr:`ReleaseEvidence.prequential`).

    ``alpha`` bounds the chance of any verdict between equally good versions: half goes to the
    overall test, half is shared equally by ``max_slices`` slice tests (Bonferroni). When there
    are more slices, the largest ``max_slices`` are tested.

    >>> t = np.array(["a"] * 80)
    >>> wrong = np.array(["b"] * 40 + ["a"] * 40)
    >>> release_evidence(t, wrong, t).verdict
    'worse'
    >>> release_evidence(t, t, t).verdict
    'undecided'
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha}")
    slices = dict(slices or {})
    overall_alpha = alpha / 2 if max_slices and slices else alpha
    overall = joint_test(truth, candidate, champion, alpha=overall_alpha)
    tested: dict[str, PairedVerdict] = {}
    if max_slices and slices:
        largest = sorted(slices, key=lambda name: (-int(np.sum(slices[name])), name))[:max_slices]
        for name in largest:
            mask = np.asarray(slices[name], dtype=bool)
            if len(mask) != len(truth):
                raise ValueError(f"slice {name!r} has {len(mask)} entries for {len(truth)} labelled events")
            tested[name] = joint_test(truth[mask], candidate[mask], champion[mask], alpha=alpha / 2 / max_slices)
    before = None
    if prequential:
        before = joint_test(truth[:prequential], candidate[:prequential], champion[:prequential], alpha=overall_alpha)
    return ReleaseEvidence(overall=overall, slices=tested, guards=list(guards or []), prequential=before)
