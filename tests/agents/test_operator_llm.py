"""The optional chat model: it proposes, the policy disposes, the log says who proposed what.

A local OpenAI-compatible server (``fake_openai``) answers over real HTTP with scripted replies,
so langchain-openai and the openai client run unmocked.
"""

from __future__ import annotations

import hashlib
import logging
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace
from typing import cast

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from langgraph.runtime import Runtime

from driftpilot.agents.context import AgentContext
from driftpilot.agents.diagnostician import diagnostician
from driftpilot.agents.llm import NARRATOR_PROMPT, chat_model, narrate
from driftpilot.agents.operator import TOOLS, NotUnderstoodError, operate
from driftpilot.agents.state import LoopState
from driftpilot.api.chat import chat_router
from driftpilot.config import Settings
from driftpilot.memory import db, decisions, managed, releases, versions
from driftpilot.memory.schemas import FeatureSpec, ModelSchema
from driftpilot.models.registry import Registry
from driftpilot.policies import PolicyEngine
from driftpilot.policies.loader import policy_from_mapping
from tests.live import free_port

from .fake_openai import FakeOpenAI, Reply

NAME = "ont"
T0 = datetime(2026, 3, 1, tzinfo=UTC)
NOW = datetime(2026, 3, 2, 9, 30, tzinfo=UTC)
TOOL_NAMES = ["status", "retrain", "promote", "rollback", "request_labels"]


@pytest.fixture
def world(tmp_path):
    """Model 'ont': version 1 (served, now archived), champion 2, and 3 in a canary release at
    25% whose last recorded look found it better on 400 labelled events."""
    sessions = db.connect(f"sqlite:///{tmp_path / 'chat.sqlite'}")
    artifact = tmp_path / "weights.bin"
    artifact.write_bytes(b"weights")
    artifacts = {"weights": {"path": str(artifact), "sha256": hashlib.sha256(b"weights").hexdigest()}}
    with sessions() as session:
        model = managed.register_model(
            session=session,
            name=NAME,
            task="tabular_classification",
            family="tabular_mlp",
            schema=ModelSchema(
                features=[FeatureSpec(name="rx_power", kind="number")],
                target="offline",
                classes=["no", "yes"],
                entity_key="ont_id",
            ),
        )
        for number in (1, 2):
            version = versions.add_version(
                session=session, model_id=model.id, time=T0, artifacts=artifacts, stage="champion"
            )
            releases.log_serving(
                session=session, model_id=model.id, at=T0 + timedelta(hours=number), run_id="r", reason=f"v{number}"
            )
        assert version.number == 2
        candidate = versions.add_version(session=session, model_id=model.id, time=T0, artifacts=artifacts)
        release = releases.start_release(
            session=session,
            model_id=model.id,
            version_id=candidate.id,
            baseline_version_id=version.id,
            started_at=NOW - timedelta(hours=6),
            plan=[0.05, 0.25],
        )
        releases.step_release(session=session, release_id=release.id, at=NOW - timedelta(hours=2))
        decisions.record_decision(
            session=session,
            model_id=model.id,
            run_id="ont/canary",
            agent="release_manager",
            time=NOW - timedelta(hours=2),
            trigger={"kind": "test"},
            evidence={
                "release": release.id,
                "overall": {"n": 400, "candidate_score": 0.91, "champion_score": 0.84, "verdict": "better"},
                "worse_slices": {},
            },
            diagnosis={},
            policy_verdicts=[],
            action="start_canary",
            outcome="canary_step",
            rationale="Version 3 steps up to 25%.",
        )
    return sessions, Registry(tmp_path / "artifacts")


def _context(world, autonomy: str) -> AgentContext:
    sessions, registry = world
    policy = policy_from_mapping({"name": "chat-test", "autonomy": autonomy})
    return AgentContext(sessions=sessions, registry=registry, policy=PolicyEngine(policy))


def _operator_decisions(world) -> list[dict]:
    sessions, _ = world
    with sessions() as session:
        return [decisions.decision_as_dict(d) for d in decisions.list_decisions(session=session, agent="operator")]


def _chat(server: FakeOpenAI):
    return chat_model(Settings(openai_api_key=None, openai_base_url=server.base_url), model_name="fake-gpt")


def test_chat_model_needs_a_key_or_a_server():
    assert chat_model(Settings(openai_api_key=None, openai_base_url=None)) is None
    keyed = chat_model(Settings(openai_api_key="sk-test", openai_base_url=None))
    local = chat_model(Settings(openai_api_key=None, openai_base_url="http://127.0.0.1:9/v1"))

    assert keyed.model_name == "gpt-4o-mini" and keyed.openai_api_key.get_secret_value() == "sk-test"
    assert local.openai_api_key.get_secret_value() == "not-needed"
    assert (local.request_timeout, local.max_retries) == (30.0, 1)


