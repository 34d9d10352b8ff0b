"""Data-quality faults: a feature that is broken rather than drifted.

A field whose unit or scale changed upstream (×1000, dBm reported as mW), a sensor stuck on
one value, a field that stopped arriving: each of these looks like drift to a two-sample
test, and retraining on it teaches the model a broken pipe. The right action is an alert that
names the field, and a fix of the feature (rescale it, drop the stuck readings, restore the
field), not a retrain.

Each check compares the current window with the reference (the data the model was trained
on) and only reports what the reference does not already show: a counter that is often zero,
a field that was always half missing, a reading that rarely moves are the field's normal state.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict
from scipy import stats

from driftpilot.tools.drift import FeatureKind, check_features, counter_features, increments

__all__ = ["FaultKind", "QualityFault", "QualityReport", "data_quality"]

FaultKind = Literal["missing", "scale_change", "unit_change", "stuck"]

#: Share of values that must be missing now, beyond the reference's own share, to call a field gone.
MISSING_RISE = 0.2
#: A converted column must match the reference this well (Kolmogorov-Smirnov statistic; windows of
#: different hours of the day differ by up to ~0.15 on a diurnal reading) to call the change a unit
#: or scale change rather than drift; the raw column must not.
RESCALED_MATCH = 0.25
#: Share of readings a conversion must bring back into the reference's range: a unit changed
#: upstream changes (nearly) every reading.
FLEET_SHARE = 0.9
#: Readings other than zero a field needs, on each side, for its scale to be judged on them alone.
MIN_NONZERO = 30
#: A run of this many consecutive readings of one entity holding one value is a stuck run.
STUCK_RUN = 8
#: Share of stuck runs, beyond the reference's share, that makes a stuck-sensor fault.
STUCK_RISE = 0.1


class QualityFault(BaseModel):
    """One broken field: what is wrong, how sure, and the fix that would repair the feature."""

    model_config = ConfigDict(frozen=True)

    feature: str
    kind: FaultKind
    score: float
    evidence: dict[str, float | str | int]
    fix: str


class QualityReport(BaseModel):
    """The faults found, and the features that could not be checked for want of data."""

    model_config = ConfigDict(frozen=True)

    faults: list[QualityFault]
    unchecked: list[str]
    enough_data: bool


def data_quality(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[tuple[str, FeatureKind]],
    *,
    entity: str | None = "entity",
    min_samples: int = 30,
) -> QualityReport:
    """Check every feature of ``current`` for a data-quality fault against ``reference``.

    Checks, for numbers: a field gone missing; a scale change by a power of ten (the current
    values times ``10**k`` match the reference while the raw values do not); a unit change
    between dBm and mW (``10 log10`` of the current values matches a reference in dBm, or the
    reverse); a stuck sensor (many entities repeating one value over a window where they
    varied in the reference). For categories: a field gone missing. A feature missing from
    ``current`` altogether counts as gone missing.

    Parameters
    ----------
    entity
        Column naming the reporting entity, for the stuck-sensor check (per entity). ``None``
        or a missing column skips that check.
    min_samples
        Fewest non-missing reference values a feature needs to be checked; below it the
        feature is listed in ``unchecked``. With fewer than ``min_samples`` rows in either
        window nothing is checked and ``enough_data`` is false.

    Raises
    ------
    ValueError
        When a feature is not a column of ``reference``, a kind is not "number" or
        "category", a feature is listed twice, or a number feature holds text.

    Examples
    --------
    >>> rng = np.random.default_rng(3)
    >>> reference = pd.DataFrame({"power": rng.normal(-20, 2, 500), "pressure": rng.normal(50, 3, 500)})
    >>> current = pd.DataFrame({"power": 10 ** (rng.normal(-20, 2, 500) / 10),  # now in mW
    ...                         "pressure": rng.normal(50, 3, 500) * 1000})        # now in mbar
    >>> report = data_quality(reference, current, [("power", "number"), ("pressure", "number")])
    >>> [(f.feature, f.kind, f.evidence.get("to", f.evidence.get("factor"))) for f in report.faults]
    [('pressure', 'scale_change', 1000.0), ('power', 'unit_change', 'mW')]
    """
    for name, kind in features:
        if kind not in ("number", "category"):
            raise ValueError(f"feature '{name}' has kind {kind!r}; expected 'number' or 'category'")
        if name not in reference.columns:
            raise ValueError(f"feature '{name}' is not a column of the reference data")
    # Text in a number column is refused here as by the drift tests; a field absent from the
    # current window is no type error but a fault of its own (gone missing).
    check_features(reference, reference, features)
    check_features(reference, current, [(n, k) for n, k in features if n in current.columns])
    if len(reference) < min_samples or len(current) < min_samples:
        return QualityReport(faults=[], unchecked=[], enough_data=False)

    faults: list[QualityFault] = []
    unchecked: list[str] = []
    # A counter's level grows by nature; its unit shows in what it adds per hour.
    counters = set(counter_features(reference, features)) & set(current.columns)
    for name, kind in features:
        ref = reference[name]
        if ref.notna().sum() < min_samples:
            unchecked.append(name)
            continue
        cur = current[name] if name in current.columns else pd.Series(np.nan, index=current.index)
        fault = _missing(name, ref, cur)
        if fault is None and kind == "number":
            if name in counters:
                ref, cur = increments(reference, name), increments(current, name)
            ref_values = pd.to_numeric(ref, errors="coerce").dropna().to_numpy(dtype=float)
            cur_values = pd.to_numeric(cur, errors="coerce").dropna().to_numpy(dtype=float)
            if cur_values.size < min_samples:
                unchecked.append(name)  # too few readings now, though not few enough to call it gone
                continue
            fault = _rescaled(name, ref_values, cur_values)
            if fault is None and entity is not None and entity in reference.columns and entity in current:
                fault = _stuck(name, reference[[entity, name]], current[[entity, name]], entity)
        if fault is not None:
            faults.append(fault)
    faults.sort(key=lambda f: f.score, reverse=True)
    return QualityReport(faults=faults, unchecked=unchecked, enough_data=True)


def _missing(name: str, ref: pd.Series, cur: pd.Series) -> QualityFault | None:
    before, now = float(ref.isna().mean()), float(cur.isna().mean())
    if now - before < MISSING_RISE:
        return None
    return QualityFault(
        feature=name,
        kind="missing",
        score=round(now - before, 4),
        evidence={"missing_reference": round(before, 4), "missing_current": round(now, 4)},
        fix=f"restore '{name}' upstream; until then serve and train without the rows that lack it",
    )


def _ks(a: np.ndarray, b: np.ndarray) -> float:
    return float(stats.ks_2samp(a, b, method="asymp").statistic)


def _repaired_share(ref: np.ndarray, raw: np.ndarray, fixed: np.ndarray) -> float:
    """Share of readings outside the reference's range of magnitudes as they arrive, and inside it
    once converted (magnitudes: a field that swings around zero, a change per hour, shrinks
    toward zero under a unit change and stays inside its signed range)."""
    low, high = np.quantile(np.abs(ref), [0.005, 0.995])
    low, high = (
        low * (1 - 1e-9),
        high * (1 + 1e-9),
    )  # a constant rate converted back is that rate, give or take rounding
    outside = (np.abs(raw) < low) | (np.abs(raw) > high)
    inside = (np.abs(fixed) >= low) & (np.abs(fixed) <= high)
    return float((outside & inside).mean())


def _converted(ref: np.ndarray, cur: np.ndarray, fixed: np.ndarray) -> tuple[bool, float]:
    """Whether converting ``cur`` into ``fixed`` repairs it: (repaired, KS statistic after)."""
    if not np.isfinite(fixed).all():
        return False, 1.0
    # To nine significant digits: 0.001 × 1000 is 1.0000000000000002, and on a field that often
    # holds one exact value (a counter's rate) the test would read that rounding as a difference.
    match = _ks(_significant(ref), _significant(fixed))
    # Fleet-wide: a unit changed upstream moves (nearly) every reading. A change confined to a
    # slice (a software version that counts per second) is drift of that slice, not a broken field.
    return match < RESCALED_MATCH and _repaired_share(ref, cur, fixed) >= FLEET_SHARE, match


def _rescaled(name: str, ref: np.ndarray, cur: np.ndarray) -> QualityFault | None:
    # Zeros carry no unit (a counter that is often zero stays zero ×1000): the scale shows in the
    # readings that are not, when there are enough of them.
    if (ref == 0).any() or (cur == 0).any():
        ref_nz, cur_nz = ref[ref != 0], cur[cur != 0]
        if min(len(ref_nz), len(cur_nz)) >= MIN_NONZERO:
            ref, cur = ref_nz, cur_nz
    raw = _ks(ref, cur)
    ratio = _magnitude_ratio(ref, cur)
    if raw < 2 * RESCALED_MATCH and not (ratio is not None and abs(np.log10(ratio)) >= 2):
        return None  # the raw values still match and keep their size: whatever changed, not the unit
    # dBm <-> mW: dBm = 10 log10(mW). A reference in dBm is negative or small; mW are positive.
    if (cur > 0).all():
        repaired, match = _converted(ref, cur, 10 * np.log10(cur))
        if repaired:
            return _unit_fault(name, "dBm", "mW", raw, match, f"convert '{name}' back with 10*log10(value)")
    if (ref > 0).all() and (np.abs(cur) <= 90).all():  # dBm of real powers lie within ±90
        repaired, match = _converted(ref, cur, 10 ** (cur / 10))
        if repaired:
            return _unit_fault(name, "mW", "dBm", raw, match, f"convert '{name}' back with 10**(value/10)")
    if ratio is None:
        return None
    power = round(float(np.log10(ratio)))
    if power == 0:
        return None
    repaired, match = _converted(ref, cur, cur * 10.0**power)
    if not repaired:
        return None
    factor = 10.0 ** (-power)
    return QualityFault(
        feature=name,
        kind="scale_change",
        score=round(raw - match, 4),
        evidence={"factor": factor, "ks_raw": round(raw, 4), "ks_rescaled": round(match, 4)},
        fix=f"multiply '{name}' by {10.0**power:g} to restore its unit",
    )


def _significant(values: np.ndarray, digits: int = 9) -> np.ndarray:
    """``values`` rounded to ``digits`` significant digits."""
    with np.errstate(divide="ignore"):
        scale = 10.0 ** (digits - 1 - np.floor(np.log10(np.abs(values))))
    scale[~np.isfinite(scale)] = 1.0
    return np.round(values * scale) / scale


def _magnitude_ratio(ref: np.ndarray, cur: np.ndarray) -> float | None:
    """The reference's typical magnitude over the current one (None when either is zero)."""
    ref_scale, cur_scale = float(np.median(np.abs(ref))), float(np.median(np.abs(cur)))
    if ref_scale == 0 or cur_scale == 0:
        return None
    return ref_scale / cur_scale


