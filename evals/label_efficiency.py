"""Label efficiency of active learning on Banking77: driftpilot's selection vs random vs margin.

The pool is Banking77's training split (10,003 queries, 77 intents) as all-MiniLM-L6-v2 sentence
vectors (cached by text hash, as in ``evals/incremental_bench.py``); the judge is its test split
(3,080 queries). Every strategy starts from the same 2 labelled queries per intent (154, drawn
by the seed), then asks for labels in batches of 200; after each batch the classifier is trained
again from scratch on every label so far and scored on the test split. Strategies:

* **random**: 200 unlabelled queries drawn at random;
* **margin**: the 200 of smallest margin between the two most probable intents (plain
  uncertainty sampling);
* **driftpilot**: :func:`driftpilot.tools.active.select_for_labels` with the classifier's
  probabilities (uncertainty, clustered for diversity; no drifted slice here).

The figure is how many labels each needs to reach 97 % of the full-data accuracy (the same
classifier trained on the whole training split) and hold it: the first label count from which
the test accuracy stays at or above that target for two more batches. A curve stops there, or at
``--max-labels`` ("not reached"). Goal (issue 18): driftpilot needs at most 40 % of random's labels.

The classifier is scikit-learn's multinomial ``LogisticRegression`` on the unit-length sentence
vectors, ``C = 10``: 3-fold cross-validation on the training split alone chose it among 1, 3, 10,
30 and 100 (accuracies 0.900, 0.911, 0.917, 0.916, 0.913). It is the intent family's head without
its hidden layer: convex, so a fit is deterministic and one batch's curve point is not the noise
of one stochastic training run, and it fits 10,000 rows in about a second, where the five seeds
times three strategies need some 200 fits. ``--classifier intent_mlp`` runs the same loop with the
project's :class:`~driftpilot.models.intent_mlp.IntentMLP` as the loop registers it (a linear head
on the scaled vectors, fitted to convergence by L-BFGS: the family's default since its MLP head,
whose early-stopped fits move by a point from batch to batch, needed 0.49 of random's labels
where the linear head needs 0.37; see that module's note), one thread.

Also measured:

* **the cold start**: 154 labels chosen by ``select_for_labels`` without any model
  (representative queries) against 154 drawn at random, and against the 2 per intent the curves
  start from (which needs the labels it is choosing by, so no selector can do it);
* **emerging intents**: the Banking77 stream (``driftpilot.scenarios.banking``, built from the
  training split: 50 intents at first, 27 emerging between half way and 85 %). 200 labels drawn
  at random among its first 1,000 queries train the first model; then, for every window of 250
  queries, 50 labels are asked among the unlabelled queries of the last 1,000 (the curator's
  recent window) and the classifier is retrained. The figure: labels spent from a new intent's
  first window until its recall on the test split reaches 80 %. driftpilot runs without a drifted
  slice, with the queries unlike any labelled one as the slice (``+novel``), and with the queries
  whose most similar labelled query is of an intent the first model did not know (``+new-class``:
  the slice a "new classes" finding names). **expansion** (issue: corpus expansion for new
  intents): the pool's unknown queries (:func:`driftpilot.tools.expansion.unknown_queries`, judged
  as :mod:`driftpilot.agents.expansion` judges them: by distance to the labelled classes) are
  clustered (:func:`~driftpilot.tools.expansion.cluster_unknown`), a person names each cluster
  as a new intent or merges it into an old one (simulated by an oracle: the majority true intent
  of the cluster's members; naming costs no label), and up to half of the window's labels are
  asked around the clusters' centres (:func:`~driftpilot.tools.expansion.around`), the rest by
  driftpilot's selection; ``expansion+new-class`` gives that selection the +new-class slice.

    .venv/bin/python evals/label_efficiency.py [--quick] [--seeds 0,1,2,3,4] [--classifier logistic]
    .venv/bin/python evals/label_efficiency.py --emerging-only [--emerging-strategies expansion,driftpilot] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftpilot.agents.expansion import FAR_QUANTILE as CURATOR_FAR_QUANTILE  # noqa: E402
from driftpilot.config import Settings  # noqa: E402
from driftpilot.tools.active import select_for_labels, uncertainty_scores  # noqa: E402
from driftpilot.tools.expansion import around, cluster_unknown, unknown_queries  # noqa: E402

RESULTS = ROOT / "evals" / "results"
#: Per-seed detail too large to commit (see .gitignore's evals/out/).
RUNS_DIR = ROOT / "evals" / "out"
STRATEGIES = ("driftpilot", "random", "margin")
BATCH = 200
START_PER_INTENT = 2
TARGET_SHARE = 0.97
#: Further batches the accuracy must stay at or above the target for the target to count as reached.
HOLD = 2
#: Logistic regression's inverse regularisation, chosen by cross-validation on the training split.
LOGISTIC_C = 10.0
GOAL = 0.40


@dataclass(frozen=True)
class Data:
    """Banking77's two splits as sentence vectors and intent numbers."""

    train: np.ndarray
    train_y: np.ndarray
    train_texts: list[str]
    test: np.ndarray
    test_y: np.ndarray
    intents: list[str]


