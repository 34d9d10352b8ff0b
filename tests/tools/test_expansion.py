from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftpilot.tools import expansion
from driftpilot.tools.expansion import Cluster, around, cluster_unknown, unknown_queries

DIMENSIONS = 32
#: Per-dimension noise around a blob's direction: members sit at a cosine of about 0.9 to it, as
#: the queries of one intent do in a sentence-vector space; blobs' directions are ~orthogonal.
NOISE = 0.08

CARD_TEXTS = [
    "when will my card arrive",
    "my new card has not arrived yet",
    "card still has not arrived",
    "how long until the card arrives",
    "is my card on its way, it should arrive soon",
    "waiting for my card to arrive",
]
RATE_TEXTS = [
    "what exchange rate do you use",
    "the exchange rate was wrong",
    "bad exchange rate on my payment",
    "why is the exchange rate so high",
    "which exchange rate applies abroad",
    "exchange rate seems off",
]


def _directions(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng([seed, 99])
    directions = rng.normal(size=(n, DIMENSIONS))
    return directions / np.linalg.norm(directions, axis=1, keepdims=True)


def _blob(direction: np.ndarray, n: int, seed: int) -> np.ndarray:
    rows = direction + np.random.default_rng(seed).normal(0.0, NOISE, (n, DIMENSIONS))
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def _one_hot(classes: np.ndarray, n_classes: int) -> np.ndarray:
    return np.eye(n_classes)[classes]


@pytest.fixture
def stream() -> dict[str, np.ndarray]:
    """Three known classes (labelled), and a window of their queries followed by 20 of a new one."""
    d = _directions(5)
    labelled = np.vstack([_blob(d[c], 15, seed=c) for c in range(3)])
    known = np.vstack([_blob(d[c], 10, seed=10 + c) for c in range(3)])
    new = _blob(d[3], 20, seed=13)
    sure = np.tile([0.9, 0.05, 0.05], (30, 1))
    lost = np.tile([0.4, 0.35, 0.25], (20, 1))
    return {
        "labelled": labelled,
        "labelled_classes": np.repeat(np.arange(3), 15),
        "queries": np.vstack([known, new]),
        "probabilities": np.vstack([sure, lost]),
        "directions": d,
    }


# -- unknown_queries -----------------------------------------------------------------------------


@pytest.mark.parametrize("by_centres", [False, True], ids=["nearest-labelled", "class-centres"])
def test_the_queries_of_a_new_class_are_unknown_and_those_of_known_classes_are_not(
    stream: dict[str, np.ndarray], by_centres: bool
) -> None:
    membership = _one_hot(stream["labelled_classes"], 3) if by_centres else None

    unknown = unknown_queries(
        stream["queries"], stream["probabilities"], stream["labelled"], labelled_probabilities=membership
    )

    assert unknown.tolist() == list(range(30, 50))
    assert unknown.dtype == np.int64


@pytest.mark.parametrize("by_centres", [False, True], ids=["nearest-labelled", "class-centres"])
def test_a_known_query_the_model_is_unsure_of_is_not_unknown(stream: dict[str, np.ndarray], by_centres: bool) -> None:
    # Queries as near their class as labelled ones typically are: not far, however unsure the model.
    d = stream["directions"]
    typical = np.vstack([_blob(d[c], 10, seed=20 + c) * 0.5 + d[c] * 0.5 for c in range(3)])
    queries = np.vstack([typical, stream["queries"][30:]])
    membership = _one_hot(stream["labelled_classes"], 3) if by_centres else None

    unknown = unknown_queries(
        queries, np.tile([0.4, 0.35, 0.25], (50, 1)), stream["labelled"], labelled_probabilities=membership
    )

    assert unknown.tolist() == list(range(30, 50))


@settings(max_examples=20, deadline=None)
@given(low=st.floats(0.05, 0.9), high=st.floats(0.05, 0.9), by_centres=st.booleans())
def test_a_higher_far_quantile_never_flags_more(low: float, high: float, by_centres: bool) -> None:
    d = _directions(4)
    labelled = np.vstack([_blob(d[c], 8, seed=c) for c in range(3)])
    queries = np.vstack([_blob(d[c], 6, seed=40 + c) for c in range(4)])
    probabilities = np.tile([0.4, 0.35, 0.25], (24, 1))
    membership = _one_hot(np.repeat(np.arange(3), 8), 3) if by_centres else None
    low, high = min(low, high), max(low, high)

    flagged = [
        set(unknown_queries(queries, probabilities, labelled, far_quantile=q, labelled_probabilities=membership))
        for q in (low, high)
    ]

    assert flagged[1] <= flagged[0]


def test_a_far_query_the_model_is_sure_of_is_not_unknown(stream: dict[str, np.ndarray]) -> None:
    probabilities = np.tile([0.9, 0.05, 0.05], (50, 1))

    assert unknown_queries(stream["queries"], probabilities, stream["labelled"]).tolist() == []


def test_far_is_measured_against_the_labelled_data_whatever_its_scale(stream: dict[str, np.ndarray]) -> None:
    # Vector length does not matter (cosine): scaled copies give the same answer.
    unknown = unknown_queries(stream["queries"] * 7.0, stream["probabilities"], stream["labelled"] * 0.1)

    assert unknown.tolist() == list(range(30, 50))


def test_the_model_probabilities_on_labelled_rows_give_the_classes(stream: dict[str, np.ndarray]) -> None:
    soft = 0.1 + 0.6 * _one_hot(stream["labelled_classes"], 3)

    unknown = unknown_queries(
        stream["queries"], stream["probabilities"], stream["labelled"], labelled_probabilities=soft
    )

    assert unknown.tolist() == list(range(30, 50))


def test_no_queries_give_no_unknown(stream: dict[str, np.ndarray]) -> None:
    nothing = unknown_queries(np.zeros((0, DIMENSIONS)), np.zeros((0, 3)), stream["labelled"])

    assert nothing.tolist() == []


# -- cluster_unknown -----------------------------------------------------------------------------


def _two_new_classes_and_strays() -> tuple[np.ndarray, list[str], np.ndarray]:
    """20 queries of each of two new classes (texts about card arrival and exchange rates), and 6
    strays scattered in other directions; the group of each row (-1 for a stray)."""
    d = _directions(12, seed=1)
    vectors = np.vstack(
        [_blob(d[0], 20, seed=1), _blob(d[1], 20, seed=2)] + [_blob(d[4 + i], 1, 30 + i) for i in range(6)]
    )
    texts = [CARD_TEXTS[i % 6] for i in range(20)] + [RATE_TEXTS[i % 6] for i in range(20)]
    texts += ["how do I close my account", "I want a refund", "my phone was stolen", "change my pin", "hi", "?"]
    group = np.array([0] * 20 + [1] * 20 + [-1] * 6)
    return vectors, texts, group


def test_two_new_classes_are_found_as_two_clusters_with_their_members() -> None:
    vectors, texts, group = _two_new_classes_and_strays()

    clusters = cluster_unknown(vectors, texts)

    assert len(clusters) == 2
    # Each cluster holds nearly all of one class and nothing of the other; a stray may join the
    # nearer group (the silhouette scores a stray in a group above one left alone).
    for cluster in clusters:
        members = group[cluster.members]
        main = int(np.bincount(members[members >= 0]).argmax())
        assert (members == main).sum() >= 18 and (members == 1 - main).sum() == 0 and (members == -1).sum() <= 3
    assert sorted(int(np.bincount(group[c.members][group[c.members] >= 0]).argmax()) for c in clusters) == [0, 1]
    assert all(0.8 < c.cohesion <= 1.0 and c.silhouette >= expansion.SILHOUETTE_FLOOR for c in clusters)


def test_a_new_class_beside_a_small_group_and_strays_is_one_cluster_with_its_members() -> None:
    # The usual window: one new class, a handful of confusions of a known class, and strays.
    vectors, texts, group = _two_new_classes_and_strays()
    keep = np.concatenate([np.arange(20), np.arange(20, 26), np.arange(40, 46)])

    clusters = cluster_unknown(vectors[keep], [texts[i] for i in keep])

    new = [c for c in clusters if (group[keep][c.members] == 0).any()]
    assert len(new) == 1
    members = group[keep][new[0].members]
    assert (members == 0).sum() >= 18 and (members == 1).sum() == 0 and (members == -1).sum() <= 3


@pytest.mark.parametrize("strays", [0, 6], ids=["alone", "among-strays"])
def test_a_lone_group_with_no_other_group_beside_it_shows_nothing(strays: int) -> None:
    # The documented limit: with no second group to stand apart from, tight and loose look alike.
    vectors, texts, _ = _two_new_classes_and_strays()
    keep = np.concatenate([np.arange(20), np.arange(40, 40 + strays)])

    assert cluster_unknown(vectors[keep], [texts[i] for i in keep]) == []


def test_scattered_queries_make_no_cluster() -> None:
    strays = _directions(30, seed=5)

    assert cluster_unknown(strays, [f"query {i}" for i in range(30)]) == []


def test_the_suggested_name_is_made_of_the_two_most_distinctive_keywords() -> None:
    vectors, texts, group = _two_new_classes_and_strays()

    clusters = {int(group[c.members[0]]): c for c in cluster_unknown(vectors, texts)}

    assert clusters[0].suggested_name == "card_arrive"
    assert clusters[0].keywords[0] == "card"
    assert clusters[1].suggested_name == "exchange_rate"
    assert not set(clusters[0].keywords + clusters[1].keywords) & expansion.STOPWORDS


def test_background_texts_make_words_common_elsewhere_less_distinctive() -> None:
    vectors, texts, group = _two_new_classes_and_strays()
    background = [f"my card {w}" for w in ("was declined", "is blocked", "payment failed", "top up")] * 5

    clusters = {int(group[c.members[0]]): c for c in cluster_unknown(vectors, texts, background_texts=background)}

    assert clusters[0].keywords[0] == "arrive"
    # The name keeps the order the texts say its words in.
    assert clusters[0].suggested_name == "card_arrive"


def test_examples_are_the_texts_nearest_the_centre() -> None:
    vectors, texts, _ = _two_new_classes_and_strays()

    cluster = cluster_unknown(vectors, texts)[0]

    similarity = vectors[cluster.members] @ cluster.centre
    nearest = cluster.members[np.argsort(-similarity, kind="stable")[: expansion.EXAMPLES]]
    assert cluster.examples == tuple(texts[i] for i in nearest)
    assert np.isclose(np.linalg.norm(cluster.centre), 1.0)


def test_clusters_under_min_size_are_dropped_and_max_clusters_keeps_the_largest() -> None:
    vectors, texts, group = _two_new_classes_and_strays()
    keep = np.concatenate([np.arange(20), np.arange(20, 30)])  # 20 of one class, 10 of the other

    assert [len(c) >= 18 for c in cluster_unknown(vectors[keep], [texts[i] for i in keep], max_clusters=1)] == [True]
    assert cluster_unknown(vectors[keep], [texts[i] for i in keep], min_size=21) == []
    assert cluster_unknown(vectors[:4], texts[:4]) == []


def test_clustering_is_deterministic() -> None:
    vectors, texts, _ = _two_new_classes_and_strays()

    first, second = cluster_unknown(vectors, texts), cluster_unknown(vectors, texts, seed=7)

    assert [c.as_dict() for c in first] == [c.as_dict() for c in second]


def test_a_large_set_is_clustered_on_a_seeded_sample_and_the_rest_join(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(expansion, "MAX_CLUSTERED", 30)
    vectors, texts, group = _two_new_classes_and_strays()

    clusters = cluster_unknown(vectors, texts, seed=3)

    assert len(clusters) == 2
    assert all(
        (group[c.members] >= 0).sum() >= 18 and len(set(group[c.members].tolist()) - {-1}) == 1 for c in clusters
    )
    assert [c.as_dict() for c in clusters] == [c.as_dict() for c in cluster_unknown(vectors, texts, seed=3)]


def test_a_cluster_is_read_only_and_serialises_to_json() -> None:
    vectors, texts, _ = _two_new_classes_and_strays()

    cluster = cluster_unknown(vectors, texts)[0]
    data = json.loads(json.dumps(cluster.as_dict()))

    assert data["size"] == len(cluster) == len(data["members"])
    assert data["suggested_name"] == cluster.suggested_name and len(data["centre"]) == DIMENSIONS
    with pytest.raises(ValueError):
        cluster.members[0] = 99


# -- around --------------------------------------------------------------------------------------


def test_around_returns_the_candidates_nearest_the_centre_nearest_first() -> None:
    angles = np.radians([0, 10, 20, 30, 40, 50])
    vectors = np.column_stack([np.cos(angles), np.sin(angles)])

    assert around(np.array([1.0, 0.0]), vectors, None, 3).tolist() == [0, 1, 2]
    assert around(np.array([0.0, 5.0]), vectors, np.array([0, 2, 3]), 2).tolist() == [3, 2]
    assert around(np.array([1.0, 0.0]), vectors, np.array([4, 5]), 10).tolist() == [4, 5]
    assert around(np.array([1.0, 0.0]), vectors, np.array([], dtype=int), 3).tolist() == []


def test_around_a_cluster_asks_for_the_unlabelled_queries_of_its_class(stream: dict[str, np.ndarray]) -> None:
    unknown = unknown_queries(stream["queries"], stream["probabilities"], stream["labelled"])
    other = _blob(stream["directions"][4], 8, seed=78)
    clusters = cluster_unknown(np.vstack([stream["queries"][unknown], other]), ["card arrival"] * (len(unknown) + 8))
    [cluster] = [c for c in clusters if c.members.max() < len(unknown)]
    pool = np.vstack([stream["queries"], _blob(stream["directions"][3], 5, seed=77)])

    asked = around(cluster, pool, np.arange(len(pool)), 10)

    # All ten are of the new class: unlabelled ones of the window, or the five that came after.
    assert len(asked) == 10 and (asked >= 30).all()


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 10_000), k=st.integers(0, 12))
def test_around_picks_no_candidate_less_similar_than_one_it_leaves(seed: int, k: int) -> None:
    rng = np.random.default_rng(seed)
    vectors = rng.normal(size=(12, 4))
    candidates = np.flatnonzero(rng.random(12) < 0.7)
    centre = rng.normal(size=4)

    asked = around(centre, vectors, candidates, k)

    similarity = (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)) @ (centre / np.linalg.norm(centre))
    left = np.setdiff1d(candidates, asked)
    assert len(asked) == min(k, len(candidates)) and set(asked.tolist()) <= set(candidates.tolist())
    assert np.all(np.diff(similarity[asked]) <= 1e-12)
    if len(asked) and len(left):
        assert similarity[asked].min() >= similarity[left].max() - 1e-12


