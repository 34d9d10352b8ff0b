"""Augmentation: synthetic rows for the classes a training set holds too few of.

A class seen a handful of times is one a model learns never to predict. When its policy turns
augmentation on, the Trainer adds synthetic rows to the rare classes of the training split (never
to the holdout), trains the candidate with them, and records :meth:`Augmented.summary` beside the
measured effect in its decision.

**Which classes are rare.** The *level* is ``ceil(target_share × median class size)`` (half the
median class by default); a class with fewer rows than the level is rare and is raised to it, the
others are untouched. The median, not the largest class: one dominant class (the normal state, the
usual question) would otherwise call every other class rare and bury the set under invented rows.
``max_added`` caps the rows added in all, shared in proportion to each class's shortfall.

**Tabular rows** (:func:`augment_tabular`). A rare class of two rows or more gets SMOTE (Chawla et
al., "SMOTE: Synthetic Minority Over-sampling Technique", JAIR 2002): a new row lies on the segment
between one of the class's rows and one of its ``k`` nearest rows of the same class. A class of one
row has no segment; its copies are that row plus Gaussian noise. Each synthetic row starts as a copy
of its base row (categories and every other column included) and only its numbers change.

**Texts** (:func:`augment_texts`). A variant of a text is one random edit: a typo (two adjacent
letters swapped or a letter dropped inside a word of four letters or more), a word dropped (at
least two are kept), two adjacent words swapped, or the text wrapped in a paraphrase template
(:data:`TEMPLATES`). Every variant differs from its source, and from the source's other variants
while there are edits left to try.

Examples
--------
Two classes of ten rows and one of two: the level is 5, so the third class gets 3 rows, each on
the segment between its two rows:

>>> rows = pd.DataFrame({"a": np.r_[np.arange(20.0), 40.0, 44.0], "b": ["x"] * 22})
>>> out = augment_tabular(rows, ["p"] * 10 + ["q"] * 10 + ["r"] * 2, numbers=["a"], categories=["b"])
>>> out.summary()
'added 3 synthetic rows to 1 rare class (smote): r +3'
>>> bool(out.rows["a"][out.synthetic].between(40, 44).all()), out.origin[-3:].tolist()
(True, [20, 21, 20])

Six texts of two classes and one of a third: the level is 3, and ``per_text=2`` lets the one
text give both of the rows its class lacks:

>>> texts = ["where is my refund"] * 6 + ["what is my balance"] * 6 + ["card declined abroad"]
>>> out = augment_texts(texts, ["refund"] * 6 + ["balance"] * 6 + ["card"], per_text=2)
>>> out.rows["text"].tolist()[13:], out.labels.tolist()[13:]
(['card abroad declined', 'declined abroad'], ['card', 'card'])
>>> out.summary()
'added 2 synthetic texts to 1 rare class (text): card +2'
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["NOISE_SCALE", "TEMPLATES", "Augmented", "augment_tabular", "augment_texts"]

#: The noise a one-row class's copies get, as a share of each number's robust spread over the
#: whole set: one row says nothing of its class's extent, so the copies stay close to it, yet far
#: enough apart not to be duplicates that only weigh the row more.
NOISE_SCALE = 0.1
#: Paraphrase templates: the ways people wrap the same request.
TEMPLATES: tuple[str, ...] = (
    "could you tell me {q}",
    "{q} please",
    "i need help: {q}",
    "hi, {q}",
    "question: {q}",
    "{q} thanks",
)
#: Random edits tried for a variant not made before from the same source, before the templates
#: are walked in order.
ATTEMPTS = 10
#: Elements of one block of the neighbour search (rows × class rows × numbers): bounds its memory.
_BLOCK = 1 << 22
#: A word a typo may go into: four letters or more.
_WORD = re.compile(r"[^\W\d_]{4,}")


@dataclass(frozen=True)
class Augmented:
    """A training set with synthetic rows appended, and what was added.

    ``rows`` holds the original rows (index reset) then the synthetic ones, with the same columns;
    ``labels``, ``synthetic`` (True for an added row) and ``origin`` (the position of the original
    row each row was made from, its own for an original) are aligned with it. ``added`` counts the
    rows added per class (by the label's ``str``), largest first. ``method`` is ``"smote"``,
    ``"noise"`` (every rare class had one row), ``"text"`` or ``"none"``. ``level`` is the size
    rare classes are raised to (0 when every class was augmented alike); ``noised`` names the
    one-row classes that got noise where the others got SMOTE.
    """

    rows: pd.DataFrame
    labels: np.ndarray
    synthetic: np.ndarray
    origin: np.ndarray
    added: dict[str, int]
    method: str
    level: int = 0
    noised: tuple[str, ...] = ()

    def summary(self) -> str:
        """One sentence for a decision: how many rows were added, to which classes, and how."""
        total = sum(self.added.values())
        if total == 0:
            reason = f": no class has fewer than {self.level} rows" if self.level else ""
            return "no synthetic rows added" + reason
        unit = "synthetic text" if self.method == "text" else "synthetic row"
        how = self.method
        if self.method == "smote" and self.noised:
            classes = "class" if len(self.noised) == 1 else "classes"
            how += f"; noise for the single-row {classes} {', '.join(self.noised)}"
        counts = ", ".join(f"{name} +{n}" for name, n in self.added.items())
        kind = "rare class" if self.level else "class"
        return f"added {_count(total, unit)} to {_count(len(self.added), kind)} ({how}): {counts}"


def augment_tabular(
    rows: pd.DataFrame,
    labels: Sequence[Any] | np.ndarray,
    *,
    numbers: Sequence[str],
    categories: Sequence[str] = (),
    target_share: float = 0.5,
    k: int = 5,
    seed: int = 0,
    max_added: int | None = None,
) -> Augmented:
    """Raise the rare classes of ``rows`` to the level with SMOTE, or noise for a one-row class.

    Distances between rows of a class are taken on the ``numbers`` divided by their robust spread
    over the whole set (interquartile range / 1.349; the standard deviation where that is 0, and
    1 for a constant column), over the numbers both rows hold, scaled up to all of them (as
    scikit-learn's ``nan_euclidean_distances``); each of the ``categories`` on which two rows
    differ adds 1, the typical spread of a scaled number (SMOTE-NC's penalty, Chawla et al. 2002,
    section 6.1). A new row is ``base + gap × (neighbour − base)`` with one uniform ``gap`` per
    row, on every number both hold; where either is missing it keeps the base's value, so NaN
    stays NaN. The noise of a one-row class is ``NOISE_SCALE`` × the number's spread (none for a
    constant column). Bases are taken in turn over a shuffled class, so each row of a class bases
    about as many new rows as the others. Numbers come back as floats.

    The same ``seed`` gives the same rows. Raises ValueError on labels not one per row, unknown,
    non-numeric columns, infinite numbers, missing labels, a share outside (0, 1], ``k`` < 1 or
    ``max_added`` < 1.
    """
    # Written here rather than taken from imbalanced-learn (not a dependency): its SMOTE refuses
    # NaN, needs k + 1 rows in every class, and does not say which row each new one came from.
    numbers, categories = list(numbers), list(categories)
    _check_columns(rows, numbers, categories)
    _check_share(target_share)
    if k < 1:
        raise ValueError(f"k must be at least 1 neighbour, got {k}")
    if max_added is not None and max_added < 1:
        raise ValueError(f"max_added must be a positive number of rows or None (no cap), got {max_added}")
    rows = rows.reset_index(drop=True)
    labels_, codes, names = _classes(labels, len(rows))
    level, need = _allot(np.bincount(codes), target_share, max_added)
    if need.sum() == 0:
        return _unchanged(rows, labels_, level)

    values = rows[numbers].to_numpy(dtype=float, na_value=np.nan)
    spread = _spread(values)
    # Differences cancel the centre, so dividing by the spread is the whole robust scaling.
    scaled = values / np.where(spread > 0, spread, 1.0)
    kinds = np.column_stack([pd.factorize(rows[c])[0] for c in categories] or [np.zeros(len(rows), int)])
    rng = np.random.default_rng(seed)
    bases, made, noised = [], [], []
    for code in np.argsort(-need, kind="stable")[: np.count_nonzero(need)]:
        members = np.flatnonzero(codes == code)
        chosen = np.resize(rng.permutation(members), need[code])
        start = values[chosen]
        if len(members) == 1:
            made.append(start + rng.normal(size=start.shape) * NOISE_SCALE * spread)
            noised.append(names[code])
        else:
            nearest = _nearest(scaled[members], kinds[members], min(k, len(members) - 1))
            pick = nearest[np.searchsorted(members, chosen), rng.integers(0, nearest.shape[1], len(chosen))]
            partner = values[members[pick]]
            gap = rng.random((len(chosen), 1))
            made.append(np.where(np.isnan(partner), start, start + gap * (partner - start)))
        bases.append(chosen)
    base, new = np.concatenate(bases), np.concatenate(made)
    extra = rows.iloc[base].reset_index(drop=True)
    for j, name in enumerate(numbers):
        extra[name] = new[:, j]
    method = "noise" if len(noised) == len(bases) else "smote"
    return _joined(rows, extra, labels_, base, need, names, method, level, tuple(noised) if method == "smote" else ())


def augment_texts(
    texts: Sequence[str],
    labels: Sequence[Any] | np.ndarray,
    *,
    per_text: int = 1,
    rare_only: bool = True,
    target_share: float = 0.5,
    seed: int = 0,
    column: str = "text",
) -> Augmented:
    """Add edited variants of texts: to the rare classes, or to every class.

    With ``rare_only`` each rare class is raised toward the level, with at most ``per_text``
    variants of each of its texts (so a class of 2 texts and ``per_text=1`` gains at most 2, however far
    below the level); without it every text gets ``per_text`` variants. The sources are taken in
    turn over a shuffled class. A text of one word gets a typo or a template; an empty one a
    template. ``rows`` has the one column ``column``. The same ``seed`` gives the same texts.

    Raises ValueError on labels not one per row, a text that is not a string, a negative
    ``per_text`` or a share outside (0, 1].
    """
    if isinstance(texts, str):
        raise ValueError("texts must be a sequence of texts, got a single string")
    texts = list(texts)
    wrong = next((i for i, text in enumerate(texts) if not isinstance(text, str)), None)
    if wrong is not None:
        raise ValueError(f"texts[{wrong}] must be a string, got {texts[wrong]!r}")
    if per_text < 0:
        raise ValueError(f"per_text must be 0 or more variants, got {per_text}")
    _check_share(target_share)
    rows = pd.DataFrame({column: pd.Series(texts, dtype=object)})
    labels_, codes, names = _classes(labels, len(texts))
    counts = np.bincount(codes)
    if rare_only:
        level, need = _allot(counts, target_share, None)
        need = np.minimum(need, per_text * counts)
    else:
        level, need = 0, per_text * counts
    if need.sum() == 0:
        return _unchanged(rows, labels_, level)

    rng = np.random.default_rng(seed)
    bases, made = [], []
    taken: dict[int, set[str]] = {}
    for code in np.argsort(-need, kind="stable")[: np.count_nonzero(need)]:
        base = np.resize(rng.permutation(np.flatnonzero(codes == code)), need[code])
        for source in base.tolist():
            seen = taken.setdefault(source, {texts[source]})
            made.append(_variant(texts[source], seen, rng))
            seen.add(made[-1])
        bases.append(base)
    extra = pd.DataFrame({column: pd.Series(made, dtype=object)})
    return _joined(rows, extra, labels_, np.concatenate(bases), need, names, "text", level)


# --- rarity and assembly ----------------------------------------------------------------------


def _check_share(target_share: float) -> None:
    if not 0 < target_share <= 1:
        raise ValueError(f"target_share must be in (0, 1] (a share of the median class), got {target_share!r}")


def _check_columns(rows: pd.DataFrame, numbers: list[str], categories: list[str]) -> None:
    if not isinstance(rows, pd.DataFrame):
        raise TypeError(f"rows must be a pandas DataFrame, got {type(rows).__name__}")
    if not numbers:
        raise ValueError("numbers must name at least one numeric column to vary; got none")
    unknown = [name for name in [*numbers, *categories] if name not in rows.columns]
    if unknown:
        raise ValueError(f"unknown column(s) {unknown}; the rows have {list(rows.columns)}")
    both = sorted(set(numbers) & set(categories))
    if both:
        raise ValueError(f"column(s) {both} are given both as numbers and as categories")
    for name in numbers:
        column = rows[name]
        if pd.api.types.is_bool_dtype(column) or not pd.api.types.is_numeric_dtype(column):
            raise ValueError(f"numbers column {name!r} must be numeric, got dtype {column.dtype}")
        infinite = np.flatnonzero(np.isinf(column.to_numpy(dtype=float, na_value=np.nan)))
        if infinite.size:
            raise ValueError(
                f"numbers column {name!r} holds an infinite value at row {infinite[0]}; use NaN if missing"
            )


def _classes(labels: Sequence[Any] | np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """The labels as an array, each row's class code, and the classes' names in order of appearance."""
    labels_ = np.asarray(labels)
    if labels_.ndim != 1 or len(labels_) != n:
        raise ValueError(f"labels has {labels_.size} values for {n} rows; give one label per row")
    codes, classes = pd.factorize(labels_)
    if (codes < 0).any():
        raise ValueError(f"labels must not be missing; row {int(np.argmax(codes < 0))} has none")
    return labels_, codes, [str(name) for name in classes]


def _allot(counts: np.ndarray, target_share: float, max_added: int | None) -> tuple[int, np.ndarray]:
    """The level and the rows to add to each class; a cap is shared by largest remainders."""
    if counts.size == 0:
        return 0, counts
    # Rounded first so that a product such as 0.1 × 30 = 3.0000000000000004 is not lifted to 4.
    level = math.ceil(round(target_share * float(np.median(counts)), 9))
    need = np.where(counts < level, level - counts, 0)
    if max_added is not None and need.sum() > max_added:
        share = need * max_added / need.sum()
        need = np.floor(share).astype(int)
        need[np.argsort(need - share, kind="stable")[: max_added - need.sum()]] += 1
    return level, need


def _unchanged(rows: pd.DataFrame, labels: np.ndarray, level: int) -> Augmented:
    n = len(rows)
    return Augmented(rows, labels, np.zeros(n, dtype=bool), np.arange(n), {}, "none", level)


def _joined(
    rows: pd.DataFrame,
    extra: pd.DataFrame,
    labels: np.ndarray,
    base: np.ndarray,
    need: np.ndarray,
    names: list[str],
    method: str,
    level: int,
    noised: tuple[str, ...] = (),
) -> Augmented:
    order = np.argsort(-need, kind="stable")[: np.count_nonzero(need)]
    return Augmented(
        rows=pd.concat([rows, extra], ignore_index=True),
        labels=np.concatenate([labels, labels[base]]),
        synthetic=np.r_[np.zeros(len(rows), dtype=bool), np.ones(len(base), dtype=bool)],
        origin=np.concatenate([np.arange(len(rows)), base]),
        added={names[code]: int(need[code]) for code in order},
        method=method,
        level=level,
        noised=noised,
    )


# --- tabular ----------------------------------------------------------------------------------


def _spread(values: np.ndarray) -> np.ndarray:
    """Each column's robust spread: IQR / 1.349 (the standard deviation, were it normal), the
    standard deviation where the IQR is 0 (a column mostly one value), 0 for a constant column."""
    spread = np.zeros(values.shape[1])
    for j, column in enumerate(values.T):
        known = column[~np.isnan(column)]
        if known.size:
            q75, q25 = np.percentile(known, [75, 25])
            spread[j] = (q75 - q25) / 1.349 if q75 > q25 else known.std()
    return spread


def _nearest(points: np.ndarray, kinds: np.ndarray, k: int) -> np.ndarray:
    """The positions of each point's ``k`` nearest others, nearest first (ties by position)."""
    n, p = points.shape
    known = ~np.isnan(points)
    filled = np.where(known, points, 0.0)
    nearest = np.empty((n, k), dtype=int)
    step = max(1, _BLOCK // (n * p))
    for start in range(0, n, step):
        block = slice(start, start + step)
        both = known[block, None, :] & known[None, :, :]
        squares = (np.where(both, filled[block, None, :] - filled[None, :, :], 0.0) ** 2).sum(axis=2)
        shared = both.sum(axis=2)
        with np.errstate(divide="ignore", invalid="ignore"):
            distance = np.where(shared > 0, squares * p / shared, np.inf)
        distance += (kinds[block, None, :] != kinds[None, :, :]).sum(axis=2)
        # NaN sorts after inf: a row is never its own neighbour, even among rows it shares nothing with.
        own = np.arange(start, min(start + step, n))
        distance[own - start, own] = np.nan
        nearest[block] = np.argsort(distance, axis=1, kind="stable")[:, :k]
    return nearest


# --- texts ------------------------------------------------------------------------------------


def _variant(text: str, taken: set[str], rng: np.random.Generator) -> str:
    """An edit of ``text`` not in ``taken``; a repeat only once every template is taken too."""
    for _ in range(ATTEMPTS):
        variant = _edit(text, rng)
        if variant not in taken:
            return variant
    for template in TEMPLATES:
        variant = _wrap(template, text)
        if variant not in taken:
            break
    return variant


def _edit(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    edits: list[Callable[[str, np.random.Generator], str]] = [_template]
    if _WORD.search(text):
        edits.append(_typo)
    if len(words) >= 3:
        edits.append(_drop_word)
    if any(a != b for a, b in zip(words, words[1:], strict=False)):
        edits.append(_swap_words)
    return edits[rng.integers(len(edits))](text, rng)


def _wrap(template: str, text: str) -> str:
    return template.format(q=text.strip()).strip(" ,:")


def _template(text: str, rng: np.random.Generator) -> str:
    return _wrap(TEMPLATES[rng.integers(len(TEMPLATES))], text)


def _typo(text: str, rng: np.random.Generator) -> str:
    """Two adjacent letters swapped, or one dropped, inside a word (its first and last letters stay)."""
    words = list(_WORD.finditer(text))
    match = words[rng.integers(len(words))]
    word = match.group()
    swaps = [i for i in range(1, len(word) - 2) if word[i] != word[i + 1]]
    if swaps and rng.random() < 0.5:
        i = swaps[rng.integers(len(swaps))]
        word = word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    else:
        i = int(rng.integers(1, len(word) - 1))
        word = word[:i] + word[i + 1 :]
    return text[: match.start()] + word + text[match.end() :]


def _drop_word(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    del words[rng.integers(len(words))]
    return " ".join(words)


def _swap_words(text: str, rng: np.random.Generator) -> str:
    words = text.split()
    pairs = [i for i in range(len(words) - 1) if words[i] != words[i + 1]]
    i = pairs[rng.integers(len(pairs))]
    words[i], words[i + 1] = words[i + 1], words[i]
    return " ".join(words)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}es" if noun.endswith("s") else f"{n} {noun}s"
