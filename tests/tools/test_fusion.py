"""Signal fusion: a check's evidence, its kinds and severity, repeat suppression and the rationale."""

from __future__ import annotations

from typing import Any, cast

import numpy as np
import pandas as pd
import pytest

from driftpilot.tools.fusion import (
    AlarmSeen,
    CheckEvidence,
    CheckFrames,
    Finding,
    FindingKind,
    Severity,
    Window,
    check_signals,
    finding_kinds,
    fuse,
    input_moved,
    is_repeat,
    outcome_of,
    rationale,
    severity_of,
    with_estimate,
)

DROP = 0.03
WINDOW: Window = {"start": "2026-03-01T00:00:00+00:00", "end": "2026-03-01T12:00:00+00:00"}
QUIET_ERRORS: dict[str, Any] = {"enough_data": True, "changed": False, "rate_before": None, "rate_after": None}
LINK_DOWN: AlarmSeen = {
    "key": "segment-3/2026-03-01T07:15:00+00:00",
    "name": "LinkDown",
    "groups": ["segment-3", "segment-4"],
    "starts_at": "2026-03-01T07:15:00+00:00",
    "ends_at": None,
}


def _evidence(**changes: Any) -> CheckEvidence:
    """A healthy check's evidence (accuracy 0.90 against 0.92), with ``changes`` applied."""
    evidence: dict[str, Any] = {
        "champion": 3,
        "window": WINDOW,
        "alpha": 0.002,
        "labelled": 400,
        "balanced_accuracy": 0.9,
        "reference_balanced_accuracy": 0.92,
        "error_rate": QUIET_ERRORS,
        "drifted_features": [],
        "drift": [],
        "drift_enough_data": True,
        "alarms": [],
    }
    return cast(CheckEvidence, evidence | changes)


def _finding(champion: int, kinds: list[FindingKind], severity: Severity | None) -> Finding:
    return {**_evidence(champion=champion), "kinds": kinds, "severity": severity}


# --- kinds and severity -------------------------------------------------------------------------


def test_a_quiet_evidence_is_healthy() -> None:
    finding = fuse(_evidence(), max_accuracy_drop=DROP)

    assert finding["kinds"] == [] and finding["severity"] is None
    assert outcome_of(finding, previous=None) == "healthy"
    assert not input_moved(finding)


def test_a_loss_must_stand_out_of_the_noise_of_two_small_samples() -> None:
    # Five points below a reference measured on 100 held-out rows, judged on 150 labels: on a
    # stream that never changed, two such samples differ that much often. Not a loss...
    noisy = _evidence(balanced_accuracy=0.85, reference_balanced_accuracy=0.9, reference_n=100, labelled=150)
    assert fuse(noisy, max_accuracy_drop=DROP)["kinds"] == []
    # ... but the same five points on thousands of labels, against a reference taken as exact, are.
    plain = _evidence(balanced_accuracy=0.85, reference_balanced_accuracy=0.9, labelled=5000)
    assert fuse(plain, max_accuracy_drop=DROP)["kinds"] == ["performance_loss"]
    # And a large loss stands out of any noise.
    fallen = _evidence(balanced_accuracy=0.6, reference_balanced_accuracy=0.9, reference_n=100, labelled=150)
    assert fuse(fallen, max_accuracy_drop=DROP)["kinds"] == ["performance_loss"]
    assert (
        outcome_of(
            fuse(_evidence(labelled=0, balanced_accuracy=None, missing={"labels": "0"}), max_accuracy_drop=DROP), None
        )
        == "blind"
    )


def test_every_signal_names_its_kind_in_a_fixed_order() -> None:
    evidence = _evidence(
        balanced_accuracy=0.85,  # 7 points under the reference
        error_rate={**QUIET_ERRORS, "changed": True, "rate_before": 0.08, "rate_after": 0.2},
        drifted_features=["amount"],
        prediction_drift={"drifted": True, "psi": 0.31},
        prior_drift={"drifted": True, "psi": 0.25},
        estimated={"estimated": 0.8, "reference_estimated": 0.9},
        alarms=[LINK_DOWN],
    )

    kinds = finding_kinds(evidence, max_accuracy_drop=DROP)

    assert kinds == ["performance_loss", "error_rise", "data_drift", "prediction_drift", "prior_drift"] + [
        "estimated_loss",
        "alarm",
    ]


