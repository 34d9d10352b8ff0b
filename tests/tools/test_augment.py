"""Augmentation: rare classes are raised to the level by SMOTE, noise or text edits, and nothing else moves."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from driftpilot.tools.augment import NOISE_SCALE, TEMPLATES, augment_tabular, augment_texts


def _classes(counts: dict[str, int], seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Rows of two numbers, a category and an id, ``counts[name]`` rows of each class around its
    own centre (classes 10 apart, unit spread)."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(list(counts), list(counts.values()))
    centre = 10.0 * pd.factorize(labels)[0]
    rows = pd.DataFrame(
        {
            "a": centre + rng.normal(size=len(labels)),
            "signal": -centre + rng.normal(size=len(labels)),
            "kind": rng.choice(["u", "v", "w"], len(labels)),
            "id": np.arange(len(labels)),
        }
    )
    return rows, labels


# --- which classes are raised, and by how much ------------------------------------------------


def test_rare_classes_are_raised_to_the_level_and_common_ones_untouched() -> None:
    rows, labels = _classes({"c0": 40, "c1": 40, "c2": 40, "c3": 12, "c4": 3})

    out = augment_tabular(rows, labels, numbers=["a", "signal"], categories=["kind"])

    # Median class 40, half of it is 20: c3 (12) gets 8 rows, c4 (3) gets 17, the rest none.
    assert out.level == 20
    assert out.added == {"c4": 17, "c3": 8}
    assert out.method == "smote"
    assert set(out.labels[out.synthetic]) == {"c3", "c4"}
    assert not out.synthetic[: len(rows)].any() and out.synthetic[len(rows) :].all()
    pd.testing.assert_frame_equal(out.rows.iloc[: len(rows)], rows)
    assert out.labels[: len(rows)].tolist() == labels.tolist()
    assert out.origin[: len(rows)].tolist() == list(range(len(rows)))
    assert (out.labels == out.labels[out.origin]).all()


def test_target_share_moves_the_level() -> None:
    rows, labels = _classes({"c0": 40, "c1": 40, "c2": 40, "c3": 12, "c4": 3})

    out = augment_tabular(rows, labels, numbers=["a"], target_share=0.25)

    assert out.level == 10 and out.added == {"c4": 7}


def test_max_added_is_shared_by_largest_remainders() -> None:
    rows, labels = _classes({"c0": 40, "c1": 40, "c2": 40, "c3": 12, "c4": 3})

    out = augment_tabular(rows, labels, numbers=["a"], max_added=10)

    # Shortfalls 17 and 8 of 10 allowed: 6.8 and 3.2, so 6 + 3 and the one left to 6.8.
    assert out.added == {"c4": 7, "c3": 3}
    assert out.synthetic.sum() == 10


def test_nothing_rare_returns_the_rows_unchanged() -> None:
    rows, labels = _classes({"c0": 20, "c1": 15, "c2": 11})

    out = augment_tabular(rows.set_index("id", drop=False), labels, numbers=["a"])

    assert out.method == "none" and out.added == {}
    pd.testing.assert_frame_equal(out.rows, rows)
    assert not out.synthetic.any() and out.origin.tolist() == list(range(len(rows)))
    assert out.summary() == "no synthetic rows added: no class has fewer than 8 rows"


@settings(max_examples=40, deadline=None)
@given(
    counts=st.lists(st.integers(min_value=1, max_value=30), min_size=1, max_size=6),
    share=st.sampled_from([0.1, 0.25, 0.5, 1.0]),
)
def test_every_class_ends_at_its_size_or_the_level_whichever_is_larger(counts: list[int], share: float) -> None:
    rows, labels = _classes({f"c{i}": n for i, n in enumerate(counts)})

    out = augment_tabular(rows, labels, numbers=["a", "signal"], target_share=share)

    level = math.ceil(round(share * float(np.median(counts)), 9))
    final = pd.Series(out.labels).value_counts()
    assert all(final[f"c{i}"] == max(n, level) for i, n in enumerate(counts))
    pd.testing.assert_frame_equal(out.rows.iloc[: len(rows)], rows, check_dtype=False)


# --- how the rows are made --------------------------------------------------------------------


def test_each_smote_row_lies_between_its_base_and_one_of_its_k_nearest() -> None:
    rows, labels = _classes({"c0": 30, "c1": 30, "rare": 6})
    k = 2

    out = augment_tabular(rows, labels, numbers=["a", "signal"], k=k)

    points = rows[["a", "signal"]].to_numpy()
    scale = np.array([np.subtract(*np.percentile(points[:, j], [75, 25])) / 1.349 for j in range(2)])
    members = np.flatnonzero(labels == "rare")
    made = out.rows.loc[out.synthetic, ["a", "signal"]].to_numpy()
    assert len(made) == 9
    for row, base in zip(made, out.origin[out.synthetic], strict=True):
        others = members[members != base]
        distance = np.linalg.norm((points[others] - points[base]) / scale, axis=1)
        nearest = others[np.argsort(distance)[:k]]
        gaps = [_gap(points[base], points[n], row) for n in nearest]
        assert any(g is not None for g in gaps), f"row {row} is on no segment from {base} to its {k} nearest"


def _gap(base: np.ndarray, partner: np.ndarray, row: np.ndarray) -> float | None:
    """The g in [0, 1] with row = base + g (partner - base), if there is one."""
    g = float(np.dot(row - base, partner - base) / np.dot(partner - base, partner - base))
    return g if 0 <= g <= 1 and np.allclose(base + g * (partner - base), row) else None


def test_categories_and_other_columns_are_the_base_rows() -> None:
    rows, labels = _classes({"c0": 30, "c1": 30, "rare": 4})

    out = augment_tabular(rows, labels, numbers=["a", "signal"], categories=["kind"])

    made = out.rows[out.synthetic]
    base = rows.iloc[out.origin[out.synthetic]]
    assert made["kind"].tolist() == base["kind"].tolist()
    assert made["id"].tolist() == base["id"].tolist()


def test_missing_numbers_stay_missing_and_are_not_interpolated_across() -> None:
    rows, labels = _classes({"c0": 30, "c1": 30, "rare": 5})
    rare = np.flatnonzero(labels == "rare")
    # Only the first rare row holds "signal": no pair has it on both sides, so every new row keeps
    # its base's value (NaN where the base has none) while "a" is still interpolated.
    rows.loc[rare[1:], "signal"] = np.nan
    rows.loc[0, "a"] = np.nan

    out = augment_tabular(rows, labels, numbers=["a", "signal"])

    made = out.rows[out.synthetic]
    base = rows.iloc[out.origin[out.synthetic]]
    np.testing.assert_array_equal(made["signal"].to_numpy(), base["signal"].to_numpy())
    assert made["signal"].isna().sum() == (out.origin[out.synthetic] != rare[0]).sum() > 0
    assert made["a"].notna().all() and not np.allclose(made["a"].to_numpy(), base["a"].to_numpy())
    assert np.isnan(out.rows.loc[0, "a"])


def test_a_one_row_class_gets_noise_near_its_row() -> None:
    rows, labels = _classes({"c0": 30, "c1": 30, "c2": 4, "alone": 1})

    out = augment_tabular(rows, labels, numbers=["a", "signal"], categories=["kind"])

    assert out.method == "smote" and out.noised == ("alone",)
    assert out.summary() == (
        "added 13 synthetic rows to 2 rare classes (smote; noise for the single-row class alone): alone +8, c2 +5"
    )
    alone = rows.loc[labels == "alone", ["a", "signal"]].to_numpy()
    jitter = out.rows.loc[out.synthetic & (out.labels == "alone"), ["a", "signal"]].to_numpy() - alone
    spread = rows[["a", "signal"]].quantile([0.25, 0.75]).diff().iloc[1].to_numpy() / 1.349
    assert (jitter != 0).all()
    assert (np.abs(jitter) < 5 * NOISE_SCALE * spread).all()


def test_only_one_row_classes_is_noise() -> None:
    rows, labels = _classes({"c0": 10, "c1": 10, "x": 1, "y": 1})

    out = augment_tabular(rows, labels, numbers=["a"])

    assert out.method == "noise" and out.noised == ()
    assert out.summary() == "added 4 synthetic rows to 2 rare classes (noise): x +2, y +2"


def test_the_same_seed_gives_the_same_rows_and_another_seed_others() -> None:
    rows, labels = _classes({"c0": 30, "c1": 30, "rare": 5, "alone": 1})

    first, again = (augment_tabular(rows, labels, numbers=["a", "signal"], seed=3) for _ in range(2))
    other = augment_tabular(rows, labels, numbers=["a", "signal"], seed=4)

    pd.testing.assert_frame_equal(first.rows, again.rows)
    assert first.origin.tolist() == again.origin.tolist()
    assert not first.rows.equals(other.rows)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"labels": ["c0"] * 3}, "labels has 3 values for 33 rows"),
        ({"numbers": ["a", "nope"]}, r"unknown column\(s\) \['nope'\]"),
        ({"categories": ["gone"]}, r"unknown column\(s\) \['gone'\]"),
        ({"numbers": ["kind"]}, "numbers column 'kind' must be numeric"),
        ({"numbers": []}, "numbers must name at least one"),
        ({"categories": ["a"]}, r"\['a'\] are given both as numbers and as categories"),
        ({"target_share": 0.0}, r"target_share must be in \(0, 1\]"),
        ({"target_share": 1.5}, r"target_share must be in \(0, 1\]"),
        ({"k": 0}, "k must be at least 1"),
        ({"max_added": 0}, "max_added must be a positive number"),
    ],
)
def test_bad_input_is_named(change: dict[str, object], message: str) -> None:
    rows, labels = _classes({"c0": 30, "rare": 3})
    arguments: dict[str, object] = {"labels": labels, "numbers": ["a"]} | change

    with pytest.raises(ValueError, match=message):
        augment_tabular(rows, **arguments)  # type: ignore[arg-type]


def test_infinite_numbers_and_missing_labels_are_named() -> None:
    rows, labels = _classes({"c0": 30, "rare": 3})
    broken = rows.assign(a=rows["a"].where(rows.index != 7, np.inf))
    unlabelled = labels.astype(object)
    unlabelled[4] = None

    with pytest.raises(ValueError, match="'a' holds an infinite value at row 7"):
        augment_tabular(broken, labels, numbers=["a"])
    with pytest.raises(ValueError, match="row 4 has none"):
        augment_tabular(rows, unlabelled, numbers=["a"])


# --- texts ------------------------------------------------------------------------------------

QUERIES = {
    "refund": ["where is my refund", "i want my money back", "refund not received yet"] * 4,
    "card": ["my card was declined abroad", "card payment failed twice"] * 4,
    "greeting": ["hello there"],
}


def _texts() -> tuple[list[str], list[str]]:
    texts = [text for group in QUERIES.values() for text in group]
    return texts, [label for label, group in QUERIES.items() for _ in group]


def test_rare_texts_get_distinct_variants_that_keep_their_label() -> None:
    texts, labels = _texts()

    out = augment_texts(texts, labels, per_text=3)

    # Classes of 12, 8 and 1: the level is 4, so the greeting gets 3 rows, all from its one text.
    assert out.level == 4 and out.added == {"greeting": 3} and out.method == "text"
    made = out.rows["text"][out.synthetic].tolist()
    assert len(set(made)) == 3 and "hello there" not in made
    assert out.labels[out.synthetic].tolist() == ["greeting"] * 3
    assert out.summary() == "added 3 synthetic texts to 1 rare class (text): greeting +3"


def test_per_text_caps_what_one_text_gives() -> None:
    texts, labels = _texts()

    out = augment_texts(texts, labels)

    assert out.added == {"greeting": 1}
    assert augment_texts(texts, labels, per_text=0).method == "none"


def test_every_text_gets_distinct_variants_when_not_rare_only() -> None:
    texts, labels = _texts()

    out = augment_texts(texts, labels, per_text=4, rare_only=False, seed=1)

    assert out.added == {"refund": 48, "card": 32, "greeting": 4} and out.level == 0
    assert out.summary() == "added 84 synthetic texts to 3 classes (text): refund +48, card +32, greeting +4"
    made = pd.DataFrame({"text": out.rows["text"], "origin": out.origin})[out.synthetic]
    for source, group in made.groupby("origin"):
        variants = group["text"].tolist()
        assert len(variants) == 4 and len(set(variants)) == 4
        assert texts[int(source)] not in variants
        assert all(len(variant.split()) >= min(2, len(texts[int(source)].split())) for variant in variants)
    assert (out.labels == np.asarray(labels)[out.origin]).all()


def test_a_one_word_text_gets_a_typo_or_a_template() -> None:
    out = augment_texts(["hello"], ["greeting"], per_text=6, rare_only=False)

    wrapped = {template.format(q="hello").strip(" ,:") for template in TEMPLATES}
    # Inside "hello": e-l swapped (l-l is no change), or e or an l dropped.
    typos = {"hlelo", "hllo", "helo"}
    made = out.rows["text"][out.synthetic].tolist()
    assert len(set(made)) == 6 and set(made) <= wrapped | typos


def test_an_empty_text_gets_a_template() -> None:
    out = augment_texts(["", "hi"], ["x", "y"], rare_only=False)

    assert out.rows["text"].tolist()[2] in {template.format(q="").strip(" ,:") for template in TEMPLATES}
    assert all(out.rows["text"][out.synthetic] != "")


def test_texts_are_the_same_for_a_seed_and_differ_across_seeds() -> None:
    texts, labels = _texts()

    first, again = (augment_texts(texts, labels, per_text=2, rare_only=False, seed=5) for _ in range(2))
    other = augment_texts(texts, labels, per_text=2, rare_only=False, seed=6)

    assert first.rows["text"].tolist() == again.rows["text"].tolist()
    assert first.rows["text"].tolist() != other.rows["text"].tolist()


@pytest.mark.parametrize(
    ("texts", "labels", "options", "message"),
    [
        ("one string", ["x"], {}, "got a single string"),
        (["fine", 3], ["x", "y"], {}, r"texts\[1\] must be a string"),
        (["a", "b"], ["x"], {}, "labels has 1 values for 2 rows"),
        (["a", "b"], ["x", "y"], {"per_text": -1}, "per_text must be 0 or more"),
        (["a", "b"], ["x", "y"], {"target_share": 2}, r"target_share must be in \(0, 1\]"),
    ],
)
def test_bad_texts_are_named(texts: object, labels: list[str], options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        augment_texts(texts, labels, **options)  # type: ignore[arg-type]
