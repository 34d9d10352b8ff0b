"""Self-contained ONNX graphs for edge nodes: raw event fields in, class probabilities out.

A version's ``model.onnx`` takes the encoded matrix its family's Python encoding makes. An edge
node has no such code, only onnxruntime, so a family that can also writes ``edge.onnx``: the
encoding rebuilt from standard ONNX operators (opset 19 or later, for string ``Equal``) in front of
the same network. The tabular encoding becomes:

- ``numbers`` (float32, ``[N, len(numbers)]``, NaN for a reading that did not come): the stored
  median where NaN, the symmetric log where the encoding takes it, then standardised;
- ``categories`` (string, ``[N, len(categories)]``): one-hot against the training vocabulary,
  an unknown value all zeros, as :meth:`~driftpilot.models.tabular_mlp.Preprocessor.transform`.

The n-gram student's encoding (:mod:`driftpilot.models.ngram_student`) becomes, on ``text``
(string, ``[N]``): ASCII lower case (``StringNormalizer``, locale ``C``), tokens by the student's
pattern (onnxruntime's built-in ``com.microsoft`` ``Tokenizer``, the one operator outside the
standard: no standard operator splits a string into characters), word and character n-gram counts
(``TfIdfVectorizer``), then ``log(1 + count) · idf`` scaled to unit length per block.

The graph's metadata names the columns of each input in order (``driftpilot.numbers``,
``driftpilot.categories``, ``driftpilot.texts``) and the output's classes (``driftpilot.classes``),
so a node maps an event's fields by name and needs nothing else from the server.

:func:`quantize` makes the int8 copy an edge node downloads (onnxruntime's dynamic quantization of
the weights), and :func:`agreement` measures how often a graph answers as the Python model does.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from driftpilot.models.base import Columns, TorchClassifier
    from driftpilot.models.ngram_student import NgramEncoding
    from driftpilot.models.tabular_mlp import Preprocessor

__all__ = [
    "EDGE_ARTIFACT",
    "EDGE_OPSET",
    "Agreement",
    "student_artifacts",
    "agreement",
    "edge_feeds",
    "ngram_edge_graph",
    "quantize",
    "tabular_edge_graph",
]

#: The artifact an edge node runs: the student's self-contained graph with int8 weights.
EDGE_ARTIFACT = "edge_int8"


def student_artifacts(student: TorchClassifier, folder: Path) -> dict[str, Path]:
    """Save ``student`` to ``folder`` with its edge graph quantized to int8 (:data:`EDGE_ARTIFACT`);
    the paths by artifact name."""
    paths = student.save(folder)
    if "edge" not in paths:
        raise ValueError(f"a {student.family} student has no edge graph to run on a node")
    paths[EDGE_ARTIFACT] = quantize(paths["edge"], folder / "edge.int8.onnx")
    return paths


#: The least opset the front needs (string ``Equal`` came with 19).
EDGE_OPSET = 19


def tabular_edge_graph(prep: Preprocessor, net_path: Path, classes: list[str]) -> Any:
    """The ONNX model (``onnx.ModelProto``) of ``prep``'s encoding followed by the network saved at
    ``net_path`` (input ``x``, output ``probabilities``)."""
    import onnx
    from onnx import TensorProto, compose, helper

    net = onnx.load(str(net_path))
    net_opset = max(o.version for o in net.opset_import if o.domain in ("", "ai.onnx"))
    opset = max(EDGE_OPSET, net_opset)
    if opset != net_opset:
        net = onnx.version_converter.convert_version(net, opset)
    nodes: list[Any] = []
    inits: list[Any] = []

    def floats(name: str, values: Any) -> None:
        array = np.asarray(values, dtype=np.float32).reshape(1, -1)
        inits.append(helper.make_tensor(name, TensorProto.FLOAT, list(array.shape), array.ravel().tolist()))

    inputs = []
    blocks = []
    n_num, n_cat = len(prep.numeric), len(prep.categorical)
    if n_num:
        fill = prep.fill if prep.fill is not None else prep.mean  # the mean: an encoding saved before fills
        log = prep.log if prep.log is not None else [True] * n_num
        floats("fill", fill)
        floats("mean", prep.mean)
        floats("scale", prep.scale)
        inits.append(helper.make_tensor("log_mask", TensorProto.BOOL, [1, n_num], [bool(v) for v in log]))
        inits.append(helper.make_tensor("one", TensorProto.FLOAT, [], [1.0]))
        nodes += [
            helper.make_node("IsNaN", ["numbers"], ["missing"]),
            helper.make_node("Where", ["missing", "fill", "numbers"], ["filled"]),
            # symlog(x) = sign(x) * log(1 + |x|), where the encoding takes it
            helper.make_node("Abs", ["filled"], ["magnitude"]),
            helper.make_node("Add", ["magnitude", "one"], ["magnitude_1"]),
            helper.make_node("Log", ["magnitude_1"], ["log_magnitude"]),
            helper.make_node("Sign", ["filled"], ["sign"]),
            helper.make_node("Mul", ["sign", "log_magnitude"], ["symlog"]),
            helper.make_node("Where", ["log_mask", "symlog", "filled"], ["shaped"]),
            helper.make_node("Sub", ["shaped", "mean"], ["centred"]),
            helper.make_node("Div", ["centred", "scale"], ["standard"]),
        ]
        inputs.append(helper.make_tensor_value_info("numbers", TensorProto.FLOAT, ["batch", n_num]))
        blocks.append("standard")
    for j, name in enumerate(prep.categorical):
        vocab = np.asarray([str(v).encode() for v in prep.vocab[name]], dtype=object)
        inits.append(helper.make_tensor(f"column_{j}", TensorProto.INT64, [1], [j]))
        inits.append(helper.make_tensor(f"vocab_{j}", TensorProto.STRING, [1, len(vocab)], vocab))
        nodes += [
            helper.make_node("Gather", ["categories", f"column_{j}"], [f"values_{j}"], axis=1),
            helper.make_node("Equal", [f"values_{j}", f"vocab_{j}"], [f"is_{j}"]),
            helper.make_node("Cast", [f"is_{j}"], [f"one_hot_{j}"], to=TensorProto.FLOAT),
        ]
        blocks.append(f"one_hot_{j}")
    if n_cat:
        inputs.append(helper.make_tensor_value_info("categories", TensorProto.STRING, ["batch", n_cat]))
    nodes.append(helper.make_node("Concat", blocks, ["x"], axis=1))
    front = helper.make_model(
        helper.make_graph(
            nodes,
            "encode",
            inputs,
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", prep.width])],
            initializer=inits,
        ),
        opset_imports=[helper.make_opsetid("", opset)],
        ir_version=net.ir_version,
    )
    model = compose.merge_models(front, net, io_map=[("x", "x")])
    # The merge lists the default domain once per part; the quantizer wants it once.
    versions: dict[str, int] = {}
    for entry in model.opset_import:
        versions[entry.domain] = max(versions.get(entry.domain, 0), entry.version)
    del model.opset_import[:]
    model.opset_import.extend(helper.make_opsetid(domain, version) for domain, version in versions.items())
    helper.set_model_props(
        model,
        {
            "driftpilot.numbers": json.dumps(prep.numeric),
            "driftpilot.categories": json.dumps(prep.categorical),
            "driftpilot.classes": json.dumps(classes),
        },
    )
    onnx.checker.check_model(model)
    return model


def ngram_edge_graph(encoding: NgramEncoding, weight: np.ndarray, bias: np.ndarray, classes: list[str]) -> Any:
    """The ONNX model of ``encoding`` followed by the linear layer ``weight`` (``[width, classes]``)
    and ``bias``, ending in a softmax (output ``probabilities``)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from driftpilot.models.ngram_student import CHAR_NGRAMS, PAD, SENTINEL, TOKEN_PATTERN, WORD_NGRAMS

    nodes: list[Any] = []
    inits: list[Any] = []

    def constant(name: str, value: Any) -> str:
        if name not in {i.name for i in inits}:  # shared by both blocks
            inits.append(numpy_helper.from_array(np.asarray(value), name))
        return name

    def node(op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        nodes.append(helper.make_node(op, inputs, outputs, **attrs))

    node("Reshape", ["text", constant("flat", np.array([-1], np.int64))], ["text_flat"])
    # Locale "C": present on every image (the default en_US.UTF-8 is missing on slim ones); it
    # lower-cases ASCII only, as the Python side does.
    node("StringNormalizer", ["text_flat"], ["lowered"], case_change_action="LOWER", locale="C")
    # A sentinel token, so that no row is empty (the tokenizer gives no zero-width tensors).
    node("StringConcat", ["lowered", constant("sentinel", np.array([" " + SENTINEL], dtype=object))], ["guarded"])
    node(
        "Tokenizer",
        ["guarded"],
        ["words"],
        domain="com.microsoft",
        mark=0,
        pad_value=PAD,
        mincharnum=1,
        tokenexp=TOKEN_PATTERN,
    )
    # Characters of each token padded by spaces; flattened per row, an n-gram crossing two tokens
    # holds PAD or two spaces, which no pooled n-gram does, so one count per row is exact.
    node("StringConcat", [constant("space", np.array([" "], dtype=object)), "words"], ["words_left"])
    node("StringConcat", ["words_left", "space"], ["words_padded"])
    node(
        "Tokenizer",
        ["words_padded"],
        ["chars_3d"],
        domain="com.microsoft",
        mark=0,
        pad_value=PAD,
        mincharnum=1,
        separators=[""],
    )
    node("Reshape", ["chars_3d", constant("rows_flat", np.array([0, -1], np.int64))], ["chars"])
    blocks = []
    for kind, source, vocabulary, idf, low, split in (
        ("word", "words", encoding.words, encoding.word_idf, WORD_NGRAMS[0], lambda g: g.split(" ")),
        ("char", "chars", encoding.chars, encoding.char_idf, CHAR_NGRAMS[0], list),
    ):
        pool, indexes, counts, longest = _ngram_pool(vocabulary, split)
        node(
            "TfIdfVectorizer",
            [source],
            [f"{kind}_tf"],
            mode="TF",
            min_gram_length=low,
            max_gram_length=longest,
            max_skip_count=0,
            pool_strings=pool,
            ngram_counts=counts,
            ngram_indexes=indexes,
        )
        node("Add", [f"{kind}_tf", constant("one", np.array(1.0, np.float32))], [f"{kind}_tf1"])
        node("Log", [f"{kind}_tf1"], [f"{kind}_log"])
        node("Mul", [f"{kind}_log", constant(f"{kind}_idf", idf.astype(np.float32))], [f"{kind}_w"])
        node("Mul", [f"{kind}_w", f"{kind}_w"], [f"{kind}_sq"])
        node("ReduceSum", [f"{kind}_sq", constant("axis1", np.array([1], np.int64))], [f"{kind}_ss"], keepdims=1)
        node("Sqrt", [f"{kind}_ss"], [f"{kind}_norm"])
        node("Max", [f"{kind}_norm", constant("floor", np.array(1e-6, np.float32))], [f"{kind}_norm_floor"])
        node("Div", [f"{kind}_w", f"{kind}_norm_floor"], [f"{kind}_x"])
        blocks.append(f"{kind}_x")
    node("Concat", blocks, ["x"], axis=1)
    node("MatMul", ["x", constant("weight", weight.astype(np.float32))], ["z"])
    node("Add", ["z", constant("bias", bias.astype(np.float32))], ["logits"])
    node("Softmax", ["logits"], ["probabilities"], axis=1)
    graph = helper.make_graph(
        nodes,
        "ngram_student",
        [helper.make_tensor_value_info("text", TensorProto.STRING, ["batch"])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", len(classes)])],
        initializer=inits,
    )
    opset = max(EDGE_OPSET, 20)  # StringConcat came with 20
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset), helper.make_opsetid("com.microsoft", 1)]
    )
    model.ir_version = 10
    helper.set_model_props(
        model,
        {
            "driftpilot.numbers": "[]",
            "driftpilot.categories": "[]",
            "driftpilot.texts": json.dumps([encoding.text]),
            "driftpilot.classes": json.dumps(classes),
        },
    )
    onnx.checker.check_model(model)
    return model