class Model(Protocol):
    def predict_proba(self, x: np.ndarray) -> np.ndarray: ...

    def predict(self, x: np.ndarray) -> np.ndarray: ...

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float: ...


Fit = Callable[[np.ndarray, np.ndarray, int], Model]


def load(quick: bool) -> Data:
    """The train and test splits, encoded (or read from the embedding cache)."""
    from driftpilot.models.text_encoder import SentenceEncoder
    from driftpilot.scenarios.banking import locate_banking77

    folder = locate_banking77()
    splits = [pd.read_csv(folder / f"{name}.csv", dtype=str, keep_default_na=False) for name in ("train", "test")]
    intents = sorted(set(splits[0]["category"]))
    number = {name: i for i, name in enumerate(intents)}
    encoder = SentenceEncoder(Settings().embedding_cache_dir)
    started = time.perf_counter()
    vectors = [encoder.encode(list(split["text"])) for split in splits]
    print(
        f"banking77: {sum(map(len, splits)):,} texts encoded (or read from the cache) in "
        f"{time.perf_counter() - started:.0f} s",
        flush=True,
    )
    labels = [split["category"].map(number).to_numpy() for split in splits]
    return Data(vectors[0], labels[0], list(splits[0]["text"]), vectors[1], labels[1], intents)


class Logistic:
    """Multinomial logistic regression on the sentence vectors (see the module's note)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        from sklearn.linear_model import LogisticRegression

        self.model = LogisticRegression(C=LOGISTIC_C, max_iter=1000).fit(x, y)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(x)

    def predict(self, x: np.ndarray) -> np.ndarray:
        return self.model.predict(x)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float(self.model.score(x, y))


class IntentHead:
    """The project's intent family (:class:`IntentMLP`) on the precomputed vectors."""

    def __init__(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        import torch

        from driftpilot.models.intent_mlp import IntentMLP, embedding_columns

        self.columns = embedding_columns("text", x.shape[1])
        torch.manual_seed(seed)
        classes = [str(c) for c in sorted(set(y.tolist()))]
        self.model = IntentMLP([("text", "text")], classes, seed=seed).fit(self._frame(x), y.astype(str))

    def _frame(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return {name: x[:, j] for j, name in enumerate(self.columns)}

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict_proba(self._frame(x)))

    def predict(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(self.model.predict(self._frame(x))).astype(int)

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.model.predict(self._frame(x)) == y.astype(str)).mean())


CLASSIFIERS: dict[str, Fit] = {"logistic": Logistic, "intent_mlp": IntentHead}


def starting_labels(y: np.ndarray, seed: int) -> np.ndarray:
    """``START_PER_INTENT`` training rows of every intent, drawn by the seed (the same for every strategy)."""
    rng = np.random.default_rng([seed, 1])
    return np.concatenate([rng.choice(np.flatnonzero(y == c), START_PER_INTENT, replace=False) for c in np.unique(y)])


def choose(
    strategy: str, data: Data, model: Model, labelled: np.ndarray, rng: np.random.Generator, seed: int
) -> np.ndarray:
    """The next batch of training rows to label."""
    pool = np.setdiff1d(np.arange(len(data.train)), labelled)
    n = min(BATCH, len(pool))
    if strategy == "random":
        return rng.choice(pool, n, replace=False)
    probabilities = model.predict_proba(data.train[pool])
    if strategy == "margin":
        return pool[np.argsort(-uncertainty_scores(probabilities), kind="stable")[:n]]
    selection = select_for_labels(data.train[pool], probabilities, n, labelled=data.train[labelled], seed=seed)
    return pool[selection.indices]


def held_from(curve: list[tuple[int, float]], target: float) -> int | None:
    """The first label count from which the accuracy stays >= target for ``HOLD`` more batches."""
    for i in range(len(curve) - HOLD):
        if all(accuracy >= target for _, accuracy in curve[i : i + HOLD + 1]):
            return curve[i][0]
    return None


