"""The graph state's contract: every outcome a node returns is one the state's type names."""

from __future__ import annotations

import ast
from pathlib import Path
from typing import get_args

from driftpilot.agents.state import OUTCOMES, EvaluationState, initial_state
from driftpilot.tools.diagnosis import Remedy
from driftpilot.tools.evaluation import EvaluationRecord

AGENTS = Path(__file__).parents[2] / "driftpilot" / "agents"


def _strings(node: ast.expr) -> set[str]:
    """The string constants an expression may evaluate to (through ``a if c else b``)."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return {node.value}
    if isinstance(node, ast.IfExp):
        return _strings(node.body) | _strings(node.orelse)
    return set()


def _returned_outcomes() -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in sorted(AGENTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Return) or not isinstance(node.value, ast.Dict):
                continue
            for key, value in zip(node.value.keys, node.value.values, strict=True):
                if isinstance(key, ast.Constant) and key.value == "outcome":
                    found.setdefault(path.name, set()).update(_strings(value))
    return found


def test_every_outcome_a_node_returns_is_a_literal_of_the_state() -> None:
    returned = _returned_outcomes()

    assert {"curator.py", "trainer.py"} <= set(returned)
    for module, outcomes in returned.items():
        assert outcomes <= set(OUTCOMES), (
            f"{module} returns outcomes the state does not name: {outcomes - set(OUTCOMES)}"
        )
    # The Diagnostician returns its remedy as the outcome.
    assert set(get_args(Remedy)) <= set(OUTCOMES)
    assert initial_state("m", "2026-03-01T00:00:00+00:00", "r", {})["outcome"] in OUTCOMES


def test_the_evaluation_the_state_carries_mirrors_the_stored_record_and_its_gate_facts() -> None:
    assert set(EvaluationState.__annotations__) == set(EvaluationRecord.__annotations__) | {"gate_facts"}
