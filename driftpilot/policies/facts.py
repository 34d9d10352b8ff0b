"""The facts the policy engine judges: one model per action.

Each action's rules read their own facts, typed: counts are ``int``, scores ``float``, flags
``bool``. A fact left out (``None``) is one the caller could not establish; the rule that needs it
fails, saying "fact 'x' missing", rather than guessing. The models are strict and refuse unknown
fields, so a misspelt fact or a ``"yes"`` string for a flag is an error where it is made, not a
silently relaxed gate.

Examples
--------
>>> facts = StartCanaryFacts(candidate_score=0.91, champion_score=0.88, concept_changed=True)
>>> facts.action, facts.share
('start_canary', None)
>>> facts.model_dump(exclude_unset=True)
{'candidate_score': 0.91, 'champion_score': 0.88, 'concept_changed': True}
>>> StartCanaryFacts(concept_changed="yes")
Traceback (most recent call last):
...
pydantic_core._pydantic_core.ValidationError: 1 validation error for StartCanaryFacts
concept_changed
  Input should be a valid boolean [type=bool_type, input_value='yes', input_type=str]
...
"""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Action",
    "ActionFacts",
    "AlertFacts",
    "PromoteFacts",
    "FederateFacts",
    "QuarantineFacts",
    "RequestLabelsFacts",
    "RetrainFacts",
    "RollbackFacts",
    "StartCanaryFacts",
]

#: The actions the policy engine judges.
Action = Literal[
    "retrain",
    "federate",
    "request_labels",
    "start_canary",
    "promote",
    "rollback",
    "quarantine",
    "alert",
]


class _Facts(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    #: The action whose rules read these facts.
    action: ClassVar[Action]


class RetrainFacts(_Facts):
    """What a retrain would learn from."""

    action: ClassVar[Action] = "retrain"

    #: Labelled events behind the retrain (what it learns from and the holdout that judges it).
    training_labels: int | None = Field(default=None, ge=0)
    #: The least a retrain needs when the policy's ``min_training_labels`` is ``auto``: derived
    #: from the stream's label rate by the caller (see :func:`driftpilot.policies.auto.derive_training`).
    min_training_labels: int | None = Field(default=None, ge=1)
    #: The model's feature names, checked against the policy's ``data.never_train_on``.
    features: list[str] | None = None


class FederateFacts(_Facts):
    """What a federated training would take: its rounds and the nodes connected."""

    action: ClassVar[Action] = "federate"

    rounds: int = Field(ge=1)
    #: Nodes to train on; None when they are known only once they connect (a SuperLink's), and
    #: the run itself waits for ``federated.min_nodes`` of them.
    nodes: int | None = Field(default=None, ge=0)


class RequestLabelsFacts(_Facts):
    """How many labels would be asked of people now."""

    action: ClassVar[Action] = "request_labels"

    n_labels: int | None = Field(default=None, ge=0)


class StartCanaryFacts(_Facts):
    """A candidate's evaluation against the champion, and the share of cohorts it would serve.

    Scores are balanced accuracies: on the recent holdout (required), on the old-concept holdout
    and on the golden set (their gates are judged when either score is given). The slice gate is
    judged when slices were compared or ``worst_slice_delta`` is given; compared but with no
    slice large enough, it passes saying so.
    """

    action: ClassVar[Action] = "start_canary"

    #: The share of cohorts asked for; ``None``: the policy's canary share.
    share: float | None = None
    candidate_score: float | None = None
    champion_score: float | None = None
    candidate_old_score: float | None = None
    champion_old_score: float | None = None
    candidate_golden_score: float | None = None
    champion_golden_score: float | None = None
    #: The slice where the candidate falls furthest behind the champion (``"column=value"``).
    worst_slice: str | None = None
    #: The candidate's accuracy on ``worst_slice`` minus the champion's.
    worst_slice_delta: float | None = None
    #: Whether an evaluation compared the two models slice by slice (an evaluation always does;
    #: facts written by hand for a release started outside the loop may not).
    slices_compared: bool = False
    #: Whether the Diagnostician found the concept itself changed: then the old holdout
    #: describes a world that is gone, and the forgetting gate tolerates a loss up to the
    #: recent gain.
    concept_changed: bool = False


class PromoteFacts(_Facts):
    """A release's canary evidence: labelled events both versions answered, and their scores.

    The sequential test's verdict and the count of slices shown worse are judged when given
    (not None).
    """

    action: ClassVar[Action] = "promote"

    canary_samples: int | None = Field(default=None, ge=0)
    canary_score: float | None = None
    control_score: float | None = None
    sequential_verdict: Literal["better", "worse", "undecided"] | None = None
    worse_slices: int | None = Field(default=None, ge=0)
    #: The least ``canary_samples`` when the policy's ``min_canary_samples`` is ``auto``: derived
    #: from the stream's label rate by the caller (see :func:`driftpilot.policies.auto.derive_release`).
    min_canary_samples: int | None = Field(default=None, ge=1)


class RollbackFacts(_Facts):
    """None: a rollback restores what was served before; only autonomy applies to it."""

    action: ClassVar[Action] = "rollback"


class QuarantineFacts(_Facts):
    """None: a quarantine changes nothing that is served; only autonomy applies to it."""

    action: ClassVar[Action] = "quarantine"


class AlertFacts(_Facts):
    """None: an alert changes nothing that is served; only autonomy applies to it."""

    action: ClassVar[Action] = "alert"


ActionFacts = (
    RetrainFacts
    | FederateFacts
    | RequestLabelsFacts
    | StartCanaryFacts
    | PromoteFacts
    | RollbackFacts
    | QuarantineFacts
    | AlertFacts
)
