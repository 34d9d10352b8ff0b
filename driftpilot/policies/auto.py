"""The auto policy: what depends on a stream's volume and label rate, derived from what was observed.

A policy field set to ``auto`` (the shipped default for every such field) has no value of its own:
:func:`derive_monitor` gives it one from the :class:`StreamRates` the loop measured in memory, and
says how (:attr:`MonitorPlan.why`), so that the decision taken under it can be read back. The same
rule serves a fleet of thousands of events an hour and a stream of one row every half hour with a
label a day later: the evidence a check wants is fixed (labels to judge accuracy on, rows to test
drift on) and the time it takes to gather is what changes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

from driftpilot.policies.schema import Monitor, Release, Training

__all__ = [
    "JUDGE_LABELS",
    "MAX_WINDOW_HOURS",
    "MIN_JUDGE_LABELS",
    "MonitorPlan",
    "ReleasePlan",
    "StreamRates",
    "TRAIN_LABELS",
    "TrainingPlan",
    "derive_monitor",
    "derive_release",
    "derive_training",
]

#: Labels a check wants to judge accuracy on: enough that a 3-point loss stands out of the
#: sampling error of a few classes, few enough to stay recent on a slow stream.
JUDGE_LABELS = 200
#: Fewest labels accuracy is ever judged on, however slow the labels: below it one wrong answer
#: moves accuracy by more than any tolerance a policy sets.
MIN_JUDGE_LABELS = 50
#: Farthest back (hours) an auto window reaches for evidence: older events describe another model's
#: world as much as this one's.
MAX_WINDOW_HOURS = 30 * 24.0
#: Fewest hours an auto window reaches back, however fast the stream.
MIN_WINDOW_HOURS = 24.0
#: Rows a check wants to test input drift on (the tests' power is flat beyond).
DRIFT_ROWS = 3000
#: Fewest rows a drift test is run on.
MIN_DRIFT_ROWS = 100
#: Labels a retrain wants in its recent window: the learning curves of the shipped families
#: (and of a logistic regression) are nearly flat beyond a couple of thousand labels, while a
#: few hundred leave a candidate worse than a champion trained on many more.
TRAIN_LABELS = 2000
#: Fewest recent labels a retrain is ever made on.
MIN_TRAIN_LABELS = 100
#: Longest an auto wait for requested labels lasts, in hours.
MAX_LABEL_WAIT_HOURS = 7 * 24.0
#: Fewest labelled events a release's shadow, or its promotion, is judged on.
MIN_RELEASE_LABELS = 30
#: Share of a window's evidence that must be new before a check is worth running again.
NEW_EVIDENCE_SHARE = 0.25


@dataclass(frozen=True)
class StreamRates:
    """What the loop observed of a stream over the last ``hours``: events and labels (by the time
    they became known), and the median hours from an event to its label (None without labels)."""

    hours: float
    events: int
    labels: int
    label_delay_hours: float | None

    @property
    def events_per_hour(self) -> float:
        return self.events / self.hours if self.hours > 0 else 0.0

    @property
    def labels_per_hour(self) -> float:
        return self.labels / self.hours if self.hours > 0 else 0.0

    def as_dict(self) -> dict[str, float | int | None]:
        return {
            "hours": round(self.hours, 2),
            "events": self.events,
            "labels": self.labels,
            "events_per_hour": round(self.events_per_hour, 3),
            "labels_per_hour": round(self.labels_per_hour, 3),
            "label_delay_hours": None if self.label_delay_hours is None else round(self.label_delay_hours, 2),
        }


@dataclass(frozen=True)
class MonitorPlan:
    """The Monitor's settings for one check, every ``auto`` resolved.

    ``window_hours`` is the shortest window a check looks at; ``max_window_hours`` how far back it
    may reach to find ``min_labelled`` labels and ``drift_rows`` rows; a check is worth running once
    ``check_every_labels`` new labels or ``check_every_rows`` new events arrived since the last one
    (and no more often than ``check_every_minutes``); ``alpha`` is its significance level, the
    false-alarm budget spread over the checks a week this cadence makes. ``why`` says, per derived
    field, what it was derived from.
    """

    window_hours: float
    max_window_hours: float
    min_labelled: int
    drift_rows: int
    check_every_minutes: int
    check_every_labels: int
    check_every_rows: int
    alpha: float
    why: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "window_hours": self.window_hours,
            "max_window_hours": round(self.max_window_hours, 2),
            "min_labelled": self.min_labelled,
            "drift_rows": self.drift_rows,
            "check_every_labels": self.check_every_labels,
            "check_every_rows": self.check_every_rows,
            "alpha": self.alpha,
            "why": dict(self.why),
        }


def derive_monitor(monitor: Monitor, rates: StreamRates) -> MonitorPlan:
    """The Monitor's settings for a stream observed at ``rates``: a field the policy sets is kept,
    an ``auto`` one derived (and its derivation said in ``why``).

    >>> busy = derive_monitor(Monitor(), StreamRates(hours=24, events=96_000, labels=9_600, label_delay_hours=1))
    >>> busy.max_window_hours, busy.min_labelled, busy.check_every_labels
    (24.0, 200, 50)
    >>> slow = derive_monitor(Monitor(), StreamRates(hours=720, events=1440, labels=115, label_delay_hours=24))
    >>> slow.max_window_hours, slow.min_labelled, slow.check_every_rows
    (720.0, 55, 360)
    """
    why: dict[str, str] = {}
    per_hour = rates.labels_per_hour
    max_window = _setting(monitor.max_window_hours)
    if max_window is None:
        max_window, why["max_window_hours"] = _reach(rates, JUDGE_LABELS, max(MIN_WINDOW_HOURS, monitor.window_hours))
    min_labelled = _setting(monitor.min_labelled)
    if min_labelled is None:
        min_labelled, why["min_labelled"] = _least(rates, max_window, MIN_JUDGE_LABELS, JUDGE_LABELS)

    drift_rows = int(min(DRIFT_ROWS, max(MIN_DRIFT_ROWS, rates.events_per_hour * max_window)))
    check_labels = _setting(monitor.check_every_labels)
    if check_labels is None:
        check_labels = max(1, math.ceil(NEW_EVIDENCE_SHARE * min_labelled))
        why["check_every_labels"] = f"{NEW_EVIDENCE_SHARE:.0%} of the {min_labelled} labels a judgement needs"
    check_rows = _setting(monitor.check_every_rows)
    if check_rows is None:
        check_rows = math.ceil(NEW_EVIDENCE_SHARE * drift_rows)
        why["check_every_rows"] = f"{NEW_EVIDENCE_SHARE:.0%} of the {drift_rows} rows a drift test takes"

    # Checks a week: the clock's cadence, unless new evidence comes slower than it.
    per_week = 7 * 24.0
    clock = per_week * 60 / monitor.check_every_minutes
    by_evidence = per_week * max(rates.events_per_hour / check_rows, per_hour / check_labels)
    checks = max(1.0, min(clock, by_evidence)) if by_evidence > 0 else clock
    alpha = min(monitor.drift_p_value, monitor.false_alarms_per_week / checks)
    why["alpha"] = f"{monitor.false_alarms_per_week:g} false alarms a week over {checks:.4g} checks a week"
    return MonitorPlan(
        window_hours=monitor.window_hours,
        max_window_hours=float(max_window),
        min_labelled=int(min_labelled),
        drift_rows=drift_rows,
        check_every_minutes=monitor.check_every_minutes,
        check_every_labels=int(check_labels),
        check_every_rows=int(check_rows),
        alpha=alpha,
        why=why,
    )


def _reach(rates: StreamRates, labels: int, shortest: float) -> tuple[float, str]:
    """Hours long enough to hold ``labels`` labels once they are due (within ``shortest`` and
    ``MAX_WINDOW_HOURS``), and why."""
    delay, per_hour = rates.label_delay_hours or 0.0, rates.labels_per_hour
    wanted = delay + (labels / per_hour if per_hour > 0 else math.inf)
    hours = min(MAX_WINDOW_HOURS, max(shortest, wanted))
    return hours, (
        f"{labels} labels at {per_hour:.3g} labels/h after a {delay:.3g} h label delay need "
        f"{wanted:.4g} h; kept within [{shortest:g}, {MAX_WINDOW_HOURS:g}] h"
    )


def _least(rates: StreamRates, hours: float, low: int, high: int) -> tuple[int, str]:
    """Half the labels ``hours`` hold at the observed rate (within ``low`` and ``high``), and why:
    what a window can hold, no more than a judgement wants and no fewer than it needs."""
    delay, per_hour = rates.label_delay_hours or 0.0, rates.labels_per_hour
    attainable = per_hour * max(0.0, hours - delay)
    least = int(min(high, max(low, attainable // 2)))
    return least, f"half of the {attainable:.4g} labels {hours:.4g} h hold at {per_hour:.3g}/h, within [{low}, {high}]"


def _setting(value: float | int | Literal["auto"]) -> float | int | None:
    """A field's own value, or None when it is ``auto``."""
    return None if value == "auto" else value


