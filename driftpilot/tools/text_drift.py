"""Drift of a text feature, tested on its sentence embeddings with a kernel two-sample test.

Texts are compared through their all-MiniLM-L6-v2 vectors (see
:class:`driftpilot.models.text_encoder.SentenceEncoder`): two windows of queries drift apart
when what people write about changes, even if no single word count does. The test is the
maximum mean discrepancy (MMD) of Gretton et al., "A Kernel Two-Sample Test", JMLR 13 (2012),
with a Gaussian (RBF) kernel whose bandwidth is the median pairwise distance of the pooled
sample (the median heuristic, same paper, section 8), and a permutation null.

As with the per-feature tests in :mod:`driftpilot.tools.drift`, a window counts as drifted only
when the test rejects *and* an effect size reaches a floor: on windows of thousands of texts
the test alone flags shifts nobody would act on.

Written by hand in numpy (with scipy's pairwise distances), because no light, maintained
library here does a kernel two-sample test: alibi-detect and frouros are not dependencies and
pull TensorFlow/PyTorch stacks or more; scipy has ``permutation_test`` but it recomputes the
statistic from the raw vectors for every permutation, where permuting the labels over one
precomputed kernel matrix is what makes the test fast; river has no batch two-sample test.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict
from scipy.spatial.distance import pdist, squareform

__all__ = ["TextDrift", "text_drift"]

#: Rows drawn from each side at most: the kernel matrix is quadratic in the rows tested.
MAX_SAMPLES = 1000


class TextDrift(BaseModel):
    """The kernel two-sample test of one text feature's embeddings.

    ``statistic`` is the unbiased estimate of MMD² (it can be slightly negative when the
    windows do not differ), ``p_value`` its permutation p-value, and ``effect`` the cosine
    distance between the two windows' kernel mean embeddings, ``1 - E k(x, y) /
    sqrt(E k(x, x') E k(y, y'))``: 0 for the same distribution, 1 for windows so far apart
    that no reference text resembles any current one. Because the kernel's bandwidth follows
    the data (median heuristic), the effect does not depend on the embeddings' scale.
    ``drifted`` needs ``p_value < p_threshold`` and ``effect >= effect_floor``.

    When a window has fewer than ``min_samples`` rows nothing is tested: ``enough_data`` is
    false and the three figures are ``None``. ``n_reference`` and ``n_current`` count the rows
    given; the test itself uses at most ``MAX_SAMPLES`` of them a side.
    """

    model_config = ConfigDict(frozen=True)

    statistic: float | None
    p_value: float | None
    effect: float | None
    drifted: bool
    n_reference: int
    n_current: int
    enough_data: bool


def text_drift(
    reference_embeddings: ArrayLike,
    current_embeddings: ArrayLike,
    *,
    p_threshold: float = 0.01,
    n_permutations: int = 500,
    seed: int = 0,
    min_samples: int = 30,
    effect_floor: float = 0.02,
    max_samples: int = MAX_SAMPLES,
) -> TextDrift:
    """Test whether two windows of sentence embeddings come from the same distribution.

    Each side is first subsampled (without replacement, seeded) to at most ``max_samples``
    rows, since the kernel matrix grows with the square of the rows and a thousand a side
    already resolves shifts far below the effect floor. The p-value is
    ``(1 + #{permuted MMD² >= observed}) / (1 + n_permutations)`` (Phipson and Smyth, 2010),
    so the smallest reachable p-value is ``1 / (1 + n_permutations)``: keep
    ``n_permutations`` well above ``1 / p_threshold``.

    The default ``effect_floor`` of 0.02 sits between what two windows of the same Banking77
    intents show (below 0.001) and what a change of intent shows (0.1 and more, also when
    only half the current window moves to another intent); a shift of 0.02 standard
    deviations in every one of 384 dimensions, which the test finds on 3,000 rows a side,
    has an effect near 0.0001.

    Raises
    ------
    ValueError
        When a side is not a two-dimensional array of rows, the sides' dimensions differ,
        or a value is missing or infinite (naming the side and row), or a setting is out of
        range.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> reference = rng.normal(0.0, 1.0, (200, 8))
    >>> same = text_drift(reference, rng.normal(0.0, 1.0, (200, 8)))
    >>> same.drifted, round(same.p_value, 2), same.effect
    (False, 0.83, 0.0)
    >>> moved = text_drift(reference, rng.normal(0.5, 1.0, (200, 8)))
    >>> moved.drifted, round(moved.statistic, 4), round(moved.effect, 3), round(moved.p_value, 3)
    (True, 0.0858, 0.069, 0.002)
    """
    if not 0 < p_threshold < 1:
        raise ValueError(f"p_threshold must be between 0 and 1, got {p_threshold}")
    if n_permutations < 1:
        raise ValueError(f"n_permutations must be at least 1, got {n_permutations}")
    if min_samples < 2:
        raise ValueError(f"min_samples must be at least 2, got {min_samples}")
    if max_samples < min_samples:
        raise ValueError(f"max_samples ({max_samples}) must not be below min_samples ({min_samples})")
    if effect_floor < 0:
        raise ValueError(f"effect_floor must not be negative, got {effect_floor}")
    reference = _as_embeddings(reference_embeddings, "reference")
    current = _as_embeddings(current_embeddings, "current")
    if reference.shape[1] != current.shape[1]:
        raise ValueError(
            f"reference embeddings have {reference.shape[1]} dimensions and current ones "
            f"{current.shape[1]}: they must come from the same encoder"
        )
    n_reference, n_current = len(reference), len(current)
    if n_reference < min_samples or n_current < min_samples:
        return TextDrift(
            statistic=None,
            p_value=None,
            effect=None,
            drifted=False,
            n_reference=n_reference,
            n_current=n_current,
            enough_data=False,
        )

    rng = np.random.default_rng(seed)
    reference = _subsample(reference, max_samples, rng)
    current = _subsample(current, max_samples, rng)
    kernel = _rbf_kernel(np.vstack([reference, current]))
    np.fill_diagonal(kernel, 0.0)  # the unbiased estimate leaves out k(x, x)

    n = len(reference)
    in_reference = np.zeros(len(kernel), dtype=bool)
    in_reference[:n] = True
    statistic, effect = _mmd2_and_effect(kernel, in_reference)
    null = _permuted_mmd2(kernel, n, n_permutations, rng)
    p_value = float((1 + np.count_nonzero(null >= statistic)) / (1 + n_permutations))
    return TextDrift(
        statistic=statistic,
        p_value=p_value,
        effect=effect,
        drifted=p_value < p_threshold and effect >= effect_floor,
        n_reference=n_reference,
        n_current=n_current,
        enough_data=True,
    )


def _as_embeddings(values: ArrayLike, side: str) -> np.ndarray:
    """The rows as a float matrix; a ValueError says what is wrong and where."""
    array = np.asarray(values, dtype=float)
    if array.ndim != 2:
        raise ValueError(
            f"{side} embeddings must be a two-dimensional array (one row per text), got shape {array.shape}"
        )
    if array.shape[1] == 0:
        raise ValueError(f"{side} embeddings have no dimensions (shape {array.shape})")
    bad_rows = np.flatnonzero(~np.isfinite(array).all(axis=1))
    if bad_rows.size:
        raise ValueError(
            f"{side} embeddings hold a missing or infinite value in row {int(bad_rows[0])} "
            f"({bad_rows.size} rows in all)"
        )
    return array


def _subsample(rows: np.ndarray, limit: int, rng: np.random.Generator) -> np.ndarray:
    if len(rows) <= limit:
        return rows
    return rows[np.sort(rng.choice(len(rows), size=limit, replace=False))]


def _rbf_kernel(rows: np.ndarray) -> np.ndarray:
    """Gaussian kernel exp(-d² / (2 σ²)) with σ the median pairwise distance (median heuristic)."""
    squared = pdist(rows, "sqeuclidean")
    # Repeated texts give zero distances; left in, they would shrink the bandwidth towards
    # zero and make every pair of distinct texts look unrelated.
    positive = squared[squared > 0]
    if positive.size == 0:
        return np.ones((len(rows), len(rows)))  # every row is the same vector
    sigma2 = float(np.median(positive))
    return np.exp(-squareform(squared) / (2.0 * sigma2))


def _mmd2_and_effect(kernel: np.ndarray, in_reference: np.ndarray) -> tuple[float, float]:
    """Unbiased MMD² and the cosine distance of the kernel mean embeddings (zero-diagonal kernel)."""
    n, m = int(in_reference.sum()), int((~in_reference).sum())
    xx = kernel[np.ix_(in_reference, in_reference)].sum() / (n * (n - 1))
    yy = kernel[np.ix_(~in_reference, ~in_reference)].sum() / (m * (m - 1))
    xy = kernel[np.ix_(in_reference, ~in_reference)].sum() / (n * m)
    effect = 1.0 - xy / np.sqrt(xx * yy)
    return float(xx + yy - 2.0 * xy), float(min(1.0, max(0.0, effect)))


def _permuted_mmd2(kernel: np.ndarray, n: int, n_permutations: int, rng: np.random.Generator) -> np.ndarray:
    """MMD² under random relabellings of the pooled rows, from the one kernel matrix.

    With x the 0/1 indicator of the rows labelled "reference" and K the zero-diagonal
    kernel, the three sums of the estimate are x'Kx, x'K1 - x'Kx and 1'K1 - 2x'K1 + x'Kx,
    so a batch of permutations costs one matrix product.
    """
    total = len(kernel)
    m = total - n
    row_sums = kernel.sum(axis=1)
    grand = row_sums.sum()
    null = np.empty(n_permutations)
    batch = 100
    for start in range(0, n_permutations, batch):
        size = min(batch, n_permutations - start)
        labels = np.zeros((size, total))
        for row in range(size):
            labels[row, rng.permutation(total)[:n]] = 1.0
        within = np.einsum("ij,ij->i", labels @ kernel, labels)  # x'Kx
        cross = labels @ row_sums - within  # x'K(1 - x)
        other = grand - 2.0 * (labels @ row_sums) + within  # (1 - x)'K(1 - x)
        null[start : start + size] = within / (n * (n - 1)) + other / (m * (m - 1)) - 2.0 * cross / (n * m)
    return null