def run(strategy: str, data: Data, fit: Fit, seed: int, target: float, max_labels: int) -> dict[str, Any]:
    """One strategy's learning curve on one seed, until it holds the target or reaches the cap."""
    started = time.perf_counter()
    labelled = starting_labels(data.train_y, seed)
    rng = np.random.default_rng([seed, 2])
    curve: list[tuple[int, float]] = []
    selecting = 0.0
    for round_ in range(10**6):
        model = fit(data.train[labelled], data.train_y[labelled], seed)
        curve.append((len(labelled), round(model.accuracy(data.test, data.test_y), 4)))
        if held_from(curve, target) is not None or len(labelled) >= max_labels or len(labelled) == len(data.train):
            break
        picking = time.perf_counter()
        batch = choose(strategy, data, model, labelled, rng, seed=1000 * seed + round_)
        selecting += time.perf_counter() - picking
        labelled = np.concatenate([labelled, batch])
    return {
        "labels_to_target": held_from(curve, target),
        "curve": curve,
        "seconds": round(time.perf_counter() - started, 1),
        "selection_seconds_per_batch": round(selecting / max(1, len(curve) - 1), 3),
    }


def cold_start(data: Data, fit: Fit, seeds: list[int]) -> dict[str, Any]:
    """Test accuracy from 154 labels: chosen with no model, drawn at random, and 2 per intent."""
    n = START_PER_INTENT * len(data.intents)
    out: dict[str, list[float]] = {"driftpilot": [], "random": [], "two_per_intent": []}
    for seed in seeds:
        chosen = {
            "driftpilot": select_for_labels(data.train, None, n, seed=seed).indices,
            "random": np.random.default_rng([seed, 3]).choice(len(data.train), n, replace=False),
            "two_per_intent": starting_labels(data.train_y, seed),
        }
        for name, rows in chosen.items():
            model = fit(data.train[rows], data.train_y[rows], seed)
            # A row set that misses intents still scores on all of them: a missed intent is all wrong.
            out[name].append(round(model.accuracy(data.test, data.test_y), 4))
    return {
        "labels": n,
        "accuracy": {name: round(float(np.mean(values)), 4) for name, values in out.items()},
        "intents_covered": {
            "driftpilot": float(
                np.mean([len(set(data.train_y[select_for_labels(data.train, None, n, seed=s).indices])) for s in seeds])
            )
        },
        "per_seed": out,
    }


#: The emerging-intents stream: rows before the first window, labels drawn at random among them,
#: rows a window, labels a window (a tenth), and the recall a new intent must reach.
WARMUP_ROWS, WARMUP_LABELS, WINDOW, WINDOW_LABELS, RECALL = 1000, 200, 250, 50, 0.8
#: The label pool: the unlabelled queries among this many most recent ones.
RECENT_ROWS = 1000
#: Share of labelled rows whose nearest labelled neighbour is farther than the novelty threshold.
NOVELTY_QUANTILE = 0.05
EMERGING_STRATEGIES = (
    "driftpilot",
    "driftpilot+novel",
    "driftpilot+new-class",
    "expansion",
    "expansion+new-class",
    "random",
    "margin",
)
#: Most of a window's labels asked around the clusters of unknown queries (the rest by driftpilot's
#: selection): half, the neutral split, as for the drifted slice of ``select_for_labels``.
EXPANSION_SHARE = 0.5


def novel_rows(window: np.ndarray, labelled: np.ndarray) -> np.ndarray:
    """Rows of ``window`` unlike any labelled row: their nearest labelled row is less similar
    than the nearest other labelled row is for all but ``NOVELTY_QUANTILE`` of labelled rows."""
    inside = labelled @ labelled.T
    np.fill_diagonal(inside, -np.inf)
    threshold = np.quantile(inside.max(axis=1), NOVELTY_QUANTILE)
    return (window @ labelled.T).max(axis=1) < threshold


def near_new_class(window: np.ndarray, labelled: np.ndarray, new_class: np.ndarray) -> np.ndarray:
    """Rows of ``window`` whose most similar labelled row is of a class the first model did not know."""
    return new_class[np.argmax(window @ labelled.T, axis=1)]


