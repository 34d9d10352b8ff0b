"""Signal fusion: the evidence of one health check, fused into at most one finding.

A check tests a model's signals on a window of its events — balanced accuracy on the labelled
ones, the labelled error stream (:mod:`driftpilot.tools.detectors`), per-feature and per-text
input drift (and, if asked, multivariate drift), the drift of the predictions and of the class
priors, accuracy estimated from the served probabilities (CBPE) — and reads the alarms that
fire. :func:`check_signals` gathers that evidence from frames it is handed; :func:`fuse` names
the kinds of change it shows and their severity; :func:`outcome_of` tells a new finding from the
repeat of one already raised (hysteresis); :func:`rationale` says it in a sentence.

Every function is deterministic and reads nothing but its arguments: the caller reads memory
and the policy, and passes the frames and thresholds in.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any, Literal, NotRequired, TypedDict

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike

from driftpilot.models.intent_mlp import embedding_blocks
from driftpilot.tools.detectors import error_rate_change
from driftpilot.tools.drift import (
    DriftReport,
    FeatureKind,
    counter_features,
    feature_drift,
    prediction_drift,
    prior_drift,
)
from driftpilot.tools.metrics import balanced_accuracy
from driftpilot.tools.multivariate import multivariate_drift
from driftpilot.tools.performance import PerformanceEstimate, estimate_performance
from driftpilot.tools.text_drift import text_drift

__all__ = [
    "AlarmSeen",
    "CheckFrames",
    "CheckOutcome",
    "CheckEvidence",
    "Finding",
    "FindingKind",
    "Severity",
    "Window",
    "check_signals",
    "finding_kinds",
    "fuse",
    "input_moved",
    "is_repeat",
    "loss_tolerance",
    "outcome_of",
    "rationale",
    "severity_of",
    "with_estimate",
]

#: The kinds of change a finding names, in the order a finding lists them.
FindingKind = Literal[
    "performance_loss",
    "error_rise",
    "data_drift",
    "prediction_drift",
    "prior_drift",
    "estimated_loss",
    "alarm",
]
Severity = Literal["low", "medium", "high"]
#: What a check logs: a new finding, the repeat of one raised within the cool-down, health, or
#: blindness (no change seen, but too little evidence to have seen one: never called healthy).
CheckOutcome = Literal["finding", "repeat", "healthy", "blind"]

#: Severities in rising order, for "no more severe than".
_SEVERITY: dict[Severity, int] = {"low": 0, "medium": 1, "high": 2}
#: Kinds that say the model is losing (or its inputs are cut off): high severity.
LOSING: frozenset[FindingKind] = frozenset({"performance_loss", "estimated_loss", "alarm"})
#: Kinds that say the inputs or the answers moved: CBPE is worth its fit only after one of them.
MOVED: frozenset[FindingKind] = frozenset({"data_drift", "prediction_drift", "prior_drift"})

#: Sentence vectors per side in a text-drift test (the permutation test is quadratic in them).
TEXT_SAMPLE = 300
#: Most served events on each side of a CBPE estimate.
CBPE_SAMPLE = 2000
#: Fewest served events on each side for the prediction, prior and estimate signals.
MIN_ROWS = 100


class Window(TypedDict):
    """The checked window, ``start <= time < end``, in ISO 8601."""

    start: str
    end: str


class AlarmSeen(TypedDict):
    """An alarm firing during the check and not yet diagnosed (times in ISO 8601)."""

    key: str
    name: str
    groups: list[str]
    starts_at: str
    ends_at: str | None


class CheckEvidence(TypedDict):
    """What one check saw, signal by signal, as plain data (it is logged and checkpointed).

    ``error_rate`` is an :class:`~driftpilot.tools.detectors.ErrorRateChange`; ``drift`` the
    :class:`~driftpilot.tools.drift.FeatureDrift` of each drifted feature; ``text_drift`` a
    :class:`~driftpilot.tools.text_drift.TextDrift` per text; ``multivariate``,
    ``prediction_drift``, ``prior_drift`` and ``estimated`` the reports of their tools, present
    only when tested. ``untested`` says, per signal, why its data defeated it; ``missing`` what the
    check lacked to judge at all (``labels``: too few to judge accuracy; ``rows``: too few, or no
    reference, to test input drift).
    """

    champion: int
    window: Window
    alpha: float
    labelled: int
    balanced_accuracy: float | None
    reference_balanced_accuracy: float | None
    #: Labelled events the reference was measured on (None: not known, taken as exact).
    reference_n: NotRequired[int | None]
    error_rate: dict[str, Any]
    drifted_features: list[str]
    drift: list[dict[str, Any]]
    drift_enough_data: bool
    alarms: list[AlarmSeen]
    text_drift: NotRequired[dict[str, dict[str, Any]]]
    multivariate: NotRequired[dict[str, Any]]
    prediction_drift: NotRequired[dict[str, Any]]
    prior_drift: NotRequired[dict[str, Any]]
    estimated: NotRequired[dict[str, Any]]
    untested: NotRequired[dict[str, str]]
    missing: NotRequired[dict[str, str]]
    #: The release whose labelled events judged accuracy (a champion just promoted, whose own
    #: served labels are still on their way).
    judged_in_release: NotRequired[int]
    #: ... and how many labelled events the champion served itself, too few to judge it on.
    served_labelled: NotRequired[int]


class Finding(CheckEvidence):
    """A check's evidence with the kinds of change it shows and their severity.

    With no kinds (severity None) the model is healthy; otherwise it is a finding, which the
    Diagnostician reads and the decision log keeps.
    """

    kinds: list[FindingKind]
    severity: Severity | None


@dataclass(frozen=True)
class CheckFrames:
    """The frames one check reads from memory (the events' ``time``, ``group``, ``served_version``,
    ``prediction``, ``label`` and ``id`` columns, and the features where the check needs them).

    ``labelled`` holds the window's labelled events, ``current`` its most recent events with their
    features, ``reference`` a sample of the champion's training snapshot (None when it has none),
    ``answered_before`` what the champion served before the window and ``served_before`` those of
    them that were labelled.
    """

    champion: int
    labelled: pd.DataFrame
    current: pd.DataFrame
    reference: pd.DataFrame | None
    answered_before: pd.DataFrame
    served_before: pd.DataFrame

    @property
    def judged(self) -> pd.DataFrame:
        """The labelled events the champion served: its accuracy is judged on them."""
        return self.labelled[self.labelled["served_version"] == self.champion]

    @property
    def served_now(self) -> pd.DataFrame:
        """The window's events the champion served."""
        return self.current[self.current["served_version"] == self.champion]


