"""The auto policy: what depends on a stream's volume and label rate is derived from the rates
observed, within bounds, and says how; a value the policy gives is kept as it is."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from driftpilot.policies import Policy
from driftpilot.policies.auto import (
    JUDGE_LABELS,
    MAX_WINDOW_HOURS,
    MIN_JUDGE_LABELS,
    MIN_RELEASE_LABELS,
    MIN_TRAIN_LABELS,
    TRAIN_LABELS,
    StreamRates,
    derive_monitor,
    derive_release,
    derive_training,
)

DEFAULT = Policy(name="default")
#: A fleet: thousands of events an hour, labels an hour late.
BUSY = StreamRates(hours=24 * 30, events=3_000_000, labels=300_000, label_delay_hours=1.0)
#: A row every half hour, a tenth of them labelled a day late.
SLOW = StreamRates(hours=24 * 30, events=1440, labels=115, label_delay_hours=24.0)

rates = st.builds(
    StreamRates,
    hours=st.floats(1, 24 * 60),
    events=st.integers(0, 10**7),
    labels=st.integers(0, 10**6),
    label_delay_hours=st.none() | st.floats(0, 24 * 14),
)


def test_a_busy_fleet_keeps_the_short_window_and_judges_on_full_evidence():
    plan = derive_monitor(DEFAULT.monitor, BUSY)
    assert plan.max_window_hours == 24 and plan.min_labelled == JUDGE_LABELS
    # So much evidence arrives that the clock, not the evidence, paces the checks.
    assert plan.alpha == pytest.approx(min(DEFAULT.monitor.drift_p_value, 1 / (7 * 24 * 60 / 120)))


def test_a_slow_stream_reaches_back_and_judges_on_what_it_can_gather():
    plan = derive_monitor(DEFAULT.monitor, SLOW)
    assert plan.max_window_hours == MAX_WINDOW_HOURS
    assert MIN_JUDGE_LABELS <= plan.min_labelled < JUDGE_LABELS
    # A check is worth running when a quarter of a judgement's labels is new: fewer checks a
    # week than the clock's 84, so each may be looser for the same false alarms a week.
    assert plan.check_every_labels == -(-plan.min_labelled // 4)
    assert plan.alpha >= derive_monitor(DEFAULT.monitor, BUSY).alpha
    assert "over 1.9" in plan.why["alpha"]  # checks a week, against the clock's 84
    training = derive_training(DEFAULT.training, SLOW)
    assert training.recent_hours == MAX_WINDOW_HOURS and training.min_training_labels == MIN_TRAIN_LABELS
    assert training.label_wait_hours == pytest.approx(1.5 * 24 + 1)
    release = derive_release(DEFAULT.release, SLOW)
    assert release.min_shadow_samples == release.min_canary_samples == MIN_RELEASE_LABELS
    assert release.max_canary_hours > 24  # its labels come a day late: a day could never decide


def test_values_the_policy_gives_are_kept_and_not_explained():
    policy = Policy(
        name="fixed",
        monitor={"max_window_hours": 6, "min_labelled": 80, "check_every_labels": 7, "check_every_rows": 9},
        training={"recent_hours": 48, "min_training_labels": 300, "label_wait_hours": 5, "challenger_every_labels": 70},
        release={"min_shadow_samples": 11, "min_step_samples": 12, "min_canary_samples": 13, "max_canary_hours": 14},
    )
    monitor = derive_monitor(policy.monitor, SLOW)
    assert (monitor.max_window_hours, monitor.min_labelled, monitor.check_every_labels) == (6, 80, 7)
    assert monitor.check_every_rows == 9 and set(monitor.why) == {"alpha"}
    training = derive_training(policy.training, SLOW)
    assert (training.recent_hours, training.min_training_labels, training.label_wait_hours) == (48, 300, 5)
    assert training.challenger_every_labels == 70 and training.why == {}
    release = derive_release(policy.release, SLOW)
    assert (release.min_shadow_samples, release.min_step_samples, release.min_canary_samples) == (11, 12, 13)
    assert release.max_canary_hours == 14 and release.why == {}


@given(rates)
def test_every_derived_value_stays_within_its_bounds_and_says_why(observed):
    monitor = derive_monitor(DEFAULT.monitor, observed)
    assert DEFAULT.monitor.window_hours <= monitor.max_window_hours <= MAX_WINDOW_HOURS
    assert MIN_JUDGE_LABELS <= monitor.min_labelled <= JUDGE_LABELS
    assert monitor.check_every_labels >= 1 and monitor.check_every_rows >= 1
    assert 0 < monitor.alpha <= DEFAULT.monitor.drift_p_value
    assert set(monitor.why) == {"max_window_hours", "min_labelled", "check_every_labels", "check_every_rows", "alpha"}
    training = derive_training(DEFAULT.training, observed)
    assert (
        MIN_TRAIN_LABELS <= training.min_training_labels <= TRAIN_LABELS and training.recent_hours <= MAX_WINDOW_HOURS
    )
    # A challenger waits for a quarter of the labels a retrain needs, and never for fewer than a
    # release is judged on.
    every = training.challenger_every_labels
    assert every is not None and MIN_RELEASE_LABELS <= every <= max(MIN_RELEASE_LABELS, training.min_training_labels)
    release = derive_release(DEFAULT.release, observed)
    assert MIN_RELEASE_LABELS <= release.min_canary_samples <= release.min_shadow_samples <= 500
    assert 24 <= release.max_canary_hours <= MAX_WINDOW_HOURS


@given(rates, st.floats(1.5, 10))
def test_fewer_labels_never_shorten_a_window_nor_raise_what_a_judgement_needs(observed, slower):
    thinner = StreamRates(observed.hours, observed.events, int(observed.labels / slower), observed.label_delay_hours)
    fast, slow = derive_monitor(DEFAULT.monitor, observed), derive_monitor(DEFAULT.monitor, thinner)
    assert slow.max_window_hours >= fast.max_window_hours
    assert slow.min_labelled <= fast.min_labelled or slow.max_window_hours > fast.max_window_hours
    # A release asks for no more evidence when labels come slower (and so ends in a bounded time).
    thin_release, full_release = derive_release(DEFAULT.release, thinner), derive_release(DEFAULT.release, observed)
    assert thin_release.min_shadow_samples <= full_release.min_shadow_samples


def test_a_policy_without_a_challenger_derives_no_cadence():
    training = derive_training(Policy(name="calm", training={"challenger": False}).training, SLOW)
    assert training.challenger_every_labels is None and "challenger_every_labels" not in training.why