def emerging_run(strategy: str, data: Data, fit: Fit, vectors: dict[str, np.ndarray], seed: int) -> dict[str, Any]:
    """Labels spent, from each new intent's first query on, until its test recall reaches ``RECALL``."""
    from driftpilot.scenarios.banking import Banking77Stream, BankingStreamConfig

    queries = pd.DataFrame({"text": data.train_texts, "intent": [data.intents[i] for i in data.train_y]})
    stream = Banking77Stream(BankingStreamConfig(seed=seed)).build(queries)
    x = np.stack([vectors[t] for t in stream["text"]])
    number = {name: i for i, name in enumerate(data.intents)}
    y = stream["intent"].map(number).to_numpy()
    first_row = {int(c): int(np.flatnonzero(y == c)[0]) for c in np.unique(y)}
    emerging = sorted((c for c, row in first_row.items() if row >= WARMUP_ROWS), key=first_row.__getitem__)
    rng = np.random.default_rng([seed, 4])
    warmup = rng.choice(WARMUP_ROWS, WARMUP_LABELS, replace=False)
    labelled = warmup.tolist()
    spent = {c: 0 for c in emerging}
    reached: dict[int, int] = {}
    model = fit(x[labelled], y[labelled], seed)
    texts = stream["text"].tolist()
    shown: list[dict[str, Any]] = []
    for round_, start in enumerate(range(WARMUP_ROWS, len(stream), WINDOW)):
        window = np.arange(start, min(start + WINDOW, len(stream)))
        # The pool: the unlabelled queries among the most recent RECENT_ROWS (the curator's window).
        rows = np.setdiff1d(np.arange(max(0, window[-1] + 1 - RECENT_ROWS), window[-1] + 1), labelled)
        n = min(WINDOW_LABELS, len(rows))
        if strategy == "random":
            batch = rng.choice(rows, n, replace=False)
        else:
            probabilities = model.predict_proba(x[rows])
            if strategy == "margin":
                batch = rows[np.argsort(-uncertainty_scores(probabilities), kind="stable")[:n]]
            else:
                asked = np.zeros(0, dtype=np.int64)
                if strategy.startswith("expansion"):
                    asked, clusters = expansion_picks(x, y, texts, rows, labelled, model, probabilities, n, seed)
                    shown += [c | {"window": round_} for c in clusters]
                drifted = None
                keep = ~np.isin(rows, asked)
                left = rows[keep]
                if strategy == "driftpilot+novel":
                    drifted = novel_rows(x[left], x[labelled])
                elif strategy.endswith("+new-class"):
                    drifted = near_new_class(x[left], x[labelled], np.isin(y[labelled], y[warmup], invert=True))
                chosen = select_for_labels(
                    x[left],
                    probabilities[keep],
                    n - len(asked),
                    labelled=x[labelled],
                    drifted=drifted,
                    seed=1000 * seed + round_,
                )
                batch = np.concatenate([asked, left[chosen.indices]])
        labelled += batch.tolist()
        model = fit(x[labelled], y[labelled], seed)
        predicted = model.predict(data.test)
        for c in emerging:
            # Every label of the window in which the intent first shows up, and of every later one.
            if c in reached or first_row[c] > window[-1]:
                continue
            spent[c] += n
            if float((predicted[data.test_y == c] == c).mean()) >= RECALL:
                reached[c] = spent[c]
    out: dict[str, Any] = {
        "labels_spent": {data.intents[c]: reached.get(c) for c in emerging},
        "spent_by_end": {data.intents[c]: spent[c] for c in emerging},
    }
    if strategy.startswith("expansion"):
        for cluster in shown:
            cluster["oracle_name"] = data.intents[cluster["oracle_name"]]
        out["clusters"] = shown
    return out


