"""Load a policy from YAML, with errors that name the file and the fields at fault."""

from __future__ import annotations

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


def _describe(error: Any) -> tuple[str, str]:
    field = ".".join(str(part) for part in error["loc"]) or "<policy>"
    if error["type"] == "extra_forbidden":
        return field, f"field '{field}' is not a policy field (a typo?)"
    if error["type"] == "missing":
        return field, f"field '{field}' is required"
    return field, f"field '{field}': {error['msg']}, got {error['input']!r}"


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
    >>> policy_from_mapping(data).budgets
    Budgets(max_retrains_per_day=2, max_labels_per_day=2000, max_compute_seconds_per_day=None)
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
        described = [_describe(error) for error in exc.errors()]
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
