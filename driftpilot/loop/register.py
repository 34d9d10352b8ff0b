"""Bring your own model: register a managed model from labelled history in a CSV.

Version 1 is trained as a replay's warm-up trains it (:func:`driftpilot.loop.replay.
register_with_history`): the history is stored as labelled events, the model's shape is chosen on
its newest fifth, and it becomes champion with its snapshot and decision. The model's policy file,
when given, is validated and copied under the service's home, so that the file the loop and the
API judge it by cannot vanish with the user's working copy; editing the copy changes the policy
in force (read again, and logged, when it changes). With a text column the model is a text
model: trained on its texts' sentence vectors, fed the texts themselves (see
:mod:`driftpilot.serving.texts`).
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from driftpilot.loop.replay import ReplayConfig, Stream, read_stream, register_with_history
from driftpilot.memory import decisions, managed, versions
from driftpilot.models.families import family
from driftpilot.models.intent_mlp import embedding_blocks
from driftpilot.models.registry import Registry
from driftpilot.policies import load_policy

__all__ = ["register_from_csv"]


def register_from_csv(
    config: ReplayConfig,
    sessions: sessionmaker[Session],
    registry: Registry,
    *,
    name: str,
    home: Path,
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    from_model: str | None = None,
) -> dict[str, Any]:
    """Register ``name`` from ``config.data`` (every row labelled history) and train version 1.

    With ``from_model`` (a related managed model: another region or device line), version 1 may
    also start from that model's champion's weights; the held-out newest fifth chooses (see
    :func:`driftpilot.loop.replay.register_with_history`). Refused, with nothing stored, when the
    name is taken, the family unknown, the sibling unknown or of another family, the policy file
    invalid, or the CSV unfit (the message names the column and row).
    """
    sibling = _sibling(sessions, registry, from_model) if from_model else None
    family_name = config.family or (
        sibling[1].family if sibling else ("intent_mlp" if config.text_col else "tabular_mlp")
    )
    if sibling is not None and sibling[1].family != family_name:
        raise ValueError(f"--from {from_model} is a {sibling[1].family} model; {name} would be {family_name}")
    family(family_name)
    policy = load_policy(config.policy_path)
    with sessions() as session:
        if any(m.name == name for m in managed.list_models(session=session)):
            raise FileExistsError(f"a model named {name!r} is registered already")
    data = read_stream(config)
    n = len(data.rows)
    if n < 10 or len(set(data.labels)) < 2:
        raise ValueError(f"{config.data} needs at least 10 labelled rows of two classes or more to train version 1")
    label = "default"
    if config.policy_path is not None:
        kept = home / "policies" / f"{name}.yaml"
        kept.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(config.policy_path, kept)
        label = str(kept.resolve())
    stream = Stream(data.features, data.labels, [(s.name, s.kind) for s in data.model_specs])
    keys = [f"history-{r}" for r in data.rows]
    model_id, first, _ = register_with_history(
        replace(config, warmup=n),
        data,
        stream,
        keys,
        sessions,
        registry,
        name=name,
        family_name=family_name,
        policy=policy,
        policy_label=label,
        on_epoch=on_epoch,
        sibling=sibling,
    )
    texts = embedding_blocks([s.name for s in data.specs])
    return {
        "model": name,
        "id": model_id,
        "family": family_name,
        "rows": n,
        "classes": data.classes,
        # A text's sentence-vector columns are named by the text itself: it is what events carry.
        "features": [s.name for s in data.specs if not any(s.name in c for c in texts.values())] + list(texts),
        "policy": label,
        "transfer": _transfer_of(sessions, model_id),
    }


def _sibling(sessions: sessionmaker[Session], registry: Registry, name: str) -> tuple[str, Any]:
    """The champion of the managed model ``name``, to start a new model from."""
    with sessions() as session:
        known = {m.name: m for m in managed.list_models(session=session)}
        if name not in known:
            raise LookupError(f"--from {name}: no managed model of that name; known: {sorted(known) or 'none'}")
        champion = versions.champion(session=session, model_id=known[name].id)
        if champion is None:
            raise LookupError(f"--from {name}: the model has no champion to start from")
        return name, registry.load(champion)


def _transfer_of(sessions: sessionmaker[Session], model_id: int) -> dict[str, Any] | None:
    """What version 1's bootstrap decision says was carried over from a sibling (None: nothing)."""
    with sessions() as session:
        boot = decisions.list_decisions(session=session, model_id=model_id, action="bootstrap")
        return (boot[-1].evidence or {}).get("transfer") if boot else None