def expansion_picks(
    x: np.ndarray,
    y: np.ndarray,
    texts: list[str],
    rows: np.ndarray,
    labelled: list[int],
    model: Model,
    probabilities: np.ndarray,
    n: int,
    seed: int,
) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Labels asked around the clusters of the pool's unknown queries, and what a person was shown.

    The person is an oracle: each cluster is named by the majority true intent of its members, a
    new intent when no labelled query has it yet, else merged into that old one (a real person
    reads the examples and may err). Either way the labels asked around it are counted like any
    other; naming one costs none. Up to ``EXPANSION_SHARE`` of the window's labels go around the
    clusters, largest first, shared evenly and at most a cluster's size each.
    """
    # As the Curator judges unknown (driftpilot.agents.expansion): by distance alone, beyond the
    # reach of 9 in 10 of each class's labelled queries, classes by the labels people gave.
    classes = np.unique(y[labelled])
    members = (y[labelled][:, None] == classes[None, :]).astype(float)
    unknown = rows[
        unknown_queries(
            x[rows],
            probabilities,
            x[labelled],
            confidence=None,
            far_quantile=CURATOR_FAR_QUANTILE,
            labelled_probabilities=members,
        )
    ]
    clusters = cluster_unknown(
        x[unknown], [texts[i] for i in unknown], seed=seed, background_texts=[texts[i] for i in labelled]
    )
    known = set(y[labelled].tolist())
    budget = int(round(EXPANSION_SHARE * n))
    asked: list[int] = []
    shown = []
    for i, cluster in enumerate(clusters):
        members = y[unknown[cluster.members]]
        name = int(np.bincount(members).argmax())
        k = min(len(cluster), -(-(budget - len(asked)) // (len(clusters) - i)))
        near = around(cluster, x, np.setdiff1d(rows, asked), k)
        asked += near.tolist()
        shown.append(
            {
                "suggested_name": cluster.suggested_name,
                "size": len(cluster),
                "cohesion": round(cluster.cohesion, 3),
                "oracle_name": name,
                "purity": round(float((members == name).mean()), 3),
                "new_intent": name not in known,
                "asked": len(near),
                "asked_of_oracle_intent": int((y[near] == name).sum()),
            }
        )
    return np.asarray(asked, dtype=np.int64), shown


def emerging(data: Data, fit: Fit, seeds: list[int], strategies: list[str]) -> dict[str, Any]:
    vectors = dict(zip(data.train_texts, data.train, strict=True))
    per_strategy: dict[str, Any] = {}
    for strategy in strategies:
        started = time.perf_counter()
        runs = [emerging_run(strategy, data, fit, vectors, seed) for seed in seeds]
        values = [v for r in runs for v in r["labels_spent"].values()]
        reached = [v for v in values if v is not None]
        # An intent that never reaches the recall before the stream ends counts as never (infinite).
        median = float(np.median([np.inf if v is None else v for v in values]))
        per_strategy[strategy] = {
            "median_labels": None if np.isinf(median) else median,
            "median_labels_of_those_reached": float(np.median(reached)) if reached else None,
            "reached": len(reached),
            "intents": len(values),
            "seconds": round(time.perf_counter() - started, 1),
            "runs": runs,
        }
        if strategy.startswith("expansion"):
            per_strategy[strategy]["clusters"] = clusters_shown(runs)
        print(f"emerging {strategy}: median {median:.0f} labels, {len(reached)}/{len(values)} reached", flush=True)
    return per_strategy


def clusters_shown(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """What the person was shown over the runs: clusters per window, how many were new intents, how
    pure they were, and how many of the labels asked around them were of the intent they were named."""
    clusters = [c for r in runs for c in r["clusters"]]
    windows = sum(len({c["window"] for c in r["clusters"]}) for r in runs)
    asked = sum(c["asked"] for c in clusters)
    of_named = sum(c["asked_of_oracle_intent"] for c in clusters)
    new_intents = {(i, c["oracle_name"]) for i, r in enumerate(runs) for c in r["clusters"] if c["new_intent"]}
    return {
        "shown": len(clusters),
        "windows_with_clusters": windows,
        "per_window_with_clusters": round(len(clusters) / windows, 2) if windows else None,
        "named_new_intent": sum(c["new_intent"] for c in clusters),
        "new_intents_named": len(new_intents),
        "median_purity": float(np.median([c["purity"] for c in clusters])) if clusters else None,
        "labels_asked_around": asked,
        "share_of_named_intent": round(of_named / asked, 3) if asked else None,
    }


def summarise(runs: dict[str, list[dict[str, Any]]], seeds: list[int]) -> dict[str, Any]:
    labels: dict[str, float | None] = {}
    per_seed: dict[str, list[int | None]] = {}
    for strategy, results in runs.items():
        reached = [r["labels_to_target"] for r in results]
        per_seed[strategy] = reached
        labels[strategy] = None if None in reached else round(float(np.mean(reached)), 1)
    ratios: dict[str, float | None] = {}
    per_seed_ratios: dict[str, list[float | None]] = {}
    for strategy in runs:
        if strategy == "random" or "random" not in runs:
            continue
        base, own = labels["random"], labels[strategy]
        ratios[f"{strategy}/random"] = None if base is None or own is None else round(own / base, 3)
        per_seed_ratios[f"{strategy}/random"] = [
            None if a is None or b is None else round(a / b, 3)
            for a, b in zip(per_seed[strategy], per_seed["random"], strict=True)
        ]
    return {
        "labels_to_97pct": labels,
        "labels_to_97pct_per_seed": per_seed,
        "ratio_to_random": ratios,
        "ratio_to_random_per_seed": per_seed_ratios,
    }


def mean_curves(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, list[float]]]:
    """Each strategy's accuracy by label count, mean over seeds; a seed's curve that stopped
    (it held the target) counts with its last accuracy from there on."""
    out = {}
    for strategy, results in runs.items():
        longest = max(len(r["curve"]) for r in results)
        grid = [n for n, _ in max((r["curve"] for r in results), key=len)]
        padded = [[a for _, a in r["curve"]] + [r["curve"][-1][1]] * (longest - len(r["curve"])) for r in results]
        out[strategy] = {"labels": grid, "accuracy": [round(float(v), 4) for v in np.mean(padded, axis=0)]}
    return out


def plot(results: dict[str, Any], path: Path) -> bool:
    """The mean curves as a PNG; False when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    figure, axes = plt.subplots(figsize=(8, 5))
    for strategy, curve in results["curves"].items():
        reached = results["labels_to_97pct"][strategy]
        label = f"{strategy} ({'not reached' if reached is None else f'{reached:,.0f} labels'})"
        axes.plot(curve["labels"], curve["accuracy"], marker=".", label=label)
    axes.axhline(results["target_accuracy"], color="grey", linestyle="--", linewidth=1)
    axes.axhline(results["full_data_accuracy"], color="grey", linestyle=":", linewidth=1)
    axes.set_ylim(top=results["full_data_accuracy"] + 0.01)
    left = axes.get_xlim()[0]
    axes.text(left, results["target_accuracy"], "  97 % of full data", va="top", fontsize=8, color="grey")
    axes.text(left, results["full_data_accuracy"], "  full data", va="bottom", fontsize=8, color="grey")
    axes.set_xlabel("labelled training queries")
    axes.set_ylabel("test accuracy (mean over seeds)")
    axes.set_title(f"Banking77, {results['classifier']}: labels to 97 % of full-data accuracy")
    axes.grid(alpha=0.3)
    axes.legend(loc="lower right")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return True


