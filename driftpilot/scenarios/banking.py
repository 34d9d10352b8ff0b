"""Banking77 stream: real customer-service queries in which new intents emerge over time.

BANKING77 (Casanueva et al., NLP4ConvAI 2020) holds 13,083 queries of an online bank's
customers, each labelled with one of 77 intents. This makes a stream of them in which a seeded
choice of 50 intents is all the bot hears at first, and the other 27 emerge one by one, in a
seeded order, on evenly spaced rows of the second half of the stream (from half way to 85 %),
each from then on asked at its natural rate — as when a new product or an incident gives
customers something new to ask. Columns: ``text`` and the target ``intent``.

With ``n_out_of_scope`` set, a seeded choice of that many intents is held out of the catalogue:
their queries are asked from the first row to the last, all labelled ``out_of_scope`` (a bot's
catalogue never covers everything customers ask, and it must learn to say so). The
``intents_oos`` stream holds 15 out, starts with 42 intents and lets the other 20 emerge over
the middle third of the stream.

How: the stream has a clock running from 0 to 1. Every query gets a seeded, uniformly random
moment on it and the stream is the queries in the order of their moments, except that an
emerging intent's queries whose moments fall before its appearance are left out. So each intent,
while it exists, is asked at the rate it has in the data set. Using every row instead would
squeeze all of an emerging intent's queries into the stretch after its appearance, several times
more often than it is ever asked: a burst that makes a new intent unnaturally easy to spot, and
lets the late intents crowd out the old ones. With the defaults 9,409 of the 13,083 queries are
used (72 %).

Examples
--------
>>> queries = pd.DataFrame({"text": [f"query {i}" for i in range(12)], "intent": list("abcd") * 3})
>>> stream = Banking77Stream(BankingStreamConfig(n_initial=2, seed=0))
>>> {k: round(v, 2) for k, v in stream.appearances(queries["intent"]).items()}
{'a': 0.0, 'd': 0.0, 'c': 0.62, 'b': 0.91}
>>> stream.build(queries)["intent"].tolist()
['d', 'a', 'a', 'a', 'd', 'c', 'd', 'b']
>>> oos = Banking77Stream(BankingStreamConfig(n_initial=2, n_out_of_scope=1, seed=0))
>>> oos.held_out(queries["intent"])
['a']
>>> oos.build(queries)["intent"].tolist()
['c', 'd', 'c', 'out_of_scope', 'out_of_scope', 'out_of_scope', 'd', 'c', 'd', 'b']
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

FILES: tuple[str, ...] = ("train.csv", "test.csv")
TEXT = "text"
TARGET = "intent"
#: The label of every query whose intent is held out of the catalogue.
OUT_OF_SCOPE = "out_of_scope"
N_QUERIES = 13_083
N_INTENTS = 77
_RELATIVE = Path("..") / "shared" / "data" / "banking77"


@dataclass(frozen=True)
class BankingStreamConfig:
    """Knobs of the Banking77 stream.

    ``fraction`` keeps a seeded share of the queries (and each intent's first one) before the
    stream is built: a small copy of the stream, for tests. ``n_out_of_scope`` intents are held
    out of the catalogue: present throughout, labelled ``out_of_scope``; the intents neither
    held out nor initial emerge.
    """

    n_initial: int = 50
    seed: int = 0
    emerge_from: float = 0.5
    emerge_until: float = 0.85
    fraction: float = 1.0
    n_out_of_scope: int = 0

    def __post_init__(self) -> None:
        if not 1 <= self.n_initial <= N_INTENTS:
            raise ValueError(f"n_initial must be between 1 and {N_INTENTS} intents, got {self.n_initial}")
        if not 0 <= self.n_out_of_scope <= N_INTENTS - self.n_initial:
            raise ValueError(
                f"n_out_of_scope must be between 0 and {N_INTENTS - self.n_initial} (the {N_INTENTS} intents less "
                f"the {self.n_initial} initial ones), got {self.n_out_of_scope}"
            )
        if not 0.0 < self.emerge_from <= self.emerge_until < 1.0:
            raise ValueError(
                "emerging intents must appear within the stream: need 0 < emerge_from <= emerge_until < 1, "
                f"got {self.emerge_from} and {self.emerge_until}"
            )
        if not 0.0 < self.fraction <= 1.0:
            raise ValueError(f"fraction must be in (0, 1], got {self.fraction}")


def locate_banking77(data_dir: Path | str | None = None) -> Path:
    """The folder holding Banking77's ``train.csv`` and ``test.csv``.

    ``data_dir`` if given (the CLI passes the ``banking77_dir`` setting,
    ``DRIFTPILOT_BANKING77_DIR``); else ``../shared/data/banking77`` seen from the current
    directory or any folder above it, then from this file's folder or any above it (the
    repository's root is one of them). Raises :class:`FileNotFoundError` naming every folder
    tried.
    """
    if data_dir is not None:
        tried = [Path(data_dir)]
    else:
        tried = _candidates([Path.cwd(), Path(__file__).resolve().parent])
    for folder in tried:
        if all((folder / name).is_file() for name in FILES):
            return folder
    where = ", ".join(str(p) for p in tried)
    raise FileNotFoundError(
        f"Banking77 not found: no folder with {' and '.join(FILES)} among {where}. "
        "Pass data_dir (DRIFTPILOT_BANKING77_DIR for the command line) to the folder."
    )


def _candidates(starts: Iterable[Path]) -> list[Path]:
    seen: dict[Path, None] = {}
    for start in starts:
        for folder in (start, *start.parents):
            seen.setdefault((folder / _RELATIVE).resolve(), None)
    return list(seen)


def load_banking77(data_dir: Path | str | None = None) -> pd.DataFrame:
    """All 13,083 queries, train then test, as columns ``text`` and ``intent``.

    Read with a CSV parser: some queries hold line breaks inside their quotes.
    """
    folder = locate_banking77(data_dir)
    parts = [pd.read_csv(folder / name, dtype=str, keep_default_na=False) for name in FILES]
    frame = pd.concat(parts, ignore_index=True)
    if list(frame.columns) != ["text", "category"]:
        raise ValueError(f"{folder}: expected the columns text,category, got {','.join(frame.columns)}")
    return frame.rename(columns={"category": TARGET})


class Banking77Stream:
    """Seeded Banking77 stream with emerging intents; :meth:`frame` builds it.

    Parameters
    ----------
    config
        The stream's knobs. The same config (and data) gives the same stream.
    data_dir
        Banking77's folder; found by :func:`locate_banking77` when not given. Nothing is read
        until :meth:`frame` is called.
    """

    def __init__(self, config: BankingStreamConfig | None = None, data_dir: Path | str | None = None) -> None:
        self.config = config or BankingStreamConfig()
        self.data_dir = data_dir

    def appearances(self, intents: Sequence[str]) -> dict[str, float]:
        """When each intent of ``intents`` (one entry per query) appears on the stream's clock.

        0 for the ``n_out_of_scope`` held-out intents and the first ``n_initial`` intents (a
        seeded choice). The others, in a seeded order, appear at moments placed so that, in
        expectation, they fall on evenly spaced rows between ``emerge_from`` and
        ``emerge_until`` of the stream.
        """
        counts = pd.Series(intents).value_counts().sort_index()
        held_out, initial, emerging = self._roles(list(counts.index))
        present = held_out + initial
        rows = np.linspace(self.config.emerge_from, self.config.emerge_until, len(emerging))
        moments = _clock_moments(float(counts[present].sum()), counts[emerging].to_numpy(dtype=float), rows)
        return {name: 0.0 for name in present} | dict(zip(emerging, moments.tolist(), strict=True))

    def held_out(self, intents: Sequence[str]) -> list[str]:
        """The intents of ``intents`` held out of the catalogue: their queries become ``out_of_scope``."""
        return self._roles(sorted(set(intents)))[0]

    def _roles(self, names: list[str]) -> tuple[list[str], list[str], list[str]]:
        """``names`` (sorted) split into held-out, initial and emerging intents: one seeded permutation.

        The held-out ones come first in it, so without any the split is the one of the
        ``banking77`` stream.
        """
        c = self.config
        if len(names) < c.n_out_of_scope + c.n_initial:
            raise ValueError(
                f"n_initial and n_out_of_scope are {c.n_initial} and {c.n_out_of_scope} intents but the data has "
                f"only {len(names)}"
            )
        order = [names[i] for i in np.random.default_rng([c.seed, 77]).permutation(len(names))]
        kept = c.n_out_of_scope + c.n_initial
        return order[: c.n_out_of_scope], order[c.n_out_of_scope : kept], order[kept:]

    def frame(self) -> pd.DataFrame:
        """The stream: columns ``text`` and ``intent``, in stream order."""
        queries = load_banking77(self.data_dir)
        return self.build(queries)

    def build(self, queries: pd.DataFrame) -> pd.DataFrame:
        """The stream made of ``queries`` (columns ``text`` and ``intent``)."""
        c = self.config
        rng = np.random.default_rng([c.seed, 13])
        if c.fraction < 1.0:
            queries = _subsample(queries, c.fraction, rng)
        appears = self.appearances(queries[TARGET])
        moment = rng.random(len(queries))
        kept = moment >= queries[TARGET].map(appears).to_numpy()
        order = np.argsort(moment[kept], kind="stable")
        stream = queries.loc[kept, [TEXT, TARGET]].iloc[order].reset_index(drop=True)
        if c.n_out_of_scope:
            stream[TARGET] = stream[TARGET].mask(stream[TARGET].isin(self.held_out(queries[TARGET])), OUT_OF_SCOPE)
        return stream


def _clock_moments(initial_rows: float, sizes: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Clock moments at which intents of ``sizes`` queries must appear to land on ``rows``.

    ``rows`` are fractions of the stream, increasing. On the clock, the expected number of rows
    before moment ``t`` is ``A t + Σ n_j (t - t_j)`` over the intents already there, out of
    ``K = A + Σ n_j (1 - t_j)`` in all; each ``t_e`` solves its equation given the earlier ones,
    and ``K`` given all: a fixed point, reached in a few dozen rounds.
    """
    moments = rows.copy()
    for _ in range(100):
        total = initial_rows + float(np.sum(sizes * (1.0 - moments)))
        present, weighted = initial_rows, 0.0
        updated = np.empty_like(moments)
        for e, (share, size) in enumerate(zip(rows, sizes, strict=True)):
            updated[e] = min((share * total + weighted) / present, 1.0)
            present += size
            weighted += size * updated[e]
        if np.allclose(updated, moments, atol=1e-9):
            break
        moments = updated
    return updated


def _subsample(queries: pd.DataFrame, fraction: float, rng: np.random.Generator) -> pd.DataFrame:
    keep = rng.random(len(queries)) < fraction
    # Every intent keeps its first query, so a small stream still has all 77.
    keep |= ~queries[TARGET].duplicated().to_numpy()
    return queries.loc[keep].reset_index(drop=True)
