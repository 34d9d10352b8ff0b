"""Builds and compiles the loop's graph; the only place that wires nodes.

::

    (a federated trigger ─► curator ─► trainer: a federated candidate, judged like any other)
    monitor ─healthy─► end
       │  ├─blind (too few labels to judge)─► monitoring_sample (ask for labels, within budget) ─► end
       │  └─healthy or blind, a challenger due (enough new labels)─► curator (asks no labels) ─► trainer …
       │ finding
    diagnostician ─outage / nothing to do─► end
       │ retrain
    curator ─needs labels─► label_gate ⟲ (interrupt: waiting for labels) ─► curator (or end after label_wait_hours)
       │ snapshot
    trainer ─candidate worse─► end
       │ candidate
    release_manager ─needs approval─► approval_gate ⟲ (interrupt: waiting for a person) ─► release_manager
       │ release started
    canary_judge ⟲ (interrupt: waiting for evidence; at L3 also for approval of the promotion) ─► end
"""

from __future__ import annotations

from typing import Any, Literal

from langgraph.graph import START, StateGraph

from driftpilot.agents.context import AgentContext
from driftpilot.agents.curator import after_labels, curator, label_gate, monitoring_sample_node
from driftpilot.agents.diagnostician import RETRAINING, diagnostician
from driftpilot.agents.monitor import monitor
from driftpilot.agents.release_manager import (
    after_approval,
    after_canary,
    approval_gate,
    canary_judge,
    release_manager,
)
from driftpilot.agents.state import LoopState
from driftpilot.agents.trainer import trainer


def at_start(state: LoopState) -> Literal["monitor", "curator"]:
    """A federated training asked for (``driftpilot fl start``) goes straight to the Curator, for
    the snapshot whose holdouts judge its candidate; every other run starts with a look."""
    return "curator" if (state.get("trigger") or {}).get("kind") == "federated" else "monitor"


def after_monitor(state: LoopState) -> Literal["diagnostician", "curator", "monitoring_sample", "__end__"]:
    if state.get("finding"):
        return "diagnostician"
    if state.get("challenge"):
        return "curator"
    return "monitoring_sample" if state.get("blind") else "__end__"


def after_diagnosis(state: LoopState) -> Literal["curator", "__end__"]:
    return "curator" if state.get("outcome") in RETRAINING else "__end__"


def after_curation(state: LoopState) -> Literal["trainer", "label_gate", "__end__"]:
    if state.get("snapshot_id") is not None:
        return "trainer"
    return "label_gate" if state.get("outcome") == "waiting_for_labels" else "__end__"


def after_training(state: LoopState) -> Literal["release_manager", "__end__"]:
    return "release_manager" if state.get("candidate") is not None else "__end__"


def after_release(state: LoopState) -> Literal["canary_judge", "approval_gate", "__end__"]:
    if state.get("release_id") is not None:
        return "canary_judge"
    return "approval_gate" if state.get("outcome") == "waiting_for_approval" else "__end__"


def build_graph(checkpointer: Any) -> Any:
    """Compile the loop with ``checkpointer`` (SQLite by default, see :mod:`.runner`)."""
    builder = StateGraph(LoopState, context_schema=AgentContext)
    builder.add_node("monitor", monitor)
    builder.add_node("diagnostician", diagnostician)
    builder.add_node("monitoring_sample", monitoring_sample_node)
    builder.add_node("curator", curator)
    builder.add_node("label_gate", label_gate)
    builder.add_node("trainer", trainer)
    builder.add_node("release_manager", release_manager)
    builder.add_node("approval_gate", approval_gate)
    builder.add_node("canary_judge", canary_judge)
    builder.add_conditional_edges(START, at_start)
    builder.add_conditional_edges("monitor", after_monitor)
    builder.add_edge("monitoring_sample", "__end__")
    builder.add_conditional_edges("diagnostician", after_diagnosis)
    builder.add_conditional_edges("curator", after_curation)
    builder.add_conditional_edges("label_gate", after_labels)
    builder.add_conditional_edges("trainer", after_training)
    builder.add_conditional_edges("release_manager", after_release)
    builder.add_conditional_edges("approval_gate", after_approval)
    builder.add_conditional_edges("canary_judge", after_canary)
    return builder.compile(checkpointer=checkpointer)