def markdown(results: dict[str, Any]) -> str:
    def shown(value: float | None) -> str:
        return "not reached" if value is None else f"{value:,.0f}"

    lines = [
        "# Label efficiency of active learning (Banking77)",
        "",
        f"Classifier: {results['classifier']}; full-data test accuracy {results['full_data_accuracy']:.4f}, "
        f"target {results['target_accuracy']:.4f} (97 %). Start: {START_PER_INTENT} labels per intent "
        f"({results['start_labels']}); batches of {BATCH}; seeds {results['seeds']}; a curve stops once it "
        f"has held the target for {HOLD} more batches, or at {results['max_labels']:,} labels.",
        "",
        "| strategy | labels to 97 % (mean) | per seed | / random | selection s / batch |",
        "| --- | ---: | --- | ---: | ---: |",
    ]
    for strategy in results["labels_to_97pct"]:
        per_seed = ", ".join(shown(v) for v in results["labels_to_97pct_per_seed"][strategy])
        ratio = results["ratio_to_random"].get(f"{strategy}/random")
        seconds = np.mean([r["selection_seconds_per_batch"] for r in results["runs"][strategy]])
        lines.append(
            f"| {strategy} | {shown(results['labels_to_97pct'][strategy])} | {per_seed} | "
            f"{'1.00' if strategy == 'random' else ('-' if ratio is None else f'{ratio:.2f}')} | {seconds:.2f} |"
        )
    goal = results["goal"]
    measured = "-" if goal["value"] is None else f"{goal['value']:.1%}"
    lines += [
        "",
        f"Goal: {goal['goal']}: measured {measured}, {'met' if goal['met'] else 'not met'}.",
        "",
        "Mean test accuracy by labels (a seed that stopped counts with its last accuracy):",
        "",
    ]
    curves = results["curves"]
    grid = sorted({n for c in curves.values() for n in c["labels"]})
    lines += ["| labels | " + " | ".join(curves) + " |", "| ---: |" + " ---: |" * len(curves)]
    for n in grid:
        row = []
        for curve in curves.values():
            row.append(f"{curve['accuracy'][curve['labels'].index(n)]:.4f}" if n in curve["labels"] else "")
        lines.append(f"| {n:,} | " + " | ".join(row) + " |")
    cold = results.get("cold_start")
    if cold:
        lines += [
            "",
            f"Cold start: test accuracy from {cold['labels']} labels, mean over seeds.",
            "",
            "| chosen how | test accuracy |",
            "| --- | ---: |",
            f"| driftpilot, no model (representative queries; {cold['intents_covered']['driftpilot']:.1f} "
            f"intents covered) | {cold['accuracy']['driftpilot']:.4f} |",
            f"| at random | {cold['accuracy']['random']:.4f} |",
            f"| 2 per intent (needs the labels; the curves' start) | {cold['accuracy']['two_per_intent']:.4f} |",
        ]
    if results.get("emerging"):
        lines += ["", *emerging_markdown(results["emerging"])]
    if results.get("png"):
        lines += ["", f"![curves]({results['png']})"]
    lines.append("")
    lines.append(f"Run time: {results['seconds']:.0f} s.")
    return "\n".join(lines)