def _unit_fault(name: str, was: str, now: str, raw: float, match: float, fix: str) -> QualityFault:
    return QualityFault(
        feature=name,
        kind="unit_change",
        score=round(raw - match, 4),
        evidence={"from": was, "to": now, "ks_raw": round(raw, 4), "ks_rescaled": round(match, 4)},
        fix=fix,
    )


def _stuck_share(frame: pd.DataFrame, entity: str, name: str) -> tuple[float, int]:
    """Share of runs of ``STUCK_RUN`` consecutive readings of one entity that hold a single value.

    Runs, not whole windows: how often a reading stays put depends on how long one looks (a
    restart counter is flat for a device that stays up), and runs of one length compare alike
    whatever the windows' lengths and whichever entities went offline in them.
    """
    values = frame[[entity, name]].dropna(subset=[name])
    run = values.groupby(entity).cumcount() // STUCK_RUN
    runs = values.groupby([values[entity], run])[name].agg(["count", "nunique"])
    runs = runs[runs["count"] == STUCK_RUN]
    if runs.empty:
        return 0.0, 0
    return float((runs["nunique"] == 1).mean()), len(runs)


def _stuck(name: str, reference: pd.DataFrame, current: pd.DataFrame, entity: str) -> QualityFault | None:
    before, n_before = _stuck_share(reference, entity, name)
    now, n_now = _stuck_share(current, entity, name)
    if n_before == 0 or n_now == 0 or now - before < STUCK_RISE:
        return None
    return QualityFault(
        feature=name,
        kind="stuck",
        score=round(now - before, 4),
        evidence={
            "stuck_share_reference": round(before, 4),
            "stuck_share_current": round(now, 4),
            "runs": n_now,
        },
        fix=f"drop the readings of '{name}' from entities that repeat one value; check those sensors",
    )
