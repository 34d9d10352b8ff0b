"""How a federated round's updates are combined, chosen from evidence and policy.

- **FedAvg** (McMahan et al., 2017): the nodes' weights averaged by their rows.
- **FedProx** (Li et al., 2020) when the nodes' data differ: each node's loss gains a proximal term
  that keeps it near the round's model. "Differ" is read off a first evaluation of the starting
  model on every node, before any training: how far each node's label mix is from the pooled one
  (mean total-variation distance above :data:`HETEROGENEOUS_LABELS`), how far its inputs are
  (the mean of each of the model's standardised inputs on the node against the pooled mean: a
  gap above :data:`HETEROGENEOUS_INPUTS` standard deviations, Cohen's "small" effect, on average
  over the nodes), or how far apart the model's accuracy on the nodes is (spread above
  :data:`HETEROGENEOUS_ACCURACY`).
- **Robust aggregation** when a node's update is out of line. Every round each update is
  screened. When the server holds labelled rows of its own (the Trainer's holdout), each node's
  update is applied alone to the round's model and the accuracy it costs there is scored: a
  modified z-score above :data:`OUTLIER_Z` (Iglewicz and Hoaglin's 3.5, on the median absolute
  deviation) flags it. Without such rows the update's distance to the coordinate-wise median
  update is scored instead. Under ``auto`` a flagged node is left out of that round's aggregate,
  and from the first flag on the round is aggregated with Flower's FedTrimmedAvg, which bounds
  what an update that screening misses can do. Named strategies (``fedmedian``,
  ``fedtrimmedavg``, ``krum``) are Flower's own; they report flags too.

Every round leaves a :class:`RoundRecord`: the strategy, the nodes with their rows and metrics,
the spread of the metrics, the flagged nodes, the nodes dropped and why (an error, no reply, or
weights of the wrong shape or not finite), and the bytes sent and received.

Secure aggregation (SecAgg+) is not offered: in flwr it is a workflow of the legacy strategy
API, not of these message strategies, and it hides each node's update from the server, which
the screening above needs to see.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, cast

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Message, MetricRecord
from flwr.serverapp import Grid
from flwr.serverapp.strategy import FedAvg, FedMedian, FedTrimmedAvg, Krum, Strategy

#: The strategies a policy may name; ``auto`` chooses among them from the evidence.
STRATEGIES = ("auto", "fedavg", "fedprox", "fedmedian", "fedtrimmedavg", "krum")
#: Mean total-variation distance between a node's label mix and the pooled one above which the
#: nodes' data are said to differ (a tenth of the rows would have to change class).
HETEROGENEOUS_LABELS = 0.1
#: ... or mean over the nodes of the largest gap between a node's mean of an input (as the model
#: encodes it: standardised numbers, one-hot categories) and the pooled mean, above this.
HETEROGENEOUS_INPUTS = 0.2
#: ... or spread (highest minus lowest) of the starting model's accuracy on the nodes above this.
HETEROGENEOUS_ACCURACY = 0.1
#: FedProx's proximal strength (Li et al. found 0.01-1 best across their benchmarks).
PROXIMAL_MU = 0.1
#: Modified z-score above which an update is out of line (Iglewicz and Hoaglin, 1993).
OUTLIER_Z = 3.5
#: The least spread of the nodes' harm (in accuracy, see :func:`flag_outliers`) it is scored
#: against: when honest updates agree to a tenth of a point, one point is still no outlier.
HARM_SCALE_FLOOR = 0.01
#: Fewest updates a round screens: with fewer, a median says little about what is normal.
SCREEN_MIN_NODES = 4
#: Share trimmed from each end by FedTrimmedAvg.
TRIM_BETA = 0.2


@dataclass(frozen=True)
class Choice:
    """The strategy a run starts with, its proximal strength, and why."""

    strategy: str
    proximal_mu: float
    reasons: list[str]
    evidence: dict[str, Any]
    #: Whether a flagged node is left out of the aggregate (``auto``); a named strategy only
    #: reports its flags.
    exclude_outliers: bool = False


def choose(requested: str, nodes: dict[str, dict[str, Any]]) -> Choice:
    """The strategy to start with: ``requested`` unless it is ``auto``, then from ``nodes`` (per
    node, the starting model's ``accuracy`` and the node's ``class-counts``)."""
    if requested not in STRATEGIES:
        raise ValueError(f"unknown federated strategy {requested!r}; known: {', '.join(STRATEGIES)}")
    evidence = heterogeneity(nodes)
    if requested != "auto":
        mu = PROXIMAL_MU if requested == "fedprox" else 0.0
        return Choice(requested, mu, [f"the policy names {requested}"], evidence)
    tv, shift, spread = evidence["label_distance"], evidence["input_shift"], evidence["accuracy_spread"]
    seen = (
        f"label mix {tv:.3f} from the pooled one on average (limit {HETEROGENEOUS_LABELS}), inputs "
        f"{shift:.3f} standard deviations (limit {HETEROGENEOUS_INPUTS}), accuracy spread {spread:.3f} "
        f"(limit {HETEROGENEOUS_ACCURACY})"
    )
    if tv > HETEROGENEOUS_LABELS or shift > HETEROGENEOUS_INPUTS or spread > HETEROGENEOUS_ACCURACY:
        why = f"the nodes' data differ ({seen}): FedProx with mu {PROXIMAL_MU} keeps each node near the round's model"
        return Choice("fedprox", PROXIMAL_MU, [why], evidence, exclude_outliers=True)
    return Choice("fedavg", 0.0, [f"the nodes' data look alike ({seen}): FedAvg"], evidence, exclude_outliers=True)


def heterogeneity(nodes: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """How far the nodes' data are apart (see the module's docstring): the label mixes, the
    inputs, and the starting model's accuracy on each node."""
    sizes = {n: float(r.get("num-rows", 0) or sum(r.get("class-counts", []))) for n, r in nodes.items()}
    counts = {n: np.asarray(r.get("class-counts", []), dtype=float) for n, r in nodes.items()}
    counts = {n: c for n, c in counts.items() if c.size and c.sum() > 0}
    tv = 0.0
    if counts:
        pooled = np.sum(list(counts.values()), axis=0)
        pooled = pooled / pooled.sum()
        tv = float(np.mean([0.5 * np.abs(c / c.sum() - pooled).sum() for c in counts.values()]))
    means = {n: np.asarray(r["input-means"], dtype=float) for n, r in nodes.items() if len(r.get("input-means", []))}
    shift = 0.0
    if means and sum(sizes[n] for n in means) > 0:
        pooled_means = np.average(np.stack(list(means.values())), axis=0, weights=[sizes[n] for n in means])
        shift = float(np.mean([np.abs(m - pooled_means).max() for m in means.values()]))
    accuracies = [float(r["accuracy"]) for r in nodes.values() if not math.isnan(float(r.get("accuracy", math.nan)))]
    spread = max(accuracies) - min(accuracies) if accuracies else 0.0
    return {
        "label_distance": round(tv, 4),
        "input_shift": round(shift, 4),
        "accuracy_spread": round(spread, 4),
        "nodes": len(nodes),
    }


