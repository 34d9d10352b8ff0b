"""The policy schema: what a managed model's agents may do, and within which limits.

Every section refuses unknown fields (a typo such as ``max_retrain_per_day`` must not
silently fall back to the default) and is strict about types (``"0.1"`` is not a share).
The models are frozen: a policy in force never changes under a running decision; a new
one replaces it whole (see :class:`driftpilot.policies.engine.PolicyEngine`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, field_validator, model_validator

__all__ = [
    "Auto",
    "Autonomy",
    "Budgets",
    "ChangeWindow",
    "Changes",
    "Data",
    "Evaluation",
    "Federated",
    "Freeze",
    "Guards",
    "Monitor",
    "Policy",
    "Release",
    "Training",
]

#: Autonomy levels of TM Forum's Autonomous Networks framework (IG1218): L0/L1 manual,
#: L2 recommend only, L3 act with a person approving each release's start and its promotion
#: (a rollback never waits), L4 act within guardrails. (L5, full autonomy in every scenario, is not offered.)
Autonomy = Literal["L0", "L1", "L2", "L3", "L4"]
CleaningStep = Literal["missing", "stuck", "duplicates", "outliers", "labels"]
CLEANING_STEPS: tuple[CleaningStep, ...] = ("missing", "stuck", "duplicates", "outliers", "labels")
#: A field whose value depends on the stream's volume or label rate: derived from what the loop
#: observes (:mod:`driftpilot.policies.auto`) and written in the decision taken under it.
Auto = Literal["auto"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class Monitor(_Section):
    """When the Monitor looks, over which window, and what counts as a finding."""

    #: The shortest time between two checks, in minutes.
    check_every_minutes: int = Field(default=120, ge=1)
    #: New labels, or new events, that make a check worth running (at most every
    #: ``check_every_minutes``): a slow stream is checked as its evidence grows, not on the clock.
    check_every_labels: Annotated[int, Field(ge=1)] | Auto = "auto"
    check_every_rows: Annotated[int, Field(ge=1)] | Auto = "auto"
    #: The shortest window a check looks at, in hours.
    window_hours: float = Field(default=12.0, gt=0)
    #: How far back a check may reach for the labels and rows it needs: an upper bound on how stale
    #: its evidence may be.
    max_window_hours: Annotated[float, Field(gt=0)] | Auto = "auto"
    #: Labelled events a check needs to judge accuracy; fewer, and it is blind.
    min_labelled: Annotated[int, Field(ge=1)] | Auto = "auto"
    max_accuracy_drop: float = Field(default=0.03, ge=0, lt=1)
    drift_p_value: float = Field(default=0.01, gt=0, lt=1)
    psi_threshold: float = Field(default=0.2, gt=0)
    false_alarms_per_week: float = Field(default=1.0, gt=0)
    cooldown_hours: float = Field(default=6.0, ge=0)
    estimate_without_labels: bool = True
    multivariate: bool = False


class Budgets(_Section):
    """Daily budgets (UTC days): how often the loop may retrain, how many labels it may ask for,
    how many seconds of training it may spend (None: no limit)."""

    max_retrains_per_day: int = Field(default=6, ge=1)
    max_labels_per_day: int = Field(default=2000, ge=1)
    max_compute_seconds_per_day: float | None = Field(default=None, gt=0)
    #: Federated rounds (each one a message to every node and an update back) per day.
    max_federated_rounds_per_day: int = Field(default=20, ge=1)


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class ChangeWindow(_Section):
    """Days and hours (UTC) in which what is served may change; ``end`` before ``start`` spans
    midnight (``22:00``-``04:00``)."""

    days: list[Weekday] = Field(default_factory=lambda: list(WEEKDAYS), min_length=1)
    #: ``"HH:MM"``, quoted in YAML (unquoted, YAML 1.1 reads 22:00 as the number 1320).
    start: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field(pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")

    @model_validator(mode="after")
    def _not_empty(self) -> ChangeWindow:
        if self.start == self.end:
            raise ValueError("a change window's start and end must differ")
        return self

    def holds(self, at: datetime) -> bool:
        """Whether ``at`` (aware, any zone; judged in UTC) falls in the window."""
        moment = at.astimezone(UTC)
        now, day = moment.strftime("%H:%M"), WEEKDAYS[moment.weekday()]
        if self.start < self.end:
            return day in self.days and self.start <= now < self.end
        # Spanning midnight: the evening belongs to the day it starts on, the morning to the day before.
        yesterday = WEEKDAYS[(moment.weekday() - 1) % 7]
        return (day in self.days and now >= self.start) or (yesterday in self.days and now < self.end)


class Freeze(_Section):
    """A period in which nothing served may change (a holiday season, a network migration)."""

    # Not strict: YAML gives datetimes, JSON strings (ISO 8601 with a zone).
    start: AwareDatetime = Field(strict=False)
    end: AwareDatetime = Field(strict=False)
    reason: str = Field(min_length=1)

    @model_validator(mode="after")
    def _ordered(self) -> Freeze:
        if self.end <= self.start:
            raise ValueError(f"a freeze must end after it starts, got {self.start} to {self.end}")
        return self


class Changes(_Section):
    """When changes to what is served (a release's start or step, a promotion) may happen: inside
    one of ``windows`` if any are given, and never during a freeze. A rollback restores what was
    served before and is allowed at any time."""

    windows: list[ChangeWindow] = Field(default_factory=list)
    freezes: list[Freeze] = Field(default_factory=list)
    #: Longest a person's approval is waited for (autonomy L3); unanswered by then, it is a no.
    approval_timeout_hours: float = Field(default=24.0, gt=0)
    #: After a person denied a release (or let the request expire), hours before the loop trains
    #: a new candidate to ask again.
    after_denial_hours: float = Field(default=24.0, ge=0)


class Data(_Section):
    """What the loop may learn from."""

    #: Leave out events inside a quarantine (an upstream outage): no reason to learn from them.
    exclude_quarantined: bool = True
    #: Features no model of this policy may train on (identifiers, protected attributes): a
    #: retrain of a model whose schema uses one is refused.
    never_train_on: list[str] = Field(default_factory=list)
    #: Cleaning steps run on a retrain's labelled events before its snapshot: the rows they flag
    #: (stuck or mostly missing readings, repeats, outliers when quarantined, suspicious labels)
    #: are kept out of the corpus with why, restorable; ``[]`` runs none.
    cleaning: list[CleaningStep] = Field(default_factory=lambda: list(CLEANING_STEPS))
    #: Keep outliers out of training too (else they are only flagged: a broken value and a rare
    #: real event look alike).
    quarantine_outliers: bool = False
    #: Largest share of a training snapshot made of pseudo-labels: unlabelled recent events the
    #: champion is sure of, at a confidence where it was right 99 % of the time on labelled ones
    #: (none when the concept changed). ``0`` (the default, until replays have measured what
    #: self-training does to what is served) uses none.
    pseudo_label_share: float = Field(default=0.0, ge=0, lt=1)
    #: A retrain whose training set holds rare classes (fewer rows than half the median class)
    #: also trains its plan on the set with synthetic rows for them (tabular: SMOTE-style, noise
    #: for a one-row class; text: varied texts encoded again); the newest labels choose, and the
    #: decision records the effect measured.
    augmentation: bool = True


class Training(_Section):
    """Which data a retrain uses (a recent window plus a replay share of older data) and how it
    trains: an incremental update of the champion, or a full retrain from scratch."""

    #: The recent window a retrain learns from, in hours.
    recent_hours: Annotated[float, Field(gt=0)] | Auto = "auto"
    max_recent: int = Field(default=20000, ge=1)
    replay_share: float = Field(default=0.3, ge=0, lt=1)
    #: Labelled events a retrain needs at least.
    min_training_labels: Annotated[int, Field(ge=1)] | Auto = "auto"
    strategy: Literal["auto", "incremental", "full"] = "auto"
    full_every: int = Field(default=8, ge=1)
    penalty: Literal["ewc", "l2sp", "none"] = "ewc"
    penalty_strength: float = Field(default=1.0, ge=0)
    fallback_to_full: bool = True
    #: Hours a run waits for the labels the Curator asked people for before it ends.
    label_wait_hours: Annotated[float, Field(gt=0)] | Auto = "auto"
    #: Keep a challenger (at autonomy L4): besides the retrains findings call for, train a
    #: candidate on the newest labels once enough of them are new, and release it if it scores
    #: higher than the champion on the newest of them.
    challenger: bool = True
    #: Labels newer than the last training that make a challenger due (doubled after each one
    #: that did not replace the champion, until one does).
    challenger_every_labels: Annotated[int, Field(ge=1)] | Auto = "auto"
    #: Distil every candidate that passes the gate into a student for edge nodes, released with
    #: it when the student passes the same gate against its teacher and its int8 graph answers
    #: as it does (``driftpilot.tools.distill``).
    distil: bool = True


#: How federated training runs: not at all; over simulated nodes, the training snapshot split by
#: the schema's group key (a rehearsal on this machine, in-process); or over the real edge nodes
#: of a Flower SuperLink (``superlink``, its Control API's address).
FederatedMode = Literal["off", "simulation", "superlink"]
FederatedStrategy = Literal["auto", "fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum"]


class Federated(_Section):
    """Training where the data live, with Flower: each node trains on its own rows and only
    weights travel (``driftpilot.edge``). A federated round is one more way for the Trainer to
    make a candidate, evaluated, gated and released like any other."""

    mode: FederatedMode = "off"
    #: ``auto``: FedAvg, FedProx when the nodes' data differ, updates screened every round and a
    #: robust aggregation once one is out of line (see :mod:`driftpilot.edge.strategy`).
    strategy: FederatedStrategy = "auto"
    rounds: int = Field(default=5, ge=1)
    local_epochs: int = Field(default=2, ge=1)
    #: Fewest nodes a run needs (four or more let updates be screened for outliers).
    min_nodes: int = Field(default=4, ge=1)
    #: Differential privacy: Gaussian noise (times the clipping norm) on the aggregate; 0 is off.
    #: The ε spent is written in the decision.
    dp_noise_multiplier: float = Field(default=0.0, ge=0)
    dp_clipping_norm: float = Field(default=1.0, gt=0)
    #: The SuperLink's Control API (``host:port``) when ``mode`` is ``superlink``.
    superlink: str | None = None

    @model_validator(mode="after")
    def _superlink_named(self) -> Federated:
        if self.mode == "superlink" and not self.superlink:
            raise ValueError("federated.mode 'superlink' needs federated.superlink, the SuperLink's host:port")
        return self


class Evaluation(_Section):
    """What a candidate may give up against the champion before it may go to a canary (beside
    ``release.max_regression`` on the recent holdout)."""

    #: What models are trained for and chosen by: ``accuracy`` (every prediction counts the same)
    #: or ``balanced_accuracy`` (every class counts the same: a rare class is not given up for a
    #: common one). The Monitor and the Release Manager judge both either way.
    metric: Literal["accuracy", "balanced_accuracy"] = "accuracy"
    max_forgetting: float = Field(default=0.02, ge=0, lt=1)
    max_slice_regression: float = Field(default=0.05, ge=0, lt=1)
    min_slice_samples: int = Field(default=100, ge=1)
    max_golden_regression: float = Field(default=0.0, ge=0, lt=1)


class Guards(_Section):
    """Label-free guards: they can stop a release before any label arrives. Each compares the
    candidate with the champion on the same events since the release started."""

    #: Events (labelled or not) a guard needs before it judges.
    min_events: int = Field(default=200, ge=1)
    #: Largest share of events on which the two may answer differently.
    max_disagreement: float = Field(default=0.5, gt=0, le=1)
    #: Largest drop of the candidate's confidence-based accuracy estimate (the mean of its top
    #: class probability, CBPE's estimate for accuracy) below the champion's.
    max_estimated_drop: float = Field(default=0.1, ge=0, le=1)
    #: Largest ratio of the candidate's prediction time to the champion's, on the same rows.
    max_latency_ratio: float = Field(default=5.0, gt=1)
    #: Largest share of events the candidate fails to answer (an error, or non-finite output).
    max_error_rate: float = Field(default=0.0, ge=0, lt=1)


class Release(_Section):
    """How a candidate is released: shadow, canary steps over cohorts, and the verdict.

    The verdict is a sequential test on labelled events that both versions answered (the one
    not serving an event answers it in shadow): ``better`` or ``worse`` at error rate ``alpha``,
    looked at as often as the loop likes. Promotion (100%) needs ``better``.
    """

    #: The candidate first answers beside the champion, nothing it says being served.
    shadow: bool = True
    #: Labelled events the shadow must have answered before the first canary step.
    min_shadow_samples: Annotated[int, Field(ge=1)] | Auto = "auto"
    #: ``better``: the shadow lasts until the candidate is also shown better (the canary steps then
    #: confirm it while serving); ``samples``: only until ``min_shadow_samples``. Both versions
    #: answer every event either way, so staying in shadow costs time, never evidence.
    shadow_until: Literal["better", "samples"] = "better"
    #: What a candidate must show to be promoted: ``ahead``, neither lower accuracy nor lower
    #: balanced accuracy than the champion on the labelled pairs (the prequential ones count) and
    #: shown worse by nothing (the sequential test, the slices, the guards): periodic retraining
    #: with evidence on top; or ``better``, the sequential test's verdict, which on close versions
    #: and few labels can take longer than the world stays put.
    promote_when: Literal["ahead", "better"] = "ahead"
    #: Canary shares, increasing, each strictly between 0 and 1; promotion serves everyone.
    steps: list[float] = Field(default_factory=lambda: [0.05, 0.25], min_length=1)
    #: Labelled events the candidate must have served itself at each step before the next one
    #: (or promotion).
    min_step_samples: Annotated[int, Field(ge=1)] | Auto = "auto"
    #: Cohorts by hashing the entity id, or its group (an edge node, a network segment): a whole
    #: group moves.
    cohort: Literal["entity", "group"] = "entity"
    #: Chance of a verdict (better or worse) between two equally good versions, all looks and
    #: slices together.
    alpha: float = Field(default=0.05, gt=0, lt=0.5)
    #: Slices (values of the model's categorical features) checked on their own; each gets its
    #: share of ``alpha``.
    max_slices: int = Field(default=20, ge=0)
    #: Labelled events both answered before promotion.
    min_canary_samples: Annotated[int, Field(ge=1)] | Auto = "auto"
    #: Largest regression on the recent holdout with which a candidate may start a release.
    max_regression: float = Field(default=0.02, ge=0, lt=1)
    #: Longest a release may run: undecided by then, the champion is kept.
    max_canary_hours: Annotated[float, Field(gt=0)] | Auto = "auto"
    guards: Guards = Field(default_factory=Guards)

    @field_validator("steps")
    @classmethod
    def _increasing_shares(cls, steps: list[float]) -> list[float]:
        if any(not 0.0 < s < 1.0 for s in steps):
            raise ValueError("every step's share must be strictly between 0 and 1")
        if any(b <= a for a, b in zip(steps, steps[1:], strict=False)):
            raise ValueError("step shares must increase")
        return steps

    @property
    def canary_share(self) -> float:
        """The largest share a candidate serves before promotion."""
        return self.steps[-1]


class Policy(_Section):
    """A managed model's policy.

    Examples
    --------
    >>> policy = Policy(name="offline-risk", release={"steps": [0.05, 0.5]})
    >>> policy.autonomy, policy.release.canary_share, policy.budgets.max_labels_per_day
    ('L4', 0.5, 2000)
    >>> Policy(name="x", release={"step": [0.05]})
    Traceback (most recent call last):
    ...
    pydantic_core._pydantic_core.ValidationError: 1 validation error for Policy
    release.step
    ...
    """

    name: str = Field(min_length=1)
    autonomy: Autonomy = "L4"
    monitor: Monitor = Field(default_factory=Monitor)
    budgets: Budgets = Field(default_factory=Budgets)
    training: Training = Field(default_factory=Training)
    evaluation: Evaluation = Field(default_factory=Evaluation)
    release: Release = Field(default_factory=Release)
    changes: Changes = Field(default_factory=Changes)
    data: Data = Field(default_factory=Data)
    federated: Federated = Field(default_factory=Federated)
