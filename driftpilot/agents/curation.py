"""What the Data Curator does to the data before a snapshot, and how it picks what to ask people.

* :func:`cleaned`: the policy's cleaning steps (:func:`driftpilot.tools.cleaning.clean`) over a
  retrain's labelled events; the rows they flag leave the training set and, once the snapshot's
  decision is logged, the corpus (:func:`keep_out`), each with the step's reason.
* :func:`pseudo_labelled`: unlabelled events of the window the champion is sure of, at a
  confidence where it was right 99 % of the time on labelled ones (:func:`~driftpilot.tools.
  curation.pseudo_labels`), capped as a share of the snapshot; none when the concept changed.
* :func:`chosen_for_labels`: active learning (:func:`driftpilot.tools.active.select_for_labels`)
  in the champion's own feature space: uncertain, diverse, the drifted slice first.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from driftpilot.memory import corpus, events, labels, managed
from driftpilot.memory.tables import ManagedModel
from driftpilot.models.base import TorchClassifier
from driftpilot.models.intent_mlp import embedding_blocks
from driftpilot.policies.schema import Policy
from driftpilot.tools.active import select_for_labels
from driftpilot.tools.cleaning import CleaningReport, Step, clean
from driftpilot.tools.curation import pseudo_labels

#: The corpus exclusion kind of each cleaning step's quarantine.
EXCLUSION_KIND: dict[Step, str] = {
    "missing": "missing",
    "stuck": "stuck",
    "duplicates": "duplicate",
    "outliers": "outlier",
    "labels": "label_issue",
}
#: Ids of a step's quarantined rows written into the decision (all are in the corpus exclusions).
LISTED = 200


def cleaned(
    session: Session, model: ManagedModel, recent: pd.DataFrame, policy: Policy, seed: int
) -> tuple[pd.DataFrame, CleaningReport | None]:
    """``recent`` less the rows the policy's cleaning steps quarantine, and the report (None
    when no step is asked for or nothing is labelled)."""
    steps = list(policy.data.cleaning)
    if not steps or recent.empty:
        return recent, None
    schema = managed.model_schema(model)
    blocks = embedding_blocks(schema.feature_names)
    embedded = {c for columns in blocks.values() for c in columns}
    features: list[tuple[str, str]] = [(f.name, f.kind) for f in schema.features if f.name not in embedded]
    frame, vectors = recent, None
    if blocks:
        columns = next(iter(blocks.values()))
        vectors = recent[columns].to_numpy(dtype=np.float64)
        stored = events.texts(session=session, ids=recent["id"].tolist())
        # An event stored without its text (sent as a vector) is known by its vector's digest.
        frame = recent.assign(
            text=[stored.get(int(i)) or _digest(v) for i, v in zip(recent["id"], vectors, strict=True)]
        )
        features.append(("text", "text"))
    report = clean(
        frame,
        recent["label"].astype(str).tolist(),
        features,
        ids=recent["id"].tolist(),
        entity="entity",
        order="time",
        vectors=vectors,
        steps=steps,
        quarantine_outliers=policy.data.quarantine_outliers,
        label_model=None if blocks else _tabular_judge,
        seed=seed,
    )
    return recent[~recent["id"].isin(report.quarantine)], report


def _tabular_judge() -> Any:
    """The label step's model for a table: a logistic regression at scikit-learn's default
    strength. With thousands of rows and a few dozen encoded columns the strength matters little,
    and the walk over strengths that the step makes by default (it pays off on 384-dimensional
    sentence vectors) cost ten times as much: 80 s against 8 s on a day of the demo's labels on a
    busy machine (before the step limited BLAS to one thread), flagging a superset of the same
    rows (67 against 53)."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=300))


def _digest(vector: np.ndarray) -> str:
    return hashlib.sha256(np.round(vector, 6).tobytes()).hexdigest()[:16]


def cleaning_evidence(report: CleaningReport | None) -> dict[str, Any]:
    """What the decision keeps of a cleaning report: each step's counts and summary, and the
    first ids each step kept out (all of them are in the corpus exclusions)."""
    if report is None:
        return {"ran": False}
    return {
        "ran": True,
        "rows": report.rows,
        "kept_out": len(report.quarantine),
        "imputed": report.imputed,
        "steps": {
            s.step: {"found": s.found, "kept_out": s.quarantined, "summary": s.summary, "settings": s.settings}
            for s in report.steps
        },
        "kept_out_ids": {
            step: report.ids(step, "quarantine")[:LISTED] for step in EXCLUSION_KIND if report.ids(step, "quarantine")
        },
    }


