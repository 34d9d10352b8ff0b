"""Corpus expansion: find the queries a model does not know, group them, propose each group as a class.

A text classifier meets queries of an intent no one has named yet. They hide among the rest: the
model spreads its probability over the old intents it half recognises, and uncertainty sampling
spends labels on them one at a time, mixed with honest confusions between old intents. This
module does what a person would: it gathers the queries the model does not know, groups them,
and shows each group with a few typical queries and a suggested name, so that a person can name
it as a new intent (or merge it into an old one) and labels can then be asked around it.

* :func:`unknown_queries`: the queries that are both **unsure** (the model's top probability is
  below ``confidence``) and **far** from everything labelled. "Far" is measured against the
  labelled data itself, so that nothing is tuned per stream: a query is far when its cosine
  distance to the nearest labelled class centre (or, without class memberships, to the nearest
  labelled query) exceeds what the ``far_quantile`` of labelled queries are from their own class
  centre (or nearest other labelled query). Unsure alone also flags the confusions between two
  known intents; far alone flags the odd phrasings of a known intent the model gets right. On
  the Banking77 stream (sentence vectors of MiniLM) the rule flagged about two thirds of the
  queries of intents no one had labelled yet, and a quarter of the others: sentence vectors of
  a bank's intents crowd together, so the clusters below, and the person naming them, do the
  rest of the sorting.
* :func:`cluster_unknown`: average-linkage agglomerative clustering on cosine distance (the
  UPGMA of Sokal & Michener 1958; scipy's ``linkage``), cut where the mean silhouette (Rousseeuw,
  J. Comput. Appl. Math. 20, 1987) is highest. A group is shown when it holds ``min_size``
  queries or more and its own mean silhouette, measured among the groups of that size (the
  smaller ones are strays), reaches :data:`SILHOUETTE_FLOOR`: Kaufman & Rousseeuw ("Finding
  Groups in Data", 1990) read 0.25 and below as no substantial structure, and such a group is
  queries the cut had to put somewhere, not one a person could name. The floor is applied to
  each group, not to the whole cut, because the unknown queries of a live window are mostly
  scattered (odd phrasings, confusions between known classes) with a few tight groups among
  them: on the Banking77 stream the best cut's mean silhouette stayed near 0.22 while groups of
  a single intent in it scored 0.27 to 0.5. Nothing is shown when no group reaches the floor,
  and a group with no other group of ``min_size`` beside it is not shown either: with nothing to
  stand apart from, a tight group and a loose remainder look alike (there is no silhouette
  without a second group). A live window's unknown queries hold several groups; a caller with a
  single group of them can show it whole.
* :class:`Cluster`: its members, the queries nearest its centre as examples, and a name made of
  its two most distinctive keywords (class-based tf-idf, as BERTopic's c-TF-IDF, Grootendorst
  2022: how many of the cluster's queries hold a word, times how rare the word is among the other
  queries), stopwords left out.
* :func:`around`: the ``k`` candidate queries nearest a cluster's centre, for the label requests
  that teach the model the new intent once a person has named it.

Examples
--------
A model that knows two classes meets queries of two it has never seen (vectors near the third
and fourth axes):

>>> rng = np.random.default_rng(0)
>>> def near(axis, n):
...     rows = np.eye(4)[axis] + rng.normal(0, 0.05, (n, 4))
...     return rows / np.linalg.norm(rows, axis=1, keepdims=True)
>>> labelled = np.vstack([near(0, 10), near(1, 10)])
>>> queries = np.vstack([near(0, 4), near(2, 4), near(3, 4)])
>>> probabilities = np.array([[0.9, 0.1]] * 4 + [[0.55, 0.45]] * 8)
>>> unknown = unknown_queries(queries, probabilities, labelled, confidence=0.6)
>>> unknown.tolist()
[4, 5, 6, 7, 8, 9, 10, 11]
>>> texts = ["where is my new card", "my card did not arrive", "card still not here",
...          "when will the card arrive", "exchange rate for euros", "what rate do you use to exchange",
...          "exchange rate is wrong", "bad exchange rate"]
>>> clusters = cluster_unknown(queries[unknown], texts, min_size=3)
>>> [(c.suggested_name, unknown[c.members].tolist()) for c in clusters]
[('exchange_rate', [8, 9, 10, 11]), ('card_arrive', [4, 5, 6, 7])]
>>> clusters[1].examples[:2]
('where is my new card', 'my card did not arrive')

Once a person has named the first one, the labels asked are the queries nearest its centre:

>>> around(clusters[0], queries, np.arange(12), 2).tolist()
[10, 8]
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.spatial.distance import squareform

from driftpilot.tools.active import _nearest_centres

__all__ = [
    "CONFIDENCE",
    "FAR_QUANTILE",
    "SILHOUETTE_FLOOR",
    "Cluster",
    "around",
    "cluster_unknown",
    "unknown_queries",
]

#: A query is unsure when the model gives its best class less than this probability.
CONFIDENCE = 0.5
#: A query is far when it is farther from what is labelled than this share of labelled queries are.
FAR_QUANTILE = 0.5
#: Mean silhouette a group must reach to be shown (Kaufman & Rousseeuw 1990: no substantial structure below).
SILHOUETTE_FLOOR = 0.25
#: Fewest queries a cluster must hold to be shown.
MIN_SIZE = 5
#: Most clusters shown (the largest).
MAX_CLUSTERS = 10
#: Cuts tried: every number of groups up to 10, then this many more spaced evenly on a log scale up
#: to one fewer than the queries (outliers split off before real groups separate, so the best cut of
#: a scattered set holds many groups; on the Banking77 stream it held about half as many as queries).
CUTS = 24
#: Above this many queries, a seeded sample of this size is clustered (the distance matrix and
#: each cut's silhouettes are quadratic: about half a second for 1,000) and the other queries join
#: the group whose reach they fall within.
MAX_CLUSTERED = 1000
#: Texts shown per cluster, and keywords kept.
EXAMPLES = 5
KEYWORDS = 5

#: Rows compared with the labelled queries at a time.
_BLOCK = 2048
_TOKEN = re.compile(r"[a-z0-9]+")
#: Function words and the politeness of queries: no intent is named by them.
STOPWORDS = frozenset(
    """
    a about above after again against all am an and any are aren as at be because been before being below
    between both but by can cannot could couldn d did didn do does doesn doing don down during each few for
    from further had hadn has hasn have haven having he her here hers herself him himself his how i if in into
    is isn it its itself just ll m me more most my myself no nor not now of off on once only or other our ours
    ourselves out over own re s same shan she should shouldn so some such t than that the their theirs them
    themselves then there these they this those through to too under until up ve very was wasn we were weren
    what when where which while who whom why will with won would wouldn y you your yours yourself yourselves
    also get got hello hey hi please thank thanks ok okay
    """.split()
)


@dataclass(frozen=True, eq=False)
class Cluster:
    """A group of unknown queries, as a person sees it before naming it.

    ``members`` are positions into the vectors given to :func:`cluster_unknown` (ascending,
    read-only); ``examples`` the texts nearest the centre, nearest first; ``keywords`` the most
    distinctive words, most distinctive first; ``suggested_name`` the first two in snake_case;
    ``cohesion`` the members' mean cosine similarity to the centre (1 for identical queries);
    ``silhouette`` the members' mean silhouette in the cut they were found in (how much nearer
    they are to one another than to the nearest other group, from -1 to 1; at least
    :data:`SILHOUETTE_FLOOR`); ``centre`` the unit-length mean direction of the members
    (read-only).
    """

    members: np.ndarray
    examples: tuple[str, ...]
    suggested_name: str
    keywords: tuple[str, ...]
    cohesion: float
    silhouette: float
    centre: np.ndarray

    def __len__(self) -> int:
        return len(self.members)

    def as_dict(self) -> dict[str, Any]:
        """The cluster as JSON-ready data (the centre rounded to 6 decimals)."""
        return {
            "suggested_name": self.suggested_name,
            "size": len(self.members),
            "members": [int(i) for i in self.members],
            "examples": list(self.examples),
            "keywords": list(self.keywords),
            "cohesion": round(float(self.cohesion), 4),
            "silhouette": round(float(self.silhouette), 4),
            "centre": [round(float(v), 6) for v in self.centre],
        }


def unknown_queries(
    vectors: np.ndarray,
    probabilities: np.ndarray | None,
    labelled_vectors: np.ndarray,
    *,
    confidence: float | None = CONFIDENCE,
    far_quantile: float = FAR_QUANTILE,
    labelled_probabilities: np.ndarray | None = None,
) -> np.ndarray:
    """Positions of the queries the model does not know: unsure of them, and far from all it was taught.

    Parameters
    ----------
    vectors
        The queries' sentence vectors, one row each (cosine similarity is used: the length of a
        row does not matter, but an all-zero row has no direction and is refused).
    probabilities
        The model's class probabilities on the queries, one row per query; ``None`` (no model run
        for nothing) when ``confidence`` is ``None``.
    labelled_vectors
        Vectors of the labelled queries (at least two), in the same space.
    confidence
        A query is unsure when its top probability is below this, in (0, 1]. The default, 0.5,
        is less than even odds on the model's best guess: a property of probabilities, not of a
        stream (with two classes the top probability is never below it: pass a higher one).
        ``None`` judges by distance alone: a small network's softmax is sure of queries far from
        all it was taught (Hendrycks & Gimpel, ICLR 2017), so its probabilities cannot say unknown.
    far_quantile
        In (0, 1). With ``labelled_probabilities``: a query is far when its cosine distance to
        the nearest class centre is above this quantile of the labelled queries' distances to
        their own class centre (classes of one labelled query have no spread and are left out of
        the quantile). Without: when its distance to the nearest labelled query is above this
        quantile of the labelled queries' distances to their nearest other labelled query. The
        default, the median, calls far what is farther than a typical labelled query is from
        its own kind.
    labelled_probabilities
        Which class each labelled query belongs to, one row per labelled query and the columns of
        ``probabilities`` (when given): their labels one-hot, or the model's probabilities on them (each
        counts for the class of its largest entry). Class centres are steadier than single
        neighbours, which a mislabelled or odd query can stand in for.

    Returns
    -------
    numpy.ndarray
        Ascending int64 positions into ``vectors``.

    Raises
    ------
    ValueError
        When a matrix is not 2-D, holds a non-finite value or an all-zero vector, the row counts
        or widths disagree, fewer than two labelled queries are given, or a setting is out of range.

    Examples
    --------
    >>> labelled = np.array([[1.0, 0.0], [0.99, 0.1], [0.0, 1.0], [0.1, 0.99]])
    >>> queries = np.array([[1.0, 0.02], [0.7, 0.7], [0.72, 0.69]])
    >>> probabilities = np.array([[0.95, 0.05], [0.5, 0.5], [0.9, 0.1]])
    >>> unknown_queries(queries, probabilities, labelled, confidence=0.6).tolist()
    [1]
    >>> one_hot = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> unknown_queries(queries, probabilities, labelled, confidence=0.6, labelled_probabilities=one_hot).tolist()
    [1]
    """
    if confidence is not None and not 0.0 < confidence <= 1.0:
        raise ValueError(f"confidence must be in (0, 1] or None, got {confidence}")
    if not 0.0 < far_quantile < 1.0:
        raise ValueError(f"far_quantile must be in (0, 1), got {far_quantile}")
    queries = _unit_rows("vectors", vectors)
    known = _unit_rows("labelled_vectors", labelled_vectors, width=queries.shape[1])
    if len(known) < 2:
        raise ValueError(
            f"labelled_vectors must hold at least 2 labelled queries to measure what 'far' is, got {len(known)} "
            "(with no model yet, ask for representative labels first: select_for_labels with probabilities=None)"
        )
    if probabilities is None and confidence is not None:
        raise ValueError(
            f"probabilities are needed to judge confidence {confidence} "
            "(pass confidence=None to judge by distance alone)"
        )
    probs = None if probabilities is None else _finite_matrix("probabilities", probabilities, rows=len(queries))
    if labelled_probabilities is None:
        distance, threshold = _far_from_neighbours(queries, known, far_quantile)
    else:
        membership = _finite_matrix("labelled_probabilities", labelled_probabilities, rows=len(known))
        if probs is not None and membership.shape[1] != probs.shape[1]:
            raise ValueError(
                f"labelled_probabilities must have the {probs.shape[1]} class columns of probabilities, "
                f"got {membership.shape[1]}"
            )
        distance, threshold = _far_from_centres(queries, known, membership.argmax(axis=1), far_quantile)
    if confidence is None or probs is None:
        return np.flatnonzero(distance > threshold).astype(np.int64)
    top = probs.max(axis=1) if probs.shape[1] else np.zeros(len(probs))
    return np.flatnonzero((top < confidence) & (distance > threshold)).astype(np.int64)


def _far_from_neighbours(queries: np.ndarray, known: np.ndarray, quantile: float) -> tuple[np.ndarray, float]:
    """Each query's cosine distance to its nearest labelled query, and the labelled queries' own quantile."""
    threshold = float(np.quantile(1.0 - _nearest_similarity(known, known, itself=True), quantile))
    return 1.0 - _nearest_similarity(queries, known, itself=False), threshold


def _nearest_similarity(rows: np.ndarray, known: np.ndarray, *, itself: bool) -> np.ndarray:
    """Each row's cosine similarity to its most similar known row (another one than itself when
    ``rows`` is ``known``), a block of rows at a time so that memory stays bounded."""
    best = np.full(len(rows), -np.inf)
    for start in range(0, len(rows), _BLOCK):
        similarity = rows[start : start + _BLOCK] @ known.T
        if itself:
            block = np.arange(len(similarity))
            similarity[block, start + block] = -np.inf
        best[start : start + _BLOCK] = similarity.max(axis=1)
    return best


def _far_from_centres(
    queries: np.ndarray, known: np.ndarray, classes: np.ndarray, quantile: float
) -> tuple[np.ndarray, float]:
    """Each query's cosine distance to the nearest class centre, and the labelled queries' own quantile."""
    present, members = np.unique(classes, return_inverse=True)
    centres = _unit_means(known, members, len(present))
    counts = np.bincount(members, minlength=len(present))
    spread = counts[members] > 1
    if not spread.any():
        # Every class has a single labelled query: centres are the queries themselves.
        return _far_from_neighbours(queries, known, quantile)
    own = 1.0 - (known * centres[members]).sum(axis=1)
    threshold = float(np.quantile(own[spread], quantile))
    distance = 1.0 - (queries @ centres.T).max(axis=1) if len(queries) else np.zeros(0)
    return distance, threshold


def cluster_unknown(
    vectors: np.ndarray,
    texts: Sequence[str],
    *,
    min_size: int = MIN_SIZE,
    max_clusters: int = MAX_CLUSTERS,
    seed: int = 0,
    background_texts: Sequence[str] = (),
) -> list[Cluster]:
    """Groups of the unknown queries, largest first, each ready for a person to name.

    Parameters
    ----------
    vectors
        The unknown queries' sentence vectors (cosine distance; an all-zero row is refused).
    texts
        Their texts, one per row: examples and keywords come from them.
    min_size
        Groups of fewer queries are not shown (at least 1).
    max_clusters
        Most groups shown, the largest (at least 1).
    seed
        Draws the sample clustered when there are more than :data:`MAX_CLUSTERED` queries (the
        others then join the group whose reach they fall within); below that it is not used and
        the result is fully deterministic.
    background_texts
        Texts of known queries (the labelled corpus, say) that keywords should stand out from,
        beside the other unknown queries: without them, a single cluster has nothing to differ
        from and its keywords are merely its most frequent words.

    Raises
    ------
    ValueError
        When ``vectors`` is not a finite 2-D matrix without all-zero rows, ``texts`` does not
        hold one string per row, or a setting is out of range.
    """
    if isinstance(min_size, bool) or not isinstance(min_size, int) or min_size < 1:
        raise ValueError(f"min_size must be a whole number >= 1, got {min_size!r}")
    if isinstance(max_clusters, bool) or not isinstance(max_clusters, int) or max_clusters < 1:
        raise ValueError(f"max_clusters must be a whole number >= 1, got {max_clusters!r}")
    points = _unit_rows("vectors", vectors)
    _check_texts("texts", texts, len(points))
    _check_texts("background_texts", background_texts, None)
    if len(points) < min_size or len(points) == 0:
        return []
    if len(points) > MAX_CLUSTERED:
        sample = np.sort(np.random.default_rng(seed).choice(len(points), MAX_CLUSTERED, replace=False))
    else:
        sample = np.arange(len(points))
    labels, silhouettes = _best_cut(points[sample], min_size)
    shown = np.flatnonzero(silhouettes >= SILHOUETTE_FLOOR)
    groups = [sample[labels == g] for g in shown]
    if len(sample) < len(points) and groups:
        groups = _join_the_rest(points, sample, groups)
    kept = [i for i, g in enumerate(groups) if len(g) >= min_size]
    centres = {i: _unit_means(points[groups[i]], np.zeros(len(groups[i]), dtype=np.int64), 1)[0] for i in kept}
    cohesion = {i: float((points[groups[i]] @ centres[i]).mean()) for i in kept}
    order = sorted(kept, key=lambda i: (-len(groups[i]), -cohesion[i], int(groups[i].min())))[:max_clusters]
    tokens = [_tokens(t) for t in texts]
    documents = [set(t) for t in tokens]
    background = [set(_tokens(t)) for t in background_texts]
    clusters: list[Cluster] = []
    used: Counter[str] = Counter()
    for i in order:
        members, centre = np.sort(groups[i]), centres[i]
        nearest = members[np.argsort(-(points[members] @ centre), kind="stable")[:EXAMPLES]]
        outside = np.setdiff1d(np.arange(len(points)), members)
        keywords = _distinctive([documents[j] for j in members], [documents[j] for j in outside] + background)
        name = "_".join(_spoken_order(keywords[:2], [tokens[j] for j in members])) or f"cluster_{len(clusters) + 1}"
        used[name] += 1
        if used[name] > 1:
            name = f"{name}_{used[name]}"
        members.setflags(write=False)
        centre.setflags(write=False)
        clusters.append(
            Cluster(
                members=members,
                examples=tuple(texts[j] for j in nearest),
                suggested_name=name,
                keywords=keywords,
                cohesion=round(cohesion[i], 6),
                silhouette=round(float(silhouettes[shown[i]]), 6),
                centre=centre,
            )
        )
    return clusters


def _best_cut(points: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Group number of each point in the average-linkage cut of highest mean silhouette (-1 for a
    stray: a point of a group under ``min_size``), and each group's own mean silhouette.

    The cut is Rousseeuw's: every group of it counts, a point alone scores 0. A group's own
    silhouette is then measured among the groups of at least ``min_size`` only: against a few far
    strays, even a loose remainder of everything else would look well apart (on the Banking77
    stream such a remainder of 150 queries, 5 % of them of one intent, passed the floor that way).
    A group with no other group of that size beside it has nothing to be measured against and
    scores 0.
    """
    n = len(points)
    strays = np.full(n, -1, dtype=np.int64)
    if n < 3:
        return strays, np.zeros(0)
    distances = np.clip(1.0 - points @ points.T, 0.0, 2.0)
    np.fill_diagonal(distances, 0.0)
    tree = linkage(squareform(distances, checks=False), method="average")
    grid = np.unique(np.concatenate([np.arange(2, min(n - 1, 10) + 1), np.geomspace(10, n - 1, CUTS).round()]))
    best, cut = -np.inf, np.zeros(n, dtype=np.int64)
    for k in grid[(grid >= 2) & (grid <= n - 1)].astype(int):
        # maxclust gives fewer groups than asked where merge heights tie; renumber from 0.
        labels = np.unique(fcluster(tree, k, criterion="maxclust"), return_inverse=True)[1].astype(np.int64)
        score = float(_silhouettes(distances, labels).mean())
        if score > best + 1e-12:
            best, cut = score, labels
    sizes = np.bincount(cut)
    grouped = np.flatnonzero(sizes[cut] >= min_size)
    labels = strays.copy()
    labels[grouped] = np.unique(cut[grouped], return_inverse=True)[1]
    if not len(grouped):
        return labels, np.zeros(0)
    scores = _silhouettes(distances[np.ix_(grouped, grouped)], labels[grouped])
    return labels, np.bincount(labels[grouped], weights=scores) / np.bincount(labels[grouped])