def classifier_name(classifier: str) -> str:
    if classifier == "intent_mlp":
        return "intent_mlp (the family's default: a linear head)"
    return classifier if classifier != "logistic" else f"logistic regression, C={LOGISTIC_C:g}"


def emerging_markdown(new: dict[str, Any]) -> list[str]:
    """The emerging-intents table, and what the expansion strategies showed a person."""
    lines = [
        f"Emerging intents: the Banking77 stream of the training split (50 intents at first, 27 emerging), "
        f"{WARMUP_LABELS} labels drawn at random among its first {WARMUP_ROWS:,} queries, then "
        f"{WINDOW_LABELS} labels asked per window of {WINDOW} queries, among the unlabelled ones of the last "
        f"{RECENT_ROWS:,} queries, the classifier retrained after each. Labels spent from a new intent's "
        f"first window until its test recall reaches {RECALL:.0%}, over the new intents of every seed "
        "(one that never does before the stream ends counts as never). The drifted slice given to "
        "driftpilot: none; +novel: the queries unlike any labelled one (farther than all but "
        f"{NOVELTY_QUANTILE:.0%} of labelled queries are from their nearest labelled neighbour); "
        "+new-class: the queries whose most similar labelled query is of an intent the first model did "
        "not know (what a 'new classes' finding names). expansion: the window's unknown queries "
        "(as the Curator judges them: farther from every labelled class centre than 9 in 10 of the class's "
        "labelled queries) are clustered, a "
        "person names each cluster (an oracle: the majority true intent of its members), and up to "
        f"{EXPANSION_SHARE:.0%} of the window's labels are asked around the clusters' centres, the rest "
        "by driftpilot's selection (expansion+new-class: with the +new-class slice).",
        "",
        "| strategy | labels to 80 % recall, median | median of those that reached it | reached it |",
        "| --- | ---: | ---: | ---: |",
    ]
    for strategy, row in new.items():
        median, among = row["median_labels"], row["median_labels_of_those_reached"]
        lines.append(
            f"| {strategy} | {'not reached' if median is None else f'{median:.0f}'} | "
            f"{'-' if among is None else f'{among:.0f}'} | {row['reached']} of {row['intents']} |"
        )
    shown = {strategy: row["clusters"] for strategy, row in new.items() if "clusters" in row}
    if shown:
        lines += [
            "",
            "What the person was shown (over all seeds):",
            "",
            "| strategy | clusters | per window shown | named a new intent | new intents named | "
            "median purity | labels asked around | of the named intent |",
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for strategy, c in shown.items():
            share = "-" if c["share_of_named_intent"] is None else f"{c['share_of_named_intent']:.0%}"
            purity = "-" if c["median_purity"] is None else f"{c['median_purity']:.2f}"
            lines.append(
                f"| {strategy} | {c['shown']} | {c['per_window_with_clusters'] or 0:.1f} | {c['named_new_intent']} | "
                f"{c['new_intents_named']} | {purity} | {c['labels_asked_around']} | {share} |"
            )
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one seed (0)")
    parser.add_argument("--seeds", default="0,1,2,3,4")
    parser.add_argument("--strategies", default=",".join(STRATEGIES))
    parser.add_argument("--classifier", choices=sorted(CLASSIFIERS), default="logistic")
    parser.add_argument("--max-labels", type=int, default=6000, help="where a curve stops if it never holds the target")
    parser.add_argument("--threads", type=int, default=1, help="BLAS / OpenMP threads (the machine is shared)")
    parser.add_argument("--no-cold-start", dest="cold", action="store_false", help="skip the cold-start table")
    parser.add_argument(
        "--no-emerging", dest="emerging", action="store_false", help="skip the emerging-intents stream table"
    )
    parser.add_argument(
        "--emerging-only",
        action="store_true",
        help="only the emerging-intents stream table; its JSON and Markdown are written only with --out",
    )
    parser.add_argument("--emerging-strategies", default=",".join(EMERGING_STRATEGIES))
    parser.add_argument("--out", default=None, help=f"folder of the JSON, Markdown and PNG (default {RESULTS})")
    args = parser.parse_args(argv)
    from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]

    threadpool_limits(args.threads)
    if args.classifier == "intent_mlp":
        import torch

        torch.set_num_threads(args.threads)
    started = time.perf_counter()
    seeds = [0] if args.quick else [int(s) for s in args.seeds.split(",")]
    strategies = [s.strip() for s in args.strategies.split(",") if s.strip()]
    emerging_strategies = [s.strip() for s in args.emerging_strategies.split(",") if s.strip()]
    unknown = sorted(set(emerging_strategies) - set(EMERGING_STRATEGIES))
    if unknown:
        parser.error(f"unknown emerging strategies {unknown}; choose among {', '.join(EMERGING_STRATEGIES)}")
    data = load(args.quick)
    fit = CLASSIFIERS[args.classifier]
    if args.emerging_only:
        return emerging_only(data, fit, seeds, emerging_strategies, args, started)
    full = fit(data.train, data.train_y, 0).accuracy(data.test, data.test_y)
    target = TARGET_SHARE * full
    print(f"full-data accuracy {full:.4f}; target {target:.4f}", flush=True)
    runs: dict[str, list[dict[str, Any]]] = {}
    for strategy in strategies:
        runs[strategy] = []
        for seed in seeds:
            result = run(strategy, data, fit, seed, target, args.max_labels)
            runs[strategy].append(result)
            print(
                f"{strategy} seed {seed}: {result['labels_to_target']} labels ({result['seconds']:.0f} s)", flush=True
            )
    results: dict[str, Any] = {
        "classifier": classifier_name(args.classifier),
        "seeds": seeds,
        "quick": args.quick,
        "batch": BATCH,
        "start_labels": len(starting_labels(data.train_y, 0)),
        "max_labels": args.max_labels,
        "hold_batches": HOLD,
        "pool": len(data.train),
        "test": len(data.test),
        "full_data_accuracy": round(full, 4),
        "target_accuracy": round(target, 4),
    }
    results |= summarise(runs, seeds)
    ratio = results["ratio_to_random"].get("driftpilot/random")
    results["goal"] = {
        "goal": f"driftpilot needs at most {GOAL:.0%} of random's labels",
        "value": ratio,
        "met": ratio is not None and ratio <= GOAL,
    }
    results["curves"] = mean_curves(runs)
    if args.cold:
        results["cold_start"] = cold_start(data, fit, seeds)
    if args.emerging:
        results["emerging"] = emerging(data, fit, seeds, emerging_strategies)
    results["runs"] = runs
    out = Path(args.out or RESULTS)
    out.mkdir(parents=True, exist_ok=True)
    suffix = ("_quick" if args.quick else "") + ("" if args.classifier == "logistic" else f"_{args.classifier}")
    png = out / f"label_efficiency{suffix}.png"
    results["png"] = png.name if plot(results, png) else None
    results["seconds"] = round(time.perf_counter() - started, 1)
    text = markdown(results)
    print(text)
    (out / f"label_efficiency{suffix}.json").write_text(json.dumps(results, indent=2, default=float))
    (out / f"label_efficiency{suffix}.md").write_text(text + "\n")
    return 0


