"""Texts in, sentence vectors stored: what a text model's events carry and what its schema holds.

A text model (``models register --text-col query``, the intent classifier) is trained on the
sentence vectors of its texts, and its schema names them (``query_e000`` … ``query_e383``), as a
replay's does. Clients send the text itself — ``"features": {"query": "my card was eaten"}`` —
and :class:`TextFeatures` encodes it (all-MiniLM-L6-v2, offline, cached by text hash) into
those columns before ingest, on every route that takes events (HTTP, MQTT, JetStream).
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from driftpilot.memory.ingest import IngestError
from driftpilot.memory.schemas import ModelSchema
from driftpilot.models.intent_mlp import embedding_blocks
from driftpilot.models.text_encoder import SentenceEncoder

__all__ = ["TextFeatures", "text_features"]


class TextFeatures:
    """Encodes the texts of a batch of events; one encoder (loaded on first use) a process."""

    def __init__(self, cache_dir: Path | None = None) -> None:
        self.cache_dir = cache_dir
        self._encoder: SentenceEncoder | None = None
        self._lock = threading.Lock()  # one forward pass at a time: the model is not shared safely

    def expand(self, schema: ModelSchema, events: Sequence[Any]) -> Sequence[Any]:
        """``events`` with each text feature of the schema replaced by its vector's columns;
        unchanged for a model without texts, or events that carry the vectors already.

        Raises ``IngestError`` naming the event whose text is missing or not a string.
        """
        blocks = embedding_blocks(schema.feature_names)
        if not blocks:
            return events
        texts: dict[str, list[str]] = {text: [] for text in blocks}
        expanded: list[Any] = []
        for i, event in enumerate(events):
            if not isinstance(event, Mapping) or not isinstance(event.get("features"), Mapping):
                return events  # ingest names what is wrong with it
            features = dict(event["features"])
            for text, columns in blocks.items():
                if columns[0] in features:
                    continue  # the client sent the vector itself
                value = features.pop(text, None)
                if not isinstance(value, str) or not value.strip():
                    raise IngestError(
                        f"event {event.get('key')!r} (#{i}): feature {text!r} must be a non-empty text, got {value!r}"
                    )
                texts[text].append(value)
                if "text" not in event:
                    # The raw text is kept beside its vector (the first text feature's, for a
                    # model of several): what people read, search and relabel in the corpus.
                    event = {**event, "text": value}
            expanded.append({**event, "features": features})
        for text, columns in blocks.items():
            if not texts[text]:
                continue
            vectors = self._encode(texts[text])
            sent = iter(range(len(vectors)))
            for event in expanded:
                if columns[0] not in event["features"]:
                    row = vectors[next(sent)]
                    event["features"].update(zip(columns, map(float, row), strict=True))
        return expanded

    def encode_rows(self, schema: ModelSchema, rows: Sequence[Any]) -> list[Any]:
        """Corpus rows (``{"key", "label", "text", …}``) of a text model with their text's
        vector as features, ready for :func:`driftpilot.memory.corpus.add_examples`; rows with
        features, without a text, or of a model without texts are left as they are."""
        blocks = embedding_blocks(schema.feature_names)
        if not blocks:
            return list(rows)
        name = next(iter(blocks))
        wanted = [
            i for i, row in enumerate(rows) if isinstance(row, Mapping) and row.get("text") and "features" not in row
        ]
        if not wanted:
            return list(rows)
        events = [{"key": rows[i].get("key"), "features": {name: rows[i]["text"]}} for i in wanted]
        encoded = self.expand(schema, events)
        out = list(rows)
        for i, event in zip(wanted, encoded, strict=True):
            out[i] = {**rows[i], "features": event["features"]}
        return out

    def _encode(self, texts: list[str]) -> Any:
        with self._lock:
            if self._encoder is None:
                self._encoder = SentenceEncoder(self.cache_dir)
            return self._encoder.encode(texts)


@functools.cache
def text_features(cache_dir: Path | None) -> TextFeatures:
    """The process's one :class:`TextFeatures` for ``cache_dir``: the API's routes and the live
    sources share its encoder (the model is some 90 MB once loaded)."""
    return TextFeatures(cache_dir)