@pytest.mark.parametrize(
    ("changes", "kinds"),
    [
        # A loss is counted beyond the tolerance only, and only against a reference.
        ({"balanced_accuracy": 0.9}, []),  # 2 points under: within the 3 of the tolerance
        ({"balanced_accuracy": 0.88}, ["performance_loss"]),  # 4 points under
        ({"balanced_accuracy": 0.5, "reference_balanced_accuracy": None}, []),
        ({"balanced_accuracy": None}, []),
        # Input drift from a feature or a text, or from the multivariate test alone.
        ({"drifted_features": ["note"]}, ["data_drift"]),
        ({"multivariate": {"drifted": True}}, ["data_drift"]),
        ({"multivariate": {"drifted": False}, "prediction_drift": {"drifted": False, "psi": 0.01}}, []),
        # The estimate without labels against CBPE's own estimate on the reference.
        ({"estimated": {"estimated": 0.88, "reference_estimated": 0.9}}, []),
        ({"estimated": {"estimated": 0.86, "reference_estimated": 0.9}}, ["estimated_loss"]),
        ({"estimated": {"estimated": 0.5, "reference_estimated": None}}, []),
    ],
)
def test_kinds_follow_the_evidence(changes: dict[str, Any], kinds: list[str]) -> None:
    assert finding_kinds(_evidence(**changes), max_accuracy_drop=DROP) == kinds


@pytest.mark.parametrize(
    ("kinds", "accuracy", "severity"),
    [
        ([], 0.9, None),
        ([], None, None),
        (["data_drift"], 0.9, "low"),
        (["prediction_drift", "prior_drift"], 0.9, "low"),
        (["data_drift"], None, "medium"),  # the labels cannot judge it yet
        (["error_rise"], 0.9, "medium"),
        (["error_rise", "data_drift"], 0.9, "medium"),
        (["performance_loss"], 0.5, "high"),
        (["data_drift", "estimated_loss"], None, "high"),
        (["alarm"], 0.9, "high"),
        (["error_rise", "alarm"], None, "high"),
    ],
)
def test_severity_per_kinds(kinds: list[FindingKind], accuracy: float | None, severity: str | None) -> None:
    assert severity_of(kinds, accuracy) == severity


def test_fuse_adds_kinds_and_severity_and_leaves_the_evidence_as_it_was() -> None:
    evidence = _evidence(drifted_features=["amount"])

    finding = fuse(evidence, max_accuracy_drop=DROP)

    assert (finding["kinds"], finding["severity"]) == (["data_drift"], "low")
    assert {k: v for k, v in finding.items() if k not in ("kinds", "severity")} == evidence
    assert "kinds" not in evidence and input_moved(finding)


# --- repeat suppression -------------------------------------------------------------------------


def test_the_same_kinds_within_the_cooldown_are_a_repeat() -> None:
    previous = dict(_finding(3, ["data_drift", "prior_drift"], "low"))

    assert is_repeat(previous, _finding(3, ["data_drift", "prior_drift"], "low"))
    assert is_repeat(previous, _finding(3, ["data_drift"], "low"))  # fewer kinds, no more severe
    assert outcome_of(_finding(3, ["data_drift"], "low"), previous) == "repeat"
    # What is logged is plain JSON: only the keys it reads matter.
    assert is_repeat({"champion": 3, "kinds": ["data_drift"], "severity": "medium"}, _finding(3, ["data_drift"], "low"))


