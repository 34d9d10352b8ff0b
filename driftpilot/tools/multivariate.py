"""Multivariate drift: nannyml's data-reconstruction error between a reference and a current window.

Per-feature tests see each feature's marginal distribution only; they miss a change in how
features move together (two readings that used to rise together and now move apart) while
every histogram stays put. nannyml's ``DataReconstructionDriftCalculator`` learns a PCA of the
reference (categories count-encoded, everything standardised, enough components for 65% of the
variance) and measures how badly it reconstructs new rows: the mean distance between a row and
its reconstruction grows when the correlation structure changes.

The reference is split into chunks of the current window's size (fewer rows a chunk when the
reference is too short for ``reference_chunks`` of them); the spread of their errors sets the
thresholds (mean +- 3 standard deviations, nannyml's default), and the whole current window is
one chunk tested against them.

nannyml is imported inside the function: it takes seconds to import.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from driftpilot.tools.drift import FeatureKind, check_features

__all__ = ["MultivariateDrift", "multivariate_drift"]


class MultivariateDrift(BaseModel):
    """The reconstruction error of the current window and the reference's band around it.

    ``drifted`` is true when ``reconstruction_error`` falls outside ``[lower_threshold,
    upper_threshold]``. When a window is too small (``enough_data`` false) nothing is
    computed and the three figures are ``None``. ``chunk_size`` is the rows in each
    reference chunk and ``reference_chunks`` how many chunks set the thresholds.
    """

    model_config = ConfigDict(frozen=True)

    reconstruction_error: float | None
    lower_threshold: float | None
    upper_threshold: float | None
    drifted: bool
    n_reference: int
    n_current: int
    chunk_size: int | None
    reference_chunks: int | None
    enough_data: bool

    @classmethod
    def not_enough_data(cls, n_reference: int, n_current: int) -> MultivariateDrift:
        """The answer when nothing could be tested."""
        return cls(
            reconstruction_error=None,
            lower_threshold=None,
            upper_threshold=None,
            drifted=False,
            n_reference=n_reference,
            n_current=n_current,
            chunk_size=None,
            reference_chunks=None,
            enough_data=False,
        )


def multivariate_drift(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    features: Sequence[tuple[str, FeatureKind]],
    *,
    min_samples: int = 50,
    reference_chunks: int = 10,
) -> MultivariateDrift:
    """Test the current window's joint distribution of ``features`` against the reference's.

    The reference is cut, in row order, into chunks of ``min(len(current), len(reference) //
    reference_chunks)`` rows (an incomplete last chunk is dropped), so that at least
    ``reference_chunks`` chunks estimate how much the error varies between windows of that
    size. When the chunks are smaller than the current window the band is wider than the
    current window's own noise: the test errs towards silence, not false alarms.

    There must be at least ``min_samples`` current rows and ``reference_chunks *
    min_samples`` reference rows, so that every chunk has ``min_samples`` rows; otherwise
    nothing is computed and ``enough_data`` is false. Missing values are imputed as nannyml
    does (mean for numbers, most frequent category), fitted on the reference.

    Raises
    ------
    ValueError
        When fewer than two features are given, a feature is not a column of both frames,
        has an unknown kind, is listed twice, holds non-numbers while declared a number, or
        has no values at all on a side.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> def window(correlation, n):
    ...     values = rng.multivariate_normal([0, 0], [[1, correlation], [correlation, 1]], n)
    ...     return pd.DataFrame(values, columns=["signal", "load"])
    >>> features = [("signal", "number"), ("load", "number")]
    >>> result = multivariate_drift(window(0.9, 2000), window(-0.9, 200), features)
    >>> result.drifted, round(result.reconstruction_error, 3), round(result.upper_threshold, 3)
    (True, 1.143, 0.282)
    """
    if min_samples < 2:
        raise ValueError(f"min_samples must be at least 2, got {min_samples}")
    if reference_chunks < 2:
        raise ValueError(f"reference_chunks must be at least 2, got {reference_chunks}")
    if len(features) < 2:
        raise ValueError(
            f"multivariate drift needs at least two features, got {len(features)}: use feature_drift for one"
        )
    check_features(reference, current, features)

    n_reference, n_current = len(reference), len(current)
    if n_current < min_samples or n_reference < reference_chunks * min_samples:
        return MultivariateDrift.not_enough_data(n_reference, n_current)

    # A feature that never varies in the reference carries no structure for PCA to learn, and
    # a window of constants reconstructs "perfectly" (error 0, outside a band of width 0): it
    # is left to the per-feature tests, which say what a constant column means.
    features = [(n, k) for n, k in features if reference[n].nunique(dropna=True) > 1]
    if len(features) < 2:
        return MultivariateDrift.not_enough_data(n_reference, n_current)
    names = [name for name, _ in features]
    reference_rows = _prepared(reference, features, "reference")
    current_rows = _prepared(current, features, "current")
    chunk_size = min(n_current, n_reference // reference_chunks)

    with _quiet_nannyml():
        import nannyml
        from nannyml.chunk import SizeBasedChunker

        calculator = nannyml.DataReconstructionDriftCalculator(
            column_names=names, chunker=SizeBasedChunker(chunk_size=chunk_size, incomplete="drop")
        )
        calculator.fit(reference_rows)
        # The current window is one chunk, whatever the reference's chunk size.
        calculator.chunker = SizeBasedChunker(chunk_size=n_current, incomplete="keep")
        frame = calculator.calculate(current_rows).filter(period="analysis").to_df()

    error = frame[("reconstruction_error", "value")].iloc[0]
    if not np.isfinite(error):
        # nannyml logs (silenced above) and returns NaN when a chunk fails; never a silent pass.
        raise ValueError(f"nannyml could not compute the reconstruction error of the features {names}")
    lower = calculator.lower_threshold_value
    upper = calculator.upper_threshold_value
    return MultivariateDrift(
        reconstruction_error=float(error),
        lower_threshold=None if lower is None else float(lower),
        upper_threshold=None if upper is None else float(upper),
        drifted=bool(frame[("reconstruction_error", "alert")].iloc[0]),
        n_reference=n_reference,
        n_current=n_current,
        chunk_size=chunk_size,
        reference_chunks=n_reference // chunk_size,
        enough_data=True,
    )


def _prepared(frame: pd.DataFrame, features: Sequence[tuple[str, FeatureKind]], side: str) -> pd.DataFrame:
    """The features only, numbers as floats and categories as text, so nannyml types them as declared.

    nannyml decides by dtype: integer-coded categories would be scaled as numbers, and
    numbers in an object column would be counted as categories.
    """
    columns: dict[str, pd.Series] = {}
    for name, kind in features:
        values = frame[name].reset_index(drop=True)
        if values.notna().sum() == 0:
            raise ValueError(f"feature '{name}' has no {side} values")
        if kind == "number":
            # check_features has refused text and infinities already.
            columns[name] = pd.to_numeric(values, errors="raise").astype(float)
        else:
            columns[name] = values.map(str, na_action="ignore").astype(object).where(values.notna(), np.nan)
    return pd.DataFrame(columns)


@contextmanager
def _quiet_nannyml() -> Iterator[None]:
    """Silence nannyml's logging and warnings, and its usage telemetry, while it runs.

    It warns that one chunk is "too low a number of chunks" for every current window, which
    is how this tool means to use it.
    """
    from nannyml.usage_logging import disable_usage_logging

    # nannyml sends usage events to a remote analytics service unless this is set; a
    # monitoring tool must not talk to third parties on its own.
    disable_usage_logging()
    logger = logging.getLogger("nannyml")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        with warnings.catch_warnings():
            # category_encoders is nannyml's dependency; it warns about pandas options.
            warnings.filterwarnings("ignore", module=r"(nannyml|category_encoders)(\.|$)")
            yield
    finally:
        logger.setLevel(level)
