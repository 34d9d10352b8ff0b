"""Concept drift from labels as they arrive: has the model's error rate risen?

Once labels come back, every labelled prediction is a 0/1 error (1 when the served answer was
wrong). :class:`ErrorRateMonitor` is driftpilot's streaming detector of a rise in that stream,
the one the Monitor decides on. It follows river's detector API (``update(x)`` returns the
monitor, ``drift_detected`` says whether that update raised a finding) and is calibrated by a
false-alarm budget rather than tuned per stream: a one-sided exact test of the recent error rate
against a reference rate, at a per-test level that a Bonferroni bound derives from the budget; a
reference that is re-established after each finding and whenever the error rate significantly
falls; and a cool-down, so that one drift raises one finding. :func:`error_rate_change` is its
batch form for one Monitor check.

river's own detectors (ADWIN, Page-Hinkley, KSWIN, DDM) are its peers in ``evals/drift_bench.py``,
which compares them with it; nothing here runs them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike
from river.base import BinaryDriftDetector
from scipy import stats

__all__ = [
    "ErrorRateChange",
    "ErrorRateFinding",
    "ErrorRateMonitor",
    "as_errors",
    "error_rate_change",
]


def as_errors(errors: ArrayLike) -> np.ndarray:
    """The error stream as an int8 array of 0/1, or a ValueError that says what was wrong.

    Parameters
    ----------
    errors
        0/1 (or False/True) per labelled row, in time order (1 = the served answer was wrong).

    Examples
    --------
    >>> as_errors([True, False, 1])
    array([1, 0, 1], dtype=int8)
    >>> as_errors([0, 1, 2])
    Traceback (most recent call last):
    ...
    ValueError: errors must be 0 or 1 (1 = the served answer was wrong), got 2 at row 2
    """
    array = np.asarray(errors)
    if array.ndim != 1:
        raise ValueError(f"errors must be a one-dimensional sequence of 0/1 per labelled row, got shape {array.shape}")
    if array.size == 0:
        raise ValueError("errors is empty: pass at least one labelled row (0 = right, 1 = wrong)")
    if array.dtype.kind == "b":
        return array.astype(np.int8)
    if array.dtype.kind not in "iuf":
        raise ValueError(f"errors must be numbers 0 or 1, got values of type {array.dtype} (first: {array[0]!r})")
    if array.dtype.kind == "f" and np.isnan(array).any():
        position = int(np.flatnonzero(np.isnan(array))[0])
        raise ValueError(f"errors contains NaN (first at row {position}): drop the rows without a label first")
    bad = (array != 0) & (array != 1)
    if bad.any():
        position = int(np.flatnonzero(bad)[0])
        raise ValueError(
            f"errors must be 0 or 1 (1 = the served answer was wrong), got {array[position].item()!r} at row {position}"
        )
    return array.astype(np.int8)


@dataclass(frozen=True)
class ErrorRateFinding:
    """One finding of :class:`ErrorRateMonitor`.

    ``position`` is the row at which it was raised; the test that fired compared the last
    ``window`` rows (error rate ``rate_recent``) with the reference (``rate_before``, over
    ``n_reference`` rows) and gave the one-sided ``p_value``, below the monitor's ``alpha``.
    """

    position: int
    window: int
    rate_before: float
    rate_recent: float
    n_reference: int
    p_value: float


class ErrorRateMonitor(BinaryDriftDetector):
    """Streaming detector of a rise in a model's error rate, calibrated by a false-alarm budget.

    Each recent window of ``windows`` rows is tested against the reference rows before it
    with a one-sided Fisher exact test (is the recent error rate higher?), a window of ``w``
    rows every ``max(check_every, w // 5)`` rows (a long window gains little from being
    re-tested after a few rows). Several window lengths catch large rises quickly and small
    ones surely. The per-test level is a Bonferroni bound on the budget: ``alpha =
    false_alarms_per_10k / tests_per_10k``, with ``tests_per_10k`` the tests those cadences
    make in 10,000 rows, so that on a stationary stream the expected number of findings per
    10,000 rows is at most the budget (the tests overlap heavily, so in practice it is lower).

    The reference is the rows since it was last established, at most ``max_reference`` of
    them. It is re-established:

    * after a finding (from the finding on) -- *hysteresis*: the monitor re-arms only once the
      new reference holds ``min_reference`` rows;
    * when the same test, turned the other way, finds the recent error rate significantly
      *lower* (the error fell, e.g. after a retrain): the reference becomes that recent
      window, so that the next rise is measured from the new, better level. (river's ADWIN
      was tried for this and not kept: the window it keeps after a cut mixes both regimes --
      on a step from 30 % to 10 % it cut 263 rows after the fall and kept 1,728 rows, 1,464
      of them from before it, so the reference stayed near 17 % for the next 2,700 rows.)
    * during the cool-down after a finding, whenever a test would fire again: the change is
      still under way (a gradual drift), so the reference follows it, and the cool-down of
      ``cooldown`` rows starts again, instead of a second finding being raised. A significant
      fall ends the cool-down: the degradation the finding was about is over.

    It is a river ``BinaryDriftDetector``: ``update`` takes one row's error and returns the
    monitor, :attr:`drift_detected` is true right after the update that raised a finding (and
    false again after the next one), ``_reset()`` forgets every row seen.

    Parameters
    ----------
    false_alarms_per_10k
        The false-alarm budget: findings per 10,000 rows tolerated on a stream whose error
        rate does not change. The policy sets it per model.
    cooldown
        Rows after a finding (or after the change was last seen still rising) during which no
        other finding is raised.
    min_rise
        Effect-size floor: the recent error rate must exceed the reference's by at least this
        much (absolute) to count. On a model that is nearly always right, a rise from 0.1 % to
        0.5 % is significant on a long window and no reason to act; it also keeps a gradual
        drift from being flagged at its first trickle.
    windows
        Lengths of the recent windows tested.
    check_every
        Rows between two tests of the shortest windows.
    min_reference
        Rows the reference must hold before a window is tested against it.
    max_reference
        Most rows the reference keeps (its oldest rows are forgotten beyond that).

    Examples
    --------
    A step of the error rate from 10 % to 30 % at row 2,000 raises one finding:

    >>> rng = np.random.default_rng(4)
    >>> errors = np.concatenate([rng.random(2000) < 0.1, rng.random(2000) < 0.3])
    >>> monitor = ErrorRateMonitor()
    >>> for row, error in enumerate(errors):
    ...     if monitor.update(error).drift_detected:
    ...         print(f"error rate rose: finding at row {row}")
    error rate rose: finding at row 2049
    >>> monitor.findings
    [2049]
    >>> d = monitor.last_finding
    >>> d.window, round(d.rate_before, 3), round(d.rate_recent, 3)
    (50, 0.101, 0.3)
    """

    def __init__(
        self,
        false_alarms_per_10k: float = 1.0,
        cooldown: int = 2000,
        min_rise: float = 0.02,
        windows: tuple[int, ...] = (50, 100, 200, 400, 800, 1600),
        check_every: int = 10,
        min_reference: int = 300,
        max_reference: int = 5000,
    ) -> None:
        super().__init__()
        self.false_alarms_per_10k = false_alarms_per_10k
        self.cooldown = cooldown
        self.min_rise = min_rise
        self.windows = windows
        self.check_every = check_every
        self.min_reference = min_reference
        self.max_reference = max_reference
        if not 0 <= min_rise < 1:
            raise ValueError(f"min_rise must be in [0, 1), got {min_rise}")
        if not false_alarms_per_10k > 0:
            raise ValueError(f"false_alarms_per_10k must be positive, got {false_alarms_per_10k}")
        if not windows or min(windows) < 1:
            raise ValueError(f"windows must be positive row counts, got {windows}")
        for name in ("cooldown", "check_every", "min_reference", "max_reference"):
            if getattr(self, name) < (0 if name == "cooldown" else 1):
                raise ValueError(f"{name} must be a positive number of rows, got {getattr(self, name)}")
        self._windows = np.array(sorted(set(windows)), dtype=np.int64)
        # Each window's cadence, a multiple of check_every.
        self._cadence = np.maximum(1, self._windows // 5 // check_every) * check_every
        self._reset()

    def _reset(self) -> None:
        super()._reset()
        self._findings: list[ErrorRateFinding] = []
        self._n = 0
        # Prefix sums of the errors: _prefix[i - _offset] = errors in rows [0, i), for the
        # rows the longest reference and window can still reach.
        self._keep = self.max_reference + int(self._windows[-1]) + 1
        self._prefix = np.zeros(2 * self._keep, dtype=np.int64)
        self._size = 1
        self._offset = 0
        self._reference_start = 0
        self._cooldown_until = -1

    @property
    def alpha(self) -> float:
        """The one-sided level of each test, from the budget (Bonferroni)."""
        tests_per_10k = float(np.sum(10_000 / self._cadence))
        return self.false_alarms_per_10k / tests_per_10k

    @property
    def n(self) -> int:
        """Rows seen so far."""
        return self._n

    @property
    def findings(self) -> list[int]:
        """Positions (0-based rows) of the findings so far."""
        return [finding.position for finding in self._findings]

    @property
    def details(self) -> list[ErrorRateFinding]:
        """The :class:`ErrorRateFinding` of each finding so far."""
        return list(self._findings)

    @property
    def last_finding(self) -> ErrorRateFinding | None:
        """The latest finding (None before the first): what :attr:`drift_detected` was about."""
        return self._findings[-1] if self._findings else None

    def _errors_between(self, start: np.ndarray | int, end: int) -> Any:
        prefix = self._prefix
        return prefix[end - self._offset] - prefix[np.asarray(start) - self._offset]

    def reference_rate(self) -> float | None:
        """The reference error rate (None before the reference holds any row)."""
        start = max(self._reference_start, self._n - self.max_reference)
        if self._n <= start:
            return None
        return float(self._errors_between(start, self._n)) / (self._n - start)

    # river 0.26 annotates ``update`` as returning None; its API (and this project's style) is
    # that it returns the detector, so that a loop can read ``update(x).drift_detected``.
    def update(self, x: bool | int) -> Self:  # type: ignore[override]
        """Take the next labelled row's error (1 or True = the served answer was wrong).

        Returns
        -------
        ErrorRateMonitor
            The monitor itself; its :attr:`drift_detected` is true when this row raised a finding.
        """
        if x not in (0, 1):
            raise ValueError(f"error must be 0 or 1 (1 = the served answer was wrong), got {x!r} at row {self._n}")
        self._append(int(x))
        self._drift_detected = self._n % self.check_every == 0 and self._check()
        return self

    def _append(self, value: int) -> None:
        if self._size == self._prefix.size:
            # Forget the prefix sums no reference or window can reach any more.
            drop = self._size - self._keep
            self._prefix[: self._keep] = self._prefix[drop : self._size]
            self._size = self._keep
            self._offset += drop
        self._prefix[self._size] = self._prefix[self._size - 1] + value
        self._size += 1
        self._n += 1

    def _check(self) -> bool:
        n = self._n
        windows = self._windows
        # Reference rows for each window: [reference start, n - window), at most max_reference.
        starts = np.maximum(self._reference_start, n - windows - self.max_reference)
        n_reference = n - windows - starts
        testable = (n_reference >= self.min_reference) & (n % self._cadence == 0)
        if not testable.any():
            return False
        windows, starts, n_reference = windows[testable], starts[testable], n_reference[testable]
        recent = np.asarray(self._errors_between(n - windows, n))
        reference = np.asarray(self._errors_between(starts, n - windows))
        # One-sided Fisher exact test: P(at least `recent` errors fall in the recent window
        # when the window's and the reference's errors are exchangeable). river's detectors
        # offer no one-sided two-sample test whose level can be set from a false-alarm budget,
        # hence scipy's hypergeometric tail here.
        population, errors = n_reference + windows, recent + reference
        p_values = stats.hypergeom.sf(recent - 1, population, errors, windows)
        rise = recent / windows - reference / n_reference
        p_values = np.where(rise >= self.min_rise, p_values, 1.0)
        # The same test the other way: has the error rate fallen? Then the recent window that
        # shows it best becomes the reference.
        fall_p_values = stats.hypergeom.cdf(recent, population, errors, windows)
        fall = int(np.argmin(fall_p_values))
        if fall_p_values[fall] < self.alpha:
            self._reference_start = n - int(windows[fall])
            # The error came back down (a retrain took effect): the change a finding was raised
            # for is over, so the monitor re-arms at once, from the new level.
            self._cooldown_until = -1
            return False
        best = int(np.argmin(p_values))
        if p_values[best] >= self.alpha:
            return False
        if n - 1 <= self._cooldown_until:
            # The change is still under way: follow it rather than raise a second finding.
            self._reference_start = n
            self._cooldown_until = n - 1 + self.cooldown
            return False
        self._findings.append(
            ErrorRateFinding(
                position=n - 1,
                window=int(windows[best]),
                rate_before=float(reference[best]) / float(n_reference[best]),
                rate_recent=float(recent[best]) / float(windows[best]),
                n_reference=int(n_reference[best]),
                p_value=float(p_values[best]),
            )
        )
        self._reference_start = n
        self._cooldown_until = n - 1 + self.cooldown
        return True


@dataclass(frozen=True)
class ErrorRateChange:
    """The answer of one Monitor check: did the error rate over the labelled window rise?

    ``changed`` is the verdict of :class:`ErrorRateMonitor` run over the window; when it is
    true, ``position`` is the row of its last finding, ``rate_before`` the reference error
    rate there, ``rate_after`` the error rate from the start of the test window that fired
    to the end, and ``p_value`` that test's one-sided p-value (to compare with ``alpha``).
    Otherwise those four are None. ``enough_data`` is false (and nothing is tested) when the
    window holds fewer than ``min_rows`` rows. (river's detectors are compared with the monitor in
    ``evals/drift_bench.py``; a check does not run them.)
    """

    enough_data: bool
    changed: bool
    position: int | None
    rate_before: float | None
    rate_after: float | None
    p_value: float | None
    n: int
    alpha: float | None = None
    findings: list[int] = field(default_factory=list)


def error_rate_change(
    errors: ArrayLike,
    *,
    false_alarms_per_10k: float = 1.0,
    min_rows: int = 400,
) -> ErrorRateChange:
    """Batch form of :class:`ErrorRateMonitor` for one Monitor check over the labelled window.

    Parameters
    ----------
    errors
        0/1 per labelled row of the window, in time order.
    false_alarms_per_10k
        The model's false-alarm budget (from its policy).
    min_rows
        Fewest rows to test at all; below it the answer says ``enough_data=False``.

    Examples
    --------
    >>> rng = np.random.default_rng(4)
    >>> errors = np.concatenate([rng.random(2000) < 0.1, rng.random(2000) < 0.3]).astype(int)
    >>> change = error_rate_change(errors)
    >>> change.changed, change.position, round(change.rate_before, 3), round(change.rate_after, 3)
    (True, 2049, 0.101, 0.3)
    >>> change.findings
    [2049]
    >>> error_rate_change(errors[:100]).enough_data
    False
    """
    if np.asarray(errors).size == 0:
        # An empty window is "not enough data" for one check, not an error: a quiet night, a
        # model whose labels have not arrived yet.
        return ErrorRateChange(False, False, None, None, None, None, 0)
    stream = as_errors(errors)
    n = int(stream.size)
    if n < min_rows:
        return ErrorRateChange(False, False, None, None, None, None, n)
    monitor = ErrorRateMonitor(false_alarms_per_10k=false_alarms_per_10k)
    for value in stream.tolist():
        monitor.update(value)
    last = monitor.last_finding
    if last is None:
        return ErrorRateChange(True, False, None, None, None, None, n, monitor.alpha, [])
    since = last.position + 1 - last.window
    return ErrorRateChange(
        enough_data=True,
        changed=True,
        position=last.position,
        rate_before=last.rate_before,
        rate_after=float(stream[since:].mean()),
        p_value=last.p_value,
        n=n,
        alpha=monitor.alpha,
        findings=monitor.findings,
    )
