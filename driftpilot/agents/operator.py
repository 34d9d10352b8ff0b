"""The operator chat agent: a person's message becomes proposed actions, each judged by the policy.

With a chat model, the model reads the message and the model's state and proposes tool calls
(``status``, ``retrain``, ``promote``, ``rollback``, ``request_labels``); without one, a small
fixed grammar does (see :func:`parse_command`). Either way the proposals are only proposals:
each is checked by the policy engine like any agent's action and written to the decision log
with who proposed it and, for a model, exactly what it was shown. Nothing is executed here: the
accepted proposals go back to the caller (API, CLI, loop), which carries them out through its
usual paths, where the policy is checked again.
"""

from __future__ import annotations

import logging
import re
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from sqlalchemy.orm import Session

from driftpilot.agents.context import AgentContext, record, usage_today
from driftpilot.agents.llm import evidence_json, model_name_of, shown
from driftpilot.memory import decisions, labels, managed, releases, versions
from driftpilot.memory.tables import ManagedModel, Version
from driftpilot.memory.times import to_utc
from driftpilot.policies import (
    ActionFacts,
    PolicyVerdict,
    PromoteFacts,
    RequestLabelsFacts,
    RetrainFacts,
    RollbackFacts,
)

log = logging.getLogger(__name__)

#: How many of the latest decisions the status shows.
STATUS_DECISIONS = 5
#: How far back the status looks for them (the log of a busy model is long).
STATUS_LOOKBACK = timedelta(days=7)
#: What the fixed grammar understands, as its error message says.
GRAMMAR = "'status', 'retrain', 'promote N', 'rollback [N]' or 'label N'"

OPERATOR_PROMPT = (
    "You assist the people operating the machine-learning model '{model}', which driftpilot keeps "
    "healthy. You act only by calling the tools; calling one proposes that action, and a policy "
    "engine and people's approvals decide whether it happens. Call an action tool only when the "
    "person asks for that action; to answer a question, call status or answer in words. Never "
    "invent version numbers: use those of the state below.\n\nThe model's state now (JSON):\n{state}"
)


def _function(name: str, description: str, properties: dict[str, Any], required: tuple[str, ...] = ()) -> dict:
    """An OpenAI function-tool schema (plain JSON Schema: nothing here runs when the model calls it)."""
    return {
        "type": "function",
        "function": {
            "name": name,
            "description": description,
            "parameters": {
                "type": "object",
                "properties": properties,
                "required": list(required),
                "additionalProperties": False,
            },
        },
    }


_VERSION = {"type": "integer", "minimum": 1, "description": "the version number"}

#: The tools offered to a chat model.
TOOLS: list[dict[str, Any]] = [
    _function(
        "status", "Read the champion version, the running release and the latest decisions. Changes nothing.", {}
    ),
    _function("retrain", "Propose retraining the model on the labelled data at hand.", {}),
    _function(
        "promote",
        "Propose making a version (the candidate of the running release) the champion that serves everyone.",
        {"version": _VERSION},
        ("version",),
    ),
    _function(
        "rollback",
        "Propose serving an earlier version to everyone again. Without a version: stop the running "
        "release, or bring back the previous champion when none runs.",
        {"version": _VERSION},
    ),
    _function(
        "request_labels",
        "Propose asking people to label the n most uncertain recent events.",
        {"n": {"type": "integer", "minimum": 1, "description": "how many events to have labelled"}},
        ("n",),
    ),
]
_TOOL_NAMES = [tool["function"]["name"] for tool in TOOLS]
#: Each tool's arguments, and whether it needs them.
_ARGUMENTS: dict[str, dict[str, bool]] = {
    "status": {},
    "retrain": {},
    "promote": {"version": True},
    "rollback": {"version": False},
    "request_labels": {"n": True},
}


class NotUnderstoodError(ValueError):
    """The message is not one the operator understands; the text says what it does understand."""


