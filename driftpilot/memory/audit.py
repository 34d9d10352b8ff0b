"""The tamper-evident decision log: canonical JSON, decision hashes and chain verification.

Each decision's ``hash`` is the SHA-256 of the canonical JSON of its content and the previous
decision's hash (a hash chain, as in certificate-transparency logs and git): editing, removing or
reordering a stored decision breaks the chain at that point. Appending with a recomputed hash
from the last decision onwards is not detected without an external anchor of the newest hash.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from pathlib import PurePath
from typing import Any

import numpy as np
import sqlalchemy as sa
from sqlalchemy.orm import Session

from driftpilot.memory.tables import Decision, table_of
from driftpilot.memory.times import to_naive_utc

HASHED_FIELDS = (
    "model_id",
    "run_id",
    "agent",
    "time",
    "created_at",
    "trigger",
    "evidence",
    "diagnosis",
    "policy_verdicts",
    "action",
    "outcome",
    "rationale",
    "approvals",
    "prev_hash",
)
"""The decision fields covered by its hash, ``prev_hash`` included."""


def to_jsonable(value: Any) -> Any:
    """Convert ``value`` to plain JSON values (dict, list, str, int, float, bool, None).

    numpy scalars and arrays become Python numbers and lists, datetimes naive-UTC ISO 8601
    strings, tuples and sets lists (sets sorted), pydantic models and dataclasses dicts,
    mapping keys strings. NaN and infinities become ``None``: JSON has no such numbers and
    PostgreSQL refuses them.

    Examples
    --------
    >>> to_jsonable({"p": np.float64(0.25), "n": np.arange(2), 3: float("nan")})
    {'p': 0.25, 'n': [0, 1], '3': None}
    """
    if value is None or type(value) in (bool, str, int):
        return value
    if isinstance(value, np.generic):  # before float: np.float64 subclasses float
        return to_jsonable(value.item())
    if isinstance(value, enum.Enum):  # before str and int: StrEnum, IntEnum
        return to_jsonable(value.value)
    if isinstance(value, float):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)
    if isinstance(value, int):
        return int(value)
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, datetime):
        # Naive UTC text, as memory stored times before it returned them aware: decision hashes
        # and decisions.jsonl keep the form every existing log was written in.
        return to_naive_utc(value).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(to_jsonable(k)): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return sorted((to_jsonable(v) for v in value), key=canonical_json)
    if isinstance(value, Decimal):
        return to_jsonable(float(value))
    if isinstance(value, PurePath):
        return str(value)
    if hasattr(value, "model_dump"):  # pydantic models
        return to_jsonable(value.model_dump(mode="json"))
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if hasattr(value, "tolist"):  # pandas and torch values
        return to_jsonable(value.tolist())
    raise TypeError(f"cannot store a {type(value).__name__} as JSON: {value!r}")


def canonical_json(value: Any) -> str:
    """The one JSON text of ``value``: sorted keys, no spaces, plain JSON values."""
    return json.dumps(
        to_jsonable(value),
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
    )


def decision_content(
    decision: Decision | Mapping[str, Any] | sa.RowMapping,
) -> dict[str, Any]:
    """The hashed fields of a decision row (or of a mapping with those keys)."""
    if not isinstance(decision, Decision):
        return {name: decision[name] for name in HASHED_FIELDS}
    return {name: getattr(decision, name) for name in HASHED_FIELDS}


def decision_hash(content: Mapping[str, Any]) -> str:
    """SHA-256 hex digest of the canonical JSON of a decision's hashed fields."""
    return hashlib.sha256(canonical_json(dict(content)).encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ChainReport:
    """The result of :func:`verify_chain`."""

    ok: bool
    checked: int
    first_broken_id: int | None
    reason: str


def verify_chain(*, session: Session) -> ChainReport:
    """Recompute every decision's hash, in id order, and check each links to the one before.

    Reads plain rows rather than ORM objects, so that objects cached in ``session`` cannot
    hide a change made behind its back.
    """
    table = table_of(Decision)
    columns = [table.c.id, table.c.hash, *(table.c[name] for name in HASHED_FIELDS)]
    rows = session.execute(sa.select(*columns).order_by(table.c.id).execution_options(yield_per=1000)).mappings()
    previous = ""
    previous_id: int | None = None
    checked = 0
    for row in rows:
        checked += 1
        if row["prev_hash"] != previous:
            after = f"decision {previous_id}" if previous_id is not None else "the start of the log"
            return ChainReport(
                ok=False,
                checked=checked,
                first_broken_id=row["id"],
                reason=f"decision {row['id']}: prev_hash does not match the hash of {after}",
            )
        if decision_hash(decision_content(row)) != row["hash"]:
            return ChainReport(
                ok=False,
                checked=checked,
                first_broken_id=row["id"],
                reason=f"decision {row['id']}: stored hash does not match its content",
            )
        previous, previous_id = row["hash"], row["id"]
    return ChainReport(ok=True, checked=checked, first_broken_id=None, reason="")
