"""Diagnosis: turn a Monitor finding into a cause, because the cause decides the action.

Not every drift is a reason to retrain. The evidence of two windows is gathered once into an
:class:`Evidence`; every cause it bears on is weighed from it as a hypothesis (a score and its
evidence), and :func:`diagnose` acts on the answer of the first of the :data:`RULES` the
evidence confirms. The rules are tried in this order, each explaining away the ones after it:

==================  ==========================================================  ===============
rule (cause)        evidence                                                    remedy
==================  ==========================================================  ===============
upstream_outage     an alarm, and most entities of its groups silent at once     quarantine
data_quality        a field's unit or scale changed, a stuck sensor, a field     fix_data
                    gone missing (:mod:`driftpilot.tools.quality`)
new_classes         labels the model never learnt, or a rising share of          expand_corpus
                    low-confidence inputs
slice_drift         drift or errors concentrated in one slice (a hardware        retrain / watch
                    model, a software version, a region, a network segment,
                    an intent group)
prior_shift         the class shares moved while each class is recognised as     recalibrate
                    well as before
concept_drift       accuracy fell with no input drift to explain it              retrain
covariate_drift     inputs drifted across the fleet                              retrain / watch
none                no rule confirmed (not a rule: what is left)                 none
==================  ==========================================================  ===============

A drift that labels say the model copes with is ``watch``: logged, not acted on. A drift with
too few labels to judge accuracy is acted on (retrain) before the damage shows.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import cached_property
from typing import Any, Literal, NotRequired, TypeAlias, TypedDict, cast

import numpy as np
import pandas as pd
from scipy import stats

from driftpilot.tools.drift import FeatureKind, counter_features, feature_drift, prior_drift
from driftpilot.tools.metrics import per_class_recall
from driftpilot.tools.quality import QualityFault, QualityReport, data_quality

Cause = Literal[
    "upstream_outage",
    "data_quality",
    "new_classes",
    "slice_drift",
    "prior_shift",
    "concept_drift",
    "covariate_drift",
    "none",
]
Remedy = Literal["quarantine", "fix_data", "expand_corpus", "recalibrate", "retrain", "watch", "none"]

#: Most drifted features a slice search looks at.
SLICE_FEATURES = 3
#: Share of an alarmed group's entities that must have gone silent to call it an outage.
OUTAGE_SILENT_SHARE = 0.5
#: Share of labels of classes the model never learnt that makes new classes.
UNKNOWN_LABEL_SHARE = 0.02
#: Rise in the share of low-confidence predictions that makes new classes (without labels).
LOW_CONFIDENCE_RISE = 0.15
#: A prediction whose top probability is below this is low-confidence.
LOW_CONFIDENCE = 0.5
#: A slice explains a drift when its own drift (KS statistic) exceeds the rest's by this much...
SLICE_CONCENTRATION = 0.3
#: ...and the rest of the fleet hardly drifts (KS statistic below this).
SLICE_REST_CALM = 0.15
#: A slice's error rate this far above the rest's concentrates the errors in it.
SLICE_ERROR_GAP = 0.1
#: Largest fall in any class's recall still read as "each class recognised as before": a rare
#: class's recall in a 12-hour window moves by several points with the hours it covers.
PRIOR_RECALL_TOLERANCE = 0.10


@dataclass(frozen=True)
class AlarmEvidence:
    """An active alarm and how many entities of its groups stopped reporting."""

    key: str
    name: str
    groups: list[str]
    entities_before: int
    entities_silent: int

    @property
    def silent_share(self) -> float:
        return self.entities_silent / self.entities_before if self.entities_before else 0.0

    @property
    def is_outage(self) -> bool:
        """Enough of the groups' entities went silent at once (the share is inclusive)."""
        return self.silent_share >= OUTAGE_SILENT_SHARE


def alarm_evidence(
    frame: pd.DataFrame, *, key: str, name: str, groups: Sequence[str], starts_at: pd.Timestamp | Any
) -> AlarmEvidence:
    """Count the entities of an alarm's groups that reported before it started and went silent since.

    ``frame`` holds the events (``time``, ``entity``, ``group``) from shortly before the alarm
    (an hour is plenty at a reporting interval of minutes) up to now, outage included. Its times
    and ``starts_at`` are both aware (any zones: memory returns UTC) or both naive.

    >>> frame = pd.DataFrame({"time": pd.to_datetime(["2026-03-01 10:00Z", "2026-03-01 10:00Z", "2026-03-01 11:30Z"]),
    ...                       "entity": ["a", "b", "b"], "group": ["p1", "p1", "p1"]})
    >>> alarm = alarm_evidence(frame, key="k", name="SegmentDown", groups=["p1"], starts_at="2026-03-01 12:00+01:00")
    >>> alarm.silent_share
    0.5
    """
    start = pd.Timestamp(starts_at)
    if (start.tzinfo is None) != (not isinstance(frame["time"].dtype, pd.DatetimeTZDtype)):
        raise ValueError(
            f"the alarm's start {start} and the frame's times ({frame['time'].dtype}) must both be aware or "
            "both naive: read the events from memory (aware UTC) or give the start without a zone"
        )
    mine = frame[frame["group"].isin(set(groups))]
    before = set(mine.loc[mine["time"] < start, "entity"])
    during = set(mine.loc[mine["time"] >= start, "entity"])
    return AlarmEvidence(
        key=key, name=name, groups=sorted(groups), entities_before=len(before), entities_silent=len(before - during)
    )


