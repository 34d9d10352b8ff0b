"""Policies: the schema, the shipped default, the facts each action is judged on, and the
engine that answers "may this happen now, and why or why not"."""

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
from driftpilot.policies.facts import (
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
from driftpilot.policies.loader import PolicyError, load_policy, model_policy_path, policy_from_mapping
from driftpilot.policies.schema import (
    Autonomy,
    Budgets,
    Federated,
    Monitor,
    Policy,
    Release,
    Training,
)

__all__ = [
    "Action",
    "ActionFacts",
    "AlertFacts",
    "Autonomy",
    "Budgets",
    "FederateFacts",
    "Federated",
    "Monitor",
    "Policy",
    "PolicyEngine",
    "PolicyError",
    "PolicyReload",
    "PolicyVerdict",
    "PromoteFacts",
    "QuarantineFacts",
    "Release",
    "RequestLabelsFacts",
    "RetrainFacts",
    "RollbackFacts",
    "RuleVerdict",
    "StartCanaryFacts",
    "Training",
    "Usage",
    "evaluate",
    "load_policy",
    "model_policy_path",
    "policy_from_mapping",
]
