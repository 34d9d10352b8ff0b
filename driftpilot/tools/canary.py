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
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from driftpilot.tools.sequential import PairedVerdict, paired_test

__all__ = ["GuardCheck", "ReleaseEvidence", "label_free_guards", "release_evidence"]


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


@dataclass(frozen=True)
class ReleaseEvidence:
    """Everything a release is judged on at one look."""

    overall: PairedVerdict
    slices: dict[str, PairedVerdict]
    guards: list[GuardCheck] = field(default_factory=list)

    @property
    def worse_slices(self) -> list[str]:
        return [name for name, test in self.slices.items() if test.verdict == "worse"]

    @property
    def failed_guards(self) -> list[GuardCheck]:
        return [g for g in self.guards if not g.passed]

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
) -> ReleaseEvidence:
    """The sequential test on labelled pairs, overall and on each slice (boolean masks over the
    pairs), with the guards' results.

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
    overall = paired_test(truth, candidate, champion, alpha=overall_alpha)
    tested: dict[str, PairedVerdict] = {}
    if max_slices and slices:
        largest = sorted(slices, key=lambda name: (-int(np.sum(slices[name])), name))[:max_slices]
        for name in largest:
            mask = np.asarray(slices[name], dtype=bool)
            if len(mask) != len(truth):
                raise ValueError(f"slice {name!r} has {len(mask)} entries for {len(truth)} labelled events")
            tested[name] = paired_test(truth[mask], candidate[mask], champion[mask], alpha=alpha / 2 / max_slices)
    return ReleaseEvidence(overall=overall, slices=tested, guards=list(guards or []))