def check_signals(
    frames: CheckFrames,
    *,
    features: Sequence[tuple[str, FeatureKind]],
    window: Window,
    alpha: float,
    reference_accuracy: float | None,
    alarms: list[AlarmSeen],
    min_labelled: int,
    reference_n: int | None = None,
    psi_threshold: float,
    multivariate: bool = False,
    seed: int = 0,
) -> CheckEvidence:
    """Test every signal but the estimate without labels (see :func:`with_estimate`).

    Each test runs at level ``alpha`` (the check's share for its signal family); labelled
    accuracy is judged on ``min_labelled`` labels at least. A signal whose data defeats its test
    (a field all missing, a fit that fails) is listed in ``untested`` and the others go on.
    """
    judged = frames.judged
    untested: dict[str, str] = {}
    accuracy = None
    if len(judged) >= min_labelled:
        accuracy = balanced_accuracy(judged["label"].to_numpy(), judged["prediction"].to_numpy())
    change = error_rate_change(
        (judged["prediction"] != judged["label"]).to_numpy(dtype=int),
        false_alarms_per_10k=alpha * 10_000 / max(len(judged), 1),
    )
    drift, texts, multi = _input_drift(
        frames,
        features,
        alpha=alpha,
        psi_threshold=psi_threshold,
        multivariate=multivariate,
        seed=seed,
        untested=untested,
    )
    evidence: CheckEvidence = {
        "champion": frames.champion,
        "window": window,
        "alpha": alpha,
        "labelled": len(judged),
        "balanced_accuracy": accuracy,
        "reference_balanced_accuracy": reference_accuracy,
        "reference_n": reference_n,
        "error_rate": asdict(change),
        "drifted_features": (drift.drifted if drift else []) + [t for t, r in texts.items() if r["drifted"]],
        "drift": [f.model_dump() for f in drift.features if f.drifted] if drift else [],
        "drift_enough_data": drift.enough_data if drift else False,
        "alarms": alarms,
    }
    if texts:
        evidence["text_drift"] = texts
    if multi is not None:
        evidence["multivariate"] = multi
    predictions, priors = _served_drift(frames, alpha=alpha, psi_threshold=psi_threshold, untested=untested)
    if predictions is not None:
        evidence["prediction_drift"] = predictions
    if priors is not None:
        evidence["prior_drift"] = priors
    if untested:
        evidence["untested"] = untested
    missing = _missing(frames, evidence, min_labelled)
    if missing:
        evidence["missing"] = missing
    return evidence


