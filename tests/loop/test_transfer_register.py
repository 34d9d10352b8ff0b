"""``driftpilot models register NAME --from OTHER``: a new region's model starts from a sibling's
weights, and the bootstrap decision says what was carried over and whether it was chosen."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

from driftpilot import cli
from driftpilot.memory import db, decisions, managed, versions
from driftpilot.models.registry import Registry

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _history(path: Path, n: int, seed: int, *, tenure: bool = False) -> Path:
    """A rule a few dozen rows cannot teach from scratch (an XOR of two readings), which a sibling
    trained on thousands knows; the new region also records a feature the sibling never had."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    frame = pd.DataFrame(
        {
            "time": [(T0 + timedelta(minutes=i)).isoformat() for i in range(n)],
            "income": x[:, 0],
            "debt": x[:, 1],
            "defaulted": np.where((x[:, 0] > 0) ^ (x[:, 1] > 0), "yes", "no"),
        }
    )
    if tenure:
        frame["tenure"] = rng.uniform(0, 10, size=n)
    frame.to_csv(path, index=False)
    return path


def _register(home: Path, name: str, data: Path, *extra: str) -> int:
    args = ["--home", str(home), "models", "register", name, "--data", str(data), "--target", "defaulted"]
    return cli.main([*args, "--time-col", "time", *extra])


def test_a_new_region_starts_from_its_sibling_and_the_decision_says_what_was_carried(tmp_path, capsys):
    home = tmp_path / "home"
    assert _register(home, "north", _history(tmp_path / "north.csv", 3000, seed=0)) == 0
    south = _history(tmp_path / "south.csv", 80, seed=1, tenure=True)
    assert _register(home, "south", south, "--from", "north") == 0
    printed = capsys.readouterr().out

    sessions = db.connect(f"sqlite:///{home / 'driftpilot.sqlite'}")
    with sessions() as session:
        model = managed.get_model(session=session, name="south")
        boot = decisions.list_decisions(session=session, model_id=model.id, action="bootstrap")[-1]
        champion = Registry(home / "artifacts").load(versions.champion(session=session, model_id=model.id))
    carried = boot.evidence["transfer"]
    assert carried["from"] == "north" and carried["chosen"] is True
    assert carried["shared_features"] == ["income", "debt"] and carried["new_features"] == ["tenure"]
    assert "transferred from north" in boot.evidence["shapes"]
    assert "from north's weights" in boot.rationale
    assert "from north: chosen; shared features income, debt; new features tenure" in printed
    # What was carried serves the new region: 64 rows alone could not teach the XOR this well.
    test = pd.read_csv(_history(tmp_path / "test.csv", 2000, seed=2, tenure=True))
    assert float(np.mean(champion.predict(test) == test["defaulted"].to_numpy())) > 0.85


def test_an_unknown_sibling_is_refused_and_nothing_is_registered(tmp_path, capsys):
    home = tmp_path / "home"
    data = _history(tmp_path / "south.csv", 80, seed=1)
    assert _register(home, "south", data, "--from", "nowhere") == 2
    assert "--from nowhere: no managed model of that name" in capsys.readouterr().err
    sessions = db.connect(f"sqlite:///{home / 'driftpilot.sqlite'}")
    with sessions() as session:
        assert [m.name for m in managed.list_models(session=session)] == []
