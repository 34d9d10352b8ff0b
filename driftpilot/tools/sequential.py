"""An always-valid sequential test of "is the candidate better than the champion?", in balanced
accuracy, the metric the Trainer and the Monitor judge by.

Both versions answer every labelled event since the release started (the one not serving it
answers in shadow), so each event is a *pair*: ``d = [candidate right] - [champion right]``, in
{-1, 0, 1}. Balanced accuracy weighs each class alike, so an event of class ``y`` counts with a
weight ``w = 1 / (K · share of y)``, the shares estimated from the events *before* it (so that the
weight is known before the event is seen) and capped at :data:`MAX_WEIGHT`. Without the weights a
candidate that trades a little majority-class accuracy for much better recall of rare failures
would look worse, and the reverse.

The test is a betting martingale (Waudby-Smith & Ramdas, "Estimating means of bounded random
variables by betting", JRSS B 2024; Shafer's testing by betting): two gamblers bet, one that the
weighted difference is positive, one that it is negative, each staking a predictable fraction
``λ`` of its wealth on every pair (aGRAPA, their growth-rate adaptive choice). If the two versions
are equally good on every class, each wealth is a nonnegative martingale with mean 1, so by
Ville's inequality their average ever reaches ``1/alpha`` with probability at most ``alpha``,
however often it is looked at and whenever the looking stops. That is what lets the Release
Manager judge a release every hour and stop as soon as the evidence is clear.

Pairs are taken in the order given (the events' order in time); each look re-reads the same
prefix plus what is new.

Written here, not taken from a library: the test is twenty lines of numpy, while the library that
offers confidence sequences (``confseq``) builds C++ extensions this project would then ship.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Literal

import numpy as np

from driftpilot.tools.metrics import balanced_accuracy

__all__ = ["MAX_WEIGHT", "PairedVerdict", "betting_log_wealth", "joint_test", "paired_test"]

Verdict = Literal["better", "worse", "undecided"]

#: Largest weight of a class, in multiples of a uniform class's: a class seen once in a
#: thousand events must not drown every other pair.
MAX_WEIGHT = 10.0
#: Largest fraction of its wealth a gambler stakes on one pair (Waudby-Smith & Ramdas use 1/2 or 3/4).
MAX_BET = 0.75


def _weights(truth: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each pair's class weight, and a bound on it known before the pair is seen, both from the
    labels before it. A class not seen yet weighs as much as the rarest class seen so far."""
    classes, codes = np.unique(truth, return_inverse=True)
    n, k = len(truth), len(classes)
    onehot = np.zeros((n, k))
    onehot[np.arange(n), codes] = 1.0
    before = np.cumsum(onehot, axis=0) - onehot  # counts of each class before each pair
    seen = before > 0
    known = np.maximum(seen.sum(axis=1), 1)[:, None]
    # Laplace-smoothed shares over the classes seen so far.
    share = (before + 1.0) / (np.arange(n, dtype=float)[:, None] + known + 1.0)
    weight = np.where(seen, np.minimum(1.0 / (known * share), MAX_WEIGHT), 0.0)
    bound = np.maximum(weight.max(axis=1), 1.0)
    weight = np.where(seen, weight, bound[:, None])
    return weight[np.arange(n), codes], bound


