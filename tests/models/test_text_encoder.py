"""The offline sentence encoder: checked weights, unit vectors, a cache that survives restarts."""

from __future__ import annotations

import numpy as np
import pytest

from driftpilot.models.text_encoder import DIMENSIONS, SentenceEncoder, text_key


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> SentenceEncoder:
    return SentenceEncoder(tmp_path_factory.mktemp("minilm"))


def test_vectors_are_unit_length_and_put_paraphrases_together(encoder):
    texts = ["Where is my new card?", "My card has still not arrived", "How do I change my PIN?"]

    vectors = encoder.encode(texts)

    assert vectors.shape == (3, DIMENSIONS) and vectors.dtype == np.float32
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    similarity = vectors @ vectors.T
    assert similarity[0, 1] > similarity[0, 2] + 0.2


def test_the_disk_cache_answers_a_new_encoder_without_the_model(encoder):
    texts = ["Is there a fee for top-ups?"]
    first = encoder.encode(texts)

    again = SentenceEncoder(encoder.cache_dir)
    second = again.encode(texts)

    assert not again.loaded  # served from the shard on disk
    assert np.array_equal(first, second)
    assert text_key("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"


def test_non_text_is_refused_by_position(encoder):
    with pytest.raises(ValueError, match="item 1 is 3"):
        encoder.encode(["fine", 3])
