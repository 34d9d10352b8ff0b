"""The ``logistic`` replay baseline: it learns, on the periodic schedule, only labels revealed.

Streams here are small, seeded and far from every threshold: a concept the model either knows
(accuracy near 1) or does not (near a half).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from driftpilot.loop.baselines import BASELINES, PeriodicLogistic, Stream
from driftpilot.loop.replay import ReplayConfig, _baselines

WARMUP, END = 300, 2300


def _stream(seed: int = 0) -> Stream:
    """Two numbers and a colour; the class follows a + b in the warm-up and a - b after it."""
    rng = np.random.default_rng(seed)
    a, b = rng.normal(size=END), rng.normal(size=END)
    colour = rng.choice(["red", "green", "blue"], size=END).astype(object)
    score = np.where(np.arange(END) < WARMUP, a + b, a - b)
    labels = np.where(score > 0, "yes", "no").astype(object)
    return Stream(
        {"a": a, "b": b, "colour": colour}, labels, [("a", "number"), ("b", "number"), ("colour", "category")]
    )


def _reveals(positions: range | list[int], delay: int) -> dict[int, list[int]]:
    """Each label revealed ``delay`` rows after its row."""
    revealed: dict[int, list[int]] = {}
    for p in positions:
        revealed.setdefault(p + delay, []).append(p)
    return revealed


def _logistic(stream: Stream, *, every: int = 500, window: int = 300) -> PeriodicLogistic:
    """Built as the replay builds it: the warm-up's labels given, then its first fit on them."""
    baseline = PeriodicLogistic(start=WARMUP, every=every, window=window)
    baseline.learn(stream, list(range(WARMUP)))
    return baseline.fit(stream, list(range(WARMUP)))


def _run(baseline: PeriodicLogistic, stream: Stream, revealed: dict[int, list[int]], chunk: int) -> np.ndarray:
    parts = [baseline.run(stream, start, min(END, start + chunk), revealed) for start in range(WARMUP, END, chunk)]
    return np.concatenate(parts)


def _accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    return float((predicted == labels).mean())


def test_logistic_is_a_replay_baseline_by_default() -> None:
    assert "logistic" in BASELINES
    assert PeriodicLogistic.name == "logistic"


def test_logistic_learns_the_new_concept_at_its_first_retrain() -> None:
    # Prepare: the warm-up teaches a + b; from row 300 the class follows a - b (uncorrelated).
    stream = _stream()
    baseline = _logistic(stream, every=500, window=300)
    revealed = _reveals(range(WARMUP, END), delay=20)

    # Execute
    predicted = _run(baseline, stream, revealed, chunk=100)

    # Assert: the warm-up's concept is useless after the flip; the first retrain (row 800, on the
    # 300 labels revealed before it, all of the new concept) learns the new one.
    before, after = slice(0, 500), slice(500, END - WARMUP)
    labels = stream.labels[WARMUP:END]
    assert _accuracy(predicted[before], labels[before]) < 0.7
    assert _accuracy(predicted[after], labels[after]) > 0.9


def test_logistic_retrains_on_its_schedule_however_the_stream_is_chunked() -> None:
    # Prepare
    stream = _stream()
    revealed = _reveals(range(WARMUP, END), delay=20)
    small, whole = _logistic(stream, every=250), _logistic(stream, every=250)

    # Execute: chunks that straddle the schedule, and the whole stream in one chunk.
    by_small_chunks = _run(small, stream, revealed, chunk=77)
    at_once = _run(whole, stream, revealed, chunk=END - WARMUP)

    # Assert: retrains at rows 550, 800, ..., 2050, seven of them, either way, so the same answers.
    assert small.retrains == whole.retrains == 7
    assert small.next_retrain == whole.next_retrain == 2300
    assert (by_small_chunks == at_once).all()


def test_logistic_never_learns_a_label_before_it_is_revealed() -> None:
    # Prepare: rows 1000-1199 are of a class of their own, "late", marked by a feature of their
    # own; their labels come 1,100 rows late (rows 2100-2299), after the last retrain (2050).
    stream = _stream()
    late = range(1000, 1200)
    stream.labels[list(late)] = "late"
    marker = np.zeros(END)
    marker[list(late)] = 5.0
    stream.features = {**stream.features, "marker": marker}
    stream.kinds.append(("marker", "number"))
    prompt = [p for p in range(WARMUP, END) if p not in late]
    revealed = _reveals(prompt, delay=20)
    for p in late:
        revealed.setdefault(p + 1100, []).append(p)
    baseline = _logistic(stream, every=250, window=2000)

    # Execute
    predicted = _run(baseline, stream, revealed, chunk=64)

    # Assert: it was given the warm-up, then each label at the row that revealed it, in order...
    given = list(range(WARMUP)) + [p for at in sorted(revealed) if at < END for p in revealed[at]]
    assert baseline.seen == given
    # ...and never answered the late class, which it would have had it trained on those labels.
    assert "late" not in set(predicted.tolist())


