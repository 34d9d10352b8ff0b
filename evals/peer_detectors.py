"""The drift bench's peers: river's detectors over a model's 0/1 error stream, counting only rises.

:func:`degradation_points` runs one of river's detectors (ADWIN, Page-Hinkley, KSWIN, DDM) over
the error stream and keeps only the signals where the error rate *rose*; a fall (after a
retrain, say) is good news, not a degradation, and must not count against a peer. Only
``evals/drift_bench.py`` uses this module: driftpilot itself decides with its own
:class:`~driftpilot.tools.detectors.ErrorRateMonitor`.

KSWIN runs as :class:`BinaryKSWIN`, a subclass whose Kolmogorov-Smirnov test is answered from a
cache for 0/1 samples (the same answers, about a millisecond a row faster); river's module is
left as it is.
"""

from __future__ import annotations

import collections
import itertools
import warnings
from functools import lru_cache
from typing import Any

import numpy as np
from numpy.typing import ArrayLike
from river import drift
from river.drift import binary
from scipy import stats

from driftpilot.tools.detectors import as_errors

__all__ = ["PEER_DETECTORS", "BinaryKSWIN", "degradation_points"]

#: The river detectors :func:`degradation_points` runs, by name.
PEER_DETECTORS: tuple[str, ...] = ("adwin", "page_hinkley", "kswin", "ddm")


def degradation_points(errors: ArrayLike, detector: str, **params: Any) -> list[int]:
    """Rows where a river detector signals that the error rate rose.

    Parameters
    ----------
    errors
        0/1 per labelled row, in time order (1 = the served answer was wrong).
    detector
        One of :data:`PEER_DETECTORS`.
    **params
        Passed to the river detector; river's defaults otherwise (KSWIN is seeded with 0 so
        that its random reference sample is reproducible).

    Returns
    -------
    list[int]
        0-based positions of the rows at which the detector signalled a rise. The detectors
        that test both ways are made one-sided: Page-Hinkley runs in ``mode="up"``; for ADWIN
        and KSWIN a signal counts only when the recent part of their window has the higher
        error rate. DDM only ever tests for a rise.

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> step = np.concatenate([rng.random(2000) < 0.1, rng.random(2000) < 0.3]).astype(int)
    >>> degradation_points(step, "adwin")
    [2111]
    >>> degradation_points(step[::-1], "adwin")  # the same step, falling: no degradation
    []
    """
    if detector not in PEER_DETECTORS:
        raise ValueError(f"unknown detector {detector!r}: choose one of {', '.join(PEER_DETECTORS)}")
    stream = as_errors(errors)
    if detector == "adwin":
        return _adwin_rises(stream, params)
    if detector == "page_hinkley":
        if params.get("mode", "up") != "up":
            raise ValueError(f"page_hinkley runs one-sided (mode='up') here, got mode={params['mode']!r}")
        return _signals(stream, drift.PageHinkley(**{**params, "mode": "up"}))
    if detector == "kswin":
        return _kswin_rises(stream, {"seed": 0, **params})
    return _signals(stream, binary.DDM(**params))


def _signals(stream: np.ndarray, detector: Any) -> list[int]:
    points = []
    for position, value in enumerate(stream.tolist()):
        detector.update(value)
        if detector.drift_detected:
            points.append(position)
    return points


def _adwin_rises(stream: np.ndarray, params: dict[str, Any]) -> list[int]:
    detector = drift.ADWIN(**params)
    points = []
    for position, value in enumerate(stream.tolist()):
        width, total = detector.width, detector.estimation * detector.width
        detector.update(value)
        if detector.drift_detected:
            # ADWIN dropped the older part of its window; it rose if what is kept is worse.
            kept_rate = detector.estimation
            dropped = width + 1 - detector.width
            dropped_rate = (total + value - kept_rate * detector.width) / max(dropped, 1)
            if kept_rate > dropped_rate:
                points.append(position)
    return points


@lru_cache(maxsize=4096)
def _binary_ks_2samp(n1: int, ones1: int, n2: int, ones2: int) -> tuple[float, float]:
    """scipy's ``ks_2samp(..., method="auto")`` of two 0/1 samples, from their sizes and counts of ones.

    For samples of 0s and 1s the two empirical distribution functions, hence the KS statistic
    and its exact p-value, depend only on the sample sizes and the counts of ones, so the
    answers of a pure function can be memoised.

    >>> statistic, p_value = _binary_ks_2samp(30, 3, 30, 15)
    >>> statistic, round(p_value, 4)
    (0.4, 0.0156)
    """
    first = [0] * (n1 - ones1) + [1] * ones1
    second = [0] * (n2 - ones2) + [1] * ones2
    # river's KSWIN silences the warning ks_2samp gives when method="auto" falls back.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=RuntimeWarning)
        statistic, p_value = stats.ks_2samp(first, second, method="auto")
    return float(statistic), float(p_value)


class BinaryKSWIN(drift.KSWIN):
    """river's KSWIN (Raab et al., 2020) on a 0/1 stream, its KS test answered from a cache.

    ``update`` is river 0.26's, step for step (the same random reference sample from the same
    seeded generator, the same test and threshold), except that the two-sample KS test is
    :func:`_binary_ks_2samp` of the samples' counts of ones. river's KSWIN spends about a
    millisecond a row in scipy's test, which would dominate the bench; a subclass keeps the
    speed-up local, where replacing ``river.drift.kswin.stats`` would change every KSWIN in
    the process.

    >>> rng = np.random.default_rng(0)
    >>> stream = np.concatenate([rng.random(500) < 0.1, rng.random(500) < 0.6]).astype(int)
    >>> kswin = BinaryKSWIN(seed=0)
    >>> for row, error in enumerate(stream.tolist()):
    ...     kswin.update(error)
    ...     if kswin.drift_detected:
    ...         print(f"change at row {row}")
    change at row 524
    """

    #: Whether the last drift signalled was a rise of the error rate (newest values against the
    #: rest of the window); what the bench counts, since a fall is good news.
    rose: bool = False

    def update(self, x: Any) -> None:
        if x not in (0, 1):
            raise ValueError(f"BinaryKSWIN reads a 0/1 error stream, got {x!r} at row {self.n}")
        if self.drift_detected:
            self._reset()
        self.n += 1
        self.window.append(x)
        if len(self.window) < self.window_size:
            # Not enough samples in the sliding window for a valid test.
            self._drift_detected = False
            return
        sample = [self.window[r] for r in self._rng.sample(range(self.window_size - self.stat_size), self.stat_size)]
        most_recent = list(itertools.islice(self.window, self.window_size - self.stat_size, self.window_size))
        statistic, self.p_value = _binary_ks_2samp(len(sample), sum(sample), len(most_recent), sum(most_recent))
        if self.p_value <= self.alpha and statistic > 0.1:
            self._drift_detected = True
            # Ours, not river's: whether the newest values hold more ones than the rest of the
            # window (a rise of the error rate), read before the window keeps only the newest.
            older = list(itertools.islice(self.window, 0, self.window_size - self.stat_size))
            self.rose = sum(most_recent) / len(most_recent) > sum(older) / len(older)
            self.window = collections.deque(most_recent, maxlen=self.window_size)
        else:
            self._drift_detected = False


def _kswin_rises(stream: np.ndarray, params: dict[str, Any]) -> list[int]:
    detector = BinaryKSWIN(**params)
    points = []
    for position, value in enumerate(stream.tolist()):
        detector.update(value)
        if detector.drift_detected and detector.rose:
            points.append(position)
    return points