def modified_z(values: dict[str, float], *, floor: float) -> dict[str, float]:
    """Each value's distance above the median in robust standard deviations (1.4826 median
    absolute deviations, at least ``floor``): Iglewicz and Hoaglin's modified z-score, one-sided.
    Written out rather than taken from a library: it is three lines of NumPy."""
    centre = float(np.median(list(values.values())))
    mad = float(np.median([abs(v - centre) for v in values.values()]))
    scale = max(1.4826 * mad, floor)
    return {n: round((v - centre) / scale, 3) for n, v in values.items()}


def flag_outliers(
    updates: dict[str, list[np.ndarray]], harm: dict[str, float] | None = None
) -> tuple[list[str], dict[str, float]]:
    """The nodes whose update is out of line, and every node's modified z-score.

    With ``harm`` (per node, how many points of accuracy the round's model loses on the
    server's own labelled rows when that node's update alone is applied to it) an update is out
    of line when it harms far more than the others' do: a node whose data merely differ (a
    region with a failure the others never see) changes the model without breaking what it
    knows; one with wrong labels breaks it. Without rows at the server, the update's distance to
    the coordinate-wise median update is scored instead, which cannot tell those two apart.
    """
    if len(updates) < SCREEN_MIN_NODES:
        return [], {}
    names = list(updates)
    if harm is not None:
        z = modified_z({n: harm[n] for n in names}, floor=HARM_SCALE_FLOOR)
        return [n for n in names if z[n] > OUTLIER_Z and harm[n] > 0], z
    flat = np.stack([np.concatenate([a.ravel() for a in updates[n]]) for n in names])
    distance = np.linalg.norm(flat - np.median(flat, axis=0), axis=1)
    z = modified_z(dict(zip(names, distance.tolist(), strict=True)), floor=1e-12)
    return [n for n in names if z[n] > OUTLIER_Z], z