def _ngram_pool(vocabulary: dict[str, int], split: Any) -> tuple[list[str], list[int], list[int], int]:
    """``TfIdfVectorizer``'s pool from an ``{n-gram: column}`` vocabulary: the n-grams' tokens
    grouped by length, shortest first, with each group's start in the pool and its columns."""
    items = sorted((len(split(gram)), gram, column) for gram, column in vocabulary.items())
    longest = items[-1][0] if items else 1
    pool: list[str] = []
    indexes: list[int] = []
    counts: list[int] = []
    for n in range(1, longest + 1):
        counts.append(len(pool))
        for length, gram, column in items:
            if length == n:
                pool += split(gram)
                indexes.append(column)
    return pool, indexes, counts, longest


class _PreprocessingAdvice(logging.Filter):
    """Drops the quantizer's advice to run its shape pre-processing (logged on the root logger at
    every call): it matters for static quantization of large graphs, not for these."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Please consider to run pre-processing before quantization")


_ADVICE = _PreprocessingAdvice()


def quantize(source: Path, target: Path) -> Path:
    """Write ``source``'s graph with int8 weights to ``target`` (onnxruntime's dynamic
    quantization: weights stored as int8, activations quantized on the fly), metadata kept."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    if _ADVICE not in logging.getLogger().filters:
        logging.getLogger().addFilter(_ADVICE)
    quantize_dynamic(str(source), str(target), weight_type=QuantType.QInt8)
    # quantize_dynamic drops the model's metadata: put it back, the node reads its columns there.
    original, quantized = onnx.load(str(source)), onnx.load(str(target))
    onnx.helper.set_model_props(quantized, {p.key: p.value for p in original.metadata_props})
    onnx.save(quantized, str(target))
    return target


