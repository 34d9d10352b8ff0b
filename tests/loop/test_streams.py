"""Every shipped stream, exported small, replays end to end and writes the four outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from driftpilot.loop.replay import run_replay
from driftpilot.loop.streams import export, replay_config
from driftpilot.models.text_encoder import SentenceEncoder
from driftpilot.scenarios.export import STREAMS

#: Every shipped stream replayed end to end: minutes on two cores (the ONT stream alone over two).
pytestmark = pytest.mark.slow

#: The repository's copy of Banking77 (CC BY 4.0), so the tests run wherever it is checked out.
BANKING77 = Path(__file__).resolve().parents[1] / "data" / "banking77"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, dict]]:
    folder = tmp_path_factory.mktemp("streams")
    manifest = export(folder, scale=0.02, seed=1, banking77_dir=BANKING77)
    return folder, {entry["name"]: entry for entry in manifest}


@pytest.fixture(scope="module")
def encoder(tmp_path_factory: pytest.TempPathFactory) -> SentenceEncoder:
    return SentenceEncoder(tmp_path_factory.mktemp("minilm"))


def test_export_writes_data_and_commands(exported):
    folder, manifest = exported

    assert sorted(manifest) == sorted(STREAMS)
    assert json.loads((folder / "streams.json").read_text())[0]["command"].startswith("driftpilot replay ")
    # Every stream replays under the default policy.
    assert all("--policy" not in entry["command"] for entry in manifest.values())
    assert not list(folder.glob("*.policy.yaml"))
    assert "--text-col text" in manifest["banking77"]["command"]


@pytest.mark.parametrize("name", STREAMS)
def test_each_shipped_stream_replays_and_writes_the_four_outputs(exported, encoder, tmp_path, name):
    folder, manifest = exported
    entry = manifest[name]
    config = replay_config(entry, folder, tmp_path / "out", encoder=encoder)

    result = run_replay(config)

    assert {p.name for p in result.files.values()} == {
        "predictions.csv",
        "decisions.jsonl",
        "summary.json",
        "report.html",
    }
    predictions = pd.read_csv(result.files["predictions"], dtype={"prediction": str, "label": str})
    assert len(predictions) == entry["rows"] - entry["warmup"]
    assert predictions["row"].is_unique
    s = result.summary
    assert set(s["scores"]) == {"driftpilot", "static", "periodic", "river-arf", "logistic"}
    assert s["labels_revealed"]["feedback"] + s["labels_revealed"]["requested"] <= s["labels_revealed"]["budget"]
    assert 0 <= s["scores"]["driftpilot"]["accuracy"] <= 1
