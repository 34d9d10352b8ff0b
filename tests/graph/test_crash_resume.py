"""A loop killed during training (or between a side effect and its checkpoint) resumes without a
second training or a second release: every side effect is found again by the run that made it."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest

import driftpilot.agents.trainer as trainer_module
from driftpilot.graph.runner import LoopRunner, sqlite_checkpointer
from driftpilot.memory import decisions, releases, versions

from .crash_world import MODEL_NAME, NOW, RUN_ID, build, parts

#: Each case starts a process, kills it mid-step and resumes the run: 5-35 s each on two cores.
pytestmark = pytest.mark.slow

CHILD = Path(__file__).with_name("crash_world.py")


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("crash-world")
    build(folder)
    return folder


def _copy(built: Path, tmp_path: Path) -> Path:
    import shutil

    shutil.copytree(built, tmp_path / "world")
    return tmp_path / "world"


def _killed(folder: Path, where: str) -> None:
    child = subprocess.run(
        [sys.executable, str(CHILD), str(folder), where], capture_output=True, text=True, timeout=300
    )
    assert child.returncode == -9, child.stderr[-2000:]


def _facts(context) -> dict:
    with context.sessions() as session:
        model_id = 1
        every = versions.list_versions(session=session, model_id=model_id)
        parent = {v.id: v.number for v in every}
        candidates = [v for v in every if v.number > 1]
        retrains = decisions.list_decisions(session=session, model_id=model_id, agent="trainer", action="retrain")
        starts = [
            d
            for d in decisions.list_decisions(session=session, model_id=model_id, action="start_canary")
            if d.outcome in ("shadow_started", "canary_started")
        ]
        return {
            "versions": [(v.number, v.stage) for v in candidates if v.stage != "student"],
            # Edge students, by the number of the version each was distilled from.
            "students": [parent[v.parent_id] for v in candidates if v.stage == "student"],
            "retrains": [(d.run_id, d.outcome) for d in retrains],
            "recovered": [bool(d.evidence.get("recovered")) for d in [*retrains, *starts]],
            "releases": [(r.id, r.phase) for r in releases.list_releases(session=session, model_id=model_id)],
            "release_decisions": len(starts),
            "serving_changes": len(releases.serving_history(session=session, model_id=model_id)),
        }


@pytest.mark.parametrize(
    ("where", "trainings", "recovered"),
    [
        # Killed mid-fit: nothing was registered, so the resumed run trains (the only training
        # that ever finished): the update, and the full retrain and the linear model that compete with it.
        ("fit", 3, [False, False]),
        # Killed after the version and its decision were written: nothing is trained again.
        ("registered", 0, [False, False]),
        # Killed as the release was about to start: the Trainer's finished step is found.
        ("before_release", 0, [False, False]),
        # Killed after the release started but before its decision: the decision is written now.
        ("release", 0, [False, True]),
    ],
)
def test_a_run_killed_mid_step_resumes_without_doing_anything_twice(
    built, tmp_path, monkeypatch, where, trainings, recovered
):
    folder = _copy(built, tmp_path)
    _killed(folder, where)
    context, checkpoints = parts(folder)
    before = _facts(context)
    assert before["releases"] == ([(1, "shadow")] if where == "release" else [])

    fits = []
    train = trainer_module.train_candidate
    monkeypatch.setattr(trainer_module, "train_candidate", lambda *a, **kw: fits.append(1) or train(*a, **kw))
    with sqlite_checkpointer(checkpoints) as checkpointer:
        runner = LoopRunner(context, checkpointer)
        # The background loop finds the unfinished run after the restart and finishes it.
        assert runner.waiting(MODEL_NAME)
        runner.step(MODEL_NAME, NOW + timedelta(minutes=5), {"kind": "schedule"})
        after = _facts(context)
        # It now waits for canary evidence; looking again trains and releases nothing more.
        assert runner.graph.get_state({"configurable": {"thread_id": f"{MODEL_NAME}:main"}}).next == ("canary_judge",)
        runner.step(MODEL_NAME, NOW + timedelta(hours=1), {"kind": "schedule"})
        again = _facts(context)

    assert len(fits) == trainings
    assert after["versions"] == [(2, "shadow")]
    # The candidate's edge student, once: registered after its teacher in the same step, so a run
    # killed once the teacher was written resumes without one (the nodes keep theirs) and never
    # makes two.
    assert after["students"] in ([], [2]) and again["students"] == after["students"]
    if where == "fit":  # trained on resume: distilled on resume
        assert after["students"] == [2]
    assert after["retrains"] == [(RUN_ID, "candidate")]
    assert after["releases"] == [(1, "shadow")]
    assert after["release_decisions"] == 1
    assert after["recovered"] == recovered
    # One serving change: the release's start (the champion's own row came with it).
    assert after["serving_changes"] == 1
    assert again == after