# -- errors --------------------------------------------------------------------------------------


def test_errors_name_the_wrong_input(stream: dict[str, np.ndarray]) -> None:
    queries, probabilities, labelled = stream["queries"], stream["probabilities"], stream["labelled"]
    bad = queries.copy()
    bad[4, 2] = np.nan

    cases = [
        (lambda: unknown_queries(queries, probabilities[:-1], labelled), "probabilities must be a 2-D matrix"),
        (lambda: unknown_queries(bad, probabilities, labelled), "vectors must be finite: row 4"),
        (lambda: unknown_queries(queries, probabilities, labelled[:1]), "at least 2 labelled queries"),
        (
            lambda: unknown_queries(queries, probabilities, labelled[:, :5]),
            "labelled_vectors must have the queries' 32",
        ),
        (lambda: unknown_queries(queries[0], probabilities, labelled), "vectors must be a 2-D matrix"),
        (lambda: unknown_queries(queries, probabilities, labelled, confidence=0.0), "confidence must be in (0, 1]"),
        (lambda: unknown_queries(queries, probabilities, labelled, far_quantile=1.0), "far_quantile must be in (0, 1)"),
        (
            lambda: unknown_queries(queries, probabilities, labelled, labelled_probabilities=np.ones((45, 2))),
            "labelled_probabilities must have the 3 class columns",
        ),
        (lambda: cluster_unknown(queries, ["a"] * 3), "texts must hold one text per row of vectors: 50 rows, 3"),
        (lambda: cluster_unknown(np.zeros((6, 3)), ["a"] * 6), "vectors row 0 is all zeros"),
        (lambda: cluster_unknown(queries, "card"), "texts must be a sequence of strings"),
        (lambda: cluster_unknown(queries, ["a"] * 50, min_size=0), "min_size must be a whole number >= 1"),
        (lambda: around(np.ones(3), queries, None, 2), "centre must be a vector of the vectors' 32 dimensions"),
        (lambda: around(queries[0], queries, np.array([3, 50]), 2), "candidates must be positions of vectors' 50 rows"),
        (lambda: around(queries[0], queries, None, -1), "k (the number of queries to ask"),
    ]

    for call, message in cases:
        with pytest.raises(ValueError) as raised:
            call()
        assert message in str(raised.value)


