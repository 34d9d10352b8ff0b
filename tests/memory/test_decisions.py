"""The decision log and its hash chain."""

from __future__ import annotations

from datetime import timedelta

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.audit import (
    ChainReport,
    canonical_json,
    decision_content,
    decision_hash,
    verify_chain,
)
from driftpilot.memory.decisions import (
    count_decisions,
    decision_as_dict,
    list_decisions,
    record_decision,
)
from driftpilot.memory.tables import ManagedModel

from .helpers import T0


def _record(session: Session, model_id: int, i: int, action: str):
    return record_decision(
        session=session,
        model_id=model_id,
        run_id=f"run-{i}",
        agent="monitor",
        time=T0 + timedelta(hours=i),
        trigger={"kind": "schedule"},
        evidence={
            "psi": np.float64(0.25 + i),
            "counts": np.array([1, 2, 3]),
            "p": float("nan"),
        },
        diagnosis=None,
        policy_verdicts=[{"rule": "retrains_per_day", "allowed": True}],
        action=action,
        outcome="done",
        rationale="drift on rx_power",
    )


def test_chain_links_and_verifies(session: Session, ont: ManagedModel) -> None:
    decisions = [_record(session, ont.id, i, action) for i, action in enumerate(["observe", "retrain", "retrain"])]

    assert decisions[0].prev_hash == ""
    assert [d.prev_hash for d in decisions[1:]] == [d.hash for d in decisions[:-1]]
    assert decisions[0].evidence == {"psi": 0.25, "counts": [1, 2, 3], "p": None}
    assert decisions[0].hash == decision_hash(decision_content(decisions[0]))
    assert verify_chain(session=session) == ChainReport(ok=True, checked=3, first_broken_id=None, reason="")
    assert (
        count_decisions(
            session=session,
            model_id=ont.id,
            action="retrain",
            since=T0,
            until=T0 + timedelta(hours=2),
        )
        == 1
    )
    assert (
        count_decisions(
            session=session,
            model_id=ont.id,
            action=["observe", "retrain"],
            outcome="done",
        )
        == 3
    )
    assert [d.id for d in list_decisions(session=session, action="retrain")] == [2, 3]
    as_dict = decision_as_dict(decisions[0])
    assert (as_dict["id"], as_dict["time"], as_dict["evidence"]["psi"]) == (
        1,
        "2026-03-01T10:00:00",
        0.25,
    )
    assert canonical_json({"b": 1, "a": [np.int64(2)]}) == '{"a":[2],"b":1}'


def test_an_edited_decision_breaks_the_chain_at_its_id(session: Session, ont: ManagedModel) -> None:
    for i in range(4):
        _record(session, ont.id, i, "observe")

    session.execute(sa.text("UPDATE decision SET outcome = 'skipped' WHERE id = 3"))
    session.commit()
    edited = verify_chain(session=session)
    session.execute(sa.text("UPDATE decision SET outcome = 'done', prev_hash = 'x' WHERE id = 3"))
    session.commit()
    relinked = verify_chain(session=session)

    assert edited == ChainReport(
        ok=False,
        checked=3,
        first_broken_id=3,
        reason="decision 3: stored hash does not match its content",
    )
    assert relinked == ChainReport(
        ok=False,
        checked=3,
        first_broken_id=3,
        reason="decision 3: prev_hash does not match the hash of decision 2",
    )