def cleaning_sentence(report: CleaningReport | None) -> str:
    if report is None or not report.steps:
        return ""
    parts = [f"{s.quarantined} {s.step}" for s in report.steps if s.quarantined]
    imputed = sum(report.imputed.values())
    said = f" Cleaning kept {len(report.quarantine)} of {report.rows} labelled events out"
    said += f" ({', '.join(parts)})" if parts else ""
    return said + (f"; {imputed} missing values are imputed by the model." if imputed else ".")


def keep_out(
    session: Session, model: ManagedModel, report: CleaningReport | None, decision_id: int, now: datetime
) -> int:
    """Keep the rows a cleaning report quarantined out of the corpus, each with its first
    finding's reason, under the decision that logged it. Returns how many were new."""
    if report is None or not report.quarantine:
        return 0
    first: dict[int, tuple[str, str]] = {}
    for finding in report.findings:
        if finding.action == "quarantine" and finding.id not in first:
            first[finding.id] = (EXCLUSION_KIND[finding.step], finding.reason)
    added = 0
    for kind in sorted({k for k, _ in first.values()}):
        ids = [i for i, (k, _) in first.items() if k == kind]
        added += corpus.exclude(
            session=session,
            model_id=model.id,
            event_ids=ids,
            kind=kind,
            reasons=[first[i][1] for i in ids],
            by="curator",
            time=now,
            decision_id=decision_id,
        )
    return added


def pseudo_labelled(
    session: Session,
    model: ManagedModel,
    scorer: TorchClassifier | None,
    recent: pd.DataFrame,
    pool: pd.DataFrame,
    policy: Policy,
    *,
    n_train: int,
    changed: bool,
    now: datetime,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Pseudo-labels (a frame of ``id``, ``label``) for the unlabelled rows of ``pool`` the
    champion is sure of, stored with source ``pseudo``, and the evidence for the decision."""
    share = policy.data.pseudo_label_share
    none = pd.DataFrame({"id": pd.Series(dtype=np.int64), "label": pd.Series(dtype=object)})
    if share <= 0 or scorer is None:
        return none, {"used": 0, "reason": "pseudo-labels are off" if share <= 0 else "no champion to ask"}
    if changed:
        return none, {"used": 0, "reason": "the concept changed: the champion's sure answers follow the old rule"}
    unlabelled = pool[pool["label"].isna()]
    classes = list(scorer.classes)
    chosen = pseudo_labels(
        scorer.predict_proba(unlabelled) if len(unlabelled) else np.zeros((0, len(classes))),
        scorer.predict_proba(recent),
        recent["label"].astype(str).to_numpy(),
        classes,
        at_most=int(share / (1 - share) * n_train),
    )
    evidence = {
        "used": len(chosen.indices),
        "threshold": chosen.threshold,
        "precision_on_labelled": chosen.precision,
        "judged": chosen.judged,
        "reason": chosen.reason,
    }
    if not len(chosen.indices):
        return none, evidence
    ids = unlabelled["id"].to_numpy()[chosen.indices]
    labels.add_pseudo_labels(
        session=session,
        model_id=model.id,
        event_ids=ids.tolist(),
        values=chosen.labels,
        confidences=chosen.confidences.tolist(),
        time=now,
    )
    return pd.DataFrame({"id": ids, "label": chosen.labels}), evidence


def chosen_for_labels(
    scorer: TorchClassifier,
    pool: pd.DataFrame,
    labelled: pd.DataFrame,
    n: int,
    *,
    diagnosis: Mapping[str, Any] | None,
    seed: int,
) -> tuple[pd.DataFrame, list[str]]:
    """The ``n`` events of ``pool`` to ask people to label, and why each: active learning in the
    champion's own encoding of the features, preferring the slice the diagnosis names."""
    space = scorer.encoding_.transform(pool)
    known = scorer.encoding_.transform(labelled) if len(labelled) else None
    where = (diagnosis or {}).get("slice") or {}
    drifted = None
    if where and all(column in pool.columns for column in where):
        drifted = np.logical_and.reduce([pool[c].astype(str).to_numpy() == str(v) for c, v in where.items()])
    selection = select_for_labels(
        space, scorer.predict_proba(pool), n, labelled=known, drifted=drifted, seed=seed, classes=list(scorer.classes)
    )
    return pool.iloc[list(selection.indices)], list(selection.reasons)
