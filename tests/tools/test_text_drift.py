from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from driftpilot.tools.text_drift import text_drift

BANKING77 = Path(__file__).parents[1] / "data" / "banking77" / "train.csv"


def _rounded(value: float | None, digits: int) -> float:
    assert value is not None
    return round(value, digits)


def _gaussians(shift: float, n: int, dimensions: int = 16, seed: int = 11) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(0.0, 1.0, (n, dimensions)), rng.normal(shift, 1.0, (n, dimensions))


def test_no_shift_is_not_flagged() -> None:
    reference, current = _gaussians(0.0, 300)

    result = text_drift(reference, current)

    assert result.enough_data and not result.drifted
    assert _rounded(result.statistic, 5) == 0.00016
    assert _rounded(result.p_value, 3) == 0.347
    assert _rounded(result.effect, 5) == 0.00011
    assert (result.n_reference, result.n_current) == (300, 300)


def test_mean_shift_is_flagged_with_pinned_statistic() -> None:
    reference, current = _gaussians(0.5, 300)

    result = text_drift(reference, current)

    assert result.drifted
    assert _rounded(result.statistic, 4) == 0.0718
    assert _rounded(result.effect, 4) == 0.0577
    assert result.p_value == 1 / 501  # no permutation reached the observed statistic


def test_tiny_shift_on_a_huge_window_is_significant_but_below_the_effect_floor() -> None:
    reference, current = _gaussians(0.05, 1000, dimensions=64)

    result = text_drift(reference, current)

    assert result.p_value is not None and result.p_value < 0.01
    assert _rounded(result.effect, 4) == 0.0007
    assert not result.drifted


def test_windows_above_max_samples_are_subsampled_reproducibly() -> None:
    reference, current = _gaussians(0.5, 1500, dimensions=8)

    first = text_drift(reference, current, max_samples=400, n_permutations=200, seed=3)
    again = text_drift(reference, current, max_samples=400, n_permutations=200, seed=3)

    assert first == again
    assert (first.n_reference, first.n_current) == (1500, 1500)  # rows given, not rows tested
    assert first.drifted


def test_effect_does_not_depend_on_the_embeddings_scale() -> None:
    reference, current = _gaussians(0.3, 200)

    small = text_drift(reference, current, n_permutations=50)
    large = text_drift(reference * 100.0, current * 100.0, n_permutations=50)

    assert large.effect == pytest.approx(small.effect)
    assert large.statistic == pytest.approx(small.statistic)


def test_too_few_rows_is_not_enough_data() -> None:
    reference, current = _gaussians(3.0, 100)

    result = text_drift(reference, current[:29], min_samples=30)

    assert not result.enough_data and not result.drifted
    assert (result.statistic, result.p_value, result.effect) == (None, None, None)
    assert (result.n_reference, result.n_current) == (100, 29)


def test_an_empty_window_of_known_width_is_not_enough_data() -> None:
    reference, _ = _gaussians(0.0, 100)

    result = text_drift(reference, np.empty((0, 16)))

    assert not result.enough_data
    assert result.n_current == 0


def test_the_same_text_repeated_on_both_sides_is_not_drift() -> None:
    vector = np.linspace(-1.0, 1.0, 16)

    result = text_drift(np.tile(vector, (40, 1)), np.tile(vector, (40, 1)))

    assert (result.statistic, result.effect, result.p_value, result.drifted) == (0.0, 0.0, 1.0, False)


def test_one_repeated_text_replaced_by_another_is_drift() -> None:
    result = text_drift(np.tile(np.zeros(16), (40, 1)), np.tile(np.ones(16), (40, 1)))

    assert result.drifted
    assert _rounded(result.effect, 4) == round(1 - np.exp(-0.5), 4)


def test_one_dimensional_input_is_refused() -> None:
    reference, _ = _gaussians(0.0, 50)

    with pytest.raises(ValueError, match=r"current embeddings must be a two-dimensional array .* shape \(50,\)"):
        text_drift(reference, np.zeros(50))


def test_empty_list_is_refused_as_one_dimensional() -> None:
    reference, _ = _gaussians(0.0, 50)

    with pytest.raises(ValueError, match=r"current embeddings must be a two-dimensional array .* shape \(0,\)"):
        text_drift(reference, [])


def test_different_dimensions_are_refused() -> None:
    reference, _ = _gaussians(0.0, 50)

    with pytest.raises(ValueError, match="reference embeddings have 16 dimensions and current ones 384"):
        text_drift(reference, np.zeros((50, 384)))


def test_missing_value_is_refused_with_its_row() -> None:
    reference, current = _gaussians(0.0, 50)
    reference[7, 3] = np.nan

    with pytest.raises(ValueError, match="reference embeddings hold a missing or infinite value in row 7"):
        text_drift(reference, current)


def test_banking77_intents_drift_apart_and_halves_of_one_intent_do_not() -> None:
    from driftpilot.models.text_encoder import SentenceEncoder

    queries = pd.read_csv(BANKING77)
    card_arrival = queries.loc[queries["category"] == "card_arrival", "text"].tolist()[:60]
    exchange_rate = queries.loc[queries["category"] == "exchange_rate", "text"].tolist()[:30]
    started = time.monotonic()
    vectors = SentenceEncoder().encode(card_arrival + exchange_rate)
    if time.monotonic() - started > 15:
        pytest.skip("loading and running all-MiniLM-L6-v2 took over 15 s on this machine")
    first_half, second_half, other_intent = vectors[:30], vectors[30:60], vectors[60:]

    within = text_drift(first_half, second_half)
    between = text_drift(first_half, other_intent)
    half_moved = text_drift(first_half, np.vstack([second_half[:15], other_intent[:15]]))

    assert not within.drifted and _rounded(within.effect, 3) < 0.005
    assert between.drifted and _rounded(between.effect, 2) == 0.31
    assert half_moved.drifted and _rounded(half_moved.effect, 2) == 0.10