@dataclass(frozen=True)
class TrainingPlan:
    """The Curator's settings for one retrain, every ``auto`` resolved (``why`` as in :class:`MonitorPlan`)."""

    recent_hours: float
    min_training_labels: int
    label_wait_hours: float
    #: New labels that make a challenger due (None: the policy keeps no challenger).
    challenger_every_labels: int | None = None
    why: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "recent_hours": round(self.recent_hours, 2),
            "min_training_labels": self.min_training_labels,
            "label_wait_hours": round(self.label_wait_hours, 2),
            "challenger_every_labels": self.challenger_every_labels,
            "why": dict(self.why),
        }


def derive_training(training: Training, rates: StreamRates) -> TrainingPlan:
    """The Curator's settings for a stream observed at ``rates`` (see :func:`derive_monitor`).

    >>> slow = derive_training(Training(), StreamRates(hours=720, events=1440, labels=190, label_delay_hours=24))
    >>> slow.recent_hours, slow.min_training_labels, slow.label_wait_hours
    (720.0, 100, 37.0)
    >>> Training(recent_hours=24, min_training_labels=500, label_wait_hours=12).recent_hours
    24.0
    """
    why: dict[str, str] = {}
    delay = rates.label_delay_hours or 0.0
    recent = _setting(training.recent_hours)
    if recent is None:
        recent, why["recent_hours"] = _reach(rates, TRAIN_LABELS, MIN_WINDOW_HOURS)
    least = _setting(training.min_training_labels)
    if least is None:
        least, why["min_training_labels"] = _least(rates, recent, MIN_TRAIN_LABELS, TRAIN_LABELS)
    wait = _setting(training.label_wait_hours)
    if wait is None:
        # Requested labels come back about as late as any other: wait that long and half again.
        wait = min(MAX_LABEL_WAIT_HOURS, max(12.0, 1.5 * delay + 1))
        why["label_wait_hours"] = (
            f"1.5 times the {delay:.3g} h label delay (and an hour), within [12, {MAX_LABEL_WAIT_HOURS:g}] h"
        )
    every = _setting(training.challenger_every_labels) if training.challenger else None
    if training.challenger and every is None:
        # A quarter of the labels a retrain is made on, new: as often as a check wants new
        # evidence, so that a challenger is as fresh as a periodic retrain would be.
        every = max(MIN_RELEASE_LABELS, int(least * NEW_EVIDENCE_SHARE))
        why["challenger_every_labels"] = (
            f"{NEW_EVIDENCE_SHARE:g} of the {least} labels a retrain needs at least, {MIN_RELEASE_LABELS} or more"
        )
    return TrainingPlan(
        recent_hours=float(recent),
        min_training_labels=int(least),
        label_wait_hours=float(wait),
        challenger_every_labels=None if every is None else int(every),
        why=why,
    )