def test_a_new_kind_or_a_more_severe_finding_is_raised() -> None:
    previous = {"champion": 3, "kinds": ["data_drift"], "severity": "low"}

    assert not is_repeat(previous, _finding(3, ["data_drift", "prediction_drift"], "low"))
    assert not is_repeat(previous, _finding(3, ["data_drift"], "medium"))
    assert outcome_of(_finding(3, ["data_drift"], "medium"), previous) == "finding"


def test_a_high_severity_finding_is_never_a_repeat() -> None:
    previous = {"champion": 3, "kinds": ["performance_loss", "prediction_drift"], "severity": "high"}

    assert not is_repeat(previous, _finding(3, ["performance_loss", "prediction_drift"], "high"))
    assert outcome_of(_finding(3, ["performance_loss"], "high"), previous) == "finding"


def test_a_new_champion_starts_afresh() -> None:
    previous = {"champion": 3, "kinds": ["data_drift"], "severity": "low"}

    assert not is_repeat(previous, _finding(4, ["data_drift"], "low"))


def test_without_a_previous_finding_a_finding_is_raised() -> None:
    assert outcome_of(_finding(3, ["data_drift"], "low"), previous=None) == "finding"
    # A logged decision without evidence is no finding to repeat.
    assert outcome_of(_finding(3, ["data_drift"], "low"), previous={}) == "finding"
    assert outcome_of(_finding(3, [], None), previous={"champion": 3, "kinds": [], "severity": "low"}) == "healthy"


# --- rationale ----------------------------------------------------------------------------------


def test_rationale_of_a_healthy_check() -> None:
    finding = fuse(_evidence(), max_accuracy_drop=DROP)

    assert rationale("healthy", finding, cooldown_hours=6) == (
        "Healthy: balanced accuracy 0.900 on 400 labelled events (reference 0.920)."
    )


def test_rationale_of_a_finding_names_every_signal() -> None:
    finding = fuse(
        _evidence(
            balanced_accuracy=0.8,
            error_rate={**QUIET_ERRORS, "changed": True, "rate_before": 0.08, "rate_after": 0.2},
            drifted_features=["amount", "note"],
            prediction_drift={"drifted": True, "psi": 0.314},
            prior_drift={"drifted": True, "psi": 0.25},
            alarms=[LINK_DOWN],
        ),
        max_accuracy_drop=DROP,
    )

    assert rationale("finding", finding, cooldown_hours=6) == (
        "Finding (high): performance_loss, error_rise, data_drift, prediction_drift, prior_drift, alarm: "
        "balanced accuracy 0.800 on 400 labelled events (reference 0.920); "
        "error rate rose from 8.0% to 20.0%; drifted: amount, note; prediction drift (PSI 0.31); "
        "prior drift (PSI 0.25); alarm LinkDown on segment-3, segment-4."
    )


def test_rationale_of_a_repeat_and_of_an_estimate_without_labels() -> None:
    estimated = {"metric": "accuracy", "estimated": 0.87084, "reference_estimated": 0.9073, "reference_value": 0.907}
    unjudged = _evidence(labelled=50, balanced_accuracy=None, drifted_features=["amount"], estimated=estimated)
    drifted = fuse(_evidence(drifted_features=["amount"]), max_accuracy_drop=DROP)

    assert rationale("finding", fuse(unjudged, max_accuracy_drop=DROP), cooldown_hours=6) == (
        "Finding (high): data_drift, estimated_loss: only 50 labelled events: accuracy not judged; "
        "estimated accuracy 0.871 without labels (estimated 0.907 on the reference, measured 0.907); drifted: amount."
    )
    assert rationale("repeat", drifted, cooldown_hours=6) == (
        "Same drift as the finding of the last 6 h (data_drift): not raised again: "
        "balanced accuracy 0.900 on 400 labelled events (reference 0.920); drifted: amount."
    )
    assert rationale(
        "healthy", fuse(_evidence(reference_balanced_accuracy=None), max_accuracy_drop=DROP), cooldown_hours=6.5
    ) == ("Healthy: balanced accuracy 0.900 on 400 labelled events (no reference to judge it against).")


