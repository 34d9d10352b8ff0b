"""The intent family's edge student: word and character n-grams into one linear layer.

The intent teacher needs all-MiniLM-L6-v2 (90 MB, about 7 ms a query on one core). Its student
reads the raw text through counts of n-grams and answers with a linear layer distilled from the
teacher (:meth:`~driftpilot.models.base.TorchClassifier.distil`); on Banking77 it keeps the
teacher's accuracy at about a 79th of its size and a 70th of its latency (``evals/edge_bench.py``,
and the research it came from in ``docs/research/edge-student.md``).

The features are computed the same way here and in the ONNX graph an edge node runs
(:meth:`NgramStudent.edge_onnx`), so the two agree by construction:

- the text lower-cased in ASCII only (what onnxruntime's ``StringNormalizer`` does in the ``C``
  locale, the one every image has);
- tokens by ``[a-z0-9]+|[^a-z0-9 \\t\\n\\r\\f]``: runs of letters and digits, and every other
  character on its own (explicit classes, since onnxruntime's re2 reads ``\\w`` and ``\\s`` as
  ASCII-only where Python's ``re`` does not);
- word 1–2-grams of the tokens, and character 2–5-grams inside each token padded with a space
  each side (scikit-learn's ``char_wb``, without its repeat of tokens shorter than ``n``);
- the most frequent ``max_words`` and ``max_chars`` of each, weighted ``log(1 + count) · idf``
  and scaled to unit length per block.

Examples
--------
>>> import numpy as np
>>> texts = ["my card was declined", "card declined at the shop", "where is my refund",
...          "refund still not arrived"] * 20
>>> y = ["declined", "declined", "refund", "refund"] * 20
>>> logits = np.where(np.array(y)[:, None] == np.array(["declined", "refund"]), 3.0, -3.0)
>>> student = NgramStudent([("query", "text")], ["declined", "refund"], seed=0)
>>> student.distil({"query": texts}, logits, y).predict({"query": ["card declined again"]}).tolist()
['declined']
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from driftpilot.models.base import Columns, TorchClassifier

__all__ = ["NgramEncoding", "NgramStudent", "char_ngrams", "tokens", "word_ngrams"]

#: The token pattern, the same in Python's ``re`` and onnxruntime's re2 (see the module's note).
TOKEN_PATTERN = r"[a-z0-9]+|[^a-z0-9 \t\n\r\f]"
_TOKEN = re.compile(TOKEN_PATTERN)
_ASCII_LOWER = str.maketrans({chr(c): chr(c + 32) for c in range(65, 91)})
WORD_NGRAMS = (1, 2)
CHAR_NGRAMS = (2, 5)
#: Pool sizes: the research found 4,000 word and 8,000 character n-grams as good as all 37,000.
MAX_WORDS = 4000
MAX_CHARS = 8000
#: Pad of the graph's tokenizer and the sentinel token it appends (so that no row is empty): no
#: pooled n-gram contains either, so neither changes a count.
PAD = "\x01"
SENTINEL = "\x02"


def tokens(text: str) -> list[str]:
    """The tokens of ``text`` (ASCII lower-cased).

    >>> tokens("Can't I use my £5 CARD?")
    ['can', "'", 't', 'i', 'use', 'my', '£', '5', 'card', '?']
    """
    return _TOKEN.findall(text.translate(_ASCII_LOWER))


def word_ngrams(toks: Sequence[str], lo: int = WORD_NGRAMS[0], hi: int = WORD_NGRAMS[1]) -> list[str]:
    """Word n-grams of the tokens, shortest first.

    >>> word_ngrams(["top", "up", "failed"])
    ['top', 'up', 'failed', 'top up', 'up failed']
    """
    return [" ".join(toks[i : i + n]) for n in range(lo, hi + 1) for i in range(len(toks) - n + 1)]


def char_ngrams(toks: Sequence[str], lo: int = CHAR_NGRAMS[0], hi: int = CHAR_NGRAMS[1]) -> list[str]:
    """Character n-grams within each token padded by one space each side.

    >>> char_ngrams(["up"])
    [' u', 'up', 'p ', ' up', 'up ', ' up ']
    """
    out: list[str] = []
    for token in toks:
        padded = f" {token} "
        for n in range(lo, min(hi, len(padded)) + 1):
            out += [padded[i : i + n] for i in range(len(padded) - n + 1)]
    return out


def _texts(values: Any) -> list[str]:
    return [
        "" if v is None or (isinstance(v, float) and np.isnan(v)) else str(v) for v in np.asarray(values, dtype=object)
    ]


@dataclass
class NgramEncoding:
    """A text column as weighted word and character n-gram counts (see the module's note)."""

    text: str
    words: dict[str, int]
    chars: dict[str, int]
    word_idf: np.ndarray
    char_idf: np.ndarray

    @classmethod
    def fit(
        cls, text: str, texts: Sequence[str], *, max_words: int = MAX_WORDS, max_chars: int = MAX_CHARS
    ) -> NgramEncoding:
        from sklearn.feature_extraction.text import CountVectorizer

        blocks = []
        for analyzer, most in ((_word_analyzer, max_words), (_char_analyzer, max_chars)):
            counter = CountVectorizer(analyzer=analyzer, max_features=most, lowercase=False)
            counts = counter.fit_transform(texts)
            df = np.bincount(counts.indices, minlength=counts.shape[1])
            # scikit-learn's smooth idf: log((1 + n) / (1 + df)) + 1.
            idf = (np.log((1 + len(texts)) / (1 + df)) + 1).astype(np.float32)
            blocks.append(({str(k): int(v) for k, v in counter.vocabulary_.items()}, idf))
        (words, word_idf), (chars, char_idf) = blocks
        return cls(text, words, chars, word_idf, char_idf)

    @property
    def width(self) -> int:
        return len(self.words) + len(self.chars)

    def sparse(self, columns: Columns) -> Any:
        """The encoded rows as a scipy CSR matrix (``[n, width]``, float32)."""
        import scipy.sparse as sp
        from sklearn.feature_extraction.text import CountVectorizer

        if self.text not in columns:
            raise ValueError(f"feature '{self.text}' is missing from the input")
        texts = _texts(columns[self.text])
        blocks = []
        for analyzer, vocabulary, idf in (
            (_word_analyzer, self.words, self.word_idf),
            (_char_analyzer, self.chars, self.char_idf),
        ):
            counts = CountVectorizer(analyzer=analyzer, vocabulary=vocabulary, lowercase=False).transform(texts)
            counts = counts.astype(np.float32).tocsr()
            counts.data = np.log1p(counts.data)
            weighted = counts @ sp.diags(idf)
            norm = np.sqrt(np.asarray(weighted.multiply(weighted).sum(axis=1)).ravel())
            # The same floor as the graph's, so an empty text gives zeros in both.
            blocks.append(sp.diags(1.0 / np.maximum(norm, 1e-6)) @ weighted)
        return sp.hstack(blocks).tocsr().astype(np.float32)

    def transform(self, columns: Columns) -> np.ndarray:
        return np.asarray(self.sparse(columns).todense())

    def to_dict(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "words": self.words,
            "chars": self.chars,
            "word_idf": self.word_idf.tolist(),
            "char_idf": self.char_idf.tolist(),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> NgramEncoding:
        return cls(
            str(data["text"]),
            {str(k): int(v) for k, v in data["words"].items()},
            {str(k): int(v) for k, v in data["chars"].items()},
            np.asarray(data["word_idf"], dtype=np.float32),
            np.asarray(data["char_idf"], dtype=np.float32),
        )


def _word_analyzer(text: str) -> list[str]:
    return word_ngrams(tokens(text))


def _char_analyzer(text: str) -> list[str]:
    return char_ngrams(tokens(text))


class NgramStudent(TorchClassifier):
    """One text feature as :class:`NgramEncoding`, then a linear layer: the intent teacher's
    student on an edge node. Made by :meth:`distil` from a teacher's logits; its ``edge.onnx``
    takes the raw text."""

    family = "intent_ngram"
    default_hidden = ()
    hidden_layers = ()

    encoding_: NgramEncoding

    def _check_features(self) -> None:
        if len(self.features) != 1 or self.features[0][1] != "text":
            raise ValueError(f"the intent_ngram family takes exactly one text feature, got {self.features}")

    def _fit_encoding(self, columns: Columns) -> NgramEncoding:
        text = self.features[0][0]
        if text not in columns:
            raise ValueError(f"feature '{text}' is missing from the input")
        return NgramEncoding.fit(text, _texts(columns[text]))

    def _encoding_from_dict(self, data: Mapping[str, Any]) -> NgramEncoding:
        return NgramEncoding.from_dict(data)

    def _extend_encoding(self, parent: Any, columns: Columns) -> NgramEncoding:
        raise ValueError("an n-gram student is distilled afresh from its teacher, not updated")

    def _distil_forward(self, encoding: Any, columns: Columns) -> Callable[[Any, Any], Any]:
        """Sparse rows times the layer's weights: 12,000 mostly-zero columns never go dense."""
        import torch

        x = encoding.sparse(columns).tocsr()

        def forward(net: Any, rows: Any) -> Any:
            batch = x[rows.numpy()].tocoo()
            indices = torch.from_numpy(np.vstack([batch.row, batch.col]).astype(np.int64))
            sparse = torch.sparse_coo_tensor(indices, torch.from_numpy(batch.data), batch.shape, check_invariants=False)
            return torch.sparse.mm(sparse, net.head.weight.t()) + net.head.bias

        return forward

    def predict_proba(self, columns: Columns) -> np.ndarray:
        x = self.encoding_.sparse(columns)
        weight = self.net_.head.weight.detach().numpy()
        logits = np.asarray(x @ weight.T) + self.net_.head.bias.detach().numpy()
        logits -= logits.max(axis=1, keepdims=True)
        exp = np.exp(logits)
        return (exp / exp.sum(axis=1, keepdims=True)).astype(np.float32)

    def edge_onnx(self, net_path: Path) -> Any:
        """Raw text in (``text``, string ``[N]``): :func:`~driftpilot.models.edge_export.ngram_edge_graph`."""
        from driftpilot.models.edge_export import ngram_edge_graph

        weight = self.net_.head.weight.detach().numpy().T
        bias = self.net_.head.bias.detach().numpy()
        return ngram_edge_graph(self.encoding_, weight, bias, self.classes)