def _missing(frames: CheckFrames, evidence: CheckEvidence, min_labelled: int) -> dict[str, str]:
    """What the check lacked to judge: labels for accuracy, rows (or a reference) for input drift."""
    missing = {}
    if evidence["balanced_accuracy"] is None:
        missing["labels"] = f"{evidence['labelled']} labelled events served by the champion, {min_labelled} needed"
    if frames.reference is None:
        missing["rows"] = "no training snapshot to compare the inputs with"
    elif not evidence["drift_enough_data"]:
        missing["rows"] = f"{len(frames.current)} recent events: too few to test input drift"
    return missing


@contextmanager
def _tested(untested: dict[str, str], signal: str) -> Iterator[None]:
    """Run one optional signal; if its data defeats it (a field all missing, probabilities that do
    not add up, a fit that fails), say so and go on with the other signals."""
    try:
        yield
    except (ValueError, RuntimeError) as error:
        untested[signal] = str(error)


def _input_drift(
    frames: CheckFrames,
    features: Sequence[tuple[str, FeatureKind]],
    *,
    alpha: float,
    psi_threshold: float,
    multivariate: bool,
    seed: int,
    untested: dict[str, str],
) -> tuple[DriftReport | None, dict[str, dict[str, Any]], dict[str, Any] | None]:
    """Per-feature drift report, per-text drift and multivariate drift of the window's inputs."""
    reference, current = frames.reference, frames.current
    if reference is None:
        return None, {}, None
    blocks = embedding_blocks([name for name, _ in features])
    embedded = {name for columns in blocks.values() for name in columns}
    tabular = [(name, kind) for name, kind in features if name not in embedded]
    drift = feature_drift(
        reference,
        current,
        tabular,
        p_threshold=alpha,
        psi_threshold=psi_threshold,
        counters=counter_features(reference, tabular),
    )
    texts: dict[str, dict[str, Any]] = {}
    for text, columns in blocks.items():
        # A text is one signal, tested whole on its sentence vectors (MMD), not as 384
        # coordinates that would each dilute the Bonferroni correction of the rest.
        with _tested(untested, f"text_drift:{text}"):
            texts[text] = text_drift(
                reference[columns].to_numpy(dtype=float),
                current[columns].to_numpy(dtype=float),
                p_threshold=alpha,
                n_permutations=int(np.ceil(2 / alpha)),
                max_samples=TEXT_SAMPLE,
                seed=seed,
            ).model_dump()
    multi = None
    if multivariate and drift.enough_data:
        with _tested(untested, "multivariate"):
            multi = multivariate_drift(reference, current, tabular).model_dump()
    return drift, texts, multi