@dataclass(frozen=True)
class SliceEvidence:
    """How much of the drift and of the errors one slice (``column == value``) holds.

    ``drift_in`` is the largest KS statistic of a drifted feature within the slice (against
    the same slice in the reference, or the whole reference for a slice that is new);
    ``drift_out`` the same feature's statistic on the rest of the fleet.
    """

    column: str
    value: str
    share_reference: float
    share_current: float
    feature: str | None
    drift_in: float
    drift_out: float
    error_in: float | None
    error_out: float | None
    same_rows: list[str] = field(default_factory=list)

    @property
    def new(self) -> bool:
        return self.share_reference < 0.01 <= self.share_current

    @property
    def concentration(self) -> float:
        return self.drift_in - self.drift_out

    @property
    def explains_drift(self) -> bool:
        return self.concentration >= SLICE_CONCENTRATION and self.drift_out < SLICE_REST_CALM

    @property
    def explains_errors(self) -> bool:
        return (
            self.error_in is not None
            and self.error_out is not None
            and self.error_in - self.error_out >= SLICE_ERROR_GAP
        )

    @property
    def score(self) -> float:
        error_gap = (self.error_in or 0.0) - (self.error_out or 0.0)
        return round(max(self.concentration, error_gap), 4)

    def describe(self) -> str:
        parts = [f"{self.column}={self.value}"]
        if self.same_rows:
            parts[0] += f" (the same rows as {', '.join(self.same_rows)})"
        if self.new:
            parts.append(f"new, now {self.share_current:.0%} of the window")
        if self.feature:
            parts.append(
                f"{self.feature} drifts there (KS {self.drift_in:.2f}) and not elsewhere ({self.drift_out:.2f})"
            )
        if self.explains_errors:
            parts.append(f"error rate {self.error_in:.1%} there against {self.error_out:.1%} elsewhere")
        return "; ".join(parts)


@dataclass(frozen=True)
class ClassEvidence:
    """Labels and confidences: new classes, and whether the class shares moved (prior shift)."""

    unknown_share: float | None = None
    unknown_labels: list[str] = field(default_factory=list)
    low_confidence_reference: float | None = None
    low_confidence_current: float | None = None
    prior_p_value: float | None = None
    prior_psi: float | None = None
    prior_drifted: bool = False
    label_shares_reference: dict[str, float] = field(default_factory=dict)
    label_shares_current: dict[str, float] = field(default_factory=dict)
    recall_reference: dict[str, float] = field(default_factory=dict)
    recall_current: dict[str, float] = field(default_factory=dict)
    support_reference: dict[str, int] = field(default_factory=dict)
    support_current: dict[str, int] = field(default_factory=dict)

    @property
    def new_classes(self) -> bool:
        """Labels of classes never learnt, or (without labels) a rise of low-confidence answers."""
        if self.unknown_share is not None:
            return self.unknown_share >= UNKNOWN_LABEL_SHARE
        return self.low_confidence_rise >= LOW_CONFIDENCE_RISE

    @property
    def low_confidence_rise(self) -> float:
        if self.low_confidence_reference is None or self.low_confidence_current is None:
            return 0.0
        return self.low_confidence_current - self.low_confidence_reference

    @property
    def worst_recall_drop(self) -> float | None:
        shared = set(self.recall_reference) & set(self.recall_current)
        if not shared:
            return None
        return max(self.recall_reference[c] - self.recall_current[c] for c in shared)

    @property
    def recall_fell(self) -> list[str]:
        """Classes recognised worse than before: recall fell by more than the tolerance, and
        significantly (one-sided two-proportion z-test at 1 %, Bonferroni over the classes), so
        that a rare class's noise in a short window is not read as a loss."""
        fell = []
        shared = sorted(set(self.recall_reference) & set(self.recall_current))
        for c in shared:
            before, after = self.recall_reference[c], self.recall_current[c]
            n_before, n_after = self.support_reference.get(c, 0), self.support_current.get(c, 0)
            if before - after <= PRIOR_RECALL_TOLERANCE or not n_before or not n_after:
                continue
            pooled = (before * n_before + after * n_after) / (n_before + n_after)
            spread = np.sqrt(max(pooled * (1 - pooled), 1e-12) * (1 / n_before + 1 / n_after))
            if (before - after) / spread > stats.norm.ppf(1 - 0.01 / len(shared)):
                fell.append(c)
        return fell