# --- the signals, on frames ---------------------------------------------------------------------

CLASSES = ["ok", "late", "lost"]


def _events(n: int, *, seed: int, shift: float = 0.0, served_by: int = 3, texts: int = 0) -> pd.DataFrame:
    """``n`` events served by version ``served_by``, always right, with a number, a category and
    ``texts`` sentence-vector blocks (``note_e000`` …) moved by ``shift``."""
    rng = np.random.default_rng(seed)
    labels = rng.choice(CLASSES, size=n, p=[0.6, 0.3, 0.1])
    columns: dict[str, Any] = {
        "id": np.arange(n),
        "served_version": served_by,
        "label": labels,
        "prediction": labels,
        "amount": rng.normal(shift, 1.0, n),
        "channel": rng.choice(["web", "app"], size=n),
    }
    for name in ("note", "memo")[:texts]:
        for i in range(16):
            columns[f"{name}_e{i:03d}"] = rng.normal(shift, 1.0, n)
    return pd.DataFrame(columns)


FEATURES: list[tuple[str, Any]] = [("amount", "number"), ("channel", "category")]
TEXTS: list[tuple[str, Any]] = [(f"{name}_e{i:03d}", "number") for name in ("note", "memo") for i in range(16)]


def _frames(current: pd.DataFrame, reference: pd.DataFrame | None, before: int = 400) -> CheckFrames:
    served = _events(before, seed=5)
    return CheckFrames(
        champion=3,
        labelled=current[["id", "served_version", "label", "prediction"]],
        current=current,
        reference=reference,
        answered_before=served,
        served_before=served,
    )


def _signals(frames: CheckFrames, features: list[tuple[str, Any]], **options: Any) -> CheckEvidence:
    return check_signals(
        frames,
        features=features,
        window=WINDOW,
        alpha=0.002,
        reference_accuracy=0.95,
        alarms=[],
        min_labelled=200,
        psi_threshold=0.2,
        **options,
    )


def test_moved_inputs_while_accuracy_holds_are_low_severity_data_drift() -> None:
    frames = _frames(_events(500, seed=2, shift=1.5), reference=_events(500, seed=1))

    finding = fuse(_signals(frames, FEATURES), max_accuracy_drop=DROP)

    assert (finding["kinds"], finding["severity"]) == (["data_drift"], "low")
    assert finding["drifted_features"] == ["amount"] and finding["drift_enough_data"] is True
    assert [d["feature"] for d in finding["drift"]] == ["amount"]
    assert (finding["champion"], finding["labelled"], finding["balanced_accuracy"]) == (3, 500, 1.0)
    assert finding["error_rate"]["enough_data"] and not finding["error_rate"]["changed"]
    # The answers and the class shares were tested, and held.
    assert finding["prediction_drift"]["drifted"] is False and finding["prior_drift"]["drifted"] is False
    assert "untested" not in finding and "text_drift" not in finding and "multivariate" not in finding


def test_a_text_is_tested_whole_and_a_text_its_data_defeats_is_listed_untested() -> None:
    reference, current = _events(300, seed=1, texts=2), _events(300, seed=2, texts=2)
    current[[f"note_e{i:03d}" for i in range(16)]] += 1.0
    current.loc[0, "memo_e003"] = np.nan

    evidence = _signals(_frames(current, reference), FEATURES + TEXTS)

    assert evidence["drifted_features"] == ["note"]  # its 16 columns are one signal, not 16
    assert list(evidence["text_drift"]) == ["note"] and evidence["text_drift"]["note"]["drifted"]
    assert evidence["untested"] == {
        "text_drift:memo": "current embeddings hold a missing or infinite value in row 0 (1 rows in all)"
    }
    assert finding_kinds(evidence, max_accuracy_drop=DROP) == ["data_drift"]