def test_a_promotion_the_policy_forbids_is_refused_and_logged_with_what_the_model_saw(world):
    message = "Version 3 looks great, ship it to everyone."
    with FakeOpenAI([Reply(text="Promoting version 3.", tool_calls=[("promote", {"version": 3})])]) as server:
        reply = operate(_context(world, "L2"), NAME, message, NOW, chat=_chat(server), who="alice")

    (received,) = server.requests
    assert received["model"] == "fake-gpt"
    assert received["tools"] == TOOLS  # the schemas as written, unchanged on the wire
    assert [t["function"]["name"] for t in received["tools"]] == TOOL_NAMES
    assert received["tools"][2]["function"]["parameters"]["required"] == ["version"]
    assert received["messages"][1] == {"role": "user", "content": message}
    assert '"champion":2' in received["messages"][0]["content"]
    assert '"release":{"id":1,"phase":"canary","share":0.25' in received["messages"][0]["content"]
    (proposal,) = reply.proposals
    assert (proposal.action, proposal.arguments, proposal.proposed_by) == ("promote", {"version": 3}, "chat_model")
    assert (proposal.allowed, proposal.needs_approval, proposal.outcome) == (False, False, "refused")
    assert proposal.reasons == ["autonomy L2 is recommend only: 'promote' may be proposed, not executed"]
    assert reply.accepted == []
    assert reply.proposed_by == {"kind": "chat_model", "model": "fake-gpt"}
    assert reply.reply == (
        "Promoting version 3.\n"
        f"Promote version 3: refused (decision #{proposal.decision_id}): "
        "autonomy L2 is recommend only: 'promote' may be proposed, not executed."
    )
    (logged,) = _operator_decisions(world)
    assert logged["id"] == proposal.decision_id
    assert (logged["action"], logged["outcome"]) == ("propose_promote", "refused")
    assert logged["run_id"] == "ont/2026-03-02T09:30Z/chat"
    assert logged["trigger"] == {"kind": "chat", "message": message, "by": "alice"}
    proposed_by = logged["evidence"]["proposed_by"]
    assert (proposed_by["kind"], proposed_by["model"], proposed_by["message"]) == ("chat_model", "fake-gpt", message)
    assert proposed_by["saw"] == {"messages": received["messages"], "tools": TOOL_NAMES}
    assert logged["evidence"]["arguments"] == {"version": 3}
    assert logged["evidence"]["facts"] == {
        "canary_samples": 400,
        "canary_score": 0.91,
        "control_score": 0.84,
        "sequential_verdict": "better",
        "worse_slices": 0,
        "min_canary_samples": None,  # the recorded look has no plan: the policy's floor applies
    }
    assert [v["allowed"] for v in logged["policy_verdicts"]] == [False]
    assert logged["rationale"].startswith("The chat model fake-gpt proposed to promote version 3. Refused: autonomy L2")
    with world[0]() as session:  # proposed, refused, and nothing changed
        assert versions.champion(session=session, model_id=1).number == 2


def test_at_l4_a_proposed_rollback_is_accepted_and_returned_for_the_caller(world):
    with FakeOpenAI([Reply(tool_calls=[("rollback", {"version": 1})])]) as server:
        reply = operate(_context(world, "L4"), NAME, "Go back to version 1, now.", NOW, chat=_chat(server))

    (proposal,) = reply.accepted
    assert (proposal.action, proposal.arguments, proposal.outcome) == ("rollback", {"version": 1}, "accepted")
    assert proposal.reasons == ["autonomy L4 may 'rollback' within the guardrails"]
    (logged,) = _operator_decisions(world)
    assert (logged["action"], logged["outcome"]) == ("propose_rollback", "accepted")
    assert logged["rationale"] == (
        "The chat model fake-gpt proposed to roll back to version 1. Allowed, for the caller to execute: "
        "autonomy L4 may 'rollback' within the guardrails."
    )
    with world[0]() as session:  # the operator only proposes: the caller executes
        assert versions.champion(session=session, model_id=1).number == 2


