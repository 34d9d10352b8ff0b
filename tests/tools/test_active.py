from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftpilot.tools.active import select_for_labels, uncertainty_scores

SURE = [0.96, 0.02, 0.02]


def _blobs(n_blobs: int, per_blob: int, seed: int = 0, dimensions: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """Tight, far-apart groups of rows, and the group of each row."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0.0, 10.0, (n_blobs, dimensions))
    group = np.repeat(np.arange(n_blobs), per_blob)
    return centres[group] + rng.normal(0.0, 0.1, (len(group), dimensions)), group


def _probabilities(margins: np.ndarray) -> np.ndarray:
    """Three-class probabilities with the given margin between the first two classes."""
    first = (1.0 - 0.02 + margins) / 2
    return np.column_stack([first, first - margins, np.full(len(margins), 0.02)])


# -- cold start ------------------------------------------------------------------------------


def test_cold_start_takes_one_representative_row_of_every_group() -> None:
    embedding, group = _blobs(6, 15)

    chosen = select_for_labels(embedding, None, 6, seed=3)

    assert sorted(group[chosen.indices].tolist()) == [0, 1, 2, 3, 4, 5]
    assert all(reason.startswith("cold start (no model yet): representative of group") for reason in chosen.reasons)


def test_cold_start_passes_over_groups_that_are_labelled_already() -> None:
    embedding, group = _blobs(4, 20)
    labelled = embedding[[5, 25]] + 0.01  # near rows of groups 0 and 1

    chosen = select_for_labels(embedding, None, 2, labelled=labelled, seed=0)

    assert sorted(group[chosen.indices].tolist()) == [2, 3]
    assert all("none labelled" in reason for reason in chosen.reasons)


def test_cold_start_picks_the_row_nearest_the_centre_of_a_group() -> None:
    embedding = np.array([[0.0], [1.0], [2.0], [3.0], [4.0]])

    chosen = select_for_labels(embedding, None, 1)

    assert chosen.indices.tolist() == [2]
    assert chosen.reasons == ("cold start (no model yet): representative of group 1 of 1 (5 rows, none labelled)",)


# -- with a model ----------------------------------------------------------------------------


def test_uncertain_rows_are_chosen_before_confident_ones() -> None:
    embedding, _ = _blobs(4, 25)
    margins = np.full(100, 0.9)
    unsure = np.arange(3, 100, 10)  # ten rows spread over the groups
    margins[unsure] = 0.05

    chosen = select_for_labels(embedding, _probabilities(margins), 4, candidates_per_pick=2, seed=1)

    assert set(chosen.indices.tolist()) <= set(unsure.tolist())


def test_the_batch_is_spread_over_groups_of_uncertain_rows() -> None:
    # Group 0's rows are all a little less sure than group 1's: plain uncertainty sampling would
    # take both picks from group 0. The model is sure of groups 2 and 3.
    embedding, group = _blobs(4, 10)
    margins = np.select([group == 0, group == 1], [0.01, 0.03], 0.9)

    chosen = select_for_labels(embedding, _probabilities(margins), 2, seed=0)
    plain = select_for_labels(embedding, _probabilities(margins), 2, candidates_per_pick=1)

    assert sorted(group[chosen.indices].tolist()) == [0, 1]
    assert group[plain.indices].tolist() == [0, 0]


def test_picks_come_most_uncertain_first_and_name_the_classes_hesitated_between() -> None:
    embedding, group = _blobs(6, 4)
    margins = np.array([0.5] * 4 + [0.1] * 4 + [0.3] * 4 + [0.9] * 12)

    chosen = select_for_labels(embedding, _probabilities(margins), 3, classes=["fee", "refund", "card"], seed=0)

    assert group[chosen.indices].tolist() == [1, 2, 0]
    assert [r.split(";")[0] for r in chosen.reasons] == [
        "uncertain: margin 0.10 between 'fee' and 'refund'",
        "uncertain: margin 0.30 between 'fee' and 'refund'",
        "uncertain: margin 0.50 between 'fee' and 'refund'",
    ]
    assert all("typical of group" in r and "of the 12 most uncertain rows" in r for r in chosen.reasons)


def test_entropy_can_stand_in_for_margin() -> None:
    embedding, group = _blobs(2, 5)
    probabilities = np.array([SURE] * 5 + [[0.34, 0.33, 0.33]] * 5)

    chosen = select_for_labels(embedding, probabilities, 1, uncertainty="entropy")

    assert group[chosen.indices].tolist() == [1]


# -- drifted slice ---------------------------------------------------------------------------


def test_half_the_batch_comes_from_the_drifted_slice_even_when_the_model_is_sure_there() -> None:
    embedding, group = _blobs(4, 10)
    margins = np.where(group == 3, 0.9, 0.05)  # the model is sure of the drifted group
    drifted = group == 3

    chosen = select_for_labels(embedding, _probabilities(margins), 4, drifted=drifted, seed=0)

    assert drifted[chosen.indices].tolist() == [True, True, False, False]
    assert [r.startswith("drifted slice: uncertain") for r in chosen.reasons] == [True, True, False, False]


def test_drift_share_sets_the_slice_part_and_a_small_slice_gives_all_it_has() -> None:
    embedding, group = _blobs(4, 10)
    margins = np.where(group == 3, 0.9, 0.05)

    everything = select_for_labels(embedding, _probabilities(margins), 4, drifted=group == 3, drift_share=1.0)
    small = np.zeros(40, dtype=bool)
    small[[31, 35]] = True
    two = select_for_labels(embedding, _probabilities(margins), 6, drifted=small, drift_share=1.0)

    assert (group[everything.indices] == 3).all()
    assert sorted(two.indices[:2].tolist()) == [31, 35]
    assert len(two) == 6 and not small[two.indices[2:]].any()


def test_cold_start_in_a_drifted_slice_keeps_the_rest_away_from_it() -> None:
    embedding, group = _blobs(4, 10)

    chosen = select_for_labels(embedding, None, 4, drifted=group == 0, seed=0)

    assert group[chosen.indices[:2]].tolist() == [0, 0]
    assert sorted(group[chosen.indices[2:]].tolist()) != [0, 0]
    assert all(r.startswith("drifted slice: cold start") for r in chosen.reasons[:2])


# -- budgets, NaN, determinism ----------------------------------------------------------------


def test_a_budget_larger_than_the_pool_returns_every_usable_row_once() -> None:
    embedding, _ = _blobs(2, 3)
    embedding[4, 0] = np.nan
    margins = np.linspace(0.1, 0.6, 6)

    warm = select_for_labels(embedding, _probabilities(margins), 50)
    cold = select_for_labels(embedding, None, 50)

    assert sorted(warm.indices.tolist()) == [0, 1, 2, 3, 5]
    assert sorted(cold.indices.tolist()) == [0, 1, 2, 3, 5]
    assert len(warm.reasons) == len(cold.reasons) == 5


def test_a_zero_budget_or_an_empty_pool_selects_nothing() -> None:
    embedding, _ = _blobs(2, 3)

    none = select_for_labels(embedding, None, 0)
    empty = select_for_labels(np.zeros((0, 4)), np.zeros((0, 3)), 5)

    assert len(none) == 0 and none.reasons == ()
    assert len(empty) == 0 and empty.indices.dtype == np.int64


def test_rows_with_nan_probabilities_are_never_chosen() -> None:
    embedding, _ = _blobs(2, 5)
    probabilities = _probabilities(np.full(10, 0.5))
    probabilities[[0, 1, 2]] = np.nan

    chosen = select_for_labels(embedding, probabilities, 10)

    assert sorted(chosen.indices.tolist()) == [3, 4, 5, 6, 7, 8, 9]


def test_the_same_seed_gives_the_same_selection_and_the_result_is_read_only() -> None:
    embedding, _ = _blobs(8, 30, dimensions=16)
    margins = np.random.default_rng(2).random(240)

    first = select_for_labels(embedding, _probabilities(margins), 12, seed=5)
    again = select_for_labels(embedding, _probabilities(margins), 12, seed=5)

    assert first.indices.tolist() == again.indices.tolist() and first.reasons == again.reasons
    with pytest.raises(ValueError):
        first.indices[0] = 1


def test_duplicate_rows_still_fill_the_budget() -> None:
    embedding = np.zeros((6, 3))

    cold = select_for_labels(embedding, None, 4)
    warm = select_for_labels(embedding, _probabilities(np.linspace(0.1, 0.6, 6)), 4, candidates_per_pick=2)

    assert len(set(cold.indices.tolist())) == 4
    assert sorted(warm.indices.tolist()) == [0, 1, 2, 3]


@given(
    rows=st.integers(0, 40),
    n=st.integers(0, 50),
    with_model=st.booleans(),
    nan_rows=st.integers(0, 5),
    seed=st.integers(0, 3),
)
def test_selection_is_distinct_usable_rows_with_one_reason_each(
    rows: int, n: int, with_model: bool, nan_rows: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    embedding = rng.normal(size=(rows, 3)).round(1)  # rounded: duplicate rows happen
    embedding[: min(nan_rows, rows), 1] = np.nan
    probabilities = rng.dirichlet(np.ones(4), size=rows) if with_model else None
    usable = rows - min(nan_rows, rows)

    chosen = select_for_labels(embedding, probabilities, n, seed=seed, drifted=rng.random(rows) < 0.3)

    assert len(chosen) == len(chosen.reasons) == min(n, usable)
    assert len(set(chosen.indices.tolist())) == len(chosen)
    assert np.isfinite(embedding[chosen.indices]).all()


# -- errors ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"probabilities": np.full((4, 2), 0.5)}, "embedding has 5 rows, probabilities has shape (4, 2)"),
        ({"labelled": np.zeros((3, 2))}, "labelled must have the embedding's 3 columns, got shape (3, 2)"),
        ({"drifted": np.ones(4, dtype=bool)}, "one entry per pool row (5), got dtype bool and shape (4,)"),
        ({"drifted": np.ones(5)}, "drifted must be a boolean mask"),
        ({"n": -1}, "n (the number of rows to choose) must be a whole number >= 0, got -1"),
        ({"n": 2.5}, "got 2.5"),
        ({"drift_share": 1.5}, "drift_share must be in [0, 1], got 1.5"),
        ({"candidates_per_pick": 0}, "candidates_per_pick must be at least 1"),
        ({"probabilities": np.full((5, 2), 0.5), "classes": ["a"]}, "classes names 1 classes but probabilities has 2"),
        ({"embedding": np.zeros(5)}, "embedding must be a 2-D matrix (pool rows x features), got shape (5,)"),
        ({"probabilities": np.full((5, 2), 0.5), "uncertainty": "variance"}, "'margin' or 'entropy', got 'variance'"),
        ({"uncertainty": "variance"}, "uncertainty must be 'margin' or 'entropy', got 'variance'"),
    ],
)
def test_errors_name_what_is_wrong(arguments: dict[str, object], message: str) -> None:
    call: dict[str, object] = {"embedding": np.zeros((5, 3)), "probabilities": None, "n": 2} | arguments

    with pytest.raises(ValueError) as raised:
        select_for_labels(**call)  # type: ignore[arg-type]

    assert message in str(raised.value)


def test_uncertainty_scores_are_pinned() -> None:
    p = np.array([[1.0, 0.0], [0.5, 0.5], [0.7, 0.3]])

    assert uncertainty_scores(p).round(3).tolist() == [0.0, 1.0, 0.6]
    assert uncertainty_scores(p, "entropy").round(3).tolist() == [0.0, 1.0, 0.881]
    assert uncertainty_scores(np.ones((2, 1))).tolist() == [0.0, 0.0]
