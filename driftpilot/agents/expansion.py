"""The Data Curator's corpus expansion: intents nobody has named yet, shown to people to name.

:func:`propose` clusters the recent queries the champion does not know (far from every labelled
class, by distance alone: :func:`driftpilot.tools.expansion.unknown_queries`), and logs the clusters,
each with examples and a suggested name, as a decision people answer by its id. :func:`name`
records a person naming one (a new intent grows the model's classes; an old one merges it) and
asks for labels on the unlabelled queries nearest the cluster (:func:`~driftpilot.tools.
expansion.around`), each request saying why. The loop's own label requests then learn the new
intent with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pandas as pd
from sqlalchemy.orm import Session

from driftpilot.memory import corpus, events, managed, versions
from driftpilot.memory.corpus import CorpusChange, CorpusError
from driftpilot.memory.tables import ManagedModel
from driftpilot.memory.times import utcnow
from driftpilot.models.intent_mlp import embedding_blocks
from driftpilot.models.registry import Registry
from driftpilot.tools.expansion import around, cluster_unknown, unknown_queries

#: The newest unlabelled queries looked at (the Curator's recent window of a text model).
RECENT = 2000
#: Queries asked for labels around a named cluster, unless the caller says otherwise.
AROUND = 20
#: A query is unknown when it is farther from every class centre than this share of each class's
#: own labelled queries are from theirs: outside the class's usual reach. By distance alone: the
#: champion is a network, whose softmax is sure even of queries unlike any it learnt from.
FAR_QUANTILE = 0.9


@dataclass(frozen=True)
class _Queries:
    """A text model's events as what expansion reads: their ids, sentence vectors and texts."""

    ids: np.ndarray
    vectors: np.ndarray
    texts: list[str]


def _queries(session: Session, columns: list[str], frame: pd.DataFrame) -> _Queries:
    ids = frame["id"].to_numpy(dtype=np.int64)
    stored = events.texts(session=session, ids=ids.tolist())
    return _Queries(ids, frame[columns].to_numpy(dtype=np.float64), [stored.get(int(i)) or "" for i in ids])


def _text_columns(model: ManagedModel) -> list[str]:
    blocks = embedding_blocks(managed.model_schema(model).feature_names)
    if not blocks:
        raise CorpusError(f"model {model.name!r} reads no text: corpus expansion is for text models")
    return next(iter(blocks.values()))


def propose(
    session: Session, registry: Registry, model_name: str, *, by: str, now: datetime | None = None
) -> tuple[CorpusChange, list[dict[str, Any]]]:
    """Cluster the recent unlabelled queries the champion does not know; log and return the
    clusters (members by event id, examples, suggested name, keywords, cohesion)."""
    model = managed.get_model(session=session, name=model_name)
    now = now or utcnow()
    frame = events.window(session=session, model_id=model.id, start=None, end=now, corpus_only=False)
    unlabelled = frame[frame["label"].isna()].tail(RECENT)
    labelled = frame[frame["label"].notna()]
    if len(labelled) < 2:
        raise CorpusError(f"model {model_name!r} has {len(labelled)} labelled queries: too few to tell the unknown")
    columns = _text_columns(model)
    champion = versions.champion(session=session, model_id=model.id)
    if champion is None:
        raise CorpusError(f"model {model_name!r} has no champion to tell known queries from unknown ones")
    scorer = registry.load(champion)
    pool, known = _queries(session, columns, unlabelled), _queries(session, columns, labelled)
    clusters: list[dict[str, Any]] = []
    if len(pool.ids):
        # Class memberships are the labels people gave (one-hot), not the champion's guesses.
        # (A class the champion does not know yet, named since, is left out until it learns it.)
        classes = np.asarray(list(scorer.classes))
        members = (labelled["label"].to_numpy()[:, None] == classes[None, :]).astype(float)
        taught = members.any(axis=1)
        unknown = unknown_queries(
            pool.vectors,
            None,  # unknown is judged by distance alone (see the module's note): no model run
            known.vectors[taught],
            confidence=None,
            far_quantile=FAR_QUANTILE,
            labelled_probabilities=members[taught],
        )
        found = cluster_unknown(pool.vectors[unknown], [pool.texts[i] for i in unknown], background_texts=known.texts)
        for cluster in found:
            shown = cluster.as_dict()
            shown.pop("members", None)
            shown.pop("centre", None)
            clusters.append({**shown, "event_ids": pool.ids[unknown[cluster.members]].tolist()})
    change = corpus.record_clusters(session=session, model=model_name, clusters=clusters, by=by, time=now)
    return change, clusters


def name(
    session: Session,
    registry: Registry,
    model_name: str,
    *,
    proposal: int,
    cluster: int,
    label: str,
    by: str,
    k: int = AROUND,
    now: datetime | None = None,
) -> CorpusChange:
    """A person names cluster ``cluster`` of ``proposal`` as ``label`` (a new intent, or an old
    one it merges into); the ``k`` unlabelled queries nearest its centre are asked for labels."""
    if k < 0:
        raise CorpusError(f"the queries asked around a cluster must be 0 or more, got {k}")
    model = managed.get_model(session=session, name=model_name)
    shown = corpus.proposed_cluster(session=session, model=model_name, proposal=proposal, cluster=cluster)
    now = now or utcnow()
    frame = events.window(session=session, model_id=model.id, start=None, end=now)
    members = frame[frame["id"].isin(shown["event_ids"])]
    pool = frame[frame["label"].isna()].tail(RECENT)
    asked: list[int] = []
    if len(members) and len(pool) and k:
        columns = _text_columns(model)
        centre = members[columns].to_numpy(dtype=np.float64).mean(axis=0)
        near = around(centre, pool[columns].to_numpy(dtype=np.float64), None, min(k, len(pool)))
        asked = pool["id"].to_numpy(dtype=np.int64)[near].tolist()
    return corpus.name_cluster(
        session=session, model=model_name, proposal=proposal, cluster=cluster, name=label, by=by, around=asked, time=now
    )