@dataclass(frozen=True)
class Call:
    """One thing asked for: a tool's name and arguments, or why they cannot be used."""

    name: str
    arguments: dict[str, Any]
    problem: str | None = None


@dataclass(frozen=True)
class Proposal:
    """A proposed action as the policy judged it, and the decision that records it.

    ``outcome`` is ``refused``, ``awaiting_approval`` (allowed once a person approves) or
    ``accepted`` (for the caller to execute); ``proposed_by`` is ``chat_model`` or ``person``.
    """

    action: str
    arguments: dict[str, Any]
    proposed_by: str
    allowed: bool
    needs_approval: bool
    reasons: list[str]
    outcome: str
    decision_id: int


@dataclass(frozen=True)
class OperatorReply:
    """The answer to a message: the text for the person, what was proposed, the status if asked."""

    model: str
    reply: str
    proposals: list[Proposal]
    #: ``{"kind": "chat_model" | "person", "model": name or None}``
    proposed_by: dict[str, Any]
    status: dict[str, Any] | None = None

    @property
    def accepted(self) -> list[Proposal]:
        """The proposals the caller is to execute now."""
        return [p for p in self.proposals if p.outcome == "accepted"]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def parse_command(message: str) -> Call:
    """Read ``message`` with the fixed grammar used when no chat model is configured.

    Raises
    ------
    NotUnderstoodError
        When the message is none of the commands; the text names what was not understood and
        what is.

    >>> parse_command("Rollback to version 3.")
    Call(name='rollback', arguments={'version': 3}, problem=None)
    >>> parse_command("label 50")
    Call(name='request_labels', arguments={'n': 50}, problem=None)
    >>> parse_command("promote")
    Traceback (most recent call last):
    ...
    driftpilot.agents.operator.NotUnderstoodError: 'promote' needs a version number, e.g. 'promote 3'
    """
    text = " ".join(message.lower().split()).rstrip(".!")
    if text in ("status", "retrain"):
        return Call(text, {})
    if match := re.fullmatch(r"promote(?: version| v)? ?(\d+)?", text):
        if match[1] is None:
            raise NotUnderstoodError("'promote' needs a version number, e.g. 'promote 3'")
        return Call("promote", {"version": int(match[1])})
    if match := re.fullmatch(r"roll ?back(?: to)?(?: version| v)? ?(\d+)?", text):
        return Call("rollback", {} if match[1] is None else {"version": int(match[1])})
    if match := re.fullmatch(r"(?:label|labels|request labels) ?(\d+)?", text):
        if match[1] is None:
            raise NotUnderstoodError("'label' needs how many events to have labelled, e.g. 'label 50'")
        return Call("request_labels", {"n": int(match[1])})
    raise NotUnderstoodError(
        f"could not understand {message!r}: say {GRAMMAR} "
        "(a chat model, configured with OPENAI_API_KEY or OPENAI_BASE_URL, understands more)"
    )