def dp_epsilon(noise_multiplier: float, rounds: int, delta: float) -> float:
    """ε of ``rounds`` Gaussian mechanisms at ``noise_multiplier`` with every node taking part,
    by Rényi differential privacy (Mironov, 2017): ε = min over α of ``rounds·α/(2σ²) +
    log(1/δ)/(α−1)``. Written here because flwr applies the noise but keeps no accountant, and
    full participation needs no subsampling amplification (what Opacus's accountant adds)."""
    if noise_multiplier <= 0:
        return math.inf
    alphas = np.concatenate([np.linspace(1.01, 10, 200), np.linspace(10, 1000, 500)])
    eps = rounds * alphas / (2 * noise_multiplier**2) + math.log(1 / delta) / (alphas - 1)
    return float(eps.min())


@dataclass
class RoundRecord:
    """What one round did, for the decision log."""

    round: int
    strategy: str
    nodes: dict[str, dict[str, Any]] = field(default_factory=dict)
    dropped: dict[str, str] = field(default_factory=dict)
    outliers: list[str] = field(default_factory=list)
    excluded: list[str] = field(default_factory=list)
    spread: dict[str, dict[str, float]] = field(default_factory=dict)
    bytes_sent: int = 0
    bytes_received: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _spread(nodes: dict[str, dict[str, Any]], keys: Sequence[str]) -> dict[str, dict[str, float]]:
    out = {}
    for key in keys:
        values = [float(r[key]) for r in nodes.values() if key in r and not math.isnan(float(r[key]))]
        if values:
            middle = float(np.median(values))
            out[key] = {"min": round(min(values), 4), "median": round(middle, 4), "max": round(max(values), 4)}
    return out


