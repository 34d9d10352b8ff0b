"""The n-gram student: distilled from a teacher's logits, saved, and its raw-text ONNX graph
answering as the Python model does (also int8, and on texts that stress the tokenizer)."""

from __future__ import annotations

import numpy as np
import pytest

from driftpilot.models.edge_export import agreement, quantize
from driftpilot.models.families import load_model
from driftpilot.models.ngram_student import NgramStudent, tokens
from driftpilot.models.tabular_mlp import TabularMLP

INTENTS = {
    "card_declined": ["my card was declined", "why did the shop decline my card", "card refused at the till"],
    "refund": ["where is my refund", "the refund has not arrived", "I want my money back from the merchant"],
    "top_up": ["how do I top up", "top-up failed again", "add money to my account by transfer"],
}
STRESS = [
    "",
    "   ",
    "\t\n",
    "CAN'T TOP UP!!",
    "Ünïcödé café £5 €10",
    "hasn\u2019t arrived\u00a0yet",
    "a",
    "x" * 300,
    "refund refund refund refund",
    "\x01\x02",
]


def _rows(seed: int, repeats: int = 30):
    rng = np.random.default_rng(seed)
    texts, labels = [], []
    for label, phrases in INTENTS.items():
        for _ in range(repeats):
            phrase = phrases[rng.integers(len(phrases))]
            words = phrase.split()
            if rng.random() < 0.5:  # a little variety: a dropped word
                del words[rng.integers(len(words))]
            texts.append(" ".join(words))
            labels.append(label)
    return texts, labels


def _student(texts, labels, alpha=0.5, given=None):
    """Distilled from a teacher that knows ``labels``; trained on ``given`` labels (default the same)."""
    classes = sorted(INTENTS)
    # A teacher that is sure of the label, but gives "refund" some weight everywhere.
    logits = np.where(np.array(labels)[:, None] == np.array(classes), 4.0, 0.0)
    logits[:, classes.index("refund")] += 1.0
    given = labels if given is None else given
    return NgramStudent([("query", "text")], classes, seed=0).distil({"query": texts}, logits, given, alpha=alpha)


def test_tokens_match_the_graphs_pattern_on_unicode_and_punctuation():
    assert tokens("Top-up FAILED, hasn\u2019t it?") == [
        "top",
        "-",
        "up",
        "failed",
        ",",
        "hasn",
        "\u2019",
        "t",
        "it",
        "?",
    ]
    # ASCII lower-casing only, as the graph's C locale does.
    assert tokens("ÉCOLE") == ["É", "cole"]


def test_distilled_student_learns_and_follows_the_soft_targets():
    texts, labels = _rows(0)
    student = _student(texts, labels)
    test_texts, test_labels = _rows(1, repeats=10)

    assert (student.predict({"query": test_texts}) == np.array(test_labels)).mean() > 0.9
    assert student.report_.mode == "distilled"
    assert "T = 4" in student.report_.lr_source
    # On a text with no known n-gram the student leans to the class the teacher always favoured.
    blank = student.predict_proba({"query": ["zzzz qqqq"]})[0]
    assert student.classes[int(blank.argmax())] == "refund"


def test_unlabelled_rows_teach_through_the_teacher_alone():
    texts, labels = _rows(0)
    student = _student(texts, labels, alpha=0.5, given=[None] * len(labels))

    assert (student.predict({"query": texts}) == np.array(labels)).mean() > 0.9


def test_distil_refuses_what_it_cannot_learn_from():
    student = NgramStudent([("query", "text")], ["a", "b"])
    with pytest.raises(ValueError, match=r"shape \(2, 3\); expected \(2, 2\)"):
        student.distil({"query": ["x", "y"]}, np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match=r"labels \['c'\] are not among"):
        student.distil({"query": ["x", "y"]}, np.zeros((2, 2)), ["a", "c"])
    with pytest.raises(ValueError, match=r"features \['query'\] of the intent_ngram schema are missing"):
        student.distil({"text": ["x", "y"]}, np.zeros((2, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="exactly one text feature"):
        NgramStudent([("query", "number")], ["a", "b"])


def test_saved_student_loads_and_its_raw_text_graph_agrees_also_in_int8(tmp_path):
    texts, labels = _rows(0)
    student = _student(texts, labels)
    paths = student.save(tmp_path / "v1")
    loaded = load_model(tmp_path / "v1")
    probe = {"query": texts[:20] + STRESS}
    np.testing.assert_allclose(loaded.predict_proba(probe), student.predict_proba(probe), atol=1e-6)

    fp32 = agreement(student, paths["edge"], probe)
    assert fp32.agreement == 1.0
    assert fp32.max_abs_difference < 1e-5
    int8 = agreement(student, quantize(paths["edge"], tmp_path / "edge.int8.onnx"), probe)
    assert int8.agreement >= 0.95
    assert int8.rows == len(probe["query"])


def test_agreement_lists_the_rows_a_graph_answers_differently(tmp_path):
    texts, labels = _rows(0)
    student = _student(texts, labels)
    paths = student.save(tmp_path / "v1")
    other = _student(texts, ["refund"] * len(labels), alpha=0.0)  # a graph of another model entirely

    found = agreement(other, paths["edge"], {"query": texts})

    assert found.agreement < 0.5
    assert found.disagreements and found.disagreements[0]["python"] == "refund"
    assert {"row", "python", "python_p", "edge", "edge_p"} == set(found.disagreements[0])


def test_a_tabular_student_is_distilled_with_fewer_features_than_its_teacher():
    rng = np.random.default_rng(0)
    n = 800
    columns = {"a": rng.normal(size=n), "b": rng.normal(size=n), "a__delta": rng.normal(size=n)}
    y = np.where(columns["a"] + 0.5 * columns["b"] > 0, "yes", "no")
    teacher = TabularMLP([("a", "number"), ("b", "number"), ("a__delta", "number")], ["no", "yes"], seed=0)
    teacher.fit(columns, y)
    logits = np.log(np.clip(teacher.predict_proba(columns), 1e-7, 1.0))

    student = TabularMLP([("a", "number"), ("b", "number")], ["no", "yes"], hidden=(8,), seed=0)
    student.distil(columns, logits, list(y))

    assert (student.predict(columns) == teacher.predict(columns)).mean() > 0.95
