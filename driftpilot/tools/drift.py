"""Per-feature drift tests between a reference window and a current window.

A feature counts as drifted only when two things hold: the two-sample test rejects
"same distribution" (Kolmogorov-Smirnov for numbers, Pearson's chi-square test of
homogeneity for categories) *and* the population stability index reaches an
effect-size floor. The test alone flags trivial shifts once windows are large; PSI alone
has no notion of sampling noise on small windows. The Jensen-Shannon distance over the same
bins is reported beside PSI as a bounded effect size (0 for identical histograms, 1 for
disjoint ones) that reads the same on every feature; it does not take part in the decision.

The drift of a model's predictions and of its class priors (the label shares) are the same
categorical test, under the names ``prediction`` and ``label``: see :func:`prediction_drift`
and :func:`prior_drift`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike
from pydantic import BaseModel, ConfigDict
from scipy import stats
from scipy.spatial.distance import jensenshannon

__all__ = [
    "DriftReport",
    "FeatureDrift",
    "FeatureKind",
    "categorical_drift",
    "check_features",
    "counter_features",
    "feature_drift",
    "increments",
    "numeric_drift",
    "population_stability_index",
    "prediction_drift",
    "prior_drift",
]

FeatureKind = Literal["number", "category"]

#: Share given to a bin (or category) that one side leaves empty, so that PSI stays
#: finite; the usual choice in credit-scoring practice.
PSI_EPSILON = 1e-4


class FeatureDrift(BaseModel):
    """The drift test of one feature.

    ``p_value`` is the test's own p-value; ``p_value_adjusted`` the Bonferroni-adjusted
    one that ``drifted`` is decided on (equal to ``p_value`` for a single test).
    ``psi`` is the effect-size floor of the decision; ``jensen_shannon`` (the Jensen-Shannon
    distance, base 2, over the same bins or categories, in [0, 1]) is reported evidence only.
    ``note`` says when a side held a single value, which makes the test degenerate: a
    feature constant on both sides at the same value cannot have drifted.
    """

    model_config = ConfigDict(frozen=True)

    feature: str
    kind: FeatureKind
    test: Literal["ks", "chi2"]
    statistic: float
    p_value: float
    p_value_adjusted: float
    psi: float
    jensen_shannon: float
    n_reference: int
    n_current: int
    drifted: bool
    note: str | None = None


class DriftReport(BaseModel):
    """Drift of every feature tested, which ones drifted, and which were not tested.

    ``untested`` lists the features with fewer than ``min_samples`` non-missing values
    on a side; when the windows themselves are too small (``enough_data`` false),
    nothing is tested and both lists are empty.
    """

    model_config = ConfigDict(frozen=True)

    features: list[FeatureDrift]
    drifted: list[str]
    untested: list[str]
    n_reference: int
    n_current: int
    enough_data: bool
    p_threshold: float
    psi_threshold: float


def population_stability_index(reference_shares: ArrayLike, current_shares: ArrayLike) -> float:
    """PSI between two histograms given as shares over the same bins.

    PSI = sum((c - r) * ln(c / r)), the symmetrised Kullback-Leibler divergence used in
    credit scoring (Siddiqi, *Credit Risk Scorecards*, 2006; Yurdakul, 2018). Empty bins
    are given a share of ``PSI_EPSILON``. Common reading: below 0.1 stable, 0.1-0.25 a
    moderate shift, above 0.25 a major shift.

    Examples
    --------
    >>> round(population_stability_index([0.5, 0.5], [0.6, 0.4]), 4)
    0.0405
    """
    reference = np.clip(np.asarray(reference_shares, dtype=float), PSI_EPSILON, None)
    current = np.clip(np.asarray(current_shares, dtype=float), PSI_EPSILON, None)
    if reference.shape != current.shape:
        raise ValueError(
            f"PSI needs shares over the same bins, got {reference.shape[0]} reference "
            f"and {current.shape[0]} current bins"
        )
    return float(np.sum((current - reference) * np.log(current / reference)))


def _jensen_shannon(reference_shares: np.ndarray, current_shares: np.ndarray) -> float:
    # Base 2 bounds the distance by 1. Unlike PSI it needs no epsilon for empty bins.
    return float(jensenshannon(reference_shares, current_shares, base=2))


def _constant_note(reference: np.ndarray, current: np.ndarray) -> str | None:
    """Say which side holds a single value, if one does."""
    ref_values, cur_values = np.unique(reference), np.unique(current)
    ref_constant, cur_constant = ref_values.size == 1, cur_values.size == 1
    if ref_constant and cur_constant:
        if ref_values[0] == cur_values[0]:
            return "constant on both sides"
        return f"constant on both sides, at different values ({ref_values[0].item()!r} then {cur_values[0].item()!r})"
    if ref_constant:
        return "constant in the reference only"
    if cur_constant:
        return "constant in the current window only"
    return None


def _as_numbers(values: ArrayLike, feature: str, side: str, index: Sequence[object] | None = None) -> np.ndarray:
    """The non-missing values as floats; a ValueError names the first non-number."""
    array = np.asarray(values)
    if array.ndim != 1:
        raise ValueError(f"feature '{feature}' needs one-dimensional {side} values, got shape {array.shape}")
    if array.dtype.kind in "biuf":
        numbers = array.astype(float)
    else:
        # Object arrays (pandas nullable dtypes, mixed columns): numbers and missing
        # values only. Text is refused even when it looks numeric: "-20.5" in a
        # number column means the upstream parser is broken, which is not drift.
        missing = pd.isna(array)
        for position, value in enumerate(array):
            if missing[position]:
                continue
            if isinstance(value, bool | np.bool_) or not isinstance(value, int | float | np.number):
                where = index[position] if index is not None else position
                # A ValueError, not a TypeError: the data is wrong, not the caller's
                # code, and the API answers ValueErrors with a 4xx.
                raise ValueError(  # noqa: TRY004
                    f"feature '{feature}' must be a number, got {value!r} in {side} row {where!r}"
                )
        numbers = np.full(array.shape, np.nan)
        numbers[~missing] = array[~missing].astype(float)
    finite = numbers[~np.isnan(numbers)]
    if np.isinf(finite).any():
        raise ValueError(f"feature '{feature}' has infinite {side} values")
    return finite


def _decide(p_value: float, psi: float, p_threshold: float, psi_threshold: float) -> bool:
    return p_value < p_threshold and psi >= psi_threshold


def numeric_drift(
    reference: ArrayLike,
    current: ArrayLike,
    *,
    bins: int = 10,
    feature: str = "value",
    p_threshold: float = 0.01,
    psi_threshold: float = 0.2,
) -> FeatureDrift:
    """Drift of a numeric feature: two-sample Kolmogorov-Smirnov test and PSI.

    PSI bins are the reference's deciles (``bins`` quantiles), plus two open-ended bins
    below the reference's minimum and above its maximum, so that values outside the
    reference's range count as a shift (a counter that was constant and starts moving,
    a sensor that leaves its old range) instead of being folded into the end bins.
    Missing values (NaN) are dropped: they are a data-quality matter, not drift.

    A feature constant in the reference and at the same value in the current window is
    not drifted (KS statistic 0, PSI 0) and ``note`` says "constant on both sides". A
    reference constant with a current window that moves or sits at another value has every
    current value outside the reference's single bin, so it counts as drift.

    Raises
    ------
    ValueError
        When a side holds non-numbers, infinities, or no values at all.

    Examples
    --------
    >>> rng = np.random.default_rng(7)
    >>> reference, current = rng.normal(0, 1, 500), rng.normal(1, 1, 500)
    >>> result = numeric_drift(reference, current, feature="signal")
    >>> result.drifted, round(result.statistic, 3), round(result.psi, 2)
    (True, 0.478, 1.53)
    """
    if bins < 2:
        raise ValueError(f"bins must be at least 2, got {bins}")
    ref = _as_numbers(reference, feature, "reference")
    cur = _as_numbers(current, feature, "current")
    for side, values in (("reference", ref), ("current", cur)):
        if values.size == 0:
            raise ValueError(f"feature '{feature}' has no {side} values to test")
    # The asymptotic distribution is accurate at the sample sizes a monitor compares (hundreds
    # and more) and orders of magnitude faster than scipy's exact method there.
    ks = stats.ks_2samp(ref, cur, method="asymp")
    edges = np.unique(np.quantile(ref, np.linspace(0.0, 1.0, bins + 1)))
    ref_shares, cur_shares = _shares(ref, edges), _shares(cur, edges)
    psi = population_stability_index(ref_shares, cur_shares)
    p_value = float(ks.pvalue)
    return FeatureDrift(
        feature=feature,
        kind="number",
        test="ks",
        statistic=float(ks.statistic),
        p_value=p_value,
        p_value_adjusted=p_value,
        psi=psi,
        jensen_shannon=_jensen_shannon(ref_shares, cur_shares),
        n_reference=int(ref.size),
        n_current=int(cur.size),
        drifted=_decide(p_value, psi, p_threshold, psi_threshold),
        note=_constant_note(ref, cur),
    )


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    if len(edges) == 1:
        # A constant reference has no intervals: the bins are below, at and above its
        # value. (The general rule below would put "at" and "below" in one bin, and a
        # counter that drops from 3 to 2 would show no shift.)
        constant = edges[0]
        index = (values >= constant).astype(int) + (values > constant)
        return np.bincount(index, minlength=3) / values.size
    # Bin 0 is below the reference minimum, bins 1..k-1 are [e_{i-1}, e_i) with the
    # last one closed at the reference maximum, and bin k is above the maximum.
    index = np.searchsorted(edges, values, side="right")
    index[values == edges[-1]] = len(edges) - 1
    counts = np.bincount(index, minlength=len(edges) + 1)
    return counts / values.size


def categorical_drift(
    reference: ArrayLike,
    current: ArrayLike,
    *,
    feature: str = "value",
    p_threshold: float = 0.01,
    psi_threshold: float = 0.2,
) -> FeatureDrift:
    """Drift of a categorical feature: chi-square test of homogeneity and PSI.

    The test runs on the 2 x k table of category counts in the reference and current
    windows (Pearson's chi-square, without Yates' continuity correction, which only
    applies to 2 x 2 tables and would make k = 2 features a special case). Categories
    seen in only one window are part of the table; PSI and the Jensen-Shannon distance
    are computed over the category shares. Missing values are dropped. A single category
    on both sides cannot drift, and ``note`` says so.

    Raises
    ------
    ValueError
        When a side holds no values at all.

    Examples
    --------
    >>> reference = ["v1.2"] * 80 + ["v1.3"] * 20
    >>> current = ["v1.2"] * 40 + ["v1.3"] * 30 + ["v2.0"] * 30
    >>> result = categorical_drift(reference, current, feature="software")
    >>> result.drifted, round(result.statistic, 2), round(result.psi, 2), round(result.jensen_shannon, 2)
    (True, 45.33, 2.72, 0.45)
    """
    ref = pd.Series(np.asarray(reference, dtype=object)).dropna()
    cur = pd.Series(np.asarray(current, dtype=object)).dropna()
    for side, values in (("reference", ref), ("current", cur)):
        if values.size == 0:
            raise ValueError(f"feature '{feature}' has no {side} values to test")
    ref_counts = ref.value_counts()
    cur_counts = cur.value_counts()
    # Sorted by their text so the table, and the statistic, do not depend on the order
    # in which categories happen to appear.
    categories = sorted(set(ref_counts.index) | set(cur_counts.index), key=str)
    table = np.array(
        [
            [int(ref_counts.get(category, 0)) for category in categories],
            [int(cur_counts.get(category, 0)) for category in categories],
        ]
    )
    if len(categories) < 2:
        statistic, p_value = 0.0, 1.0  # one category on both sides: nothing can differ
    else:
        chi2 = stats.chi2_contingency(table, correction=False)
        statistic, p_value = float(chi2.statistic), float(chi2.pvalue)
    ref_shares, cur_shares = table[0] / ref.size, table[1] / cur.size
    psi = population_stability_index(ref_shares, cur_shares)
    return FeatureDrift(
        feature=feature,
        kind="category",
        test="chi2",
        statistic=statistic,
        p_value=p_value,
        p_value_adjusted=p_value,
        psi=psi,
        jensen_shannon=_jensen_shannon(ref_shares, cur_shares),
        n_reference=int(ref.size),
        n_current=int(cur.size),
        drifted=_decide(p_value, psi, p_threshold, psi_threshold),
        note=_category_note(ref_counts, cur_counts),
    )


def _category_note(ref_counts: pd.Series, cur_counts: pd.Series) -> str | None:
    # np.unique cannot sort mixed objects (1 and "1"), so the counts answer instead.
    if len(ref_counts) == 1 and len(cur_counts) == 1:
        ref_value, cur_value = ref_counts.index[0], cur_counts.index[0]
        if ref_value == cur_value:
            return "one category on both sides"
        return f"one category on both sides, a different one ({ref_value!r} then {cur_value!r})"
    if len(ref_counts) == 1:
        return "one category in the reference only"
    if len(cur_counts) == 1:
        return "one category in the current window only"
    return None


def _check_classes(values: pd.Series, classes: Sequence[object] | None, what: str, side: str) -> None:
    if classes is None:
        return
    known = set(classes)
    for position, value in values.items():
        if value not in known:
            raise ValueError(
                f"{what} {value!r} in {side} row {position} is not one of the classes {sorted(known, key=str)}"
            )


def prediction_drift(
    reference_predictions: ArrayLike,
    current_predictions: ArrayLike,
    *,
    classes: Sequence[object] | None = None,
    p_threshold: float = 0.01,
    psi_threshold: float = 0.2,
) -> FeatureDrift:
    """Drift of a model's predicted classes: :func:`categorical_drift` on the predictions.

    A shift in what the model predicts is often the first visible sign of drift, since
    it needs no labels. When ``classes`` is given, every prediction must be one of them;
    a class that neither window predicts adds nothing to the test. Missing predictions
    are dropped. The result's feature is ``"prediction"``.

    Raises
    ------
    ValueError
        When a prediction is not one of ``classes`` (naming it), or a side is empty.

    Examples
    --------
    >>> rng = np.random.default_rng(1)
    >>> reference = rng.choice(["online", "offline"], 500, p=[0.9, 0.1])
    >>> current = rng.choice(["online", "offline"], 500, p=[0.7, 0.3])
    >>> result = prediction_drift(reference, current, classes=["online", "offline"])
    >>> result.feature, result.drifted, round(result.psi, 3)
    ('prediction', True, 0.371)
    """
    return _class_drift(reference_predictions, current_predictions, "prediction", classes, p_threshold, psi_threshold)


def prior_drift(
    reference_labels: ArrayLike,
    current_labels: ArrayLike,
    *,
    classes: Sequence[object] | None = None,
    p_threshold: float = 0.01,
    psi_threshold: float = 0.2,
) -> FeatureDrift:
    """Drift of the class priors (label shift): :func:`categorical_drift` on the labels.

    Label shift changes how often each class occurs while what each class looks like
    stays put; a model tuned to the old priors then over- or under-predicts some classes.
    Labels arrive late and are few, so the windows are usually smaller than for features.
    When ``classes`` is given, every label must be one of them. Missing labels (events
    not yet labelled) are dropped. The result's feature is ``"label"``.

    Raises
    ------
    ValueError
        When a label is not one of ``classes`` (naming it), or a side is empty.

    Examples
    --------
    >>> reference = ["card_arrival"] * 60 + ["lost_card"] * 40
    >>> current = ["card_arrival"] * 58 + ["lost_card"] * 42
    >>> result = prior_drift(reference, current)
    >>> result.feature, result.drifted, round(result.p_value, 2)
    ('label', False, 0.77)
    """
    return _class_drift(reference_labels, current_labels, "label", classes, p_threshold, psi_threshold)


def _class_drift(
    reference: ArrayLike,
    current: ArrayLike,
    what: str,
    classes: Sequence[object] | None,
    p_threshold: float,
    psi_threshold: float,
) -> FeatureDrift:
    for side, values in (("reference", reference), ("current", current)):
        _check_classes(pd.Series(np.asarray(values, dtype=object)).dropna(), classes, what, side)
    return categorical_drift(reference, current, feature=what, p_threshold=p_threshold, psi_threshold=psi_threshold)


#: Share of an entity's changes between readings that must be rises for a number to be a counter.
COUNTER_RISES = 0.9
#: Fewest changes between readings a number needs to be recognised as a counter.
COUNTER_CHANGES = 30


def counter_features(frame: pd.DataFrame, features: Sequence[tuple[str, FeatureKind]]) -> list[str]:
    """The numbers that only grow from one reading of an entity to its next (an uptime, a packet
    total; a reset now and then aside): at least ``COUNTER_RISES`` of their changes are rises.

    Their level drifts by nature (every later window holds larger values), so their drift is
    tested on what they add per hour (:func:`increments`). Needs ``entity`` and ``time`` columns;
    without them, or without entities read more than once, nothing is a counter.

    >>> t = pd.to_datetime(["2026-01-01T00:00", "2026-01-01T01:00"] * 20, utc=True)
    >>> frame = pd.DataFrame({"entity": np.repeat(np.arange(20), 2), "time": t,
    ...                       "uptime": np.tile([5.0, 6.0], 20), "rx": np.tile([1.0, 0.5], 20)})
    >>> fleet = pd.concat([frame, frame.assign(entity=frame.entity + 20)])
    >>> counter_features(fleet, [("uptime", "number"), ("rx", "number")])
    ['uptime']
    """
    if "entity" not in frame.columns or "time" not in frame.columns or len(frame) < 2:
        return []
    ordered = frame.sort_values(["entity", "time"], kind="stable")
    entities = ordered["entity"].to_numpy()
    same = entities[1:] == entities[:-1]
    found = []
    for name, kind in features:
        if kind != "number" or name not in ordered.columns:
            continue
        changes = np.diff(pd.to_numeric(ordered[name], errors="coerce").to_numpy(dtype=float))[same]
        changes = changes[np.isfinite(changes) & (changes != 0)]
        if len(changes) >= COUNTER_CHANGES and float(np.mean(changes > 0)) >= COUNTER_RISES:
            found.append(name)
    return found


def increments(frame: pd.DataFrame, name: str) -> pd.Series:
    """What ``name`` added per hour from each entity's previous reading to this one (NaN for an
    entity's first reading in ``frame``), in ``frame``'s row order."""
    ordered = frame.sort_values(["entity", "time"], kind="stable")
    by_entity = ordered.groupby("entity", sort=False)
    added = by_entity[name].diff()
    hours = by_entity["time"].diff().dt.total_seconds() / 3600
    return (added / hours.where(hours > 0)).reindex(frame.index)


def feature_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[tuple[str, FeatureKind]],
    *,
    p_threshold: float = 0.01,
    psi_threshold: float = 0.2,
    min_samples: int = 30,
    counters: Sequence[str] = (),
) -> DriftReport:
    """Test every feature for drift between a reference and a current window.

    Numbers are tested with :func:`numeric_drift`, categories with
    :func:`categorical_drift`. Since one test runs per feature, the p-values are
    Bonferroni-corrected (multiplied by the number of features tested, capped at 1)
    before they are compared with ``p_threshold``, so that the chance of any false
    alarm in a window stays at most ``p_threshold``. A feature drifts when its adjusted
    p-value is below ``p_threshold`` and its PSI reaches ``psi_threshold``.

    A feature named in ``counters`` (see :func:`counter_features`) is tested on its per-entity
    increments per hour, not on its level, which grows by nature.

    When either window has fewer than ``min_samples`` rows, nothing is tested and the
    report says ``enough_data=False``; an empty window is such a window, as long as it
    has the features' columns (a frame without them is refused by name). A feature with fewer than ``min_samples``
    non-missing values on a side is listed in ``untested`` and not counted in the
    Bonferroni correction.

    Raises
    ------
    ValueError
        When a feature is not a column of both frames, a kind is neither "number" nor
        "category", a feature is listed twice, or a number feature holds non-numbers.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> reference = pd.DataFrame({"signal": rng.normal(-20, 1.5, 400),
    ...                           "hardware": rng.choice(["hw-a", "hw-b"], 400)})
    >>> current = pd.DataFrame({"signal": rng.normal(-23, 1.5, 400),
    ...                         "hardware": rng.choice(["hw-a", "hw-b"], 400)})
    >>> report = feature_drift(reference, current,
    ...                        [("signal", "number"), ("hardware", "category")])
    >>> report.enough_data, report.drifted
    (True, ['signal'])
    """
    if not 0 < p_threshold < 1:
        raise ValueError(f"p_threshold must be between 0 and 1, got {p_threshold}")
    if psi_threshold < 0:
        raise ValueError(f"psi_threshold must not be negative, got {psi_threshold}")
    if min_samples < 1:
        raise ValueError(f"min_samples must be at least 1, got {min_samples}")
    check_features(reference, current, features)

    n_reference, n_current = len(reference), len(current)
    enough = n_reference >= min_samples and n_current >= min_samples
    if not enough:
        return DriftReport(
            features=[],
            drifted=[],
            untested=[],
            n_reference=n_reference,
            n_current=n_current,
            enough_data=False,
            p_threshold=p_threshold,
            psi_threshold=psi_threshold,
        )

    untested: list[str] = []
    raw: list[FeatureDrift] = []
    for name, kind in features:
        ref_values, cur_values = reference[name], current[name]
        if name in counters:
            ref_values, cur_values = increments(reference, name), increments(current, name)
        if ref_values.notna().sum() < min_samples or cur_values.notna().sum() < min_samples:
            untested.append(name)
        elif kind == "number":
            raw.append(numeric_drift(ref_values.to_numpy(), cur_values.to_numpy(), feature=name))
        else:
            raw.append(categorical_drift(ref_values.to_numpy(), cur_values.to_numpy(), feature=name))

    results: list[FeatureDrift] = []
    for result in raw:
        adjusted = min(1.0, result.p_value * len(raw))  # Bonferroni
        drifted = _decide(adjusted, result.psi, p_threshold, psi_threshold)
        results.append(result.model_copy(update={"p_value_adjusted": adjusted, "drifted": drifted}))
    return DriftReport(
        features=results,
        drifted=[result.feature for result in results if result.drifted],
        untested=untested,
        n_reference=n_reference,
        n_current=n_current,
        enough_data=True,
        p_threshold=p_threshold,
        psi_threshold=psi_threshold,
    )


def check_features(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[tuple[str, FeatureKind]],
) -> None:
    """Refuse unknown columns, unknown kinds, duplicates and non-numeric numbers."""
    seen: set[str] = set()
    for name, kind in features:
        if kind not in ("number", "category"):
            raise ValueError(f"feature '{name}' has kind {kind!r}; expected 'number' or 'category'")
        if name in seen:
            raise ValueError(f"feature '{name}' is listed twice")
        seen.add(name)
        for side, frame in (("reference", reference), ("current", current)):
            if name not in frame.columns:
                raise ValueError(f"feature '{name}' is not a column of the {side} data")
            if kind == "number":
                column = frame[name]
                _as_numbers(column.to_numpy(), name, side, list(column.index))