def _aggregator(name: str, nodes: int) -> Strategy:
    if name == "fedmedian":
        return FedMedian(min_available_nodes=1, min_train_nodes=1)
    if name in ("fedtrimmedavg", "robust"):
        return FedTrimmedAvg(beta=TRIM_BETA, min_available_nodes=1, min_train_nodes=1)
    if name == "krum":
        # Krum tolerates f faulty updates of n when n > 2f + 2.
        return Krum(num_malicious_nodes=max(0, (nodes - 3) // 2), min_available_nodes=1, min_train_nodes=1)
    return FedAvg(min_available_nodes=1, min_train_nodes=1)


class Screened(FedAvg):
    """A strategy that checks every reply before aggregating it, screens the updates for
    outliers, and records each round; the aggregation itself is Flower's (:func:`_aggregator`).

    ``model`` (the model's description, which nodes rebuild it from) travels beside the
    round's configuration, not in it, which Flower logs whole; ``names`` maps Flower's node ids
    to the names the decision log shows; ``check`` scores a set of weights on the server's own
    labelled rows (accuracy), when it has some.
    """

    def __init__(
        self,
        choice: Choice,
        *,
        model: ConfigRecord,
        names: Callable[[int], str],
        seed: int,
        check: Callable[[list[np.ndarray]], float] | None = None,
    ) -> None:
        # The run waits for ``min_nodes`` before its first round (see ``run_rounds``); after that a
        # round goes on with the nodes still connected, rather than wait for one that left.
        super().__init__(min_available_nodes=1, min_train_nodes=1, min_evaluate_nodes=1)
        self.choice = choice
        self.model = model
        self.check = check
        self.names = names
        self.seed = seed
        self.current = choice.strategy
        self.records: list[RoundRecord] = []
        #: The round in progress: the weights it sent and the nodes it asked.
        self._sent: tuple[list[np.ndarray], list[int]] = ([], [])

    def configure_train(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        config["proximal-mu"] = self.choice.proximal_mu
        config["seed"] = self.seed
        messages = list(super().configure_train(server_round, arrays, config, grid))
        for message in messages:
            message.content["model"] = self.model
        self._sent = (arrays.to_numpy_ndarrays(), [m.metadata.dst_node_id for m in messages])
        record = RoundRecord(server_round, self.current)
        record.bytes_sent = int(arrays.count_bytes()) * len(messages)
        self.records.append(record)
        return messages

    def configure_evaluate(
        self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid
    ) -> Iterable[Message]:
        messages = list(super().configure_evaluate(server_round, arrays, config, grid))
        for message in messages:
            message.content["model"] = self.model
        return messages

    def aggregate_train(
        self, server_round: int, replies: Iterable[Message]
    ) -> tuple[ArrayRecord | None, MetricRecord | None]:
        record = self.records[-1]
        start, asked = self._sent
        shapes = [a.shape for a in start]
        valid: dict[str, Message] = {}
        answered = set()
        link_said = []
        for msg in replies:
            if msg.metadata.src_node_id not in asked:
                # The SuperLink answers for a node it lost (its own id as the sender): the reason
                # goes with the nodes that did not answer.
                link_said.append(str(msg.error.reason) if msg.has_error() else "an answer from no node of the round")
                continue
            node = self.names(msg.metadata.src_node_id)
            answered.add(msg.metadata.src_node_id)
            reason = _refusal(msg, shapes)
            if reason:
                record.dropped[node] = reason
                continue
            record.bytes_received += int(msg.content.array_records["arrays"].count_bytes())
            valid[node] = msg
            metrics = msg.content.metric_records["metrics"]
            record.nodes[node] = {k: metrics[k] for k in metrics if k != "class-counts"}
        for node_id in asked:
            if node_id not in answered:
                record.dropped[self.names(node_id)] = "no reply before the round's timeout (the node dropped out)" + (
                    f"; the SuperLink said: {'; '.join(sorted(set(link_said)))}" if link_said else ""
                )
        updates = {
            n: [a - s for a, s in zip(m.content.array_records["arrays"].to_numpy_ndarrays(), start, strict=True)]
            for n, m in valid.items()
        }
        harm = None
        if self.check is not None and updates:
            base = self.check(start)
            harm = {}
            for node, msg in valid.items():
                alone = self.check(msg.content.array_records["arrays"].to_numpy_ndarrays())
                harm[node] = round(base - alone, 4)
                record.nodes[node]["harm"] = harm[node]
        flagged, scores = flag_outliers(updates, harm)
        record.outliers = sorted(flagged)
        for node, z in scores.items():
            record.nodes[node]["outlier-z"] = z
        use = valid
        if self.choice.exclude_outliers and record.outliers:
            record.excluded = sorted(record.outliers)
            use = {n: m for n, m in valid.items() if n not in record.outliers}
            if self.current in ("fedavg", "fedprox"):
                self.current = "fedtrimmedavg"
        record.strategy = self.current
        record.spread = _spread(record.nodes, ("train-loss", "accuracy-before", "accuracy-after"))
        if not use:
            return None, None
        return _aggregator(self.current, len(use)).aggregate_train(server_round, list(use.values()))


def _refusal(msg: Message, shapes: list[tuple[int, ...]]) -> str | None:
    """Why a reply cannot be aggregated, or None."""
    if msg.has_error():
        return f"the node failed: {msg.error.reason}"
    if "arrays" not in msg.content.array_records or "metrics" not in msg.content.metric_records:
        return "the reply carries no weights or no metrics"
    arrays = msg.content.array_records["arrays"].to_numpy_ndarrays()
    got = [a.shape for a in arrays]
    if got != shapes:
        return f"weights of the wrong shape: {got} where the round sent {shapes}"
    if not all(np.isfinite(a).all() for a in arrays):
        return "weights that are not finite (NaN or infinity)"
    if float(cast(float, msg.content.metric_records["metrics"].get("num-examples", 0))) <= 0:
        return "the node trained on no rows"
    return None