@dataclass(frozen=True)
class Hypothesis:
    """One cause weighed: how strongly the evidence points to it, whether it confirms it, and why."""

    cause: Cause
    score: float
    confirmed: bool
    evidence: dict[str, object]


class DiagnosisRecord(TypedDict):
    """A :class:`Diagnosis` as plain data: what the graph state and the decision log keep."""

    cause: Cause
    remedy: Remedy
    hypotheses: list[dict[str, object]]
    rationale: str
    quarantine_groups: list[str]
    fixes: list[str]
    slice: dict[str, str] | None
    enough_data: bool
    #: What the Diagnostician made of the remedy (quarantined, deferred, ...), added by the agent.
    outcome: NotRequired[str]


@dataclass(frozen=True)
class Diagnosis:
    """The cause acted on, its remedy and why; ``hypotheses`` lists the cause acted on first,
    then the others, confirmed before unconfirmed and by score."""

    cause: Cause
    remedy: Remedy
    hypotheses: list[Hypothesis]
    rationale: str
    quarantine_groups: list[str] = field(default_factory=list)
    fixes: list[str] = field(default_factory=list)
    slice: dict[str, str] | None = None
    enough_data: bool = True

    def __post_init__(self) -> None:
        ranked = sorted(self.hypotheses, key=lambda h: (h.cause == self.cause, h.confirmed, h.score), reverse=True)
        object.__setattr__(self, "hypotheses", ranked)

    def as_dict(self) -> DiagnosisRecord:
        return cast(DiagnosisRecord, asdict(self))


@dataclass(frozen=True)
class Evidence:
    """Everything a diagnosis weighs, gathered once from two windows.

    ``accuracy`` and ``reference_accuracy`` are the balanced accuracies the Monitor judged (None
    when labels were too few) and ``max_accuracy_drop`` the fall the policy tolerates;
    ``drifted`` names the features whose drift was confirmed and ``statistics`` holds each
    tested feature's drift statistic. The facts derived from them (:attr:`lost`,
    :attr:`outages`, :attr:`explaining`, ...) are stated here once: the rules act on them and
    the hypotheses report them.
    """

    accuracy: float | None
    reference_accuracy: float | None
    max_accuracy_drop: float
    drifted: Sequence[str] = ()
    statistics: Mapping[str, float] = field(default_factory=dict)
    alarms: Sequence[AlarmEvidence] = ()
    faults: Sequence[QualityFault] = ()
    slices: Sequence[SliceEvidence] = ()
    classes: ClassEvidence = field(default_factory=ClassEvidence)

    @property
    def drop(self) -> float | None:
        """How far balanced accuracy fell (negative when it rose); None without both accuracies."""
        if self.accuracy is None or self.reference_accuracy is None:
            return None
        return self.reference_accuracy - self.accuracy

    @property
    def lost(self) -> bool:
        """Accuracy fell by more than the policy tolerates."""
        drop = self.drop
        return drop is not None and drop > self.max_accuracy_drop

    @property
    def outages(self) -> list[AlarmEvidence]:
        return [a for a in self.alarms if a.is_outage]

    @property
    def explaining(self) -> list[SliceEvidence]:
        """The slices that hold the drift or the errors, best first."""
        return [s for s in self.slices if s.explains_drift or s.explains_errors]

    @property
    def prior_shift(self) -> bool:
        """The class shares moved while every class is recognised as before and accuracy held."""
        classes = self.classes
        return (
            classes.prior_drifted
            and classes.worst_recall_drop is not None
            and not classes.recall_fell
            and not self.lost
        )

    @property
    def concept_drift(self) -> bool:
        """Accuracy was lost with no input drift to explain it."""
        return self.lost and not self.drifted

    @property
    def accuracy_text(self) -> str:
        drop = self.drop
        if self.accuracy is None or self.reference_accuracy is None or drop is None:
            return ""
        verb = "fell" if drop > 0 else "held"
        return f"balanced accuracy {verb} from {self.reference_accuracy:.1%} to {self.accuracy:.1%}"

    @cached_property
    def hypotheses(self) -> list[Hypothesis]:
        """Every cause the evidence bears on, weighed (in the order of :data:`RULES`)."""
        return [h for weigh in WEIGHINGS for h in weigh(self)]


