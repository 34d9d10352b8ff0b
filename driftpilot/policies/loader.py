"""Load a policy from YAML, with errors that name the file and the fields at fault."""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from driftpilot.policies.schema import Policy

__all__ = ["DEFAULT_POLICY_FILE", "PolicyError", "load_policy", "policy_from_mapping"]

#: The shipped default policy, a resource of this package.
DEFAULT_POLICY_FILE = "default.yaml"


class PolicyError(ValueError):
    """A policy file could not be read, parsed or validated.

    ``source`` names the file; ``fields`` lists the dotted fields at fault (empty when
    the file itself is unreadable or is not YAML).
    """

    def __init__(self, message: str, *, source: str, fields: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.source = source
        self.fields = fields


#: How pydantic names the member of a union a value failed (``int | Literal["auto"]``).
_UNION_MEMBER = re.compile(r"^(constrained-)?(int|float|str|bool)$|^literal\[")


def _field(error: Any) -> str:
    """The dotted field of a validation error, without pydantic's names of union members."""
    parts = [str(p) for p in error["loc"] if not (isinstance(p, str) and _UNION_MEMBER.match(p))]
    return ".".join(parts) or "<policy>"


def _describe(errors: list[Any]) -> list[tuple[str, str]]:
    """One message per field at fault: a value that fits no member of a union says what each wants."""
    by_field: dict[str, list[Any]] = {}
    for error in errors:
        by_field.setdefault(_field(error), []).append(error)
    described = []
    for field, faults in by_field.items():
        first = faults[0]
        if first["type"] == "extra_forbidden":
            described.append((field, f"field '{field}' is not a policy field (a typo?)"))
        elif first["type"] == "missing":
            described.append((field, f"field '{field}' is required"))
        else:
            messages = list(dict.fromkeys(f["msg"] for f in faults))
            wants = ", or ".join([messages[0], *(m.removeprefix("Input should be ") for m in messages[1:])])
            described.append((field, f"field '{field}': {wants}, got {first['input']!r}"))
    return described


def policy_from_mapping(data: object, *, source: str = "<mapping>") -> Policy:
    """Validate already-parsed policy data.

    Raises
    ------
    PolicyError
        When ``data`` is not a mapping or a field is unknown, missing or out of range;
        the message names ``source`` and every field at fault.

    Examples
    --------
    >>> data = {"name": "bot", "budgets": {"max_retrains_per_day": 2}}
    >>> budgets = policy_from_mapping(data).budgets
    >>> budgets.max_retrains_per_day, budgets.max_labels_per_day, budgets.max_federated_rounds_per_day
    (2, 2000, 20)
    >>> bad = {"name": "bot", "release": {"steps": [1.5]}}
    >>> policy_from_mapping(bad, source="bot.yaml")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    driftpilot.policies.loader.PolicyError: policy bot.yaml is invalid: field ...
    """
    if not isinstance(data, dict):
        raise PolicyError(
            f"policy {source} must be a mapping of fields, got {type(data).__name__}",
            source=source,
        )
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        described = _describe(exc.errors())
        fields = tuple(field for field, _ in described)
        messages = "; ".join(message for _, message in described)
        raise PolicyError(f"policy {source} is invalid: {messages}", source=source, fields=fields) from exc


def load_policy(path: str | Path | None = None) -> Policy:
    """Load and validate a policy file; ``None`` loads the shipped default.

    Raises
    ------
    PolicyError
        When the file cannot be read, is not valid YAML, or a field is unknown, missing
        or out of range. The message names the file and the field(s).

    Examples
    --------
    >>> policy = load_policy()
    >>> policy.name, policy.autonomy, policy.release.steps
    ('default', 'L4', [0.05, 0.25])
    """
    if path is None:
        resource = resources.files("driftpilot.policies").joinpath(DEFAULT_POLICY_FILE)
        source = f"driftpilot.policies/{DEFAULT_POLICY_FILE}"
        text = resource.read_text(encoding="utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PolicyError(
                f"policy file {source} cannot be read: {exc.strerror or exc}",
                source=source,
            ) from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy file {source} is not valid YAML: {exc}", source=source) from exc
    return policy_from_mapping(data, source=source)


def model_policy_path(stored: str, fallback: str | Path | None = None) -> Path | None:
    """The policy file a managed model is judged by: the one it was registered with (its
    ``policy`` column holds the path), else ``fallback`` (the service's file, or None for the
    shipped default) when it holds ``"default"``.

    >>> model_policy_path("default") is None, model_policy_path("/etc/dp/credit.yaml").name
    (True, 'credit.yaml')
    """
    if stored == "default":
        return Path(fallback) if fallback is not None else None
    return Path(stored)
