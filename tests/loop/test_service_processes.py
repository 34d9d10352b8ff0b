"""Two loop processes on one PostgreSQL: every run is executed once, by whichever holds the model,
and a loop killed with SIGKILL is taken over when its leases lapse."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, datetime

import pytest
import sqlalchemy as sa

from driftpilot.memory import db
from driftpilot.memory.tables import Decision, LoopLease

from .test_service import _register, _siren

MODELS = ("north", "south", "east")


def _loop_process(home, url, log):
    command = [sys.executable, "-m", "driftpilot.cli", "--home", str(home), "--database-url", url]
    return subprocess.Popen(
        [*command, "run", "--tick", "0.2", "--lease-seconds", "4"], stdout=log, stderr=subprocess.STDOUT
    )


def _alarm(sessions, key: str, model: str) -> None:
    _siren(sessions, key, datetime.now(UTC), model)


def _alarm_runs(sessions) -> Counter[str]:
    with sessions() as session:
        runs = session.scalars(sa.select(Decision.run_id).where(Decision.agent == "monitor"))
        return Counter(run.split("/alarm/")[1] for run in runs if "/alarm/" in run)


def _wait_for(sessions, keys: set[str], timeout: float = 240) -> Counter[str]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = _alarm_runs(sessions)
        if keys <= set(runs):
            return runs
        time.sleep(0.5)
    pytest.fail(f"alarm runs missing after {timeout} s: {sorted(keys - set(_alarm_runs(sessions)))}")


@pytest.mark.slow
@pytest.mark.parametrize("memory_url", ["postgresql"], indirect=True)
def test_two_loops_run_every_alarm_once_and_take_over_a_killed_one(tmp_path, memory_url) -> None:
    home = tmp_path / "home"
    for name in MODELS:
        assert _register(home, name, database_url=memory_url) == 0
    sessions = db.connect(memory_url)
    log = open(tmp_path / "loops.log", "wb")  # noqa: SIM115
    loops = [_loop_process(home, memory_url, log), _loop_process(home, memory_url, log)]
    try:
        first = {f"{m}-{i}" for m in MODELS for i in range(2)}
        for key in sorted(first):
            _alarm(sessions, key, key.split("-")[0])
        runs = _wait_for(sessions, first)
        with sessions() as session:
            holders = {lease.model_id: lease.holder for lease in session.scalars(sa.select(LoopLease))}
        assert len(holders) == len(MODELS)

        # kill -9 the loop that holds the first model; the other takes its models over.
        victim_pid = int(holders[min(holders)].split(":")[1])
        victim = next(p for p in loops if p.pid == victim_pid)
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
        later = {f"{m}-late" for m in MODELS}
        for key in sorted(later):
            _alarm(sessions, key, key.split("-")[0])
        runs = _wait_for(sessions, first | later)

        survivor = next(p for p in loops if p is not victim)
        survivor.send_signal(signal.SIGTERM)
        assert survivor.wait(timeout=120) == 0
    finally:
        for process in loops:
            if process.poll() is None:
                process.kill()
        log.close()

    assert all(n == 1 for n in runs.values()), runs  # every alarm's run executed once
    with sessions() as session:
        left = list(session.scalars(sa.select(LoopLease.holder)))
    assert all(holder == "" or str(victim_pid) in holder for holder in left)  # the survivor gave its leases back
