from __future__ import annotations

import numpy as np
import pytest

from driftpilot.tools.cohort import canary_mask, cohort_bucket, in_canary

IDS = [f"ont-{i:05d}" for i in range(10_000)]


@pytest.mark.parametrize(
    ("entity", "salt", "bucket"),
    [
        ("ont-00001", "", 0.16657038346026043),
        ("ont-00002", "", 0.06411942161068385),
        ("gw-7f3a", "", 0.2520872503579864),
        ("ont-17", "r1", 0.25530415507313753),
    ],
)
def test_pinned_buckets(entity: str, salt: str, bucket: float) -> None:
    assert cohort_bucket(entity, salt) == bucket


def test_share_zero_selects_none_and_one_selects_all() -> None:
    assert not canary_mask(IDS, 0.0).any()
    assert canary_mask(IDS, 1.0).all()
    assert in_canary("ont-00001", 1.0) and not in_canary("ont-00001", 0.0)


def test_ten_percent_of_ten_thousand() -> None:
    mask = canary_mask(IDS, 0.1)

    assert mask.dtype == np.bool_
    assert int(mask.sum()) == 981


def test_same_ids_same_answer_in_any_order() -> None:
    order = np.random.default_rng(5).permutation(len(IDS))
    shuffled = [IDS[i] for i in order]

    mask = canary_mask(IDS, 0.1)
    mask_shuffled = canary_mask(shuffled, 0.1)

    assert (mask_shuffled == mask[order]).all()
    assert [in_canary(entity, 0.1) for entity in IDS[:50]] == list(mask[:50])


def test_cohorts_are_nested_as_the_share_grows() -> None:
    small, large = canary_mask(IDS, 0.05), canary_mask(IDS, 0.1)

    assert (large[small]).all()


def test_bad_share_and_entity_are_refused() -> None:
    with pytest.raises(ValueError, match="share must be between 0 and 1, got 1.5"):
        in_canary("ont-1", 1.5)
    with pytest.raises(ValueError, match="share must be between 0 and 1, got nan"):
        canary_mask(IDS, float("nan"))
    with pytest.raises(TypeError, match="entity must be a string, got 17"):
        cohort_bucket(17)  # type: ignore[arg-type]