def _ks(a: pd.Series, b: pd.Series) -> float:
    a, b = a.dropna(), b.dropna()
    if a.empty or b.empty:
        return 0.0
    return float(stats.ks_2samp(a.to_numpy(dtype=float), b.to_numpy(dtype=float), method="asymp").statistic)


def _errors(frame: pd.DataFrame) -> pd.Series | None:
    if "prediction" not in frame or "label" not in frame:
        return None
    judged = frame["label"].notna() & frame["prediction"].notna()
    return (frame.loc[judged, "prediction"] != frame.loc[judged, "label"]).astype(float)


def slice_evidence(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    drifted: Sequence[str],
    *,
    min_rows: int = 30,
) -> list[SliceEvidence]:
    """Compare drift and errors inside and outside each slice ``column == value``, best first.

    For each value with at least ``min_rows`` rows in the current window, and each drifted
    numeric feature, the drift inside the slice (its rows against the same slice in the
    reference, or against the whole reference when the slice is new) is set against the drift
    of the rest of the fleet (the other rows, against the reference's other rows).

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> reference = pd.DataFrame({"version": ["v1"] * 400, "errors": rng.poisson(2.0, 400).astype(float)})
    >>> current = pd.DataFrame({"version": ["v1"] * 200 + ["v2"] * 200,
    ...                         "errors": np.r_[rng.poisson(2.0, 200), rng.poisson(2.0, 200) / 900]})
    >>> best = slice_evidence(reference, current, ["version"], ["errors"])[0]
    >>> best.value, best.new, best.explains_drift, round(best.concentration, 2)
    ('v2', True, True, 0.81)
    """
    # The rest of the fleet in the same window is the control for a slice's errors.
    current_errors = _errors(current)
    found: list[SliceEvidence] = []
    rows_of: dict[str, bytes] = {}
    for column in columns:
        if column not in current.columns or column not in reference.columns:
            continue
        counts = current[column].value_counts()
        for value in counts[counts >= min_rows].index:
            inside = current[column] == value
            rows_of[f"{column}={value}"] = np.packbits(inside.to_numpy()).tobytes()
            ref_inside = reference[column] == value
            share_reference = float(ref_inside.mean()) if len(reference) else 0.0
            is_new = int(ref_inside.sum()) < min_rows
            best: tuple[float, str | None, float, float] = (0.0, None, 0.0, 0.0)
            for feature in drifted:
                if feature not in current.columns or not pd.api.types.is_numeric_dtype(current[feature]):
                    continue
                base_in = reference[feature] if is_new else reference.loc[ref_inside, feature]
                drift_in = _ks(base_in, current.loc[inside, feature])
                drift_out = _ks(reference.loc[~ref_inside, feature], current.loc[~inside, feature])
                if drift_in - drift_out > best[0]:
                    best = (drift_in - drift_out, feature, drift_in, drift_out)
            error_in = error_out = None
            if current_errors is not None and len(current_errors):
                errors_in = current_errors[inside.loc[current_errors.index]]
                errors_out = current_errors[~inside.loc[current_errors.index]]
                if len(errors_in) >= min_rows and len(errors_out) >= min_rows:
                    error_in, error_out = float(errors_in.mean()), float(errors_out.mean())
            found.append(
                SliceEvidence(
                    column=column,
                    value=str(value),
                    share_reference=round(share_reference, 4),
                    share_current=round(float(inside.mean()), 4),
                    feature=best[1],
                    drift_in=round(best[2], 4),
                    drift_out=round(best[3], 4),
                    error_in=None if error_in is None else round(error_in, 4),
                    error_out=None if error_out is None else round(error_out, 4),
                )
            )
    found = [
        replace(
            s,
            same_rows=[
                k
                for k, rows in rows_of.items()
                if rows == rows_of[f"{s.column}={s.value}"] and k != f"{s.column}={s.value}"
            ],
        )
        for s in found
    ]
    # Stable: ties keep the order of ``columns`` (a new hardware model before the software it ships with).
    found.sort(key=lambda s: (s.explains_drift or s.explains_errors, s.score), reverse=True)
    return found