def test_cluster_is_exported() -> None:
    assert "Cluster" in expansion.__all__ and Cluster.__name__ == "Cluster"


def test_without_a_confidence_unknown_is_judged_by_distance_alone() -> None:
    labelled = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    queries = np.array([[1.0, 0.02], [0.7, 0.7], [0.72, 0.69]])
    # A network sure of everything: its probabilities cannot tell the two far queries.
    sure = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])

    assert unknown_queries(queries, sure, labelled, confidence=0.6).tolist() == []
    assert unknown_queries(queries, sure, labelled, confidence=None).tolist() == [1, 2]


def test_judged_by_distance_alone_no_probabilities_are_needed(stream: dict[str, np.ndarray]) -> None:
    membership = _one_hot(stream["labelled_classes"], 3)
    with_model = unknown_queries(
        stream["queries"],
        stream["probabilities"],
        stream["labelled"],
        confidence=None,
        labelled_probabilities=membership,
    )
    without = unknown_queries(
        stream["queries"], None, stream["labelled"], confidence=None, labelled_probabilities=membership
    )

    assert without.tolist() == with_model.tolist() and len(without)
    with pytest.raises(ValueError, match="probabilities are needed to judge confidence 0.5"):
        unknown_queries(stream["queries"], None, stream["labelled"])
