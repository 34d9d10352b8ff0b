"""Diagnosis: turn a Monitor finding into a cause, because the cause decides the action.

An upstream outage (an alarm, and many entities of its groups silent at once) is no reason to
retrain: its window is quarantined from training instead. Drift or a performance loss with no
such explanation is a reason to retrain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Literal

import pandas as pd

Cause = Literal["upstream_outage", "concept_drift", "data_drift", "none"]
Remedy = Literal["quarantine", "retrain", "none"]

#: Share of an alarmed group's entities that must have gone silent to call it an outage.
OUTAGE_SILENT_SHARE = 0.5


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


@dataclass(frozen=True)
class Hypothesis:
    cause: Cause
    score: float
    evidence: dict[str, object]


@dataclass(frozen=True)
class Diagnosis:
    cause: Cause
    remedy: Remedy
    hypotheses: list[Hypothesis]
    rationale: str
    quarantine_groups: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def error_by_slice(frame: pd.DataFrame, columns: Sequence[str], *, min_rows: int = 30) -> dict[str, dict[str, float]]:
    """Error rate of the served predictions per value of each slice column.

    >>> f = pd.DataFrame({"fw": ["a", "a", "b", "b"], "label": ["x", "y", "x", "x"],
    ...                   "prediction": ["x", "x", "x", "x"]})
    >>> error_by_slice(f, ["fw"], min_rows=1)
    {'fw': {'a': 0.5, 'b': 0.0}}
    """
    wrong = frame["prediction"] != frame["label"]
    result: dict[str, dict[str, float]] = {}
    for column in columns:
        grouped = wrong.groupby(frame[column])
        rates = grouped.mean()[grouped.size() >= min_rows]
        result[column] = {str(k): round(float(v), 4) for k, v in rates.sort_index().items()}
    return result


def diagnose(
    *,
    accuracy: float | None,
    reference_accuracy: float | None,
    max_accuracy_drop: float,
    drifted_features: Sequence[str],
    alarms: Sequence[AlarmEvidence],
    slices: dict[str, dict[str, float]] | None = None,
) -> Diagnosis:
    """Rank the hypotheses for a finding and pick the remedy.

    Examples
    --------
    >>> outage = AlarmEvidence("k", "OltPortDown", ["p1"], entities_before=60, entities_silent=58)
    >>> d = diagnose(accuracy=0.8, reference_accuracy=0.95, max_accuracy_drop=0.04,
    ...              drifted_features=[], alarms=[outage])
    >>> d.cause, d.remedy, d.quarantine_groups
    ('upstream_outage', 'quarantine', ['p1'])
    >>> diagnose(accuracy=0.8, reference_accuracy=0.95, max_accuracy_drop=0.04,
    ...          drifted_features=["rx_power"], alarms=[]).remedy
    'retrain'
    >>> diagnose(accuracy=0.95, reference_accuracy=0.95, max_accuracy_drop=0.04,
    ...          drifted_features=["uptime_hours"], alarms=[]).remedy
    'none'
    """
    hypotheses: list[Hypothesis] = []
    confirmed_outages = [a for a in alarms if a.silent_share >= OUTAGE_SILENT_SHARE]
    for alarm in alarms:
        hypotheses.append(
            Hypothesis(
                cause="upstream_outage",
                score=round(alarm.silent_share, 4),
                evidence={
                    "alarm": alarm.key,
                    "name": alarm.name,
                    "groups": list(alarm.groups),
                    "entities_before": alarm.entities_before,
                    "entities_silent": alarm.entities_silent,
                },
            )
        )
    drop = None
    if accuracy is not None and reference_accuracy is not None:
        drop = reference_accuracy - accuracy
        hypotheses.append(
            Hypothesis(
                cause="concept_drift",
                score=round(max(0.0, drop) / max_accuracy_drop, 4) if max_accuracy_drop else 0.0,
                evidence={
                    "accuracy": round(accuracy, 4),
                    "reference_accuracy": round(reference_accuracy, 4),
                    "drop": round(drop, 4),
                    "max_accuracy_drop": max_accuracy_drop,
                    "error_by_slice": slices or {},
                },
            )
        )
    if drifted_features:
        hypotheses.append(
            Hypothesis(
                cause="data_drift",
                score=float(len(drifted_features)),
                evidence={"drifted_features": list(drifted_features)},
            )
        )
    hypotheses.sort(key=lambda h: h.score, reverse=True)

    if confirmed_outages:
        groups = sorted({g for a in confirmed_outages for g in a.groups})
        parts = [
            f"alarm {a.name} on {', '.join(a.groups)}: {a.entities_silent} of {a.entities_before} "
            f"entities went silent at once"
            for a in confirmed_outages
        ]
        return Diagnosis(
            cause="upstream_outage",
            remedy="quarantine",
            hypotheses=hypotheses,
            rationale="Upstream outage, not a model problem: "
            + "; ".join(parts)
            + ". The outage window is quarantined from training and monitoring; no retraining.",
            quarantine_groups=groups,
        )
    if drop is not None and drop > max_accuracy_drop:
        worst = _worst_slice(slices or {})
        return Diagnosis(
            cause="concept_drift",
            remedy="retrain",
            hypotheses=hypotheses,
            rationale=(
                f"Balanced accuracy fell {drop:.1%} (from {reference_accuracy:.1%} to {accuracy:.1%}), "
                f"more than the {max_accuracy_drop:.1%} the policy tolerates, with no outage to explain it"
                + (f"; errors concentrate in {worst}" if worst else "")
                + (f"; drifted features: {', '.join(drifted_features)}" if drifted_features else "")
                + ". Retrain on recent labelled data."
            ),
        )
    if drifted_features and drop is not None:
        # Labels say the model still does its job: input drift alone (a counter that grows,
        # the time of day) is logged and watched, not acted on.
        return Diagnosis(
            cause="data_drift",
            remedy="none",
            hypotheses=hypotheses,
            rationale=(
                f"Inputs drifted ({', '.join(drifted_features)}), but balanced accuracy on labelled events "
                f"held ({accuracy:.1%} against {reference_accuracy:.1%}): watched, not acted on."
            ),
        )
    if drifted_features:
        return Diagnosis(
            cause="data_drift",
            remedy="retrain",
            hypotheses=hypotheses,
            rationale=(
                f"Inputs drifted ({', '.join(drifted_features)}) away from what the champion was "
                "trained on, with no outage to explain it. Retrain so the model learns the new inputs "
                "before its accuracy shows the damage."
            ),
        )
    return Diagnosis(
        cause="none",
        remedy="none",
        hypotheses=hypotheses,
        rationale="No evidence strong enough to act on.",
    )


def _worst_slice(slices: dict[str, dict[str, float]]) -> str | None:
    worst: tuple[float, str] | None = None
    for column, rates in slices.items():
        for value, rate in rates.items():
            if worst is None or rate > worst[0]:
                worst = (rate, f"{column}={value} (error rate {rate:.1%})")
    return worst[1] if worst else None