def test_the_late_class_is_learnt_once_revealed() -> None:
    # The check above can fail: with the late labels revealed promptly, the late rows after the
    # retrain at row 1300 (on labels up to row 1279) are answered "late".
    stream = _stream()
    late = range(1000, 1200)
    stream.labels[list(late)] = "late"
    marker = np.zeros(END)
    marker[list(late)] = 5.0
    marker[2000:2100] = 5.0
    stream.labels[2000:2100] = "late"
    stream.features = {**stream.features, "marker": marker}
    stream.kinds.append(("marker", "number"))
    baseline = _logistic(stream, every=250, window=2000)

    predicted = _run(baseline, stream, _reveals(range(WARMUP, END), delay=20), chunk=64)

    assert _accuracy(predicted[2000 - WARMUP : 2100 - WARMUP], stream.labels[2000:2100]) > 0.9


def test_fit_refuses_labels_it_was_never_given() -> None:
    stream = _stream()
    baseline = PeriodicLogistic(start=WARMUP, every=250, window=300)
    baseline.learn(stream, list(range(WARMUP)))

    with pytest.raises(ValueError, match="never given"):
        baseline.fit(stream, list(range(WARMUP + 1)))


def test_logistic_trained_on_one_class_answers_that_class_until_it_sees_two() -> None:
    # Prepare: the warm-up holds "yes" only; from row 300 the class follows a - b.
    stream = _stream()
    stream.labels[:WARMUP] = "yes"
    baseline = _logistic(stream, every=500, window=300)

    # Execute
    predicted = _run(baseline, stream, _reveals(range(WARMUP, END), delay=20), chunk=100)

    # Assert
    assert set(predicted[:500].tolist()) == {"yes"}
    assert _accuracy(predicted[500:], stream.labels[800:END]) > 0.9


def test_logistic_reads_category_features_and_ignores_an_unseen_one() -> None:
    # Prepare: the class is the colour's (red or green: warm), the numbers are noise; some rows
    # after the warm-up come in a colour the warm-up never showed.
    stream = _stream()
    colour = stream.features["colour"].copy()
    colour[1500:1550] = "violet"
    stream.features = {**stream.features, "colour": colour}
    stream.labels = np.where(np.isin(colour, ["red", "green"]), "warm", "cold").astype(object)
    baseline = _logistic(stream, every=10_000)

    # Execute
    predicted = baseline.run(stream, WARMUP, END, {})

    # Assert
    known = np.isin(colour[WARMUP:END], ["red", "green", "blue"])
    assert _accuracy(predicted[known], stream.labels[WARMUP:END][known]) > 0.95
    assert set(predicted[~known].tolist()) <= {"warm", "cold"}


def test_logistic_reads_sentence_vectors_as_numbers() -> None:
    # Prepare: 384 vector columns, as a text stream arrives; three intents, each a direction.
    rng = np.random.default_rng(3)
    rows, dims = 2400, 384
    intents = np.array(["billing", "outage", "upgrade"], dtype=object)
    labels = intents[rng.integers(0, 3, size=rows)]
    centres = rng.normal(size=(3, dims))
    vectors = centres[np.searchsorted(intents, labels)] + rng.normal(scale=3.0, size=(rows, dims))
    names = [f"text_e{j:03d}" for j in range(dims)]
    stream = Stream({n: vectors[:, j] for j, n in enumerate(names)}, labels, [(n, "number") for n in names])
    baseline = PeriodicLogistic(start=2000, every=10_000, window=2000)
    baseline.learn(stream, list(range(2000)))

    # Execute: fit on 2,000 rows of 384 features, then predict the rest.
    predicted = baseline.fit(stream, list(range(2000))).run(stream, 2000, rows, {})

    # Assert
    assert _accuracy(predicted, labels[2000:]) > 0.9


def test_the_replay_builds_logistic_on_the_periodic_schedule(tmp_path: Path) -> None:
    # Prepare
    stream = _stream()
    config = ReplayConfig(
        data=tmp_path / "stream.csv", target="y", out=tmp_path, warmup=WARMUP, baselines=("logistic",)
    )

    # Execute: neither version 1 nor the recorded stream is needed to build this one.
    built = _baselines(config, None, None, None, stream, END)  # type: ignore[arg-type]

    # Assert: a tenth of the replayed rows between retrains, the periodic window, the warm-up given.
    logistic = built["logistic"]
    assert isinstance(logistic, PeriodicLogistic)
    assert (logistic.next_retrain, logistic.window) == (WARMUP + (END - WARMUP) // 10, config.periodic_window)
    assert logistic.seen == list(range(WARMUP))
    assert logistic.model is not None