def _served_drift(
    frames: CheckFrames, *, alpha: float, psi_threshold: float, untested: dict[str, str]
) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
    """Prediction drift and prior drift: the champion's answers against what it answered before,
    and the labels against the labels it met before, one categorical test each (None when a side
    holds fewer than ``MIN_ROWS`` events, or the test failed)."""
    results: dict[str, dict[str, Any]] = {}
    for signal, test, before, now in (
        ("prediction_drift", prediction_drift, frames.answered_before["prediction"], frames.served_now["prediction"]),
        ("prior_drift", prior_drift, frames.served_before["label"], frames.labelled["label"]),
    ):
        if len(before) < MIN_ROWS or len(now) < MIN_ROWS:
            continue
        with _tested(untested, signal):
            result = test(before.to_numpy(), now.to_numpy(), p_threshold=alpha, psi_threshold=psi_threshold)
            results[signal] = result.model_dump()
    return results.get("prediction_drift"), results.get("prior_drift")


def _estimate_accuracy(
    reference_probabilities: np.ndarray,
    reference_labels: ArrayLike,
    current_probabilities: np.ndarray,
    *,
    classes: list[str],
) -> PerformanceEstimate | None:
    """CBPE's estimate of accuracy on the window from the probabilities served (one row an event,
    NaN where none were stored), or None when too few rows of either side can be used.

    Rows naming none of ``classes`` count as missing; reference rows whose label is not one of
    ``classes`` are left out; the most recent ``CBPE_SAMPLE`` rows of each side are used.
    """
    reference = np.array(reference_probabilities, dtype=float)
    current = np.array(current_probabilities, dtype=float)
    # A stored dict naming none of the schema's classes is as good as none.
    reference[reference.sum(axis=1) <= 0] = np.nan
    current[current.sum(axis=1) <= 0] = np.nan
    known_ref, known_now = ~np.isnan(reference).any(axis=1), ~np.isnan(current).any(axis=1)
    labels = np.asarray(reference_labels)
    keep = known_ref & np.isin(labels, classes)
    if keep.sum() < MIN_ROWS or known_now.sum() < MIN_ROWS or np.unique(labels[keep]).size < 2:
        return None
    # The most recent rows of each side: CBPE's fit grows with the reference (0.17 s at 2,000
    # rows, 0.28 s at 5,000 on six classes) and its estimate gains little beyond.
    reference, current = reference[keep][-CBPE_SAMPLE:], current[known_now][-CBPE_SAMPLE:]
    labels = labels[keep][-CBPE_SAMPLE:]
    # Served probabilities are rounded when stored: renormalise so each row sums to one.
    reference /= reference.sum(axis=1, keepdims=True)
    current /= current.sum(axis=1, keepdims=True)
    return estimate_performance(reference, labels, current, classes=classes, min_rows=MIN_ROWS)


def with_estimate(
    evidence: CheckEvidence,
    reference_probabilities: np.ndarray,
    reference_labels: ArrayLike,
    current_probabilities: np.ndarray,
    *,
    classes: list[str],
) -> CheckEvidence:
    """The evidence with CBPE's estimate (see :func:`_estimate_accuracy`) when one could be made,
    or with the reason it could not in ``untested``; ``evidence`` itself is left as it was."""
    added = evidence.copy()
    try:
        estimate = _estimate_accuracy(reference_probabilities, reference_labels, current_probabilities, classes=classes)
    except (ValueError, RuntimeError) as error:
        added["untested"] = {**evidence.get("untested", {}), "estimated": str(error)}
        return added
    if estimate is not None and estimate.enough_data and estimate.estimated is not None:
        added["estimated"] = estimate.model_dump()
    return added


