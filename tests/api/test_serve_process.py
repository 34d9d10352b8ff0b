"""The README's path, over real HTTP: register a model from a CSV, create a token, start
`driftpilot serve`, send events and labels, read /metrics, and stop it with SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import httpx
import pytest

from driftpilot import cli
from tests.live import free_port
from tests.loop.test_service import _register


def _serving(tmp_path, capsys, *options: str):
    """A registered model, an ingest token's headers, and ``driftpilot serve`` started on a free
    port: (process, base URL, headers, home, log file)."""
    home = tmp_path / "home"
    assert _register(home, "credit") == 0
    assert cli.main(["--home", str(home), "token", "create", "--role", "ingest", "--name", "relay"]) == 0
    headers = {"Authorization": f"Bearer {capsys.readouterr().out.strip().splitlines()[-1]}"}
    port = free_port()
    log = (tmp_path / "serve.log").open("wb")
    server = subprocess.Popen(
        [sys.executable, "-m", "driftpilot.cli", "--home", str(home), "serve", "--port", str(port), *options],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    return server, f"http://127.0.0.1:{port}", headers, home, log


@pytest.mark.slow
def test_serve_takes_events_and_labels_and_stops_on_sigterm(tmp_path, capsys) -> None:
    server, base, headers, _, log = _serving(tmp_path, capsys, "--tick", "0.5")
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        events = [
            {
                "key": f"tx-{i}",
                "entity": "c17",
                "time": "2026-12-06T10:00:00Z",
                "features": {"income": 0.4, "debt": 1.2, "segment": "a"},
                "served_version": 1,
                "prediction": "yes",
            }
            for i in range(3)
        ]
        sent = httpx.post(f"{base}/models/credit/events", json={"events": events}, headers=headers)
        labelled = httpx.post(
            f"{base}/models/credit/labels",
            json={"labels": [{"key": "tx-1", "label": "no", "source": "system"}]},
            headers=headers,
        )
        metrics = httpx.get(f"{base}/metrics", headers=headers).text
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
        log.close()

    assert sent.json() == {"inserted": 3, "duplicates": 0}
    assert labelled.json() == {"inserted": 1, "duplicates": 0}
    assert 'driftpilot_events_ingested_total{model="credit",source="http"} 3.0' in metrics
    assert code == 0, (tmp_path / "serve.log").read_text()


@pytest.mark.slow
def test_serve_with_two_workers_answers_from_both_and_sums_their_metrics(tmp_path, capsys) -> None:
    server, base, headers, home, log = _serving(tmp_path, capsys, "--workers", "2")
    try:
        deadline = time.monotonic() + 60
        started = 0
        while time.monotonic() < deadline and started < 2:  # both processes say they serve
            time.sleep(0.3)
            started = (tmp_path / "serve.log").read_text().count("Application startup complete")
        answered = []
        for i in range(40):  # a connection of its own each: the kernel spreads them over both
            event = {
                "key": f"tx-{i}",
                "entity": "c1",
                "time": "2026-12-06T10:00:00Z",
                "features": {"income": 0.1, "debt": 0.2, "segment": "b"},
            }
            answered.append(httpx.post(f"{base}/models/credit/events", json={"events": [event]}, headers=headers))
        metrics = httpx.get(f"{base}/metrics", headers=headers).text
        counting = sorted(p.name for p in (home / "metrics").glob("counter_*.db"))  # one file a process
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=60)
    finally:
        if server.poll() is None:
            server.kill()
        log.close()

    assert started == 2
    assert len(counting) == 2, counting  # both processes stored events
    assert all(a.status_code == 200 for a in answered)
    # Whichever process a scrape reaches, it counts what both stored.
    assert 'driftpilot_events_ingested_total{model="credit",source="http"} 40.0' in metrics
    assert code == 0
    assert "Finished server process" in (tmp_path / "serve.log").read_text()