def class_evidence(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    known_classes: Sequence[str],
    *,
    min_rows: int = 30,
    p_threshold: float = 0.01,
    psi_threshold: float = 0.1,
) -> ClassEvidence:
    """New classes and class-share (prior) shift, from labels, predictions and confidences.

    Frames may hold ``label`` (None when unknown), ``prediction`` and ``confidence`` (the
    served top probability). Labels outside ``known_classes`` (the classes the champion
    learnt) count as unknown. Per-class recall needs both labels and predictions.
    """
    known = set(map(str, known_classes))
    result: dict[str, Any] = {}
    cur_labels = current["label"].dropna().astype(str) if "label" in current else pd.Series(dtype=str)
    ref_labels = reference["label"].dropna().astype(str) if "label" in reference else pd.Series(dtype=str)
    if len(cur_labels) >= min_rows:
        unknown = cur_labels[~cur_labels.isin(known)]
        result["unknown_share"] = round(float(len(unknown) / len(cur_labels)), 4)
        result["unknown_labels"] = sorted(unknown.unique().tolist())[:20]
    if "confidence" in current and "confidence" in reference:
        cur_conf, ref_conf = current["confidence"].dropna(), reference["confidence"].dropna()
        if len(cur_conf) >= min_rows and len(ref_conf) >= min_rows:
            result["low_confidence_reference"] = round(float((ref_conf < LOW_CONFIDENCE).mean()), 4)
            result["low_confidence_current"] = round(float((cur_conf < LOW_CONFIDENCE).mean()), 4)
    if len(cur_labels) >= min_rows and len(ref_labels) >= min_rows:
        prior = prior_drift(
            ref_labels.to_numpy(), cur_labels.to_numpy(), p_threshold=p_threshold, psi_threshold=psi_threshold
        )
        result["prior_p_value"] = prior.p_value
        result["prior_psi"] = round(prior.psi, 4)
        result["prior_drifted"] = prior.drifted
        result["label_shares_reference"] = _shares(ref_labels)
        result["label_shares_current"] = _shares(cur_labels)
    for frame, key in ((reference, "recall_reference"), (current, "recall_current")):
        if "prediction" in frame and "label" in frame:
            judged = frame[frame["label"].notna() & frame["prediction"].notna()]
            if len(judged) >= min_rows:
                counts = judged["label"].astype(str).value_counts()
                enough = set(counts[counts >= 10].index)
                support = "support_reference" if key == "recall_reference" else "support_current"
                result[support] = {str(c): int(n) for c, n in counts.items() if c in enough}
                recall = per_class_recall(
                    judged["label"].astype(str).to_numpy(), judged["prediction"].astype(str).to_numpy()
                )
                result[key] = {c: round(r, 4) for c, r in recall.items() if c in enough}
    return ClassEvidence(**result)


def _shares(labels: pd.Series) -> dict[str, float]:
    return {str(k): round(float(v), 4) for k, v in labels.value_counts(normalize=True).sort_index().items()}


def _quality(
    reference: pd.DataFrame,
    consecutive: pd.DataFrame | None,
    current: pd.DataFrame,
    features: Sequence[tuple[str, FeatureKind]],
    min_rows: int,
) -> QualityReport:
    """Data faults of ``current``: units, scales and missing fields judged against ``reference``
    (what the model learnt from: a fault that lasts longer than a window must not become the
    norm it is judged by), stuck sensors against ``consecutive`` readings when given."""
    reports = [data_quality(reference, current, features, entity=None, min_samples=min_rows)]
    if consecutive is not None:
        reports.append(data_quality(consecutive, current, features, entity="entity", min_samples=min_rows))
    faults: dict[str, QualityFault] = {}
    for fault in (f for report in reports for f in report.faults):
        if fault.feature not in faults or fault.score > faults[fault.feature].score:
            faults[fault.feature] = fault
    return QualityReport(
        faults=sorted(faults.values(), key=lambda f: f.score, reverse=True),
        unchecked=sorted({name for report in reports for name in report.unchecked}),
        enough_data=any(report.enough_data for report in reports),
    )


#: The newest 1/4, 1/8 and 1/16 of a window are checked for data faults on their own as well.
NEWEST_PARTS = (4, 8, 16)


