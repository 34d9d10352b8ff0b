"""Distillation for the edge: a small student that answers as its teacher does, and proof that
the int8 graph an edge node will run answers as the student does.

Every family's teacher has a student an edge node can run with onnxruntime alone
(:func:`student_for`):

- the intent teacher (all-MiniLM-L6-v2 and a head) → :class:`~driftpilot.models.ngram_student.
  NgramStudent`, word and character n-grams into one linear layer, no transformer;
- the tabular and offers teachers → a :class:`~driftpilot.models.tabular_mlp.TabularMLP` with one
  hidden layer of :data:`STUDENT_HIDDEN`, on the event's own fields only: features derived on the
  server from an entity's history (the rolling ones) are left out, since a node sees one reading.

:func:`distil_student` trains the student on the teacher's logits softened (Hinton et al.'s T) plus
the hard labels (:meth:`~driftpilot.models.base.TorchClassifier.distil`), measures how often it
agrees with its teacher, exports its self-contained graph, quantizes it to int8 and checks the int8
graph against the Python student on held-out rows (:data:`PARITY` or it is refused, with the rows
that differ). Whether the student is good enough to stand in for its teacher is the caller's gate.
"""

from __future__ import annotations

import tempfile
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from driftpilot.models.base import TorchClassifier
from driftpilot.models.edge_export import EDGE_ARTIFACT, Agreement, agreement, student_artifacts
from driftpilot.models.ngram_student import NgramStudent
from driftpilot.models.tabular_mlp import TabularMLP

__all__ = ["EDGE_SHARE", "PARITY", "STUDENT_HIDDEN", "Distilled", "distil_student", "student_for"]

#: Least share of held-out rows on which the int8 edge graph must answer as the Python student.
PARITY = 0.995
#: Hidden layer of a tabular student (the teachers have 64 and 32).
STUDENT_HIDDEN = (16,)
#: Share of requests an edge node answers with its student; it defers the rest, those its student
#: is least sure of, to the server's teacher. The threshold that gives this share is taken from
#: the student's confidence on held-out rows and travels in its graph (``driftpilot.defer_below``).
EDGE_SHARE = 0.8
#: Least probability a teacher's logit is taken from (``log 0`` has no softened form).
_FLOOR = 1e-7


def student_for(teacher: TorchClassifier, *, derived: Collection[str] = ()) -> TorchClassifier:
    """An unfitted student for ``teacher`` (see the module's note); ``derived`` names the features
    the server derives from history, which a student does without.

    Raises ``ValueError`` when no student can be made (every feature derived, or a kind of
    feature no student reads)."""
    kinds = {kind for _, kind in teacher.features}
    if kinds == {"text"}:
        return NgramStudent(teacher.features, teacher.classes, seed=teacher.seed)
    own = [(name, kind) for name, kind in teacher.features if name not in derived]
    if not own:
        raise ValueError(f"every feature of the {teacher.family} teacher is derived on the server: no edge student")
    if not kinds <= {"number", "category"}:
        raise ValueError(f"no edge student reads features of kinds {sorted(kinds)}")
    return TabularMLP(own, teacher.classes, hidden=STUDENT_HIDDEN, seed=teacher.seed)


def teacher_logits(teacher: TorchClassifier, columns: Any) -> np.ndarray:
    """The teacher's log-probabilities: logits up to a constant per row, which a softmax ignores."""
    return np.log(np.clip(np.asarray(teacher.predict_proba(columns), dtype=np.float64), _FLOOR, 1.0)).astype(np.float32)


@dataclass
class Distilled:
    """A student, what it learnt from, and how its int8 graph compares with it."""

    student: TorchClassifier
    rows: int
    labelled_rows: int
    #: Share of held-out rows where student and teacher give the same class.
    agreement: float
    #: The int8 graph against the Python student on the held-out rows.
    parity: Agreement
    #: Bytes of the student's fp32 and int8 edge graphs.
    bytes_fp32: int
    bytes_int8: int
    features_left_out: list[str] = field(default_factory=list)

    @property
    def parity_passed(self) -> bool:
        return self.parity.agreement >= PARITY

    def summary(self) -> dict[str, Any]:
        """What the decision records of the distillation."""
        return {
            "family": self.student.family,
            "features": [name for name, _ in self.student.features],
            "features_left_out": self.features_left_out,
            "rows": self.rows,
            "labelled_rows": self.labelled_rows,
            "teacher_agreement": round(self.agreement, 4),
            "parity": self.parity.as_dict() | {"required": PARITY, "passed": self.parity_passed},
            "bytes_fp32": self.bytes_fp32,
            "bytes_int8": self.bytes_int8,
            "defer_below": self.student.defer_below_,
            "edge_share": EDGE_SHARE,
            "training": self.student.report_.as_dict() if self.student.report_ else None,
        }


def distil_student(
    teacher: TorchClassifier,
    rows: pd.DataFrame,
    labels: Any,
    held_out: pd.DataFrame,
    *,
    derived: Collection[str] = (),
) -> Distilled:
    """Distil ``teacher`` into its student on ``rows`` (``labels`` beside them, ``None`` where a
    row has none: it then teaches through the teacher alone), and check the student and its int8
    graph on ``held_out``.

    Raises ``ValueError`` naming the problem when no student can be made or trained (see
    :func:`student_for`, :meth:`~driftpilot.models.base.TorchClassifier.distil`)."""
    if held_out.empty:
        raise ValueError("no held-out rows to check the student on")
    student = student_for(teacher, derived=derived)
    given = [None if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in labels]
    # A label the teacher does not know (a class the snapshot has and the teacher has not) cannot
    # be taught through it: such rows teach through the teacher's answer alone.
    known = set(teacher.classes)
    given = [v if v in known else None for v in given]
    student.distil(rows, teacher_logits(teacher, rows), given)
    # One pass of the student over the held-out rows gives both its answers and its confidence.
    probabilities = np.asarray(student.predict_proba(held_out))
    answers = np.asarray(student.classes)[probabilities.argmax(axis=1)]
    agree = float((answers == teacher.predict(held_out)).mean())
    student.defer_below_ = float(np.quantile(probabilities.max(axis=1), 1 - EDGE_SHARE))
    with tempfile.TemporaryDirectory(prefix="driftpilot-student-") as folder:
        paths = student_artifacts(student, Path(folder))
        parity = agreement(student, paths[EDGE_ARTIFACT], held_out)
        sizes = paths["edge"].stat().st_size, paths[EDGE_ARTIFACT].stat().st_size
    return Distilled(
        student=student,
        rows=len(rows),
        labelled_rows=sum(v is not None for v in given),
        agreement=agree,
        parity=parity,
        bytes_fp32=sizes[0],
        bytes_int8=sizes[1],
        features_left_out=[name for name, _ in teacher.features if name not in dict(student.features)],
    )