def emerging_only(
    data: Data, fit: Fit, seeds: list[int], strategies: list[str], args: argparse.Namespace, started: float
) -> int:
    """The emerging-intents table alone: printed, and written only into an ``--out`` folder given
    (a partial run must not overwrite the full run's record in evals/results/)."""
    new = emerging(data, fit, seeds, strategies)
    text = "\n".join(["# Emerging intents (Banking77 stream)", "", *emerging_markdown(new)])
    print(text)
    if args.out:
        results = {
            "classifier": classifier_name(args.classifier),
            "seeds": seeds,
            "quick": args.quick,
            # The table's figures; each seed's per-intent labels and clusters shown (250 KB for
            # five seeds) go to evals/out/, outside the committed results.
            "emerging": {strategy: {k: v for k, v in row.items() if k != "runs"} for strategy, row in new.items()},
            "seconds": round(time.perf_counter() - started, 1),
        }
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        suffix = ("_quick" if args.quick else "") + ("" if args.classifier == "logistic" else f"_{args.classifier}")
        runs = {strategy: row.get("runs") for strategy, row in new.items()}
        RUNS_DIR.mkdir(parents=True, exist_ok=True)
        (RUNS_DIR / f"label_efficiency_emerging{suffix}_runs.json").write_text(json.dumps(runs, default=float))
        (out / f"label_efficiency_emerging{suffix}.json").write_text(json.dumps(results, indent=2, default=float))
        (out / f"label_efficiency_emerging{suffix}.md").write_text(text + "\n")
        print(f"written: {out / f'label_efficiency_emerging{suffix}.json'} and .md", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
