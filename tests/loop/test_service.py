"""The service: a model registered from a CSV, tokens from the CLI, and the background loop that
checks models on the clock and at once on an alarm, one loop per model at a time."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from driftpilot import cli
from driftpilot.graph.runner import sqlite_checkpointer
from driftpilot.loop.metrics import LoopMetrics
from driftpilot.loop.service import ServiceLoop
from driftpilot.memory import db, managed, versions
from driftpilot.memory.ingest import ingest_alarm
from driftpilot.memory.tables import Decision, LoopLease
from driftpilot.models.registry import Registry

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def _history(path: Path, n: int = 300, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    frame = pd.DataFrame(
        {
            "time": [(T0 + timedelta(minutes=i)).isoformat() for i in range(n)],
            "customer": [f"c{i % 40}" for i in range(n)],
            "income": x[:, 0],
            "debt": x[:, 1],
            "segment": rng.choice(["a", "b"], size=n),
            "defaulted": np.where(x[:, 1] - x[:, 0] > 0, "yes", "no"),
        }
    )
    frame.to_csv(path, index=False)
    return path


def _register(home: Path, name: str, *extra: str, database_url: str | None = None) -> int:
    data = _history(home.parent / f"{name}.csv")
    url = ["--database-url", database_url] if database_url else []
    return cli.main(
        [
            "--home",
            str(home),
            *url,
            "models",
            "register",
            name,
            "--data",
            str(data),
            "--target",
            "defaulted",
            "--time-col",
            "time",
            "--entity-col",
            "customer",
            *extra,
        ]
    )


def test_a_model_registered_from_a_csv_serves_version_one_under_its_own_policy(tmp_path, capsys) -> None:
    home = tmp_path / "home"
    policy = tmp_path / "credit.yaml"
    policy.write_text("name: credit\nautonomy: L3\n")

    assert _register(home, "credit", "--policy", str(policy)) == 0
    again = _register(home, "credit")
    bad = cli.main(
        ["--home", str(home), "models", "register", "x", "--data", str(tmp_path / "credit.csv"), "--target", "nope"]
    )

    sessions = db.connect(f"sqlite:///{home / 'driftpilot.sqlite'}")
    with sessions() as session:
        model = managed.get_model(session=session, name="credit")
        champion = versions.champion(session=session, model_id=model.id)
    assert champion is not None and champion.number == 1
    assert model.policy == str((home / "policies" / "credit.yaml").resolve())
    assert Path(model.policy).read_text() == policy.read_text()
    assert managed.model_schema(model).classes == ["no", "yes"]
    assert (again, bad) == (2, 2)
    err = capsys.readouterr().err
    assert "a model named 'credit' is registered already" in err and "--target 'nope'" in err


def test_token_create_prints_the_token_alone_on_its_last_line(tmp_path, capsys) -> None:
    home = ["--home", str(tmp_path)]
    assert cli.main([*home, "token", "create", "--role", "ingest", "--name", "gateway-relay"]) == 0
    token = capsys.readouterr().out.strip().splitlines()[-1]
    assert cli.main([*home, "token", "create", "--role", "ingest", "--name", "gateway-relay"]) == 2
    assert cli.main([*home, "token", "revoke", "gateway-relay"]) == 0
    assert cli.main([*home, "token", "list"]) == 0

    assert token.startswith("dp_") and len(token) > 40 and " " not in token
    assert "gateway-relay            ingest    created" in capsys.readouterr().out


def _loop(home: Path, sessions, checkpointer, holder: str) -> ServiceLoop:
    return ServiceLoop(
        sessions,
        Registry(home / "artifacts"),
        checkpointer,
        holder=holder,
        metrics=LoopMetrics(sessions),
        lease=timedelta(minutes=2),
    )


def _monitor_runs(sessions) -> list[str]:
    with sessions() as session:
        return list(
            session.scalars(sa.select(Decision.run_id).where(Decision.agent == "monitor").order_by(Decision.id))
        )


def test_the_loop_checks_on_the_cadence_at_once_on_an_alarm_and_one_loop_per_model(tmp_path) -> None:
    home = tmp_path / "home"
    assert _register(home, "credit") == 0
    sessions = db.connect(f"sqlite:///{home / 'driftpilot.sqlite'}")
    start = datetime.now(UTC).replace(microsecond=0)
    with sqlite_checkpointer(home / "checkpoints.sqlite") as checkpointer:
        first = _loop(home, sessions, checkpointer, "loop-a")
        second = _loop(home, sessions, checkpointer, "loop-b")

        early = first.run_once(start)
        taken = second.run_once(start + timedelta(minutes=1))  # loop-a holds the lease
        due = first.run_once(start + timedelta(minutes=121))  # the default policy checks every 2 hours
        repeat = first.run_once(start + timedelta(minutes=122))  # nothing new: not due
        with sessions() as session:
            ingest_alarm(
                session=session,
                alarm={
                    "key": "a-9",
                    "name": "SiteDown",
                    "severity": "critical",
                    "status": "firing",
                    "starts_at": start,
                    "model": "credit",
                },
            )
        alarmed = first.run_once(start + timedelta(minutes=123))
        # loop-a stops passing: once its lease lapses, loop-b takes the model over.
        held = second.run_once(start + timedelta(minutes=124))
        over = second.run_once(start + timedelta(minutes=123 + 3))

    assert (early, taken, repeat, held) == ([], [], [], [])
    assert [(r.thread, r.trigger["kind"]) for r in due] == [("main", "schedule")]
    assert [(r.thread, r.trigger) for r in alarmed] == [("alarms", {"kind": "alarm", "alarm": "a-9"})]
    assert over == []  # taken over, nothing due yet: the cadence starts afresh in the new holder
    with sessions() as session:
        (lease,) = session.scalars(sa.select(LoopLease)).all()
    assert lease.holder == "loop-b"
    runs = _monitor_runs(sessions)
    assert len(runs) == 2 and runs[0].endswith("/main/schedule") and runs[1].endswith("/alarms/alarm/a-9")
    assert first.metrics is not None
    assert 'driftpilot_loop_lag_seconds{model="credit"}' in _exposition(first.metrics)


def _exposition(metrics: LoopMetrics) -> str:
    from prometheus_client import generate_latest

    return generate_latest(metrics.registry).decode()


def test_an_alarm_wakes_a_sleeping_loop_and_stop_gives_the_leases_back(tmp_path) -> None:
    import threading

    home = tmp_path / "home"
    assert _register(home, "credit") == 0
    sessions = db.connect(f"sqlite:///{home / 'driftpilot.sqlite'}")
    with sqlite_checkpointer(home / "checkpoints.sqlite") as checkpointer:
        loop = ServiceLoop(sessions, Registry(home / "artifacts"), checkpointer, holder="loop-a", tick=600)
        worker = threading.Thread(target=loop.run)
        worker.start()
        try:
            deadline = time.monotonic() + 30
            while "credit" not in loop.models and time.monotonic() < deadline:
                time.sleep(0.05)  # the first pass took the model; the loop now sleeps for 10 minutes
            with sessions() as session:
                ingest_alarm(
                    session=session,
                    alarm={
                        "key": "a-1",
                        "name": "SiteDown",
                        "severity": "critical",
                        "status": "firing",
                        "starts_at": datetime.now(UTC),
                        "model": "credit",
                    },
                )
            loop.wake(["credit"])
            while not any("/alarm/a-1" in r for r in _monitor_runs(sessions)) and time.monotonic() < deadline:
                time.sleep(0.1)
        finally:
            loop.stop()
            worker.join(timeout=60)

    assert any("/alarm/a-1" in r for r in _monitor_runs(sessions))
    assert not worker.is_alive()
    with sessions() as session:
        assert [lease.holder for lease in session.scalars(sa.select(LoopLease))] == [""]


def _siren(sessions, key: str, at: datetime, model: str = "credit") -> None:
    """A firing SiteDown alarm ``key`` for ``model``, stored as the alarm hook stores it."""
    with sessions() as session:
        ingest_alarm(
            session=session,
            alarm={
                "key": key,
                "name": "SiteDown",
                "severity": "critical",
                "status": "firing",
                "starts_at": at,
                "model": model,
            },
        )


def test_no_alarm_is_lost_to_a_crashed_run_or_to_runs_that_wait(tmp_path, monkeypatch) -> None:
    """An alarm's run that a crash stopped is finished before the next alarm's run starts (it
    used to be resumed in the next alarm's place, and that alarm was never run); alarm runs that
    wait each hold a thread of their own, and an alarm with no thread free waits its turn."""
    from langgraph.types import interrupt

    from driftpilot.graph import build

    crashed: list[str] = []
    waits = {"a-2", "a-3", "a-4", "a-5"}

    def monitor(state, runtime):
        alarm = state["trigger"].get("alarm")
        if alarm == "a-1" and not crashed:
            crashed.append(alarm)
            raise RuntimeError("the process died here")
        if alarm in waits:
            interrupt({"waiting_for": "a person"})  # resumed by the loop's next look at waiting runs
        return build_monitor(state, runtime)

    build_monitor = build.monitor
    monkeypatch.setattr(build, "monitor", monitor)
    home = tmp_path / "home"
    assert _register(home, "credit") == 0
    sessions = db.connect(f"sqlite:///{home / 'driftpilot.sqlite'}")
    start = datetime.now(UTC).replace(microsecond=0)
    with sqlite_checkpointer(home / "checkpoints.sqlite") as checkpointer:
        loop = _loop(home, sessions, checkpointer, "loop-a")
        _siren(sessions, "a-1", start)
        try:
            loop.run_once(start)
            raise AssertionError("the crash was not raised")
        except RuntimeError as crash:
            assert "died here" in str(crash)
        for key in ("a-2", "a-3", "a-4", "a-5", "a-6"):
            _siren(sessions, key, start)
        second = loop.run_once(start + timedelta(minutes=1))
        after_second = _monitor_runs(sessions)
        third = loop.run_once(start + timedelta(minutes=20))  # the waiting runs are looked at again
        fourth = loop.run_once(start + timedelta(minutes=21))

    # a-1's run was finished first (on its own thread), then four alarm threads took a-2..a-5.
    assert [(r.thread, r.trigger.get("alarm")) for r in second] == [
        ("alarms", "a-2"),
        ("alarms-2", "a-3"),
        ("alarms-3", "a-4"),
        ("alarms-4", "a-5"),
    ]
    assert [r.split("/alarm/")[1] for r in after_second] == ["a-1"]
    assert sorted(r.thread for r in third) == ["alarms", "alarms-2", "alarms-3", "alarms-4"]
    assert [(r.thread, r.trigger.get("alarm")) for r in fourth] == [("alarms", "a-6")]
    alarm_runs = [r.split("/alarm/")[1] for r in _monitor_runs(sessions) if "/alarm/" in r]
    assert sorted(alarm_runs) == ["a-1", "a-2", "a-3", "a-4", "a-5", "a-6"]  # each run once
