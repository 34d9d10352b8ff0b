"""The shape of the code that issue 15 set: generic layers name no scenario, agent nodes fit a screen.

These read the source as text and syntax trees; they fail the moment a change crosses either line,
so the rule does not rot between reviews.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from driftpilot.scenarios.ont import FEATURES

PACKAGE = Path(__file__).resolve().parents[1] / "driftpilot"
#: The parts that serve every model, whatever its scenario.
GENERIC_PARTS = ("tools", "agents", "policies", "memory")
#: Words of the ONT scenario beyond its feature names: its devices, their network and counters.
ONT_TERMS = ("ont", "onts", "olt", "olt_port", "gpon", "pon", "optical", "optic", "fibre", "fiber")
#: ONT feature names that are also the everyday words of any system (driftpilot's memory package,
#: the CPU the models run on, a region): the check would only find those meanings.
EVERYDAY_WORDS = frozenset({"memory", "cpu", "region"})
#: The longest an agent's function may be (a node reads the state, calls tools, records one
#: decision and returns a partial update).
MAX_AGENT_FUNCTION_LINES = 80


def _sources(parts: tuple[str, ...]) -> list[Path]:
    return sorted(path for part in parts for path in (PACKAGE / part).rglob("*.py"))


def _ont_words() -> re.Pattern[str]:
    names = ({name for name, _ in FEATURES} - EVERYDAY_WORDS) | set(ONT_TERMS)
    return re.compile(r"\b(" + "|".join(sorted(map(re.escape, names), key=len, reverse=True)) + r")\b", re.I)


@pytest.mark.parametrize("path", _sources(GENERIC_PARTS), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_generic_layers_name_no_ont_feature_or_term(path: Path) -> None:
    words = _ont_words()
    found = [
        f"{path.relative_to(PACKAGE)}:{number}: {match.group(0)!r}"
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1)
        for match in words.finditer(line)
        # The chat model's sampling temperature is not the modem's.
        if not (match.group(0) == "temperature" and path.name == "llm.py")
    ]

    assert found == []


def test_the_scenario_words_are_found_where_they_belong() -> None:
    # The check above must be able to fail: the ONT scenario itself is full of these words.
    text = (PACKAGE / "scenarios" / "ont.py").read_text(encoding="utf-8")

    assert {m.group(0).lower() for m in _ont_words().finditer(text)} >= {"rx_power", "firmware", "olt"}


@pytest.mark.parametrize("path", _sources(("agents",)), ids=lambda p: p.name)
def test_no_agent_function_is_longer_than_a_screen(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    long = [
        f"{node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for node in ast.walk(tree)
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)
        and node.end_lineno is not None
        and node.end_lineno - node.lineno + 1 > MAX_AGENT_FUNCTION_LINES
    ]

    assert long == []