def finding_kinds(evidence: CheckEvidence, *, max_accuracy_drop: float) -> list[FindingKind]:
    """The kinds of change the evidence shows, in :data:`FindingKind`'s order.

    An accuracy (measured, or estimated without labels) counts as lost when it falls more than
    ``max_accuracy_drop`` below its reference. That tolerance is the effect floor: a significance
    test on balanced accuracy was tried and missed real losses, as its sampling error is
    dominated by the rare classes (a handful of labels each in a 12-hour window). What widens it
    is the plain sampling noise of two small samples (:func:`loss_tolerance`): a reference measured
    on a few hundred held-out rows against a window of a few hundred labels differs by several
    points on a stream that never changed.
    """
    kinds: list[FindingKind] = []
    accuracy, reference = evidence["balanced_accuracy"], evidence["reference_balanced_accuracy"]
    if accuracy is not None and reference is not None:
        tolerance = loss_tolerance(
            max_accuracy_drop, reference, evidence.get("reference_n"), accuracy, evidence["labelled"]
        )
        if reference - accuracy > tolerance:
            kinds.append("performance_loss")
    if evidence["error_rate"]["changed"]:
        kinds.append("error_rise")
    if evidence["drifted_features"] or evidence.get("multivariate", {}).get("drifted"):
        kinds.append("data_drift")
    if evidence.get("prediction_drift", {}).get("drifted"):
        kinds.append("prediction_drift")
    if evidence.get("prior_drift", {}).get("drifted"):
        kinds.append("prior_drift")
    estimated = evidence.get("estimated")
    if estimated is not None:
        baseline = estimated["reference_estimated"]
        if baseline is not None and baseline - estimated["estimated"] > max_accuracy_drop:
            kinds.append("estimated_loss")
    if evidence["alarms"]:
        kinds.append("alarm")
    return kinds


#: Standard errors the difference of two measured accuracies must exceed to count as a loss.
NOISE_Z = 2.0


def loss_tolerance(floor: float, reference: float, reference_n: int | None, accuracy: float, n: int) -> float:
    """The drop below ``reference`` that counts as a loss: ``floor``, or twice the standard error
    of the difference of the two accuracies (as proportions) when their samples are that small.

    >>> loss_tolerance(0.03, 0.93, None, 0.9, 5000)  # a busy window, a reference taken as exact
    0.03
    >>> round(loss_tolerance(0.03, 0.9, 400, 0.9, 200), 3)  # 400 held out, 200 labels judged
    0.052
    """
    variance = accuracy * (1 - accuracy) / max(n, 1)
    if reference_n:
        variance += reference * (1 - reference) / reference_n
    return max(floor, NOISE_Z * variance**0.5)


def severity_of(kinds: Sequence[FindingKind], accuracy: float | None) -> Severity | None:
    """High: the model is losing (or an outage); medium: a change the labels cannot yet judge, or the
    error stream rising; low: inputs or outputs moved while labelled accuracy held.

    >>> severity_of(["data_drift", "alarm"], 0.9)
    'high'
    >>> severity_of(["data_drift"], None), severity_of(["data_drift"], 0.9)
    ('medium', 'low')
    >>> severity_of([], None) is None
    True
    """
    if not kinds:
        return None
    if LOSING & set(kinds):
        return "high"
    if "error_rise" in kinds or accuracy is None:
        return "medium"
    return "low"


def fuse(evidence: CheckEvidence, *, max_accuracy_drop: float) -> Finding:
    """The evidence with the kinds of change it shows and their severity."""
    kinds = finding_kinds(evidence, max_accuracy_drop=max_accuracy_drop)
    return {"kinds": kinds, **evidence, "severity": severity_of(kinds, evidence["balanced_accuracy"])}


def input_moved(finding: Finding) -> bool:
    """Whether the inputs, the answers or the class priors moved: only then is an estimate without
    labels worth its fit (on unchanged data CBPE has nothing to reveal)."""
    return bool(MOVED & set(finding["kinds"]))


