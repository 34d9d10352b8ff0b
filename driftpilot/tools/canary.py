"""Canary evidence: the candidate and the champion judged on the same canary events."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from driftpilot.tools.metrics import balanced_accuracy


@dataclass(frozen=True)
class CanaryEvidence:
    """Paired scores on the labelled events the candidate served during its canary."""

    n_labelled: int
    canary_score: float | None
    control_score: float | None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def paired_canary_evidence(truth: np.ndarray, served: np.ndarray, champion: np.ndarray) -> CanaryEvidence:
    """Balanced accuracy of what the candidate served and of what the champion would have
    answered on the very same events.

    Pairing the two on one set of events removes the cohort-to-cohort variance that comparing
    the canary cohort with the control cohort would carry, so fewer labels decide.

    >>> t = np.array(["a", "a", "b", "b"])
    >>> paired_canary_evidence(t, np.array(["a", "a", "b", "a"]), np.array(["a", "b", "a", "a"]))
    CanaryEvidence(n_labelled=4, canary_score=0.75, control_score=0.25)
    """
    if not len(truth) == len(served) == len(champion):
        raise ValueError(
            f"truth, served and champion answers differ in length: {len(truth)}, {len(served)}, {len(champion)}"
        )
    if len(truth) == 0:
        return CanaryEvidence(0, None, None)
    return CanaryEvidence(
        n_labelled=len(truth),
        canary_score=balanced_accuracy(truth, served),
        control_score=balanced_accuracy(truth, champion),
    )