@dataclass(frozen=True)
class ReleasePlan:
    """The evidence a release gathers before each move, every ``auto`` resolved (``why`` as in
    :class:`MonitorPlan`): labelled events both versions answered in shadow, the candidate served
    at each step, and both answered before promotion; and the hours it may take at most."""

    min_shadow_samples: int
    min_step_samples: int
    min_canary_samples: int
    max_canary_hours: float
    why: dict[str, str] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        return {
            "min_shadow_samples": self.min_shadow_samples,
            "min_step_samples": self.min_step_samples,
            "min_canary_samples": self.min_canary_samples,
            "max_canary_hours": round(self.max_canary_hours, 2),
            "why": dict(self.why),
        }


def derive_release(release: Release, rates: StreamRates) -> ReleasePlan:
    """A release's evidence and time for a stream observed at ``rates``: as much evidence as a day
    of labels brings (within bounds), and time enough for it to arrive, step by step.

    >>> busy = derive_release(Release(), StreamRates(hours=24, events=96_000, labels=9_600, label_delay_hours=1))
    >>> busy.min_shadow_samples, busy.min_step_samples, busy.min_canary_samples, busy.max_canary_hours
    (500, 50, 200, 24.0)
    >>> slow = derive_release(Release(), StreamRates(hours=720, events=1440, labels=190, label_delay_hours=24))
    >>> slow.min_shadow_samples, slow.min_step_samples, slow.min_canary_samples, slow.max_canary_hours
    (30, 10, 30, 720.0)
    """
    why: dict[str, str] = {}
    per_hour = rates.labels_per_hour
    per_day = 24 * per_hour
    delay = rates.label_delay_hours or 0.0

    def derived(name: str, value: int | Literal["auto"], share: float, low: int, high: int) -> int:
        if value != "auto":
            return value
        chosen = int(min(high, max(low, per_day * share)))
        why[name] = f"{share:g} of the {per_day:.4g} labels a day brings, within [{low}, {high}]"
        return chosen

    shadow = derived("min_shadow_samples", release.min_shadow_samples, 1.0, MIN_RELEASE_LABELS, 500)
    step = derived("min_step_samples", release.min_step_samples, release.steps[0], 10, 50)
    canary = derived("min_canary_samples", release.min_canary_samples, 0.5, MIN_RELEASE_LABELS, 200)
    hours = _setting(release.max_canary_hours)
    if hours is None:
        # The labels come a delay late; the shadow needs its own, each step the candidate's share of them.
        needed = shadow * release.shadow + sum(step / s for s in release.steps)
        wanted = 1.5 * (delay + (needed / per_hour if per_hour > 0 else math.inf))
        hours = min(MAX_WINDOW_HOURS, max(MIN_WINDOW_HOURS, wanted))
        why["max_canary_hours"] = (
            f"1.5 times the {delay:.3g} h label delay and the {needed:.4g} labels the shadow and the steps "
            f"need at {per_hour:.3g}/h ({wanted:.4g} h), within [{MIN_WINDOW_HOURS:g}, {MAX_WINDOW_HOURS:g}] h"
        )
    return ReleasePlan(
        min_shadow_samples=shadow,
        min_step_samples=step,
        min_canary_samples=canary,
        max_canary_hours=float(hours),
        why=why,
    )