def operate(
    ctx: AgentContext, model_name: str, message: str, now: datetime, chat: Any = None, *, who: str = "operator"
) -> OperatorReply:
    """Answer ``message`` about ``model_name``: plan with ``chat`` (or the grammar), judge, record.

    Every proposed action but ``status`` is checked by ``ctx.policy`` and recorded as a decision
    of agent ``operator``, action ``propose_<action>`` (so that a refused proposal does not count
    as a retrain against the daily budget), whose evidence says who proposed it and what a model
    was shown. When the model cannot be reached the grammar reads the message instead, and the
    reply says so.

    Raises
    ------
    driftpilot.memory.managed.UnknownModelError
        When no model is called ``model_name``.
    NotUnderstoodError
        When the grammar does not understand the message; nothing is recorded then.
    """
    # A caller's clock may be naive or in another zone; the run id and the state name UTC.
    now = to_utc(now, what="now")
    with ctx.sessions() as session:
        status = status_of(session, managed.get_model(session=session, name=model_name), now)
    # The model is asked outside any database transaction: it may take its time.
    planned = _plan_with_model(chat, model_name, message, status) if chat is not None else None
    notes: list[str] = []
    if planned is None:
        if chat is not None:
            notes.append("The chat model could not be reached; the message was read with the fixed grammar.")
        try:
            calls = [parse_command(message)]
        except NotUnderstoodError as exc:
            if chat is None:
                raise
            raise NotUnderstoodError(f"the chat model could not be reached, and the fixed grammar {exc}") from exc
        text = ""
        source: dict[str, Any] = {"kind": "person", "model": None, "message": message, "saw": None}
    else:
        text, calls, saw = planned
        source = {"kind": "chat_model", "model": model_name_of(chat), "message": message, "saw": saw}
    state = {
        "run_id": f"{model_name}/{now:%Y-%m-%dT%H:%MZ}/chat",
        "now": now.isoformat(),
        "trigger": {"kind": "chat", "message": message, "by": who},
    }
    proposals = []
    with ctx.sessions() as session:
        model = managed.get_model(session=session, name=model_name)
        for call in calls:
            if call.name != "status":
                proposals.append(_propose(ctx, session, state, model, call, source, now))
    asked_status = any(call.name == "status" for call in calls)
    lines = [*notes, *([text] if text else []), *([status_text(status)] if asked_status else [])]
    lines += [_proposal_line(p) for p in proposals]
    if not lines:
        lines.append("The chat model proposed nothing.")
    return OperatorReply(
        model=model_name,
        reply="\n".join(lines),
        proposals=proposals,
        proposed_by={"kind": source["kind"], "model": source["model"]},
        status=status if asked_status else None,
    )


def status_of(session: Session, model: ManagedModel, now: datetime) -> dict[str, Any]:
    """The model's champion, running release and latest decisions, as plain JSON values."""
    champion = versions.champion(session=session, model_id=model.id)
    release = releases.active_release(session=session, model_id=model.id)
    running = None
    if release is not None:
        candidate = versions.get_version_by_id(session=session, version_id=release.version_id)
        running = {
            "id": release.id,
            "version": candidate.number,
            "phase": release.phase,
            "share": release.share,
            "started_at": release.started_at.isoformat(),
        }
    latest = decisions.list_decisions(
        session=session, model_id=model.id, since=now - STATUS_LOOKBACK, until=now + timedelta(seconds=1)
    )[-STATUS_DECISIONS:]
    return {
        "model": model.name,
        "champion": champion.number if champion is not None else None,
        "versions": [
            {"version": v.number, "stage": v.stage} for v in versions.list_versions(session=session, model_id=model.id)
        ],
        "release": running,
        "last_decisions": [
            {
                "id": d.id,
                "time": d.time.isoformat(),
                "agent": d.agent,
                "action": d.action,
                "outcome": d.outcome,
                "rationale": d.rationale,
            }
            for d in latest
        ],
    }


def status_text(status: dict[str, Any]) -> str:
    """The status in a few sentences.

    >>> status_text({"model": "churn", "champion": 2, "release": None, "last_decisions": []})
    "Model 'churn': champion version 2; no release running; no decisions in the last 7 days."
    """
    champion = f"champion version {status['champion']}" if status["champion"] is not None else "no champion yet"
    release = status["release"]
    running = (
        f"release {release['id']} of version {release['version']} in {release['phase']} at {release['share']:.0%}"
        if release
        else "no release running"
    )
    latest = status["last_decisions"]
    if latest:
        done = "; ".join(f"#{d['id']} {d['agent']} {d['action']}: {d['outcome']}" for d in latest)
        history = f"latest decisions: {done}"
    else:
        history = f"no decisions in the last {STATUS_LOOKBACK.days} days"
    return f"Model '{status['model']}': {champion}; {running}; {history}."