def investigate(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    features: Sequence[tuple[str, FeatureKind]],
    known_classes: Sequence[str],
    accuracy: float | None,
    reference_accuracy: float | None,
    max_accuracy_drop: float,
    alarms: Sequence[AlarmEvidence] = (),
    slice_columns: Sequence[str] = (),
    p_threshold: float = 0.01,
    psi_threshold: float = 0.2,
    min_rows: int = 30,
    served_reference: pd.DataFrame | None = None,
    served_current: pd.DataFrame | None = None,
    quality_reference: pd.DataFrame | None = None,
) -> Diagnosis:
    """Gather every piece of evidence from two windows and diagnose.

    ``reference`` is what the champion was trained on or served while healthy, ``current``
    the window the Monitor raised its finding on; both hold the features, and ``label``,
    ``prediction`` and ``confidence`` where known. The pieces: data quality per feature,
    per-feature drift (without the broken features), drift and errors per slice, new
    classes and class shares. ``accuracy`` and ``reference_accuracy`` are the balanced
    accuracies the Monitor judged (None when labels were too few).

    ``served_reference`` and ``served_current``, when given, stand in for the two windows in
    the evidence about classes (labels, predictions, confidences): a model's inputs are best
    compared with what it learnt from, its answers with what it answered before.
    ``quality_reference`` is the reference of the data-quality checks: consecutive readings
    (time order), so that a stuck sensor can be told from a field that rarely moves; without
    it, the stuck-sensor check is skipped.

    Raises
    ------
    ValueError
        When a feature is missing from the reference or has the wrong type (from the drift
        and quality tools).
    """
    # A stuck sensor is a run of equal readings: only a reference of consecutive readings can
    # say how often a field holds still (a training snapshot is a sample, it cannot).
    consecutive = quality_reference is not None and len(quality_reference) >= min_rows
    quality = _quality(reference, quality_reference if consecutive else None, current, features, min_rows)
    if not quality.faults and "time" in current.columns:
        # A fault that began inside the window (a software update pushed an hour ago) breaks only its
        # newest readings: check the newest quarter, eighth and sixteenth on their own too, for
        # units, scales and missing fields (too short a stretch to judge runs of stuck readings).
        ordered = current.sort_values("time")
        for part in NEWEST_PARTS:
            newest = ordered.tail(len(current) // part)
            if len(newest) < min_rows:
                break
            recent = _quality(reference, None, newest, features, min_rows)
            if recent.faults:
                quality = recent
                break
    broken = {f.feature for f in quality.faults}
    # A broken field is not drift: it is tested once repaired. A field gone from the current
    # window cannot be tested at all.
    sound = [(n, k) for n, k in features if n not in broken and n in current.columns]
    drift = feature_drift(
        reference,
        current,
        sound,
        p_threshold=p_threshold,
        psi_threshold=psi_threshold,
        min_samples=min_rows,
        counters=counter_features(reference, sound),
    )
    # The slices are searched for the most drifted features (each value of each slice column
    # costs two KS tests per feature; a network-segment column alone has dozens of values).
    strongest = sorted((f for f in drift.features if f.drifted), key=lambda f: f.statistic, reverse=True)
    slices = slice_evidence(
        reference, current, slice_columns, [f.feature for f in strongest[:SLICE_FEATURES]], min_rows=min_rows
    )
    if not drift.enough_data and not quality.enough_data and not alarms:
        return Diagnosis(
            "none",
            "none",
            [],
            f"Not enough data to diagnose: {len(current)} events in the window and {len(reference)} in the "
            f"reference (at least {min_rows} each are needed); nothing was tested.",
            enough_data=False,
        )
    classes = class_evidence(
        reference if served_reference is None else served_reference,
        current if served_current is None else served_current,
        known_classes,
        min_rows=min_rows,
    )
    return diagnose(
        Evidence(
            accuracy=accuracy,
            reference_accuracy=reference_accuracy,
            max_accuracy_drop=max_accuracy_drop,
            drifted=list(drift.drifted),
            statistics={f.feature: f.statistic for f in drift.features},
            alarms=list(alarms),
            faults=quality.faults,
            slices=slices,
            classes=classes,
        )
    )


# --- the hypotheses: what the evidence says of each cause, confirmed or not --------------------


def _weigh_outages(e: Evidence) -> list[Hypothesis]:
    return [
        Hypothesis(
            "upstream_outage",
            round(alarm.silent_share, 4),
            alarm.is_outage,
            {
                "alarm": alarm.key,
                "name": alarm.name,
                "groups": list(alarm.groups),
                "entities_before": alarm.entities_before,
                "entities_silent": alarm.entities_silent,
            },
        )
        for alarm in e.alarms
    ]


def _weigh_faults(e: Evidence) -> list[Hypothesis]:
    if not e.faults:
        return []
    return [Hypothesis("data_quality", e.faults[0].score, True, {"faults": [f.model_dump() for f in e.faults]})]


def _weigh_new_classes(e: Evidence) -> list[Hypothesis]:
    classes = e.classes
    if classes.unknown_share is None and classes.low_confidence_current is None:
        return []
    unknown = classes.unknown_share or 0.0
    score = min(1.0, max(unknown / (2 * UNKNOWN_LABEL_SHARE), classes.low_confidence_rise / 0.3))
    evidence: dict[str, object] = {
        "unknown_share": classes.unknown_share,
        "unknown_labels": classes.unknown_labels,
        "low_confidence_reference": classes.low_confidence_reference,
        "low_confidence_current": classes.low_confidence_current,
    }
    return [Hypothesis("new_classes", round(score, 4), classes.new_classes, evidence)]


def _weigh_slices(e: Evidence) -> list[Hypothesis]:
    if not e.slices:
        return []
    explaining = e.explaining
    top = explaining[0] if explaining else e.slices[0]
    return [Hypothesis("slice_drift", top.score, bool(explaining), {"slices": [asdict(s) for s in e.slices[:5]]})]


def _weigh_prior(e: Evidence) -> list[Hypothesis]:
    classes = e.classes
    if classes.prior_psi is None:
        return []
    evidence: dict[str, object] = {
        "prior_psi": classes.prior_psi,
        "prior_p_value": classes.prior_p_value,
        "label_shares_reference": classes.label_shares_reference,
        "label_shares_current": classes.label_shares_current,
        "worst_recall_drop": classes.worst_recall_drop,
        "recall_fell": classes.recall_fell,
    }
    return [Hypothesis("prior_shift", round(min(1.0, classes.prior_psi), 4), e.prior_shift, evidence)]


def _weigh_accuracy(e: Evidence) -> list[Hypothesis]:
    drop = e.drop
    if drop is None:
        return []
    tolerated = e.max_accuracy_drop
    score = min(1.0, max(0.0, drop) / (2 * tolerated)) if tolerated else float(e.lost)
    evidence: dict[str, object] = {
        "accuracy": round(e.accuracy or 0.0, 4),
        "reference_accuracy": round(e.reference_accuracy or 0.0, 4),
        "drop": round(drop, 4),
        "max_accuracy_drop": tolerated,
    }
    return [Hypothesis("concept_drift", round(score, 4), e.concept_drift, evidence)]


def _weigh_covariate(e: Evidence) -> list[Hypothesis]:
    if not e.drifted:
        return []
    # A drifted feature named without its test (``statistics`` left out) counts as fully drifted.
    score = max(e.statistics.get(f, 1.0) for f in e.drifted)
    return [Hypothesis("covariate_drift", round(score, 4), True, {"drifted_features": list(e.drifted)})]


Weighing: TypeAlias = Callable[[Evidence], list[Hypothesis]]
#: Each cause's weighing, in the order of :data:`RULES` (ties in the ranking keep this order).
WEIGHINGS: tuple[Weighing, ...] = (
    _weigh_outages,
    _weigh_faults,
    _weigh_new_classes,
    _weigh_slices,
    _weigh_prior,
    _weigh_accuracy,
    _weigh_covariate,
)


# --- the rules: the first whose cause the evidence confirms decides ------------------------------


def _upstream_outage(e: Evidence) -> Diagnosis | None:
    outages = e.outages
    if not outages:
        return None
    parts = [
        f"alarm {a.name} on {', '.join(a.groups)}: {a.entities_silent} of {a.entities_before} "
        f"entities went silent at once"
        for a in outages
    ]
    return Diagnosis(
        "upstream_outage",
        "quarantine",
        e.hypotheses,
        "Upstream outage, not a model problem: "
        + "; ".join(parts)
        + ". The outage window is quarantined from training and monitoring; no retraining.",
        quarantine_groups=sorted({g for a in outages for g in a.groups}),
    )


def _data_quality(e: Evidence) -> Diagnosis | None:
    if not e.faults:
        return None
    fixes = [f.fix for f in e.faults]
    named = "; ".join(f"'{f.feature}' {_fault_text(f)}" for f in e.faults)
    return Diagnosis(
        "data_quality",
        "fix_data",
        e.hypotheses,
        f"Data-quality fault, not drift: {named}. Alert the data owner and fix the feature "
        "(" + "; ".join(fixes) + "); no retraining on broken data.",
        fixes=fixes,
    )


def _new_classes(e: Evidence) -> Diagnosis | None:
    classes = e.classes
    if not classes.new_classes:
        return None
    what = (
        f"{classes.unknown_share:.1%} of labels are classes the model never learnt "
        f"({', '.join(classes.unknown_labels[:5])})"
        if classes.unknown_share is not None
        else f"low-confidence predictions rose from {classes.low_confidence_reference:.1%} to "
        f"{classes.low_confidence_current:.1%}"
    )
    return Diagnosis(
        "new_classes",
        "expand_corpus",
        e.hypotheses,
        f"New classes: {what}. Expand the corpus: gather and label examples of them, then retrain.",
    )


def _slice_drift(e: Evidence) -> Diagnosis | None:
    explaining = e.explaining
    if not explaining:
        return None
    top = explaining[0]
    # Without labels to judge accuracy, a drift a slice explains is acted on before the damage shows.
    act = e.lost or e.drop is None or top.explains_errors
    accuracy = f"{e.accuracy_text}. " if e.accuracy_text else ""
    return Diagnosis(
        "slice_drift",
        "retrain" if act else "watch",
        e.hypotheses,
        f"Drift concentrated in one slice: {top.describe()}. {accuracy}"
        + ("Retrain with this slice represented." if act else "Accuracy held: watched, not acted on."),
        slice={"column": top.column, "value": top.value},
    )


def _prior_shift(e: Evidence) -> Diagnosis | None:
    if not e.prior_shift:
        return None
    classes = e.classes
    return Diagnosis(
        "prior_shift",
        "recalibrate",
        e.hypotheses,
        f"Prior shift: the class shares moved (PSI {classes.prior_psi:.2f}; "
        f"{_share_change(classes)}) while every class is recognised as before (largest recall "
        f"fall {classes.worst_recall_drop:.1%}, within noise). Recalibrate the decision to the new shares "
        "rather than retrain.",
    )


def _concept_drift(e: Evidence) -> Diagnosis | None:
    if not e.concept_drift:
        return None
    return Diagnosis(
        "concept_drift",
        "retrain",
        e.hypotheses,
        f"Concept drift: {e.accuracy_text}, more than the {e.max_accuracy_drop:.1%} the policy tolerates, "
        "with inputs unchanged and no outage to explain it. Retrain on recent labelled data.",
    )


def _covariate_drift(e: Evidence) -> Diagnosis | None:
    if not e.drifted:
        return None
    if e.lost:
        reason = f"{e.accuracy_text}, more than the {e.max_accuracy_drop:.1%} the policy tolerates"
    elif e.drop is None:
        reason = "too few labels to judge accuracy: retrain before the damage shows"
    else:
        reason = f"but {e.accuracy_text}: watched, not acted on"
    return Diagnosis(
        "covariate_drift",
        "retrain" if e.lost or e.drop is None else "watch",
        e.hypotheses,
        f"Inputs drifted across the fleet ({', '.join(e.drifted)}); {reason}."
        + (" Retrain on recent labelled data." if e.lost else ""),
    )


Rule: TypeAlias = Callable[[Evidence], Diagnosis | None]
#: The rules in the order they are tried (the module's table): each explains away the ones after it.
RULES: tuple[Rule, ...] = (
    _upstream_outage,
    _data_quality,
    _new_classes,
    _slice_drift,
    _prior_shift,
    _concept_drift,
    _covariate_drift,
)


def diagnose(evidence: Evidence) -> Diagnosis:
    """The answer of the first of the :data:`RULES` the evidence confirms, or ``none``.

    Every hypothesis the evidence bears on is listed beside the cause acted on.

    Examples
    --------
    >>> outage = AlarmEvidence("k", "SegmentDown", ["p1"], entities_before=60, entities_silent=58)
    >>> d = diagnose(Evidence(accuracy=0.8, reference_accuracy=0.95, max_accuracy_drop=0.04, alarms=[outage]))
    >>> d.cause, d.remedy, d.quarantine_groups
    ('upstream_outage', 'quarantine', ['p1'])
    >>> d = diagnose(Evidence(accuracy=0.8, reference_accuracy=0.95, max_accuracy_drop=0.04))
    >>> d.cause, d.remedy
    ('concept_drift', 'retrain')
    >>> d = diagnose(Evidence(accuracy=0.95, reference_accuracy=0.95, max_accuracy_drop=0.04, drifted=["signal"]))
    >>> d.cause, d.remedy
    ('covariate_drift', 'watch')
    >>> diagnose(Evidence(accuracy=None, reference_accuracy=0.95, max_accuracy_drop=0.04, drifted=["signal"])).remedy
    'retrain'
    """
    for rule in RULES:
        found = rule(evidence)
        if found is not None:
            return found
    return Diagnosis("none", "none", evidence.hypotheses, "No evidence strong enough to act on.")


def _fault_text(fault: QualityFault) -> str:
    e = fault.evidence
    if fault.kind == "unit_change":
        return f"arrives in {e['to']} instead of {e['from']}"
    if fault.kind == "scale_change":
        return f"arrives {e['factor']:g} times its usual scale"
    if fault.kind == "stuck":
        share, usual = e["stuck_share_current"], e["stuck_share_reference"]
        return f"holds one value in {share:.0%} of runs of readings (normally {usual:.0%})"
    return f"is missing in {e['missing_current']:.0%} of readings"


def _share_change(classes: ClassEvidence) -> str:
    before, after = classes.label_shares_reference, classes.label_shares_current
    moves = sorted(
        ((after.get(c, 0.0) - before.get(c, 0.0), c) for c in set(before) | set(after)),
        key=lambda m: abs(m[0]),
        reverse=True,
    )[:2]
    return ", ".join(f"{c} {before.get(c, 0.0):.1%} → {after.get(c, 0.0):.1%}" for _, c in moves)


def to_json(value: Any) -> Any:
    """Evidence made JSON-safe (numpy scalars to Python numbers)."""
    if isinstance(value, dict):
        return {str(k): to_json(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value
