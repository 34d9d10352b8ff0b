"""Laws the statistical tools obey whatever the data, checked with hypothesis.

Only laws that hold are stated. The sequential test gives equal versions a verdict at most alpha
of the time, and it is antisymmetric in its two versions and blind to the classes' names. The
drift tests' statistics and p-values do not depend on which window is called the reference,
except numeric PSI: its bins are the reference's deciles, so it is not symmetric (it is zero on
identical windows and never negative). Metrics do not depend on the classes' names or order, nor
on the order of the samples.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from driftpilot.tools.drift import categorical_drift, numeric_drift, population_stability_index
from driftpilot.tools.metrics import (
    accuracy,
    balanced_accuracy,
    expected_calibration_error,
    macro_f1,
    per_class_recall,
)
from driftpilot.tools.sequential import paired_test

#: Class names given to codes 0..k-1, and the bijection that renames them (not in sorted order).
NAMES = np.array(["online", "fibre", "power", "overheating", "firmware_crash"])
RENAMED = np.array(["zeta", "alpha", "mu", "beta", "omega"])

seeds = st.integers(min_value=0, max_value=2**32 - 1)


@st.composite
def labelled_answers(draw: st.DrawFn, min_size: int = 1, max_size: int = 300) -> tuple[np.ndarray, ...]:
    """Codes of true classes and of two versions' answers, from a seeded generator: hypothesis
    chooses how many classes, how skewed their shares, and how often each version is right."""
    k = draw(st.integers(min_value=2, max_value=len(NAMES)))
    n = draw(st.integers(min_value=min_size, max_value=max_size))
    rng = np.random.default_rng(draw(seeds))
    shares = rng.dirichlet(np.full(k, draw(st.sampled_from([0.3, 1.0, 5.0]))))
    truth = rng.choice(k, size=n, p=shares)
    answers = []
    for _ in range(2):
        right = rng.random(n) < draw(st.floats(min_value=0.0, max_value=1.0))
        answers.append(np.where(right, truth, rng.integers(0, k, n)))
    return truth, answers[0], answers[1]


# ----------------------------------------------------------------------------- sequential test


@pytest.mark.slow
@settings(max_examples=5, deadline=None, derandomize=True)
@given(
    alpha=st.sampled_from([0.05, 0.1, 0.2, 0.3]),
    k=st.integers(min_value=2, max_value=4),
    concentration=st.sampled_from([0.5, 1.0, 5.0]),
    first_seed=seeds,
)
def test_equal_versions_get_a_verdict_at_most_alpha_of_the_time(alpha, k, concentration, first_seed):
    # Ville's inequality bounds the chance of any verdict, at any look, by alpha when the two
    # versions are equally good on every class, whatever the classes' shares and accuracies.
    # Counted over 150 seeded runs: a count no binomial(150, alpha) reaches with probability
    # 0.001 would refute the bound (tests/tools/test_sequential.py measures it more tightly).
    runs, n = 150, 800
    verdicts = 0
    setting = np.random.default_rng(first_seed)
    shares = setting.dirichlet(np.full(k, concentration))
    right = setting.uniform(0.4, 0.99, k)  # each class's accuracy, the same for both versions
    for seed in range(runs):
        rng = np.random.default_rng([first_seed, seed])
        truth = rng.choice(k, size=n, p=shares)
        candidate = np.where(rng.random(n) < right[truth], truth, -1)
        champion = np.where(rng.random(n) < right[truth], truth, -1)
        verdicts += paired_test(truth, candidate, champion, alpha=alpha).verdict != "undecided"

    assert stats.binom.sf(verdicts - 1, runs, alpha) > 0.001, (verdicts, runs, alpha)


@settings(max_examples=60, deadline=None)
@given(answers=labelled_answers(max_size=400), alpha=st.floats(min_value=0.01, max_value=0.5))
def test_swapping_the_versions_swaps_the_verdict(answers, alpha):
    truth, candidate, champion = answers

    forward = paired_test(truth, candidate, champion, alpha=alpha)
    backward = paired_test(truth, champion, candidate, alpha=alpha)

    swapped = {"better": "worse", "worse": "better", "undecided": "undecided"}
    assert backward.verdict == swapped[forward.verdict]
    assert (backward.wins, backward.losses) == (forward.losses, forward.wins)
    assert (backward.candidate_score, backward.champion_score) == (forward.champion_score, forward.candidate_score)
    assert (backward.log_evidence, backward.decided_at) == (forward.log_evidence, forward.decided_at)


@settings(max_examples=60, deadline=None)
@given(answers=labelled_answers(max_size=400))
def test_the_sequential_test_is_blind_to_the_classes_names(answers):
    truth, candidate, champion = answers

    plain = paired_test(NAMES[truth], NAMES[candidate], NAMES[champion])
    renamed = paired_test(RENAMED[truth], RENAMED[candidate], RENAMED[champion])

    assert (renamed.verdict, renamed.decided_at, renamed.log_evidence) == (
        plain.verdict,
        plain.decided_at,
        plain.log_evidence,
    )
    assert (renamed.wins, renamed.losses) == (plain.wins, plain.losses)
    assert renamed.candidate_score == pytest.approx(plain.candidate_score, abs=2e-4)  # rounded to 4 places


# ----------------------------------------------------------------------------- drift tests

finite = st.floats(min_value=-1e6, max_value=1e6, allow_nan=False, allow_infinity=False)
samples = st.lists(finite, min_size=2, max_size=200)


@settings(max_examples=100, deadline=None)
@given(reference=samples, current=samples)
def test_ks_does_not_care_which_window_is_the_reference(reference, current):
    forward = numeric_drift(np.asarray(reference), np.asarray(current))
    backward = numeric_drift(np.asarray(current), np.asarray(reference))

    assert backward.statistic == pytest.approx(forward.statistic, abs=1e-12)
    assert backward.p_value == pytest.approx(forward.p_value, rel=1e-9, abs=1e-12)
    assert (backward.n_reference, backward.n_current) == (forward.n_current, forward.n_reference)


@settings(max_examples=100, deadline=None)
@given(reference=samples)
def test_numeric_psi_is_zero_on_identical_windows(reference):
    # Numeric PSI bins both windows on the reference's deciles, so it is not symmetric in the two
    # windows in general; it is zero on the same window and never negative.
    same = numeric_drift(np.asarray(reference), np.asarray(reference))

    assert same.psi == pytest.approx(0.0, abs=1e-12)
    assert same.statistic == 0.0
    assert not same.drifted


@settings(max_examples=100, deadline=None)
@given(reference=samples, current=samples)
def test_numeric_psi_is_never_negative(reference, current):
    assert numeric_drift(np.asarray(reference), np.asarray(current)).psi >= 0.0


def _histograms(k: int) -> st.SearchStrategy[tuple[list[float], list[float]]]:
    one = st.lists(st.floats(min_value=0.0, max_value=1.0), min_size=k, max_size=k)
    return st.tuples(one, one)


@settings(max_examples=100, deadline=None)
@given(pair=st.integers(min_value=2, max_value=12).flatmap(_histograms))
def test_psi_of_two_histograms_is_symmetric_and_not_negative(pair):
    reference, current = pair

    forward = population_stability_index(reference, current)

    assert forward == pytest.approx(population_stability_index(current, reference), rel=1e-12, abs=1e-15)
    assert forward >= 0.0


categories = st.lists(st.sampled_from(["fw-1.2", "fw-1.3", "fw-2.0", "fw-2.1", "beta"]), min_size=1, max_size=200)


@settings(max_examples=100, deadline=None)
@given(reference=categories, current=categories)
def test_the_categorical_test_does_not_care_which_window_is_the_reference(reference, current):
    forward = categorical_drift(reference, current)
    backward = categorical_drift(current, reference)

    assert backward.statistic == pytest.approx(forward.statistic, rel=1e-9, abs=1e-9)
    assert backward.p_value == pytest.approx(forward.p_value, rel=1e-9, abs=1e-12)
    assert backward.psi == pytest.approx(forward.psi, rel=1e-9, abs=1e-12)
    assert backward.jensen_shannon == pytest.approx(forward.jensen_shannon, rel=1e-9, abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(reference=categories, current=categories)
def test_the_categorical_test_is_blind_to_the_categories_names(reference, current):
    rename = {"fw-1.2": "z", "fw-1.3": "a", "fw-2.0": "m", "fw-2.1": "b", "beta": "0"}

    plain = categorical_drift(reference, current)
    renamed = categorical_drift([rename[c] for c in reference], [rename[c] for c in current])

    assert renamed.statistic == pytest.approx(plain.statistic, rel=1e-9, abs=1e-9)
    assert renamed.p_value == pytest.approx(plain.p_value, rel=1e-9, abs=1e-12)
    assert renamed.psi == pytest.approx(plain.psi, rel=1e-9, abs=1e-12)


# ----------------------------------------------------------------------------- metrics


@settings(max_examples=100, deadline=None)
@given(answers=labelled_answers(), order_seed=seeds)
def test_metrics_do_not_depend_on_the_classes_names_nor_the_samples_order(answers, order_seed):
    truth, predicted, _ = answers
    order = np.random.default_rng(order_seed).permutation(len(truth))
    y_true, y_pred = NAMES[truth], NAMES[predicted]
    renamed_true, renamed_pred = RENAMED[truth][order], RENAMED[predicted][order]

    for metric in (accuracy, balanced_accuracy, macro_f1):
        assert metric(renamed_true, renamed_pred) == pytest.approx(metric(y_true, y_pred), abs=1e-12), metric
    back = dict(zip(RENAMED, NAMES, strict=True))
    recalls = {back[name]: value for name, value in per_class_recall(renamed_true, renamed_pred).items()}
    assert recalls == pytest.approx(per_class_recall(y_true, y_pred), abs=1e-12)


@settings(max_examples=100, deadline=None)
@given(
    k=st.integers(min_value=2, max_value=len(NAMES)),
    n=st.integers(min_value=1, max_value=300),
    seed=seeds,
    bins=st.integers(min_value=1, max_value=20),
)
def test_calibration_error_does_not_depend_on_the_classes_order(k, n, seed, bins):
    # Continuous probabilities, so that no row has two top classes (argmax would then pick by
    # column order, and the law would not hold).
    rng = np.random.default_rng(seed)
    probabilities = rng.dirichlet(np.ones(k), n)
    labels = NAMES[:k][rng.integers(0, k, n)]
    order = rng.permutation(k)

    plain = expected_calibration_error(labels, probabilities, list(NAMES[:k]), n_bins=bins)
    reordered = expected_calibration_error(labels, probabilities[:, order], list(NAMES[:k][order]), n_bins=bins)

    assert reordered == pytest.approx(plain, abs=1e-12)