def edge_feeds(meta: Mapping[str, str], events: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The inputs of an edge graph whose metadata is ``meta``, from raw events (a missing or
    ``None`` number is a missing reading, a missing category is unknown, a missing text is empty)."""
    numbers, categories, texts = (
        json.loads(meta.get(f"driftpilot.{key}", "[]")) for key in ("numbers", "categories", "texts")
    )
    n = len(events)
    feeds: dict[str, np.ndarray] = {}
    if numbers:
        feeds["numbers"] = np.array(
            [[float("nan") if e.get(name) is None else float(e[name]) for name in numbers] for e in events],
            dtype=np.float32,
        ).reshape(n, len(numbers))
    if categories:
        feeds["categories"] = np.array(
            [["" if e.get(name) is None else str(e[name]) for name in categories] for e in events], dtype=object
        ).reshape(n, len(categories))
    if texts:
        feeds["text"] = np.array(["" if e.get(texts[0]) is None else str(e[texts[0]]) for e in events], dtype=object)
    return feeds


@dataclass(frozen=True)
class Agreement:
    """How an edge graph answers beside the Python model on the same rows."""

    rows: int
    agreement: float
    max_abs_difference: float
    #: The rows answered differently: ``{row, python, python_p, edge, edge_p}``, at most 20.
    disagreements: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "agreement": round(self.agreement, 6),
            "max_abs_difference": float(f"{self.max_abs_difference:.3g}"),
            "disagreements": self.disagreements,
        }


def agreement(model: TorchClassifier, graph: Path, columns: Columns, *, batch: int = 512) -> Agreement:
    """Run ``graph`` (an edge graph of ``model``) on ``columns`` and compare its answers with
    ``model.predict_proba``'s, row by row."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    expected = np.asarray(model.predict_proba(columns))
    n = expected.shape[0]
    # By position (a frame's index may be anything), as objects (None stays None).
    values = {name: np.asarray(columns[name], dtype=object) for name in columns}
    events = [{name: _plain(column[i]) for name, column in values.items()} for i in range(n)]
    got = (
        np.vstack(
            [session.run(["probabilities"], edge_feeds(meta, events[i : i + batch]))[0] for i in range(0, n, batch)]
        )
        if n
        else np.zeros((0, expected.shape[1]), np.float32)
    )
    python_class, edge_class = expected.argmax(axis=1), got.argmax(axis=1)
    differ = np.flatnonzero(python_class != edge_class)
    return Agreement(
        rows=n,
        agreement=float((python_class == edge_class).mean()) if n else 1.0,
        max_abs_difference=float(np.abs(expected - got).max()) if n else 0.0,
        disagreements=[
            {
                "row": int(i),
                "python": model.classes[python_class[i]],
                "python_p": round(float(expected[i, python_class[i]]), 4),
                "edge": model.classes[edge_class[i]],
                "edge_p": round(float(got[i, edge_class[i]]), 4),
            }
            for i in differ[:20]
        ],
    )


def _plain(value: Any) -> Any:
    """A column's value as an event field: NaN and None are missing."""
    if value is None or (isinstance(value, (float, np.floating)) and np.isnan(value)):
        return None
    return value.item() if isinstance(value, np.generic) else value
