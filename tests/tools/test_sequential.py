"""The release's sequential test: its error rate on equal versions, its power, and its per-slice
and label-free checks."""

from __future__ import annotations

import numpy as np
import pytest

from driftpilot.tools.canary import label_free_guards, release_evidence
from driftpilot.tools.sequential import paired_test

#: Class shares like the ONT fleet's: most readings are "online", failures are rare.
SHARES = (0.9, 0.04, 0.03, 0.03)
ACCURACY = (0.97, 0.7, 0.6, 0.8)


def _pairs(seed: int, n: int, gain=(0.0, 0.0, 0.0, 0.0)):
    rng = np.random.default_rng(seed)
    y = rng.choice(len(SHARES), size=n, p=SHARES)
    truth = y.astype(str)
    champion_right = rng.random(n) < np.asarray(ACCURACY)[y]
    candidate_right = rng.random(n) < (np.asarray(ACCURACY) + np.asarray(gain))[y]
    return truth, np.where(candidate_right, truth, "x"), np.where(champion_right, truth, "x")


@pytest.mark.slow  # 2,000 runs of the test (about 10 s)
def test_equal_versions_get_a_verdict_at_most_alpha_of_the_time_however_often_looked_at():
    # Every prefix is a look: a verdict at any of them counts (decided_at is the first).
    for alpha in (0.05, 0.2):
        verdicts = [paired_test(*_pairs(seed, 1500), alpha=alpha).verdict for seed in range(1000)]
        false_rate = np.mean([v != "undecided" for v in verdicts])
        assert false_rate <= alpha, (alpha, false_rate)
        assert false_rate > alpha / 10  # the test is not simply mute


def test_a_clearly_better_candidate_is_found_better_early():
    found = [paired_test(*_pairs(seed, 3000, gain=(0.0, 0.25, 0.3, 0.15))) for seed in range(20)]

    assert all(f.verdict == "better" for f in found)
    assert np.median([f.decided_at for f in found]) < 1500


def test_balanced_accuracy_not_accuracy_decides():
    # A candidate a little worse on the majority class and much better on the rare ones is better
    # in balanced accuracy (the metric the loop judges by) though it is right less often.
    found = paired_test(*_pairs(3, 4000, gain=(-0.04, 0.2, 0.2, 0.1)))

    assert found.wins < found.losses
    assert found.candidate_score > found.champion_score
    assert found.verdict == "better"


def test_a_candidate_worse_on_one_slice_only_is_caught_there():
    truth, candidate, champion = _pairs(1, 5000, gain=(0.0, 0.25, 0.35, 0.2))
    firmware = np.random.default_rng(100).choice(["v1", "v2", "v3"], size=len(truth), p=[0.4, 0.4, 0.2])
    # On v3 the candidate misses every failure.
    candidate = np.where((firmware == "v3") & (truth != "0"), "0", candidate)
    slices = {f"firmware={v}": firmware == v for v in ("v1", "v2", "v3")}

    evidence = release_evidence(truth, candidate, champion, slices=slices, alpha=0.05, max_slices=20)

    assert evidence.overall.verdict == "better"
    assert evidence.worse_slices == ["firmware=v3"]
    assert evidence.verdict == "worse_on_slice"


def test_guards_stop_a_release_before_any_label():
    n = 400
    champion = np.array(["online"] * n)
    candidate = np.array(["fibre"] * (n // 2) + ["online"] * (n // 2))
    common = dict(
        candidate_seconds=0.01,
        champion_seconds=0.01,
        min_events=200,
        max_disagreement=0.3,
        max_estimated_drop=0.1,
        max_latency_ratio=5.0,
        max_error_rate=0.0,
    )

    guards = label_free_guards(
        candidate=candidate,
        champion=champion,
        candidate_confidence=np.full(n, 0.5),
        champion_confidence=np.full(n, 0.9),
        errors=0,
        **common,
    )
    failed = {g.name: g.observed for g in guards if not g.passed}
    assert failed == {"disagreement": 0.5, "estimated_accuracy": 0.4}

    one_error = label_free_guards(
        candidate=champion[:10],
        champion=champion[:10],
        candidate_confidence=np.full(10, 0.9),
        champion_confidence=np.full(10, 0.9),
        errors=1,
        **common,
    )
    assert [(g.name, g.passed) for g in one_error] == [("errors", False)]
    assert (
        label_free_guards(
            candidate=champion[:10],
            champion=champion[:10],
            candidate_confidence=np.full(10, 0.9),
            champion_confidence=np.full(10, 0.9),
            errors=0,
            **common,
        )
        == []
    )  # too few events to judge yet


@pytest.mark.parametrize("alpha", [0.0, 1.0])
def test_an_impossible_alpha_is_refused(alpha):
    with pytest.raises(ValueError, match="alpha must be strictly between 0 and 1"):
        paired_test(np.array(["a"]), np.array(["a"]), np.array(["a"]), alpha=alpha)
