"""The policy engine: may this action happen now, and why or why not.

Each action is checked against a fixed list of rules: first the autonomy level, then
the action's guardrails (budgets, evidence gates). Every rule checked is reported with
the value observed and the limit it was compared with, passing or not, so a decision
records the whole reasoning and not only what failed.
"""

from __future__ import annotations

import hashlib
import math
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, get_args

from pydantic import BaseModel, ConfigDict, Field

from driftpilot.policies.auto import MIN_RELEASE_LABELS, MIN_TRAIN_LABELS
from driftpilot.policies.facts import (
    Action,
    ActionFacts,
    AlertFacts,
    FederateFacts,
    PromoteFacts,
    QuarantineFacts,
    RequestLabelsFacts,
    RetrainFacts,
    RollbackFacts,
    StartCanaryFacts,
)
from driftpilot.policies.loader import PolicyError, load_policy, policy_from_mapping
from driftpilot.policies.schema import Policy

__all__ = [
    "Action",
    "PolicyEngine",
    "PolicyReload",
    "PolicyVerdict",
    "RuleVerdict",
    "Usage",
    "evaluate",
]

ACTIONS: tuple[str, ...] = get_args(Action)

#: At L3 a person approves these before they happen (TM Forum AN level 3: the system
#: acts, people confirm the decisions that change what is served in production). A rollback
#: restores what was served before and never waits for anyone.
_APPROVED_AT_L3 = frozenset({"start_canary", "promote"})
#: Actions that change what is served: held to the policy's change windows and freezes.
_CHANGES = frozenset({"start_canary", "promote"})


class RuleVerdict(BaseModel):
    """One rule checked: what was observed, the limit, and a sentence comparing them."""

    model_config = ConfigDict(frozen=True)

    rule: str
    passed: bool
    observed: float | str | None
    limit: float | str | None
    reason: str


class PolicyVerdict(BaseModel):
    """The answer for one action: allowed or not, whether a person approves, and why."""

    model_config = ConfigDict(frozen=True)

    action: str
    allowed: bool
    needs_approval: bool
    verdicts: list[RuleVerdict]

    @property
    def reasons(self) -> list[str]:
        """The failing rules' reasons; all reasons when the action is allowed."""
        if self.allowed:
            return [verdict.reason for verdict in self.verdicts]
        return [verdict.reason for verdict in self.verdicts if not verdict.passed]


