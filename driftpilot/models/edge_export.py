"""Self-contained ONNX graphs for edge nodes: raw event fields in, class probabilities out.

A version's ``model.onnx`` takes the encoded matrix its family's Python encoding makes. An edge
node has no such code, only onnxruntime, so a family that can also writes ``edge.onnx``: the
encoding rebuilt from standard ONNX operators (opset 19 or later, for string ``Equal``) in front of
the same network. The tabular encoding becomes:

- ``numbers`` (float32, ``[N, len(numbers)]``, NaN for a reading that did not come): the stored
  median where NaN, the symmetric log where the encoding takes it, then standardised;
- ``categories`` (string, ``[N, len(categories)]``): one-hot against the training vocabulary,
  an unknown value all zeros, as :meth:`~driftpilot.models.tabular_mlp.Preprocessor.transform`.

The graph's metadata names the columns of each input in order (``driftpilot.numbers``,
``driftpilot.categories``) and the output's classes (``driftpilot.classes``), so a node maps an
event's fields by name and needs nothing else from the server.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from driftpilot.models.tabular_mlp import Preprocessor

__all__ = ["EDGE_OPSET", "tabular_edge_graph"]

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