def test_a_small_window_without_a_reference_judges_nothing() -> None:
    frames = _frames(_events(60, seed=2), reference=None, before=60)

    finding = fuse(_signals(frames, FEATURES), max_accuracy_drop=DROP)

    assert finding["labelled"] == 60 and finding["balanced_accuracy"] is None
    assert finding["drifted_features"] == [] and finding["drift"] == [] and finding["drift_enough_data"] is False
    # Fewer than MIN_ROWS events a side: no prediction or prior test.
    assert "prediction_drift" not in finding and "prior_drift" not in finding
    assert finding["kinds"] == [] and finding["severity"] is None


def test_only_the_champions_answers_are_judged() -> None:
    current = pd.concat([_events(300, seed=2), _events(300, seed=3, served_by=2)], ignore_index=True)
    current.loc[current["served_version"] == 2, "prediction"] = "lost"  # the old version was wrong

    evidence = _signals(_frames(current, reference=_events(500, seed=1)), FEATURES)

    assert (evidence["labelled"], evidence["balanced_accuracy"]) == (300, 1.0)
    assert evidence["prediction_drift"]["n_current"] == 300


@pytest.mark.slow  # nannyml's import and fit
def test_multivariate_drift_is_tested_when_asked() -> None:
    frames = _frames(_events(500, seed=2, shift=1.5), reference=_events(500, seed=1))

    evidence = _signals(frames, FEATURES, multivariate=True)

    assert evidence["multivariate"]["enough_data"] is True
    assert finding_kinds(evidence, max_accuracy_drop=DROP) == ["data_drift"]


# --- the estimate without labels ----------------------------------------------------------------


def _served_probabilities(n: int, confidence: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated probabilities (the top class right ``confidence`` of the time) and their labels."""
    rng = np.random.default_rng(seed)
    top = rng.integers(0, len(CLASSES), n)
    probabilities = np.full((n, len(CLASSES)), (1 - confidence) / (len(CLASSES) - 1))
    probabilities[np.arange(n), top] = confidence
    labels = [CLASSES[rng.choice(len(CLASSES), p=row)] for row in probabilities]
    return probabilities, np.asarray(labels)


def test_a_less_confident_window_is_an_estimated_loss() -> None:
    reference, labels = _served_probabilities(600, 0.95, seed=1)
    current, _ = _served_probabilities(600, 0.6, seed=2)
    evidence = _evidence(labelled=0, balanced_accuracy=None, drifted_features=["amount"])

    estimated = with_estimate(evidence, reference, labels, current, classes=CLASSES)

    # CBPE reads accuracy off calibrated probabilities: about 0.95 before, 0.6 now.
    assert estimated["estimated"]["reference_estimated"] == pytest.approx(0.95, abs=0.03)
    assert estimated["estimated"]["estimated"] == pytest.approx(0.6, abs=0.05)
    assert finding_kinds(estimated, max_accuracy_drop=DROP) == ["data_drift", "estimated_loss"]
    assert "estimated" not in evidence  # the evidence handed in is left as it was


def test_an_estimate_is_left_out_when_too_few_probabilities_were_served() -> None:
    reference, labels = _served_probabilities(600, 0.95, seed=1)
    current, _ = _served_probabilities(600, 0.6, seed=2)
    current[50:] = np.nan  # stored without probabilities
    evidence = _evidence(balanced_accuracy=None)

    assert with_estimate(evidence, reference, labels, current, classes=CLASSES) == evidence


def test_an_estimate_its_data_defeats_is_listed_untested() -> None:
    reference, labels = _served_probabilities(600, 0.95, seed=1)
    reference[:, 0], reference[:, 1] = -0.5, reference[:, 1] + 0.5  # rows sum to one, outside [0, 1]
    current, _ = _served_probabilities(600, 0.6, seed=2)
    evidence = _evidence(balanced_accuracy=None, untested={"multivariate": "a fit failed"})

    estimated = with_estimate(evidence, reference, labels, current, classes=CLASSES)

    assert "estimated" not in estimated
    assert list(estimated["untested"]) == ["multivariate", "estimated"]
    assert estimated["untested"]["estimated"].startswith("reference probabilities must lie in [0, 1]")