def is_repeat(previous: Mapping[str, Any], finding: Finding) -> bool:
    """Whether ``finding`` repeats ``previous`` (the evidence of the last finding raised within the
    cool-down): the same champion, no new kind, no higher severity, and not high.

    >>> before = {"champion": 1, "kinds": ["data_drift", "prior_drift"], "severity": "low"}
    >>> is_repeat(before, {"champion": 1, "kinds": ["data_drift"], "severity": "low"})
    True
    >>> is_repeat(before, {"champion": 2, "kinds": ["data_drift"], "severity": "low"})
    False
    """
    severity = finding["severity"]
    if severity == "high" or previous.get("champion") != finding["champion"]:
        # A model that is losing is reported at every check until it is mended: the loop's own
        # budgets (retrains and labels a day) pace the response, and a retrain the Curator had to
        # wait labels for must be tried again. Alarms are deduplicated by their key. A new
        # champion starts afresh.
        return False
    was = previous.get("severity")
    return (
        set(finding["kinds"]) <= set(previous.get("kinds", []))
        and was is not None
        and _SEVERITY[severity or "low"] <= _SEVERITY[was]
    )


def outcome_of(finding: Finding, previous: Mapping[str, Any] | None) -> CheckOutcome:
    """``healthy`` without kinds (``blind`` when evidence was missing), ``repeat`` when ``finding``
    repeats ``previous`` (see :func:`is_repeat`), a new ``finding`` otherwise."""
    if not finding["kinds"]:
        return "blind" if finding.get("missing") else "healthy"
    if previous is not None and is_repeat(previous, finding):
        return "repeat"  # hysteresis: the drift already raised its finding
    return "finding"


def rationale(outcome: CheckOutcome, finding: Finding, *, cooldown_hours: float) -> str:
    """The decision's rationale: the outcome, then what the evidence showed (see :func:`_describe`)."""
    kinds = ", ".join(finding["kinds"])
    head = {
        "finding": f"Finding ({finding['severity']}): {kinds}",
        "repeat": f"Same drift as the finding of the last {cooldown_hours:g} h ({kinds}): not raised again",
        "healthy": "Healthy",
        "blind": "Blind, nothing judged healthy ("
        + "; ".join(f"{what}: {why}" for what, why in finding.get("missing", {}).items())
        + ")",
    }[outcome]
    return head + _describe(finding)


def _release_part(evidence: CheckEvidence) -> str:
    release = evidence.get("judged_in_release")
    return f"of release {release}, which promoted it " if release is not None else ""


def _describe(evidence: CheckEvidence) -> str:
    """What the evidence showed, signal by signal, as the tail of a sentence."""
    parts = []
    if evidence["balanced_accuracy"] is not None:
        reference = evidence["reference_balanced_accuracy"]
        parts.append(
            f"balanced accuracy {evidence['balanced_accuracy']:.3f} on {evidence['labelled']} labelled events "
            + _release_part(evidence)
            + (f"(reference {reference:.3f})" if reference is not None else "(no reference to judge it against)")
        )
    else:
        parts.append(f"only {evidence['labelled']} labelled events: accuracy not judged")
    rate = evidence["error_rate"]
    if rate["changed"]:
        parts.append(f"error rate rose from {rate['rate_before']:.1%} to {rate['rate_after']:.1%}")
    if "estimated" in evidence:
        e = evidence["estimated"]
        parts.append(
            f"estimated {e['metric']} {e['estimated']:.3f} without labels (estimated {e['reference_estimated']:.3f} "
            f"on the reference, measured {e['reference_value']:.3f})"
        )
    if evidence["drifted_features"]:
        parts.append("drifted: " + ", ".join(evidence["drifted_features"]))
    for signal, result in (
        ("prediction drift", evidence.get("prediction_drift", {})),
        ("prior drift", evidence.get("prior_drift", {})),
    ):
        if result.get("drifted"):
            parts.append(f"{signal} (PSI {result['psi']:.2f})")
    for alarm in evidence["alarms"]:
        parts.append(f"alarm {alarm['name']} on {', '.join(alarm['groups'])}")
    return ": " + "; ".join(parts) + "."