def _plan_with_model(
    chat: Any, model_name: str, message: str, status: dict[str, Any]
) -> tuple[str, list[Call], dict[str, Any]] | None:
    """The model's words and tool calls, and what it was shown; None when it cannot be asked."""
    messages: list[BaseMessage] = [
        SystemMessage(OPERATOR_PROMPT.format(model=model_name, state=evidence_json(status))),
        HumanMessage(message),
    ]
    try:
        answer = chat.bind_tools(TOOLS).invoke(messages)
    except Exception as exc:  # noqa: BLE001 - an unreachable model falls back to the grammar
        log.warning("chat model %s could not plan (%s: %s)", model_name_of(chat), type(exc).__name__, exc)
        return None
    calls = [Call(c["name"], dict(c.get("args") or {})) for c in getattr(answer, "tool_calls", [])]
    calls += [
        Call(c.get("name") or "", {}, problem=f"the arguments {c.get('args')!r} are not valid JSON")
        for c in getattr(answer, "invalid_tool_calls", [])
    ]
    saw = {"messages": shown(messages), "tools": list(_TOOL_NAMES)}
    return answer.text.strip(), calls, saw


def _propose(
    ctx: AgentContext,
    session: Session,
    state: dict[str, Any],
    model: ManagedModel,
    call: Call,
    source: dict[str, Any],
    now: datetime,
) -> Proposal:
    """Judge one proposed action by the policy and record the decision."""
    problem = call.problem or _argument_problem(call)
    facts: ActionFacts | None = None
    notes: list[str] = []
    verdict: PolicyVerdict | None = None
    if problem is None:
        try:
            facts, notes = _facts(session, model, call, now)
        except (LookupError, ValueError) as exc:
            problem = str(exc)
        else:
            verdict = ctx.policy.check(facts.action, facts, usage_today(session, model, now), at=now)
    if verdict is not None:
        allowed, needs_approval, reasons = verdict.allowed, verdict.needs_approval, verdict.reasons
    else:
        allowed, needs_approval, reasons = False, False, [str(problem)]
    outcome = "refused" if not allowed else "awaiting_approval" if needs_approval else "accepted"
    by = f"The chat model {source['model']}" if source["kind"] == "chat_model" else "A person"
    verdict_words = {
        "refused": "Refused: ",
        "awaiting_approval": "Allowed once a person approves it: ",
        "accepted": "Allowed, for the caller to execute: ",
    }[outcome]
    rationale = f"{by} proposed to {_describe(call)}. {verdict_words}{'; '.join(reasons)}." + "".join(
        f" {note}" for note in notes
    )
    action = call.name if call.name in _ARGUMENTS else "unknown"
    decision = record(
        session,
        state,  # type: ignore[arg-type]
        model,
        agent="operator",
        action=f"propose_{action}",
        outcome=outcome,
        rationale=rationale,
        evidence={
            "proposed_by": source,
            "arguments": call.arguments,
            "facts": facts.model_dump() if facts is not None else {},
        },
        verdicts=[verdict] if verdict is not None else [],
    )
    return Proposal(
        action=call.name,
        arguments=call.arguments,
        proposed_by=source["kind"],
        allowed=allowed,
        needs_approval=needs_approval,
        reasons=reasons,
        outcome=outcome,
        decision_id=decision.id,
    )


def _argument_problem(call: Call) -> str | None:
    """What is wrong with a call's name or arguments (a model may send anything), or None."""
    if call.name not in _ARGUMENTS:
        return f"'{call.name}' is not an operator action (one of {', '.join(_TOOL_NAMES)})"
    expected = _ARGUMENTS[call.name]
    for name in call.arguments:
        if name not in expected:
            return f"'{call.name}' takes no argument '{name}'"
    for name, required in expected.items():
        value = call.arguments.get(name)
        if value is None:
            if required:
                return f"'{call.name}' needs the argument '{name}'"
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            return f"'{call.name}': '{name}' must be a whole number of at least 1, got {value!r}"
    return None