class Usage(BaseModel):
    """Budgets used so far today, counted by the caller (from memory)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    retrains_today: int = Field(default=0, ge=0)
    labels_requested_today: int = Field(default=0, ge=0)
    compute_seconds_today: float = Field(default=0.0, ge=0)
    federated_rounds_today: int = Field(default=0, ge=0)


def _fmt(value: float | str | None) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def _number(facts: BaseModel, name: str) -> float | str:
    """The fact as a number, or the reason it cannot be used (missing, or not finite)."""
    value = getattr(facts, name)
    if value is None:
        return f"fact '{name}' missing"
    if math.isnan(value) or math.isinf(value):
        return f"fact '{name}' must be a finite number, got {value!r}"
    return value


def _autonomy(policy: Policy, action: str) -> RuleVerdict:
    # The limit is the lowest level at which driftpilot executes actions itself.
    level = policy.autonomy
    if level in ("L0", "L1"):
        return RuleVerdict(
            rule="autonomy",
            passed=False,
            observed=level,
            limit="L3",
            reason=f"autonomy {level} is manual: '{action}' is left to a person",
        )
    if level == "L2":
        return RuleVerdict(
            rule="autonomy",
            passed=False,
            observed=level,
            limit="L3",
            reason=f"autonomy L2 is recommend only: '{action}' may be proposed, not executed",
        )
    if level == "L3" and action in _APPROVED_AT_L3:
        reason = f"autonomy L3 acts, but '{action}' waits for a person's approval"
    else:
        reason = f"autonomy {level} may '{action}' within the guardrails"
    return RuleVerdict(rule="autonomy", passed=True, observed=level, limit="L3", reason=reason)


def _missing(rule: str, problem: str, limit: float | str | None) -> RuleVerdict:
    return RuleVerdict(rule=rule, passed=False, observed=None, limit=limit, reason=problem)


def _at_least(rule: str, what: str, value: float, limit: float) -> RuleVerdict:
    passed = value >= limit
    relation = "at least" if passed else "below"
    return RuleVerdict(
        rule=rule,
        passed=passed,
        observed=value,
        limit=limit,
        reason=f"{what}: {_fmt(value)}, {relation} the minimum of {_fmt(limit)}",
    )


def _no_worse(
    rule: str,
    facts: BaseModel,
    new: str,
    old: str,
    max_regression: float,
) -> RuleVerdict:
    # 0.0 - x, not -x: a tolerance of 0 would give a floor of -0.0, reported as "-0".
    limit = 0.0 - max_regression
    new_score = _number(facts, new)
    if isinstance(new_score, str):
        return _missing(rule, new_score, limit)
    old_score = _number(facts, old)
    if isinstance(old_score, str):
        return _missing(rule, old_score, limit)
    # Rounded so that 0.80 - 0.82 counts as -0.02 exactly and a regression equal to the
    # tolerance passes, as the policy's wording ("at most max_regression") promises.
    delta = round(new_score - old_score, 12)
    passed = delta >= limit
    relation = "at or above" if passed else "below"
    return RuleVerdict(
        rule=rule,
        passed=passed,
        observed=delta,
        limit=limit,
        reason=f"{new} {_fmt(new_score)} - {old} {_fmt(old_score)}: {_fmt(delta)}, "
        f"{relation} the floor of {_fmt(limit)}",
    )


def _retrain(policy: Policy, facts: RetrainFacts, usage: Usage) -> list[RuleVerdict]:
    limit = policy.budgets.max_retrains_per_day
    used = usage.retrains_today
    budget = RuleVerdict(
        rule="retrain_budget",
        passed=used < limit,
        observed=used,
        limit=limit,
        reason=f"retrains today: {used}, " + ("below" if used < limit else "at") + f" the limit of {limit} a day",
    )
    verdicts = [budget]
    seconds = policy.budgets.max_compute_seconds_per_day
    if seconds is not None:
        spent = round(usage.compute_seconds_today, 3)
        verdicts.append(
            RuleVerdict(
                rule="compute_budget",
                passed=spent < seconds,
                observed=spent,
                limit=seconds,
                reason=f"training seconds spent today: {_fmt(spent)}, "
                + ("below" if spent < seconds else "at or over")
                + f" the budget of {_fmt(seconds)} a day",
            )
        )
    if policy.data.never_train_on:
        verdicts.append(_data_rules(policy, facts))
    minimum = policy.training.min_training_labels
    if minimum == "auto":
        minimum = facts.min_training_labels or MIN_TRAIN_LABELS
    labels = _number(facts, "training_labels")
    if isinstance(labels, str):
        return [*verdicts, _missing("training_labels", labels, minimum)]
    return [*verdicts, _at_least("training_labels", "training labels", labels, minimum)]


def _data_rules(policy: Policy, facts: RetrainFacts) -> RuleVerdict:
    """Fact ``features`` (the model's feature names) may hold no ``never_train_on`` field."""
    forbidden = sorted(policy.data.never_train_on)
    if facts.features is None:
        return _missing(
            "data_rules", "fact 'features' missing: cannot tell what the model trains on", ", ".join(forbidden)
        )
    used = sorted(set(facts.features) & set(forbidden))
    return RuleVerdict(
        rule="data_rules",
        passed=not used,
        observed=", ".join(used) or None,
        limit=", ".join(forbidden),
        reason=(
            f"the model would train on {', '.join(used)}, which the policy never allows"
            if used
            else f"none of the fields never to train on ({', '.join(forbidden)}) is a feature"
        ),
    )


def _change_calendar(policy: Policy, action: str, at: datetime | None) -> RuleVerdict | None:
    """Changes to what is served happen inside a change window (when any is set), never in a freeze."""
    changes = policy.changes
    # Without ``at`` the question is not "now?" but "ever?": the Trainer's evaluation gate asks
    # whether a candidate is fit for a release, which the calendar may hold back later.
    if at is None or action not in _CHANGES or not (changes.windows or changes.freezes):
        return None
    stamp = at.strftime("%Y-%m-%d %H:%M UTC")
    for freeze in changes.freezes:
        if freeze.start <= at < freeze.end:
            return RuleVerdict(
                rule="change_calendar",
                passed=False,
                observed=stamp,
                limit=f"freeze {freeze.start:%Y-%m-%d %H:%M} to {freeze.end:%Y-%m-%d %H:%M}",
                reason=f"{stamp} is inside the change freeze '{freeze.reason}' "
                f"({freeze.start:%Y-%m-%d %H:%M} to {freeze.end:%Y-%m-%d %H:%M} UTC)",
            )
    windows = "; ".join(f"{','.join(w.days)} {w.start}-{w.end}" for w in changes.windows)
    if changes.windows and not any(window.holds(at) for window in changes.windows):
        return RuleVerdict(
            rule="change_calendar",
            passed=False,
            observed=stamp,
            limit=windows,
            reason=f"{stamp} is outside the change windows ({windows} UTC)",
        )
    return RuleVerdict(
        rule="change_calendar",
        passed=True,
        observed=stamp,
        limit=windows or "no freeze",
        reason=f"{stamp} is " + (f"inside a change window ({windows} UTC)" if windows else "in no change freeze"),
    )


def _request_labels(policy: Policy, facts: RequestLabelsFacts, usage: Usage) -> list[RuleVerdict]:
    limit = policy.budgets.max_labels_per_day
    asked = _number(facts, "n_labels")
    if isinstance(asked, str):
        return [_missing("label_budget", asked, limit)]
    total = usage.labels_requested_today + asked
    passed = total <= limit
    return [
        RuleVerdict(
            rule="label_budget",
            passed=passed,
            observed=total,
            limit=limit,
            reason=f"labels requested today {usage.labels_requested_today} + asked "
            f"now {_fmt(asked)}: {_fmt(total)}, " + ("within" if passed else "over") + f" the budget of {limit} a day",
        )
    ]


def _start_canary(policy: Policy, facts: StartCanaryFacts, usage: Usage) -> list[RuleVerdict]:
    limit = policy.release.canary_share
    if facts.share is None:
        share_verdict = RuleVerdict(
            rule="canary_share",
            passed=True,
            observed=None,
            limit=limit,
            reason=f"no share requested: the policy's canary share {_fmt(limit)} applies",
        )
    else:
        share = _number(facts, "share")
        if isinstance(share, str):
            share_verdict = _missing("canary_share", share, limit)
        else:
            passed = 0 < share <= limit
            share_verdict = RuleVerdict(
                rule="canary_share",
                passed=passed,
                observed=share,
                limit=limit,
                reason=f"canary share: {_fmt(share)}, " + ("within" if passed else "outside") + f" (0, {_fmt(limit)}]",
            )
    gate = _no_worse(
        "offline_gate",
        facts,
        "candidate_score",
        "champion_score",
        policy.release.max_regression,
    )
    verdicts = [share_verdict, gate]
    if facts.candidate_old_score is not None or facts.champion_old_score is not None:
        # Forgetting: the candidate must also hold what the champion knew of older concepts
        # (rare failures seen weeks ago, devices not yet upgraded), judged on the old holdout.
        verdicts.append(_forgetting(policy, facts))
    if facts.slices_compared or facts.worst_slice_delta is not None:
        # An evaluation always compares slices; None when no slice was large enough to judge.
        verdicts.append(_slice_gate(policy, facts))
    if facts.candidate_golden_score is not None or facts.champion_golden_score is not None:
        verdicts.append(
            _no_worse(
                "golden_gate",
                facts,
                "candidate_golden_score",
                "champion_golden_score",
                policy.evaluation.max_golden_regression,
            )
        )
    return verdicts


def _forgetting(policy: Policy, facts: StartCanaryFacts) -> RuleVerdict:
    """What the candidate gives up on old concepts: at most ``evaluation.max_forgetting``.

    One exception: when the Diagnostician found that the concept itself changed (fact
    ``concept_changed``: a flipped rule, a new software version's counters), the old holdout
    describes a world that is gone, and a loss there is tolerated up to the candidate's gain on
    the recent holdout: holding on to it would keep serving a model that is wrong now.
    Otherwise (new classes, covariate drift, a prior shift) the old concepts still hold, and a
    candidate that forgets them is refused however much it gains.
    """
    tolerance = policy.evaluation.max_forgetting
    changed = facts.concept_changed
    gain = 0.0
    new_recent, old_recent = _number(facts, "candidate_score"), _number(facts, "champion_score")
    if changed and not isinstance(new_recent, str) and not isinstance(old_recent, str):
        gain = max(0.0, round(new_recent - old_recent, 12))
        tolerance = max(tolerance, gain)
    verdict = _no_worse("forgetting_gate", facts, "candidate_old_score", "champion_old_score", tolerance)
    if changed and gain > policy.evaluation.max_forgetting:
        verdict = verdict.model_copy(
            update={"reason": verdict.reason + f" (the concept changed: the recent gain of {_fmt(gain)})"}
        )
    return verdict


def _slice_gate(policy: Policy, facts: StartCanaryFacts) -> RuleVerdict:
    """The candidate's worst slice (fact ``worst_slice``) may fall at most
    ``evaluation.max_slice_regression`` behind the champion's score on it."""
    limit = 0.0 - policy.evaluation.max_slice_regression
    if facts.worst_slice_delta is None:
        return RuleVerdict(
            rule="slice_gate",
            passed=True,
            observed=None,
            limit=limit,
            reason=f"no slice with at least {policy.evaluation.min_slice_samples} samples to compare",
        )
    delta = _number(facts, "worst_slice_delta")
    if isinstance(delta, str):
        return _missing("slice_gate", delta, limit)
    passed = delta >= limit
    return RuleVerdict(
        rule="slice_gate",
        passed=passed,
        observed=delta,
        limit=limit,
        reason=f"worst slice {facts.worst_slice}: candidate - champion {_fmt(delta)}, "
        + ("at or above" if passed else "below")
        + f" the floor of {_fmt(limit)}",
    )


def _promote(policy: Policy, facts: PromoteFacts, usage: Usage) -> list[RuleVerdict]:
    minimum = policy.release.min_canary_samples
    if minimum == "auto":
        minimum = facts.min_canary_samples or MIN_RELEASE_LABELS
    samples = _number(facts, "canary_samples")
    if isinstance(samples, str):
        samples_verdict = _missing("canary_samples", samples, minimum)
    else:
        samples_verdict = _at_least("canary_samples", "canary samples", samples, minimum)
    gate = _no_worse(
        "canary_gate",
        facts,
        "canary_score",
        "control_score",
        policy.release.max_regression,
    )
    verdicts = [samples_verdict, gate]
    if facts.sequential_verdict is not None:
        # The release's always-valid test: promotion needs the candidate shown better or, under
        # `promote_when: ahead`, not shown worse (the canary gate holds it to no lower a score).
        observed = facts.sequential_verdict
        needed = "not_worse" if policy.release.promote_when == "ahead" else "better"
        passed = observed == "better" or (needed == "not_worse" and observed == "undecided")
        verdicts.append(
            RuleVerdict(
                rule="sequential_test",
                passed=passed,
                observed=observed,
                limit="better" if needed == "better" else "not worse",
                reason=f"sequential test (alpha {_fmt(policy.release.alpha)}): {observed}"
                + ("" if passed else ", not shown better than the champion" if needed == "better" else ", shown worse"),
            )
        )
    if facts.worse_slices is not None:
        worse = facts.worse_slices
        verdicts.append(
            RuleVerdict(
                rule="slice_test",
                passed=worse == 0,
                observed=worse,
                limit=0,
                reason=f"slices shown worse than the champion: {_fmt(worse)}, at most 0",
            )
        )
    return verdicts


def _federate(policy: Policy, facts: FederateFacts, usage: Usage) -> list[RuleVerdict]:
    limit = policy.budgets.max_federated_rounds_per_day
    used = usage.federated_rounds_today
    fits = used + facts.rounds <= limit
    least = policy.federated.min_nodes
    return [
        RuleVerdict(
            rule="federated_rounds_budget",
            passed=fits,
            observed=used + facts.rounds,
            limit=limit,
            reason=f"federated rounds today: {used}, with this run's {facts.rounds} "
            + ("within" if fits else "beyond")
            + f" the limit of {limit} a day",
        ),
        RuleVerdict(
            rule="federated_min_nodes",
            passed=facts.nodes is None or facts.nodes >= least,
            observed=facts.nodes,
            limit=least,
            reason=(
                f"the nodes are known once they connect: the run waits for the {least} it needs"
                if facts.nodes is None
                else f"{facts.nodes} node(s) to train on, "
                + ("at least" if facts.nodes >= least else "fewer than")
                + f" the {least} a federated run needs"
            ),
        ),
    ]


def _no_guardrail(policy: Policy, facts: BaseModel, usage: Usage) -> list[RuleVerdict]:
    # A rollback restores what was served before and must never be blocked by a budget;
    # quarantine and alert change nothing that is served. Only autonomy applies to them.
    return []


#: Each action's facts model and its guardrails.
_RULES: dict[str, tuple[type[BaseModel], Callable[[Policy, Any, Usage], list[RuleVerdict]]]] = {
    "retrain": (RetrainFacts, _retrain),
    "federate": (FederateFacts, _federate),
    "request_labels": (RequestLabelsFacts, _request_labels),
    "start_canary": (StartCanaryFacts, _start_canary),
    "promote": (PromoteFacts, _promote),
    "rollback": (RollbackFacts, _no_guardrail),
    "quarantine": (QuarantineFacts, _no_guardrail),
    "alert": (AlertFacts, _no_guardrail),
}


def _facts_of(action: str, facts: ActionFacts) -> BaseModel:
    """``facts``, checked to be ``action``'s facts model: a mapping or another action's facts are
    refused (plain data is rebuilt by the caller with ``model_validate``, where it came from)."""
    expected = _RULES[action][0]
    if isinstance(facts, Mapping):
        raise TypeError(
            f"action {action!r} judges {expected.__name__}, got a mapping: build it with "
            f"{expected.__name__}.model_validate(...)"
        )
    if not isinstance(facts, expected):
        other = getattr(facts, "action", None)
        of = f" (the facts of '{other}')" if isinstance(other, str) else ""
        raise TypeError(f"action {action!r} judges {expected.__name__}, got {type(facts).__name__}{of}")
    return facts


def evaluate(
    policy: Policy,
    action: Action,
    facts: ActionFacts,
    usage: Usage,
    at: datetime | None = None,
) -> PolicyVerdict:
    """Check ``action`` against ``policy`` given its ``facts``, today's ``usage`` and the time ``at``.

    ``facts`` is the action's facts model (:class:`~driftpilot.policies.facts.RetrainFacts` for
    ``retrain``, and so on); plain data (from a checkpoint) is rebuilt into it with
    ``model_validate`` by whoever read it. The rules, all reported whether they pass or not:

    - ``autonomy`` for every action: L0/L1 deny (manual), L2 denies ("recommend only"),
      L3 allows but ``start_canary`` and ``promote`` wait for a person's approval (a rollback
      never waits: it restores what was served before), L4 allows.
    - ``retrain``: ``retrain_budget`` (retrains today below the daily limit), ``compute_budget``
      when ``budgets.max_compute_seconds_per_day`` is set (training seconds spent today below it),
      ``data_rules`` when ``data.never_train_on`` lists fields (fact ``features``, the model's
      feature names, holds none of them) and ``training_labels`` (fact ``training_labels`` at
      least ``min_training_labels``).
    - ``request_labels``: ``label_budget`` (labels requested today plus fact
      ``n_labels`` within ``max_labels_per_day``).
    - ``start_canary``: ``canary_share`` (fact ``share``, if given, within
      (0, canary_share]), ``offline_gate``
      (``candidate_score - champion_score >= -release.max_regression``); ``forgetting_gate``
      when old scores are given (``candidate_old_score - champion_old_score >=
      -evaluation.max_forgetting``; when fact ``concept_changed`` is true the floor is lowered
      to minus the recent gain, if that is larger); ``slice_gate`` when slices were compared
      (fact ``slices_compared``) or ``worst_slice_delta`` is given (``worst_slice_delta >=
      -evaluation.max_slice_regression``; passes when it is None, no slice being large enough);
      ``golden_gate`` when golden scores
      are given (``candidate_golden_score - champion_golden_score >=
      -evaluation.max_golden_regression``).
    - ``promote``: ``canary_samples`` (at least ``min_canary_samples``),
      ``canary_gate`` (``canary_score - control_score >= -max_regression``), and when the facts
      carry them (not None) ``sequential_test`` (``sequential_verdict`` is ``better``, or not
      ``worse`` under ``release.promote_when: ahead``) and
      ``slice_test`` (no slice shown worse, fact ``worse_slices``).
    - ``start_canary`` and ``promote`` also: ``change_calendar`` when ``at`` is given and the
      policy sets change windows or freezes (``at`` inside a window, if any, and in no freeze).
    - ``rollback``, ``quarantine``, ``alert``: autonomy only; a rollback is never
      blocked by a budget, a freeze or a person's absence.

    A required fact that is missing (None) fails its rule with the reason "fact 'x' missing"
    (one that is not a finite number fails too, saying so). ``needs_approval`` is true
    only for an allowed action that waits for a person (L3 start_canary or promote).

    Raises
    ------
    ValueError
        When ``action`` is not one of the known actions.
    TypeError
        When ``facts`` is not the action's facts model (another action's, or a plain mapping).

    Examples
    --------
    >>> policy = Policy(name="bot", budgets={"max_retrains_per_day": 2})
    >>> usage = Usage(retrains_today=2)
    >>> verdict = evaluate(policy, "retrain", RetrainFacts(training_labels=800), usage)
    >>> verdict.allowed, verdict.needs_approval
    (False, False)
    >>> verdict.reasons
    ['retrains today: 2, at the limit of 2 a day']
    >>> supervised = Policy(name="bot", autonomy="L3")
    >>> evaluate(supervised, "rollback", RollbackFacts(), Usage()).needs_approval
    False
    >>> gate = StartCanaryFacts(candidate_score=0.9, champion_score=0.9)
    >>> evaluate(supervised, "start_canary", gate, Usage()).needs_approval
    True
    >>> evaluate(supervised, "promote", gate, Usage())
    Traceback (most recent call last):
    ...
    TypeError: action 'promote' judges PromoteFacts, got StartCanaryFacts (the facts of 'start_canary')
    """
    if action not in _RULES:
        raise ValueError(f"action {action!r} is not one of {', '.join(ACTIONS)}")
    judged = _facts_of(action, facts)
    verdicts = [_autonomy(policy, action), *_RULES[action][1](policy, judged, usage)]
    calendar = _change_calendar(policy, action, at)
    if calendar is not None:
        verdicts.append(calendar)
    allowed = all(verdict.passed for verdict in verdicts)
    needs_approval = allowed and policy.autonomy == "L3" and action in _APPROVED_AT_L3
    return PolicyVerdict(action=action, allowed=allowed, needs_approval=needs_approval, verdicts=verdicts)


class PolicyEngine:
    """The policy in force for one managed model, replaceable while the loop runs.

    Examples
    --------
    >>> engine = PolicyEngine(Policy(name="bot", autonomy="L2"))
    >>> engine.check("alert", AlertFacts(), Usage()).reasons
    ["autonomy L2 is recommend only: 'alert' may be proposed, not executed"]
    >>> previous = engine.replace(Policy(name="bot", autonomy="L4"))
    >>> previous.autonomy, engine.check("alert", AlertFacts(), Usage()).allowed
    ('L2', True)
    """

    def __init__(self, policy: Policy, path: str | Path | None = None) -> None:
        self._policy = policy
        self._lock = threading.Lock()
        #: The file the policy came from, watched by :meth:`reload_if_changed`.
        self.path = Path(path) if path is not None else None
        self._digest = _digest(self.path) if self.path is not None else None

    @classmethod
    def from_file(cls, path: str | Path) -> PolicyEngine:
        """The policy of ``path`` (validated; a :class:`PolicyError` names what is wrong), watched."""
        return cls(load_policy(path), path)

    @property
    def policy(self) -> Policy:
        """The policy in force."""
        return self._policy

    def check(self, action: Action, facts: ActionFacts, usage: Usage, at: datetime | None = None) -> PolicyVerdict:
        """Evaluate ``action`` under the policy in force (see :func:`evaluate`)."""
        # One read of the attribute: a concurrent replace() never mixes two policies.
        return evaluate(self._policy, action, facts, usage, at)

    def reload_if_changed(self) -> PolicyReload | None:
        """Read the watched file again if its bytes changed: a valid policy replaces the one in
        force; an invalid one is refused as a whole and the old one stays. None when nothing
        changed (or no file is watched)."""
        if self.path is None:
            return None
        digest = _digest(self.path)
        if digest == self._digest:
            return None
        self._digest = digest
        try:
            new_policy = load_policy(self.path)
        except PolicyError as exc:
            return PolicyReload(applied=False, source=str(self.path), digest=digest, error=str(exc), fields=exc.fields)
        previous = self.replace(new_policy)
        changed = _changed_fields(previous.model_dump(mode="json"), new_policy.model_dump(mode="json"))
        return PolicyReload(applied=True, source=str(self.path), digest=digest, error=None, fields=tuple(changed))

    def replace(self, new_policy: Policy | Mapping[str, object]) -> Policy:
        """Put ``new_policy`` in force and return the one it replaces.

        A mapping is validated first; when it is invalid a
        :class:`~driftpilot.policies.loader.PolicyError` is raised and the policy in
        force stays as it was.
        """
        if not isinstance(new_policy, Policy):
            new_policy = policy_from_mapping(dict(new_policy), source="<replacement policy>")
        with self._lock:
            previous, self._policy = self._policy, new_policy
        return previous


@dataclass(frozen=True)
class PolicyReload:
    """What :meth:`PolicyEngine.reload_if_changed` did: applied the new file (``fields`` it
    changed), or refused it (``error``, ``fields`` at fault) keeping the policy in force."""

    applied: bool
    source: str
    digest: str | None
    error: str | None
    fields: tuple[str, ...]


def _digest(path: Path) -> str | None:
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        # A file being replaced (or removed) is read again at the next look.
        return None


def _changed_fields(old: Mapping[str, object], new: Mapping[str, object], prefix: str = "") -> list[str]:
    changed = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, Mapping) and isinstance(b, Mapping):
            changed.extend(_changed_fields(a, b, f"{prefix}{key}."))
        elif a != b:
            changed.append(f"{prefix}{key}")
    return changed
