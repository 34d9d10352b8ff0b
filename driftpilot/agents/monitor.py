"""Monitor: is the champion still healthy?

One check fuses every signal into at most one finding: balanced accuracy on labelled events
(a loss beyond the policy's tolerance and beyond sampling noise), the labelled error stream
(:mod:`driftpilot.tools.detectors`), accuracy estimated from the served probabilities when labels
are too few (nannyml's CBPE), per-feature input drift (and, if the policy asks, multivariate
drift), drift of the predictions and of the class priors, and alarms. The policy's false-alarm
budget sets the check's significance level; it is split evenly (Bonferroni) among six signal
families — the labelled error stream, the estimate without labels, input drift (each feature and
each text tested at that share, after the correction within the family), prediction drift and
prior drift; labelled accuracy is judged by the policy's tolerance, multivariate drift by
nannyml's own band — so that on unchanged data about ``false_alarms_per_week`` findings a week
come from the tests. A drift-only finding (low or
medium severity) of the same kinds, no more severe, within the policy's cool-down is logged as a
repeat and not raised again; a high-severity one (the model is losing) is raised until mended.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from datetime import timedelta
from typing import Any

import numpy as np
import pandas as pd
from langgraph.runtime import Runtime

from driftpilot.agents.context import AgentContext, now_of, record
from driftpilot.agents.state import LoopState
from driftpilot.memory import alarms, decisions, events, managed, quarantine, snapshots, versions
from driftpilot.memory.tables import Quarantine
from driftpilot.tools.detectors import error_rate_change
from driftpilot.tools.diagnosis import to_json
from driftpilot.tools.drift import feature_drift, prediction_drift, prior_drift
from driftpilot.tools.metrics import balanced_accuracy
from driftpilot.tools.multivariate import multivariate_drift
from driftpilot.tools.performance import estimate_performance
from driftpilot.tools.text_drift import text_drift

#: Most recent events compared with the reference for input drift (enough for the tests'
#: power, few enough to keep a check well under a second).
DRIFT_SAMPLE = 3000
#: Rows of the champion's training snapshot kept as the drift reference.
REFERENCE_SAMPLE = 5000
#: Most recent labelled events the accuracy is judged on.
ACCURACY_SAMPLE = 5000


def handled_alarm_keys(reasons: list[str]) -> set[str]:
    """Alarm keys already diagnosed: a quarantine's reason reads ``alarm <key>: <why>``.

    Keys may hold colons themselves (timestamps), so the key ends at the last ``": "``.

    >>> sorted(handled_alarm_keys(["alarm olt/2026-03-14T07:15:00+00:00: upstream outage", "manual"]))
    ['olt/2026-03-14T07:15:00+00:00']
    """
    return {r.removeprefix("alarm ").rsplit(": ", 1)[0] for r in reasons if r.startswith("alarm ")}


#: Sentence vectors per side in a text-drift test (the permutation test is quadratic in them).
TEXT_SAMPLE = 300
#: Signal families a check tests, sharing its false-alarm budget: the labelled error stream, the
#: estimate without labels, input drift, prediction drift, class-prior drift.
SIGNALS = 5
#: How far back the champion's own served (and labelled) events make the reference of a check.
SERVED_REFERENCE = timedelta(days=7)
SEVERITY = {"low": 0, "medium": 1, "high": 2}


def monitor(state: LoopState, runtime: Runtime[AgentContext]) -> dict[str, Any]:
    """Check the champion and return one finding fusing every signal, or none when it is healthy."""
    ctx = runtime.context
    policy = ctx.policy.policy.monitor
    alpha = policy.check_alpha / SIGNALS  # Bonferroni across the signals of one check
    now = now_of(state)
    with ctx.sessions() as session:
        model = managed.get_model(session=session, name=state["model"])
        schema = managed.model_schema(model)
        champion = versions.champion(session=session, model_id=model.id)
        if champion is None:
            raise LookupError(f"model '{model.name}' has no champion version to monitor")
        start = now - timedelta(hours=policy.window_hours)
        labelled = events.window(
            session=session,
            model_id=model.id,
            start=start,
            end=now,
            visible_at=now,
            labelled_only=True,
            limit=ACCURACY_SAMPLE,
            with_features=False,
        )
        current = events.window(session=session, model_id=model.id, start=start, end=now, limit=DRIFT_SAMPLE)
        if champion.snapshot_id not in ctx.references and champion.snapshot_id is not None:
            frame = snapshots.snapshot_frame(session=session, snapshot_id=champion.snapshot_id)
            ctx.references.clear()  # only the champion's reference is ever needed again
            sample = frame.sample(n=min(len(frame), REFERENCE_SAMPLE), random_state=ctx.seed)
            # Every class the champion learnt stays in the reference, however rare: the
            # Diagnostician reads the classes it knows from it (a class missing from a sample
            # would pass for a new one).
            rare = frame.groupby("label").head(1)
            ctx.references[champion.snapshot_id] = pd.concat([sample, rare[~rare.index.isin(sample.index)]])
        reference = ctx.references.get(champion.snapshot_id)
        held = quarantine.list_quarantines(session=session, model_id=model.id)
        handled = handled_alarm_keys([q.reason for q in held])
        labelled = _without_outage_leads(labelled, held)
        firing = [a for a in alarms.active_alarms(session=session, at=now) if a.key not in handled]
        # What the champion served (and what came of it) before this window: the reference of
        # the signals that need its predictions.
        served_before = events.window(
            session=session,
            model_id=model.id,
            start=start - SERVED_REFERENCE,
            end=start,
            visible_at=now,
            labelled_only=True,
            limit=ACCURACY_SAMPLE,
            with_features=False,
        )
        served_before = served_before[served_before["served_version"] == champion.number]
        # Predictions are compared on everything served: labelled events are a biased sample of
        # them (the Curator asks for the uncertain ones).
        answered_before = events.window(
            session=session,
            model_id=model.id,
            start=start - SERVED_REFERENCE,
            end=start,
            limit=DRIFT_SAMPLE,
            with_features=False,
        )
        answered_before = answered_before[answered_before["served_version"] == champion.number]
        served_now = current[current["served_version"] == champion.number]

        judged = labelled[labelled["served_version"] == champion.number]
        metrics = champion.metrics or {}
        reference_accuracy = metrics.get("reference_balanced_accuracy", metrics.get("recent_balanced_accuracy"))
        evidence: dict[str, Any] = {
            "champion": champion.number,
            "window": {"start": start.isoformat(), "end": now.isoformat()},
            "alpha": alpha,
            "labelled": len(judged),
        }
        kinds: list[str] = []
        accuracy = None
        if len(judged) >= policy.min_labelled:
            accuracy = balanced_accuracy(judged["label"].to_numpy(), judged["prediction"].to_numpy())
            # The policy's tolerance is the effect floor here; a significance test on top was tried
            # and missed real losses: balanced accuracy's sampling error is dominated by the rare
            # classes (a handful of labels each in a 12-hour window), however large the loss.
            if reference_accuracy is not None and reference_accuracy - accuracy > policy.max_accuracy_drop:
                kinds.append("performance_loss")
        evidence |= {"balanced_accuracy": accuracy, "reference_balanced_accuracy": reference_accuracy}

        change = error_rate_change(
            (judged["prediction"] != judged["label"]).to_numpy(dtype=int),
            false_alarms_per_10k=alpha * 10_000 / max(len(judged), 1),
        )
        evidence["error_rate"] = asdict(change)
        if change.changed:
            kinds.append("error_rise")

        blocks = embedding_blocks([f.name for f in schema.features])
        embedded = {name for columns in blocks.values() for name in columns}
        features = [(f.name, f.kind) for f in schema.features if f.name not in embedded]
        drift = None
        drifted_texts: list[str] = []
        if reference is not None:
            drift = feature_drift(reference, current, features, p_threshold=alpha, psi_threshold=policy.psi_threshold)
            if drift.drifted:
                kinds.append("data_drift")
            for text, columns in blocks.items():
                # A text is one signal, tested whole on its sentence vectors (MMD), not as 384
                # coordinates that would each dilute the Bonferroni correction of the rest.
                with _tested(evidence, f"text_drift:{text}"):
                    moved = text_drift(
                        reference[columns].to_numpy(dtype=float),
                        current[columns].to_numpy(dtype=float),
                        p_threshold=alpha,
                        n_permutations=int(np.ceil(2 / alpha)),
                        max_samples=TEXT_SAMPLE,
                        seed=ctx.seed,
                    )
                    evidence.setdefault("text_drift", {})[text] = moved.model_dump()
                    if moved.drifted:
                        drifted_texts.append(text)
            if drifted_texts and "data_drift" not in kinds:
                kinds.append("data_drift")
            if policy.multivariate and drift.enough_data:
                with _tested(evidence, "multivariate"):
                    multi = multivariate_drift(reference, current, features)
                    evidence["multivariate"] = multi.model_dump()
                    if multi.drifted and "data_drift" not in kinds:
                        kinds.append("data_drift")
        evidence |= {
            "drifted_features": (drift.drifted if drift else []) + drifted_texts,
            "drift": [f.model_dump() for f in drift.features if f.drifted] if drift else [],
            "drift_enough_data": drift.enough_data if drift else False,
        }
        # The champion's answers against what it answered before, and the labels against the
        # labels it met before: one categorical test each.
        for signal, test, before_values, now_values in (
            ("prediction_drift", prediction_drift, answered_before["prediction"], served_now["prediction"]),
            ("prior_drift", prior_drift, served_before["label"], labelled["label"]),
        ):
            if len(before_values) < MIN_ROWS or len(now_values) < MIN_ROWS:
                continue
            with _tested(evidence, signal):
                result = test(
                    before_values.to_numpy(),
                    now_values.to_numpy(),
                    p_threshold=alpha,
                    psi_threshold=policy.psi_threshold,
                )
                evidence[signal] = result.model_dump()
                if result.drifted:
                    kinds.append(signal)
        # Without labels to judge it, accuracy is estimated from the served probabilities when
        # the inputs or the answers moved: on unchanged data CBPE has nothing to reveal, and its
        # fit (~0.4 s) is the dearest step of a check.
        shifted = bool({"data_drift", "prediction_drift", "prior_drift"} & set(kinds))
        if accuracy is None and policy.estimate_without_labels and shifted:
            with _tested(evidence, "estimated"):
                estimate = _estimate(session, schema.classes, served_before, served_now)
                if estimate is not None and estimate.enough_data and estimate.estimated is not None:
                    evidence["estimated"] = estimate.model_dump()
                    baseline = estimate.reference_estimated
                    if baseline is not None and baseline - estimate.estimated > policy.max_accuracy_drop:
                        kinds.append("estimated_loss")

        if firing:
            kinds.append("alarm")
        evidence["alarms"] = [
            {
                "key": a.key,
                "name": a.name,
                "groups": list(a.groups or []),
                "starts_at": a.starts_at.isoformat(),
                "ends_at": a.ends_at.isoformat() if a.ends_at else None,
            }
            for a in firing
        ]

        severity = _severity(kinds, accuracy)
        outcome = "finding" if kinds else "healthy"
        if kinds:
            previous = decisions.last_decision(
                session=session,
                model_id=model.id,
                agent="monitor",
                outcome="finding",
                since=now - timedelta(hours=policy.cooldown_hours),
            )
            if previous is not None and _same_drift(previous.evidence or {}, champion.number, kinds, severity):
                outcome = "repeat"  # hysteresis: the drift already raised its finding
        evidence["severity"] = severity
        finding = {"kinds": kinds, **evidence} if outcome == "finding" else None
        rationale = {
            "finding": f"Finding ({severity}): " + ", ".join(kinds),
            "repeat": f"Same drift as the finding of the last {policy.cooldown_hours:g} h ({', '.join(kinds)}): "
            "not raised again",
            "healthy": "Healthy",
        }[outcome] + _describe(evidence)
        evidence["kinds"] = kinds
        decision = record(
            session,
            state,
            model,
            agent="monitor",
            action="check",
            outcome=outcome,
            rationale=rationale,
            evidence=to_json(evidence),
        )
    return {"finding": finding, "outcome": "finding" if finding else "healthy", "last_decision": decision.id}


#: Most served events on each side of a CBPE estimate.
CBPE_SAMPLE = 2000
#: Fewest served events on each side for the prediction, prior and estimate signals.
MIN_ROWS = 100


@contextmanager
def _tested(evidence: dict[str, Any], signal: str) -> Iterator[None]:
    """Run one optional signal; if its data defeats it (a field all missing, probabilities that do
    not add up, a fit that fails), say so in the evidence and go on with the other signals."""
    try:
        yield
    except (ValueError, RuntimeError) as error:
        evidence.setdefault("untested", {})[signal] = str(error)


def embedding_blocks(names: list[str]) -> dict[str, list[str]]:
    """Sentence-vector columns grouped by the text they encode (``query_e000`` … ``query_e383``).

    >>> embedding_blocks(["rx", "query_e000", "query_e001", "query_e002"])
    {}
    >>> blocks = embedding_blocks(["rx"] + [f"query_e{i:03d}" for i in range(384)])
    >>> list(blocks), len(blocks["query"])
    (['query'], 384)
    """
    groups: dict[str, list[str]] = {}
    for name in names:
        text, _, index = name.rpartition("_e")
        if text and len(index) == 3 and index.isdigit():
            groups.setdefault(text, []).append(name)
    # The replay names a text's vectors ``<column>_e000`` onwards; a handful of such names is
    # no sentence vector (MiniLM's has 384 dimensions).
    return {text: columns for text, columns in groups.items() if len(columns) >= MIN_EMBEDDING_DIMENSIONS}


#: Fewest ``_eNNN`` columns read as one text's sentence vector.
MIN_EMBEDDING_DIMENSIONS = 16


def _estimate(session: Any, classes: list[str], before: pd.DataFrame, now: pd.DataFrame) -> Any:
    """CBPE's estimate of the champion's accuracy on the window, from its served probabilities."""
    if len(before) < MIN_ROWS or len(now) < MIN_ROWS:
        return None
    reference = events.probabilities(session=session, ids=before["id"].tolist(), classes=classes)
    current = events.probabilities(session=session, ids=now["id"].tolist(), classes=classes)
    # A stored dict naming none of the schema's classes is as good as none.
    reference[reference.sum(axis=1) <= 0] = np.nan
    current[current.sum(axis=1) <= 0] = np.nan
    known_ref, known_now = ~np.isnan(reference).any(axis=1), ~np.isnan(current).any(axis=1)
    labels = before["label"].to_numpy()
    in_classes = np.isin(labels, classes)
    keep = known_ref & in_classes
    if keep.sum() < MIN_ROWS or known_now.sum() < MIN_ROWS or np.unique(labels[keep]).size < 2:
        return None
    # The most recent rows of each side: CBPE's fit grows with the reference (0.17 s at 2,000
    # rows, 0.28 s at 5,000 on six classes) and its estimate gains little beyond.
    reference, current = reference[keep][-CBPE_SAMPLE:], current[known_now][-CBPE_SAMPLE:]
    labels = labels[keep][-CBPE_SAMPLE:]
    # Served probabilities are rounded when stored: renormalise so each row sums to one.
    reference /= reference.sum(axis=1, keepdims=True)
    current /= current.sum(axis=1, keepdims=True)
    return estimate_performance(reference, labels, current, classes=classes, min_rows=MIN_ROWS)


def _severity(kinds: list[str], accuracy: float | None) -> str | None:
    """High: the model is losing (or an outage); medium: a change the labels cannot yet judge, or the
    error stream rising; low: inputs or outputs moved while labelled accuracy held."""
    if not kinds:
        return None
    if {"performance_loss", "estimated_loss", "alarm"} & set(kinds):
        return "high"
    if "error_rise" in kinds or accuracy is None:
        return "medium"
    return "low"


def _same_drift(previous: dict[str, Any], champion: int, kinds: list[str], severity: str | None) -> bool:
    before = set(previous.get("kinds", []))
    was = previous.get("severity")
    if severity == "high" or previous.get("champion") != champion:
        # A model that is losing is reported at every check until it is mended: the loop's own
        # budgets (retrains and labels a day) pace the response, and a retrain the Curator had to
        # wait labels for must be tried again. Alarms are deduplicated by their key. A new
        # champion starts afresh.
        return False
    return set(kinds) <= before and was is not None and SEVERITY[severity or "low"] <= SEVERITY[was]


#: The readings of the hour before an outage are labelled by it (the horizon of an "offline
#: within the hour" target): they tell how well outages are foreseen, not whether the model
#: decays, so they do not judge it. They stay in training, which is how outages are learnt.
OUTAGE_LEAD = timedelta(hours=1)


def _without_outage_leads(frame: pd.DataFrame, held: list[Quarantine]) -> pd.DataFrame:
    keep = np.ones(len(frame), dtype=bool)
    for q in held:
        if not q.reason.startswith("alarm "):
            continue
        start = pd.Timestamp(q.start).tz_localize(None)
        in_lead = (frame["time"] >= start - OUTAGE_LEAD) & (frame["time"] < start)
        if q.groups:
            in_lead &= frame["group"].isin(q.groups)
        keep &= ~in_lead.to_numpy()
    return frame[keep]


def _describe(evidence: dict[str, Any]) -> str:
    parts = []
    if evidence["balanced_accuracy"] is not None:
        reference = evidence["reference_balanced_accuracy"]
        parts.append(
            f"balanced accuracy {evidence['balanced_accuracy']:.3f} on {evidence['labelled']} labelled events "
            + (f"(reference {reference:.3f})" if reference is not None else "(no reference to judge it against)")
        )
    else:
        parts.append(f"only {evidence['labelled']} labelled events: accuracy not judged")
    rate = evidence["error_rate"]
    if rate["changed"]:
        parts.append(f"error rate rose from {rate['rate_before']:.1%} to {rate['rate_after']:.1%}")
    if "estimated" in evidence:
        e = evidence["estimated"]
        parts.append(
            f"estimated {e['metric']} {e['estimated']:.3f} without labels (estimated {e['reference_estimated']:.3f} "
            f"on the reference, measured {e['reference_value']:.3f})"
        )
    if evidence["drifted_features"]:
        parts.append("drifted: " + ", ".join(evidence["drifted_features"]))
    for signal in ("prediction_drift", "prior_drift"):
        if evidence.get(signal, {}).get("drifted"):
            parts.append(signal.replace("_", " ") + f" (PSI {evidence[signal]['psi']:.2f})")
    for alarm in evidence["alarms"]:
        parts.append(f"alarm {alarm['name']} on {', '.join(alarm['groups'])}")
    return ": " + "; ".join(parts) + "."