def test_at_l3_a_promotion_waits_for_a_person_on_the_canary_evidence(world):
    with FakeOpenAI([Reply(tool_calls=[("promote", {"version": 3}), ("rollback", {})])]) as server:
        reply = operate(_context(world, "L3"), NAME, "promote it, or else stop the canary", NOW, chat=_chat(server))

    promote, rollback = reply.proposals
    assert (promote.outcome, promote.allowed, promote.needs_approval) == ("awaiting_approval", True, True)
    assert (rollback.outcome, rollback.arguments) == ("accepted", {})  # a rollback never waits
    assert reply.accepted == [rollback]
    assert promote.reasons == [
        "autonomy L3 acts, but 'promote' waits for a person's approval",
        "canary samples: 400, at least the minimum of 30",  # auto, and the look recorded no plan: the floor
        "canary_score 0.91 - control_score 0.84: 0.07, at or above the floor of -0.02",
        "sequential test (alpha 0.05): better",
        "slices shown worse than the champion: 0, at most 0",
    ]
    assert _operator_decisions(world)[0]["rationale"].endswith(
        "Canary evidence of decision #1 at 2026-03-02 07:30 UTC."
    )


def test_what_a_model_cannot_propose_is_refused_and_logged_too(world):
    script = [Reply(tool_calls=[("drop_table", {}), ("promote", {"version": 2}), ("request_labels", "{n: 5")])]
    with FakeOpenAI(script) as server:
        reply = operate(_context(world, "L4"), NAME, "do things", NOW, chat=_chat(server))

    assert [(p.action, p.outcome, p.reasons) for p in reply.proposals] == [
        ("drop_table", "refused", ["'drop_table' is not an operator action (one of " + ", ".join(TOOL_NAMES) + ")"]),
        ("promote", "refused", ["version 2 of 'ont' is already the champion"]),
        ("request_labels", "refused", ["the arguments '{n: 5' are not valid JSON"]),
    ]
    assert [d["action"] for d in _operator_decisions(world)] == [
        "propose_unknown",
        "propose_promote",
        "propose_request_labels",
    ]


def test_without_a_model_the_grammar_plans_and_says_what_it_did_not_understand(world):
    ctx = _context(world, "L4")

    status = operate(ctx, NAME, "Status", NOW)
    labels = operate(ctx, NAME, "label 2500", NOW)
    rollback = operate(ctx, NAME, "roll back to version 1", NOW)
    with pytest.raises(NotUnderstoodError) as unknown:
        operate(ctx, NAME, "make it faster", NOW)
    with pytest.raises(NotUnderstoodError, match=r"^'promote' needs a version number, e.g. 'promote 3'$"):
        operate(ctx, NAME, "promote", NOW)

    assert status.proposals == [] and status.status["champion"] == 2
    assert status.reply == (
        "Model 'ont': champion version 2; release 1 of version 3 in canary at 25%; "
        "latest decisions: #1 release_manager start_canary: canary_step."
    )
    (asked,) = labels.proposals
    assert (asked.action, asked.arguments, asked.outcome) == ("request_labels", {"n": 2500}, "refused")
    assert asked.reasons == ["labels requested today 0 + asked now 2500: 2500, over the budget of 2000 a day"]
    assert [(p.action, p.arguments, p.outcome, p.proposed_by) for p in rollback.proposals] == [
        ("rollback", {"version": 1}, "accepted", "person")
    ]
    assert str(unknown.value) == (
        "could not understand 'make it faster': say 'status', 'retrain', 'promote N', 'rollback [N]' or 'label N' "
        "(a chat model, configured with OPENAI_API_KEY or OPENAI_BASE_URL, understands more)"
    )
    logged = _operator_decisions(world)  # nothing recorded for what was not understood
    assert [(d["action"], d["outcome"]) for d in logged] == [
        ("propose_request_labels", "refused"),
        ("propose_rollback", "accepted"),
    ]
    assert logged[1]["evidence"]["proposed_by"] == {
        "kind": "person",
        "model": None,
        "message": "roll back to version 1",
        "saw": None,
    }


def test_an_unreachable_model_falls_back_to_the_grammar(world):
    down = chat_model(Settings(openai_base_url=f"http://127.0.0.1:{free_port()}/v1"), model_name="fake-gpt")

    reply = operate(_context(world, "L4"), NAME, "rollback 1", NOW, chat=down)

    assert reply.proposed_by == {"kind": "person", "model": None}
    assert reply.reply.startswith("The chat model could not be reached; the message was read with the fixed grammar.\n")
    assert [(p.action, p.outcome) for p in reply.proposals] == [("rollback", "accepted")]
    with pytest.raises(
        NotUnderstoodError, match=r"^the chat model could not be reached, and the fixed grammar could not"
    ):
        operate(_context(world, "L4"), NAME, "how are you?", NOW, chat=down)


