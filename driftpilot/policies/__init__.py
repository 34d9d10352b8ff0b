"""Policies: the schema, the shipped default, and the engine that answers "may this
happen now, and why or why not"."""

from __future__ import annotations

from driftpilot.policies.engine import (
    Action,
    PolicyEngine,
    PolicyReload,
    PolicyVerdict,
    RuleVerdict,
    Usage,
    evaluate,
)
from driftpilot.policies.loader import PolicyError, load_policy, policy_from_mapping
from driftpilot.policies.schema import (
    Autonomy,
    Budgets,
    Monitor,
    Policy,
    Release,
    Training,
)

__all__ = [
    "Action",
    "Autonomy",
    "Budgets",
    "Monitor",
    "Policy",
    "PolicyEngine",
    "PolicyError",
    "PolicyReload",
    "PolicyVerdict",
    "Release",
    "RuleVerdict",
    "Training",
    "Usage",
    "evaluate",
    "load_policy",
    "policy_from_mapping",
]