def _silhouettes(distances: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Each point's silhouette (Rousseeuw 1987), from the distance matrix; 0 for a point alone in
    its group, and for every point when there is a single group."""
    k = int(labels.max()) + 1
    if k < 2:
        return np.zeros(len(labels))
    # Each point's summed distance to every group: the columns sorted by group and summed in runs,
    # n^2 work whatever the number of groups (a product with a one-hot matrix is n^2 k).
    order = np.argsort(labels, kind="stable")
    sizes = np.bincount(labels, minlength=k)
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    totals = np.add.reduceat(distances[:, order], starts, axis=1)
    one_hot = labels[:, None] == np.arange(k)[None, :]
    rows = np.arange(len(labels))
    own_size = sizes[labels]
    within = totals[rows, labels] / np.maximum(own_size - 1, 1)
    between = np.where(one_hot, np.inf, totals / sizes[None, :]).min(axis=1)
    scale = np.maximum(within, between)
    alone = (own_size == 1) | (scale == 0)
    return np.where(alone, 0.0, (between - within) / np.where(alone, 1.0, scale))


def _join_the_rest(points: np.ndarray, sample: np.ndarray, groups: list[np.ndarray]) -> list[np.ndarray]:
    """Groups of a clustered sample grown by the other queries that fall within a group's reach:
    at least as similar to its centre as its least similar sampled member."""
    centres = np.vstack([_unit_means(points[g], np.zeros(len(g), dtype=np.int64), 1)[0] for g in groups])
    reach = np.array([float((points[g] @ c).min()) for g, c in zip(groups, centres, strict=True)])
    rest = np.setdiff1d(np.arange(len(points)), sample)
    nearest = _nearest_centres(points[rest], centres)
    similarity = (points[rest] * centres[nearest]).sum(axis=1)
    joins = similarity >= reach[nearest]
    return [np.concatenate([g, rest[joins & (nearest == i)]]) for i, g in enumerate(groups)]


def _tokens(text: str) -> list[str]:
    return [w for w in _TOKEN.findall(text.lower()) if len(w) > 1 and w not in STOPWORDS and not w.isdigit()]


def _spoken_order(words: tuple[str, ...], texts: list[list[str]]) -> tuple[str, ...]:
    """Two keywords in the order the cluster's texts most often say them ("card arrive", not
    "arrive card"); a tie keeps the order of distinctiveness."""
    if len(words) < 2:
        return words
    first, second = words
    before = after = 0
    for text in texts:
        if first in text and second in text:
            if text.index(first) < text.index(second):
                before += 1
            else:
                after += 1
    return (second, first) if after > before else words


def _distinctive(inside: list[set[str]], outside: list[set[str]]) -> tuple[str, ...]:
    """Words most distinctive of ``inside`` against ``outside``: the share of inside texts holding
    a word times its smoothed inverse document frequency among the outside texts (c-TF-IDF)."""
    held = Counter(w for words in inside for w in words)
    elsewhere = Counter(w for words in outside for w in words)
    scores = {
        word: count / len(inside) * (math.log((1 + len(outside)) / (1 + elsewhere[word])) + 1.0)
        for word, count in held.items()
        # A word of one query is that query's, not the cluster's.
        if count > 1 or len(inside) == 1
    }
    ranked = sorted(scores, key=lambda w: (-scores[w], w))
    return tuple(ranked[:KEYWORDS])


def around(cluster: Cluster | np.ndarray, vectors: np.ndarray, candidates: np.ndarray | None, k: int) -> np.ndarray:
    """The ``k`` candidate queries nearest a cluster's centre (by cosine), nearest first.

    ``cluster`` is a :class:`Cluster` or a centre vector; ``candidates`` are positions into
    ``vectors`` that may be asked (the unlabelled queries), or ``None`` for every row. Returns
    positions into ``vectors`` (int64); fewer than ``k`` when there are fewer candidates, ties
    going to the earlier candidate.

    >>> vectors = np.array([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6], [0.6, 0.8]])
    >>> around(np.array([1.0, 0.0]), vectors, np.array([1, 2, 3]), 2).tolist()
    [2, 3]

    Raises
    ------
    ValueError
        When ``k`` is negative, the centre's width differs from the vectors', a vector is not
        finite or all zero, or a candidate is not a position of ``vectors``.
    """
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ValueError(f"k (the number of queries to ask around the cluster) must be a whole number >= 0, got {k!r}")
    points = np.asarray(vectors, dtype=float)
    if points.ndim != 2:
        raise ValueError(f"vectors must be a 2-D matrix (queries x dimensions), got shape {points.shape}")
    raw_centre = cluster.centre if isinstance(cluster, Cluster) else np.asarray(cluster, dtype=float)
    if raw_centre.shape != (points.shape[1],):
        raise ValueError(
            f"the cluster's centre must be a vector of the vectors' {points.shape[1]} dimensions, "
            f"got shape {raw_centre.shape}"
        )
    centre = _unit_rows("the cluster's centre", raw_centre[None, :])[0]
    if candidates is None:
        rows = np.arange(len(points), dtype=np.int64)
    else:
        rows = np.asarray(candidates)
        if rows.ndim != 1 or (len(rows) and not np.issubdtype(rows.dtype, np.integer)):
            raise ValueError(
                f"candidates must be a 1-D array of positions into vectors, got dtype {rows.dtype} shape {rows.shape}"
            )
        rows = rows.astype(np.int64)
        outside = rows[(rows < 0) | (rows >= len(points))]
        if len(outside):
            raise ValueError(f"candidates must be positions of vectors' {len(points)} rows, got {int(outside[0])}")
    if not len(rows) or k == 0:
        return np.zeros(0, dtype=np.int64)
    similarity = _unit_rows("vectors", points[rows], positions=rows) @ centre
    return rows[np.argsort(-similarity, kind="stable")[:k]]


# -- validation and small helpers ----------------------------------------------------------------------


def _finite_matrix(name: str, values: np.ndarray, *, rows: int) -> np.ndarray:
    matrix = np.asarray(values, dtype=float)
    if matrix.ndim != 2 or len(matrix) != rows:
        raise ValueError(f"{name} must be a 2-D matrix with one row per query ({rows}), got shape {matrix.shape}")
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if len(bad):
        raise ValueError(f"{name} must be finite: row {int(bad[0])} holds {matrix[bad[0]].tolist()[:5]}")
    return matrix


def _unit_rows(
    name: str, values: np.ndarray, *, width: int | None = None, positions: np.ndarray | None = None
) -> np.ndarray:
    """``values`` as unit-length float rows, or a ValueError naming ``name`` and the faulty row."""
    matrix = np.asarray(values, dtype=float)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be a 2-D matrix (queries x dimensions), got shape {matrix.shape}")
    if width is not None and matrix.shape[1] != width:
        raise ValueError(f"{name} must have the queries' {width} dimensions, got shape {matrix.shape}")
    where = positions if positions is not None else np.arange(len(matrix))
    bad = np.flatnonzero(~np.isfinite(matrix).all(axis=1))
    if len(bad):
        raise ValueError(f"{name} must be finite: row {int(where[bad[0]])} holds NaN or infinity")
    norms = np.linalg.norm(matrix, axis=1)
    zero = np.flatnonzero(norms == 0)
    if len(zero):
        raise ValueError(f"{name} row {int(where[zero[0]])} is all zeros: it has no direction to compare by cosine")
    return matrix / norms[:, None]


def _unit_means(points: np.ndarray, groups: np.ndarray, n_groups: int) -> np.ndarray:
    """The unit-length mean of each group's rows (a group whose rows cancel out keeps a zero centre)."""
    sums = np.zeros((n_groups, points.shape[1]))
    np.add.at(sums, groups, points)
    norms = np.linalg.norm(sums, axis=1, keepdims=True)
    return sums / np.where(norms > 0, norms, 1.0)


def _check_texts(name: str, texts: Sequence[str], rows: int | None) -> None:
    if isinstance(texts, str):
        raise ValueError(f"{name} must be a sequence of strings, got a single string")
    if rows is not None and len(texts) != rows:
        raise ValueError(f"{name} must hold one text per row of vectors: {rows} rows, {len(texts)} texts")
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"{name} must be strings; item {bad[0]} is {texts[bad[0]]!r}")