def test_narrate_keeps_what_the_model_saw_and_is_none_when_it_fails(caplog):
    evidence = {"cause": "covariate_drift", "drifted": ["rx_power"], "p_value": 0.0001}
    draft = "Covariate drift in rx_power (p 0.0001): retrain."
    script = [Reply(text="  The optical power readings shifted; a retrain follows.  "), Reply(raw=b"<html>oops")]
    with FakeOpenAI(script) as server:
        chat = _chat(server)
        told = narrate(chat, evidence, draft)
        with caplog.at_level(logging.WARNING, logger="driftpilot.agents.llm"):
            garbled = narrate(chat, evidence, draft)
    down = chat_model(Settings(openai_base_url=f"http://127.0.0.1:{free_port()}/v1"))
    with caplog.at_level(logging.WARNING, logger="driftpilot.agents.llm"):
        unreachable = narrate(down, evidence, draft)

    prompt = (
        "Draft explanation:\nCovariate drift in rx_power (p 0.0001): retrain.\n\n"
        'Evidence (JSON):\n{"cause":"covariate_drift","drifted":["rx_power"],"p_value":0.0001}'
    )
    saw = [{"role": "system", "content": NARRATOR_PROMPT}, {"role": "user", "content": prompt}]
    assert told == {"text": "The optical power readings shifted; a retrain follows.", "model": "fake-gpt", "saw": saw}
    assert server.requests[0]["messages"] == saw and "tools" not in server.requests[0]
    assert garbled is None and unreachable is None
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [
        "chat model fake-gpt gave no narrative",
        "chat model gpt-4o-mini gave no narrative",
    ]


def test_the_chat_route_executes_an_accepted_rollback(world, bearer):
    sessions, registry = world
    engine = PolicyEngine(policy_from_mapping({"name": "chat-test", "autonomy": "L4"}))
    app = FastAPI()
    app.state.sessions = sessions
    app.include_router(chat_router(sessions, registry, lambda name: engine, lambda: None))
    client = TestClient(app, headers=bearer(sessions, "operator", "bob"))

    rolled = client.post(f"/models/{NAME}/chat", json={"message": "rollback 1"})
    unknown = client.post("/models/nope/chat", json={"message": "status"})
    garbled = client.post(f"/models/{NAME}/chat", json={"message": "dance"})

    assert rolled.status_code == 200, rolled.text
    (proposal,) = rolled.json()["proposals"]
    assert (proposal["action"], proposal["outcome"]) == ("rollback", "accepted")
    assert proposal["executed"]["outcome"] == "rolled_back"
    assert proposal["executed"]["trigger"] == {"kind": "manual", "by": "bob (chat)"}
    assert (unknown.status_code, unknown.json()["detail"]) == (404, "unknown model 'nope': register it first")
    assert garbled.status_code == 422 and garbled.json()["detail"].startswith("could not understand 'dance'")
    with sessions() as session:
        assert versions.champion(session=session, model_id=1).number == 1


def test_the_diagnostician_keeps_its_rationale_and_adds_the_narrative_beside_it(world):
    sessions, registry = world
    state = {
        "model": NAME,
        "run_id": "ont/diagnose",
        "now": NOW.isoformat(),
        "trigger": {"kind": "test"},
        "finding": {"balanced_accuracy": 0.7, "reference_balanced_accuracy": 0.9},
    }
    rationale = (
        "Not enough data to diagnose: 0 events in the window and 0 in the reference "
        "(at least 30 each are needed); nothing was tested."
    )

    def diagnose(chat) -> dict:
        ctx = _context(world, "L4")
        ctx.chat = chat
        out = diagnostician(cast(LoopState, state), cast(Runtime[AgentContext], SimpleNamespace(context=ctx)))
        with sessions() as session:
            return decisions.decision_as_dict(decisions.get_decision(session=session, decision_id=out["last_decision"]))

    with FakeOpenAI([Reply(text="There is too little data yet to say why accuracy fell.")]) as server:
        told = diagnose(_chat(server))
    down = diagnose(chat_model(Settings(openai_base_url=f"http://127.0.0.1:{free_port()}/v1")))
    plain = diagnose(None)

    assert told["rationale"] == down["rationale"] == plain["rationale"] == rationale
    narrative = told["evidence"]["narrative"]
    assert (narrative["text"], narrative["model"]) == (
        "There is too little data yet to say why accuracy fell.",
        "fake-gpt",
    )
    assert narrative["saw"] == server.requests[0]["messages"]
    assert narrative["saw"][1]["content"].startswith(f"Draft explanation:\n{rationale}\n\nEvidence (JSON):\n")
    assert '"outcome":"none"' in narrative["saw"][1]["content"]
    assert down["evidence"]["narrative"] is None
    assert "narrative" not in plain["evidence"]