def betting_log_wealth(increments: np.ndarray, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Log wealth, after each increment, of the gambler betting on a positive mean and of the one
    betting on a negative mean; ``increments[i]`` lies in ``[-bounds[i], bounds[i]]``.

    >>> up, down = betting_log_wealth(np.ones(20), np.ones(20))
    >>> round(float(up[-1]), 3), abs(float(down[-1]))
    (10.633, 0.0)
    """
    x = np.asarray(increments, dtype=float)
    b = np.asarray(bounds, dtype=float)
    n = len(x)
    if n == 0:
        return np.zeros(0), np.zeros(0)
    # Predictable estimates from the nonzero increments before each bet: a zero (both versions
    # right, or both wrong) changes no wealth whatever the bet, so only the others say how to bet,
    # as in McNemar's test. One pseudo-observation of variance (b/2)^2 keeps the first bets small.
    nonzero = x != 0
    past_sum = np.concatenate([[0.0], np.cumsum(x)[:-1]])
    past_sq = np.concatenate([[0.0], np.cumsum(x * x)[:-1]])
    count = np.concatenate([[0.0], np.cumsum(nonzero)[:-1]])
    mean = past_sum / (count + 1.0)
    second = (past_sq + (b / 2) ** 2) / (count + 1.0)
    variance = np.maximum(second - mean**2, 1e-12)
    ratio = mean / (variance + mean**2)
    cap = MAX_BET / b
    lam_up = np.clip(ratio, 0.0, cap)
    lam_down = np.clip(-ratio, 0.0, cap)
    return np.cumsum(np.log1p(lam_up * x)), np.cumsum(np.log1p(-lam_down * x))


@dataclass(frozen=True)
class PairedVerdict:
    """The sequential test's state on one set of paired answers."""

    n: int
    wins: int
    losses: int
    candidate_score: float | None
    champion_score: float | None
    log_evidence: float
    threshold: float
    decided_at: int | None
    verdict: Verdict
    #: Which test of :func:`joint_test` reached the verdict (None for one test alone, or undecided).
    decided_by: str | None = None

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def paired_test(
    truth: np.ndarray, candidate: np.ndarray, champion: np.ndarray, *, alpha: float = 0.05, weighted: bool = True
) -> PairedVerdict:
    """The verdict on paired answers, in time order: ``better`` or ``worse`` once the two
    gamblers' mean wealth has reached ``1/alpha`` (the richer one says which), ``undecided``
    before. Scores are balanced accuracies; ``decided_at`` is how many pairs the verdict took.

    The chance of any verdict on two versions equally good on every class is at most ``alpha``,
    at every look (``tests/tools/test_sequential.py`` measures it over many seeds).
    ``weighted=False`` tests plain accuracy instead: every pair weighs 1.

    >>> t = np.array(["a", "b"] * 60)
    >>> paired_test(t, t, np.where(np.arange(120) % 3 == 0, "c", t)).verdict
    'better'
    >>> paired_test(t, t, t).verdict
    'undecided'
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be strictly between 0 and 1, got {alpha}")
    if not len(truth) == len(candidate) == len(champion):
        raise ValueError(
            f"truth, candidate and champion answers differ in length: {len(truth)}, {len(candidate)}, {len(champion)}"
        )
    truth = np.asarray(truth).astype(str)
    cand_right = np.asarray(candidate).astype(str) == truth
    champ_right = np.asarray(champion).astype(str) == truth
    n = len(truth)
    threshold = math.log(1.0 / alpha)
    verdict: Verdict = "undecided"
    decided_at = None
    log_evidence = 0.0
    if n:
        weight, bound = _weights(truth) if weighted else (np.ones(n), np.ones(n))
        up, down = betting_log_wealth((cand_right.astype(float) - champ_right) * weight, bound)
        # log of the mean of the two wealths
        mixed = np.logaddexp(up, down) - math.log(2.0)
        log_evidence = float(mixed[-1])
        crossed = np.flatnonzero(mixed >= threshold)
        if len(crossed):
            first = int(crossed[0])
            decided_at = first + 1
            verdict = "better" if up[first] >= down[first] else "worse"
    return PairedVerdict(
        n=n,
        wins=int(np.sum(cand_right & ~champ_right)),
        losses=int(np.sum(champ_right & ~cand_right)),
        candidate_score=round(balanced_accuracy(truth, np.asarray(candidate).astype(str)), 4) if n else None,
        champion_score=round(balanced_accuracy(truth, np.asarray(champion).astype(str)), 4) if n else None,
        log_evidence=round(log_evidence, 4),
        threshold=round(threshold, 4),
        decided_at=decided_at,
        verdict=verdict,
    )


def joint_test(truth: np.ndarray, candidate: np.ndarray, champion: np.ndarray, *, alpha: float = 0.05) -> PairedVerdict:
    """The test in balanced accuracy and the test in plain accuracy, each at ``alpha / 2``
    (Bonferroni: together at most ``alpha``): ``better`` (``worse``) when one of them finds the
    candidate better (worse), neither finds the opposite, and the candidate's balanced accuracy on
    the same pairs is no lower (no higher) than the champion's.

    Why both: on imbalanced classes the class weights that make balanced accuracy make its test
    slow, since a rare class's pair weighs up to :data:`MAX_WEIGHT` times a common one's and the
    bets are sized for the heaviest. A candidate right where the champion was wrong on 353 events
    and wrong where it was right on 17 was still undecided after three days. Plain accuracy
    shows that in a few dozen pairs; the balanced accuracies keep the verdict in the metric the
    loop trains and judges by, so that a candidate buying accuracy with the rare classes is not
    called better, nor one buying the rare classes with accuracy called worse.

    >>> t = np.where(np.arange(400) % 20 == 0, "down", "ok")
    >>> champion = np.where(np.arange(400) % 5 == 1, "down", t)  # false alarms on a fifth of "ok"
    >>> fewer_alarms = t  # right everywhere
    >>> paired_test(t, fewer_alarms, champion, alpha=0.025).verdict, joint_test(t, fewer_alarms, champion).verdict
    ('undecided', 'better')
    >>> joint_test(t, champion, fewer_alarms).verdict
    'worse'
    >>> misses = np.where(np.arange(400) % 60 == 0, "ok", t)  # no false alarm, a third of outages missed
    >>> joint_test(t, misses, champion).verdict, joint_test(t, champion, misses).verdict
    ('undecided', 'undecided')
    """
    balanced = paired_test(truth, candidate, champion, alpha=alpha / 2)
    plain = paired_test(truth, candidate, champion, alpha=alpha / 2, weighted=False)
    tests = {"balanced accuracy": balanced, "accuracy": plain}
    gain = (balanced.candidate_score or 0.0) - (balanced.champion_score or 0.0)
    verdicts = {t.verdict for t in tests.values()}
    directions: tuple[tuple[Verdict, bool], ...] = (("worse", gain <= 0), ("better", gain >= 0))
    for verdict, agrees in directions:
        decided = {name: t for name, t in tests.items() if t.verdict == verdict}
        if decided and agrees and len(verdicts - {"undecided"}) == 1:
            name, first = min(decided.items(), key=lambda item: item[1].decided_at or 0)
            return replace(
                balanced,
                log_evidence=first.log_evidence,
                threshold=first.threshold,
                decided_at=first.decided_at,
                verdict=verdict,
                decided_by=name,
            )
    return replace(balanced, log_evidence=max(balanced.log_evidence, plain.log_evidence), verdict="undecided")