def _facts(session: Session, model: ManagedModel, call: Call, now: datetime) -> tuple[ActionFacts, list[str]]:
    """The facts the policy's rules read for this action, and notes on where they come from.

    Raises LookupError for a version that does not exist, ValueError for one that cannot be the
    target.
    """
    if call.name == "retrain":
        known = labels.count_labels(session=session, model_id=model.id, until=now + timedelta(seconds=1))
        features = managed.model_schema(model).feature_names
        return RetrainFacts(training_labels=known, features=features), [f"{known} labels known so far."]
    if call.name == "request_labels":
        return RequestLabelsFacts(n_labels=call.arguments["n"]), []
    if call.name == "rollback":
        if call.arguments.get("version") is not None:
            target = _version(session, model, call.arguments["version"])
            if target.stage in ("candidate", "shadow", "rejected", "student"):
                raise ValueError(f"version {target.number} of '{model.name}' never served ({target.stage})")
        return RollbackFacts(), []
    target = _version(session, model, call.arguments["version"])
    champion = versions.champion(session=session, model_id=model.id)
    if champion is not None and champion.id == target.id:
        raise ValueError(f"version {target.number} of '{model.name}' is already the champion")
    return _canary_facts(session, model, target)


def _version(session: Session, model: ManagedModel, number: int) -> Version:
    try:
        return versions.get_version(session=session, model_id=model.id, number=number)
    except LookupError:
        raise LookupError(f"model '{model.name}' has no version {number}") from None


def _canary_facts(session: Session, model: ManagedModel, target: Version) -> tuple[PromoteFacts, list[str]]:
    """Promotion's facts: the release manager's latest recorded look at the target's release.

    Without a running release of the target there are none, and the policy says which are missing.
    """
    release = releases.active_release(session=session, model_id=model.id)
    if release is None or release.version_id != target.id:
        return PromoteFacts(), [f"Version {target.number} has no running release, so no canary evidence."]
    looks = [
        d
        for d in decisions.list_decisions(session=session, model_id=model.id, agent="release_manager")
        if isinstance(d.evidence, dict) and d.evidence.get("release") == release.id and "overall" in d.evidence
    ]
    if not looks:
        return PromoteFacts(), [f"Release {release.id} of version {target.number} has no recorded evidence yet."]
    evidence = looks[-1].evidence
    overall = evidence["overall"]
    facts = PromoteFacts(
        canary_samples=overall.get("n"),
        canary_score=overall.get("candidate_score"),
        control_score=overall.get("champion_score"),
        # A look recorded without the sequential test's verdict has not shown the candidate better.
        sequential_verdict=overall.get("verdict") or "undecided",
        worse_slices=len(evidence.get("worse_slices") or {}),
        # The least evidence the look's plan derived (when the policy's is auto).
        min_canary_samples=(evidence.get("plan") or {}).get("min_canary_samples"),
    )
    return facts, [f"Canary evidence of decision #{looks[-1].id} at {looks[-1].time:%Y-%m-%d %H:%M} UTC."]


def _describe(call: Call) -> str:
    version = call.arguments.get("version")
    if call.name == "promote":
        return f"promote version {version}"
    if call.name == "rollback":
        return f"roll back to version {version}" if version is not None else "roll back"
    if call.name == "request_labels":
        return f"request {call.arguments.get('n')} labels"
    if call.name == "retrain":
        return "retrain"
    return f"call '{call.name}'"


def _proposal_line(proposal: Proposal) -> str:
    described = _describe(Call(proposal.action, proposal.arguments))
    words = {"refused": "refused", "awaiting_approval": "awaiting a person's approval", "accepted": "accepted"}
    return (
        f"{described[0].upper()}{described[1:]}: {words[proposal.outcome]} "
        f"(decision #{proposal.decision_id}): {'; '.join(proposal.reasons)}."
    )
