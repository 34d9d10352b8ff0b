"""Ingest bench: how many events a second ``driftpilot serve`` stores, and how fast it answers.

For each target a fresh ``driftpilot serve`` runs as a subprocess (the API and the background
loop in one process, default tick), on a fresh home and database, with a small model registered
from a CSV (``models register``) and an ingest token (``token create``). This process, the
second one on loopback, then sends batches of 100 unique events:

* **http_sqlite**, **http_postgres**: ``POST /models/{name}/events`` from ``--clients``
  concurrent keep-alive connections (one asyncio httpx client) for ``--seconds``, after a short
  warm-up. Events/s counts the events of 2xx answers over the measured window; latency is per
  batch, from sending the request to reading the answer (which comes after the commit). At the
  end the database must hold every acknowledged event, no more and no less.
* **mqtt**, **jetstream**: the same batches published (MQTT QoS 1 on
  ``driftpilot/<model>/events``, JetStream on ``driftpilot.<model>.events``) while the service
  consumes them into SQLite (``--broker-database postgres``: into PostgreSQL). The publisher
  keeps at most ``--window`` batches ahead of what is stored (Mosquitto drops QoS 1 messages
  beyond a session's queue of 1000), so the rate is the consumer's: events stored per second,
  from the first publish to the last commit. Latency is from publishing a batch to its commit
  (the event's ``ingested_at``), the window's queue included.

The machine's cores are shared by server, client and database: the table gives the cores each
used (server: the ``driftpilot serve`` processes; machine: everything, PostgreSQL and other work
included). ``--workers`` says how many processes answer HTTP for each target (``serve --workers
N``: uvicorn's workers on one port, the loop in the main process): on PostgreSQL two, one a core,
since there one process's GIL bounds ingest, not the database; on SQLite one, since SQLite takes
one writer at a time and separate processes would queue in its busy handler.

Goals (issue 17): ≥ 20,000 events/s over HTTP into each database on 2 cores with p99 ≤ 50 ms;
MQTT and JetStream ≥ 10,000 events/s.

    .venv/bin/python evals/ingest_bench.py [--seconds 30] [--only http_sqlite,mqtt] [--clients 4]
        [--workers http_sqlite=1,http_postgres=2] [--broker-database sqlite] [--window 20] [--no-write]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from driftpilot.memory import db, events, managed  # noqa: E402
from driftpilot.memory.tables import Event  # noqa: E402

RESULTS = ROOT / "evals" / "results"
TARGETS = ("http_sqlite", "http_postgres", "mqtt", "jetstream")
GOALS = {"http_sqlite": 20_000, "http_postgres": 20_000, "mqtt": 10_000, "jetstream": 10_000}
P99_GOAL_MS = 50.0
BATCH = 100
POSTGRES_URL = os.environ.get("DRIFTPILOT_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MQTT_URL = "mqtt://127.0.0.1:1883"
NATS_URL = "nats://127.0.0.1:4222"
#: What ``driftpilot serve`` names its MQTT session and JetStream consumer (driftpilot/loop/live.py).
SERVICE_CLIENT_ID = SERVICE_DURABLE = "driftpilot"
JETSTREAM_STREAM = "DRIFTPILOT"
CLOCK_TICK = os.sysconf("SC_CLK_TCK")


# --------------------------------------------------------------------------- the events sent


def history_csv(path: Path, n: int = 300, seed: int = 0) -> Path:
    """Labelled history to register the model from (as tests/loop/test_service.py's)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    start = datetime.now(UTC) - timedelta(minutes=n)
    pd.DataFrame(
        {
            "time": [(start + timedelta(minutes=i)).isoformat() for i in range(n)],
            "customer": [f"c{i % 40}" for i in range(n)],
            "income": x[:, 0],
            "debt": x[:, 1],
            "segment": rng.choice(["a", "b"], size=n),
            "defaulted": np.where(x[:, 1] - x[:, 0] > 0, "yes", "no"),
        }
    ).to_csv(path, index=False)
    return path


class Batches:
    """Bodies ``{"events": [...]}`` of 100 events each, every key new, times close to now."""

    def __init__(self, prefix: str, seed: int = 0) -> None:
        self.prefix = prefix
        self.rng = random.Random(seed)
        self.numbers = itertools.count()

    def next(self) -> tuple[int, bytes]:
        number = next(self.numbers)
        now = datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
        rng = self.rng
        batch = []
        for j in range(BATCH):
            income, debt = rng.gauss(0, 1), rng.gauss(0, 1)
            batch.append(
                {
                    "key": f"{self.prefix}-{number:07d}-{j:03d}",
                    "entity": f"c{(number * BATCH + j) % 5000}",
                    "time": now,
                    "features": {"income": income, "debt": debt, "segment": "a" if j % 2 else "b"},
                    "served_version": 1,
                    "prediction": "yes" if debt > income else "no",
                }
            )
        return number, orjson.dumps({"events": batch})


# --------------------------------------------------------------------------- the service under test


def machine_busy_seconds() -> float:
    """CPU seconds all cores of the machine spent busy so far (``/proc/stat``: all but idle and iowait)."""
    fields = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / CLOCK_TICK


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli(*args: str, env: dict[str, str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "driftpilot.cli", *args], capture_output=True, text=True, env=env, cwd=cwd, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"driftpilot {' '.join(args[:4])} ... failed:\n{done.stdout}\n{done.stderr}")
    return done.stdout


@contextmanager
def postgres_schema() -> Iterator[str]:
    """A URL on a fresh schema of the test database, dropped afterwards (as tests/conftest.py)."""
    base = make_url(POSTGRES_URL.replace("postgresql://", "postgresql+psycopg://", 1))
    schema = f"bench_{secrets.token_hex(6)}"
    admin = sa.create_engine(base)
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
        try:
            yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
        finally:
            with admin.begin() as connection:
                connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    finally:
        admin.dispose()


@dataclass
class Service:
    """A running ``driftpilot serve`` (and any API-only workers beside it) with one registered
    model and an ingest token."""

    processes: list[subprocess.Popen[bytes]]
    bases: list[str]
    model: str
    token: str
    database_url: str
    log_paths: list[Path]
    sessions: Any = None
    model_id: int = 0

    @property
    def process(self) -> subprocess.Popen[bytes]:
        """The ``serve`` process that runs the loop (and the live sources)."""
        return self.processes[0]

    def cpu_seconds(self) -> float:
        """User + system CPU the server processes (and their workers) used so far."""
        stats: dict[int, list[str]] = {}
        for path in Path("/proc").glob("[0-9]*/stat"):
            try:
                stats[int(path.parent.name)] = path.read_text().rsplit(")", 1)[1].split()
            except (OSError, ValueError):
                continue  # a process that ended meanwhile
        family = {p.pid for p in self.processes}
        grew = True
        while grew:
            children = {pid for pid, fields in stats.items() if int(fields[1]) in family} - family
            family |= children
            grew = bool(children)
        return sum((int(stats[pid][11]) + int(stats[pid][12])) / CLOCK_TICK for pid in family if pid in stats)

    def stored(self) -> int:
        with self.sessions() as session:
            return events.count_events(session=session, model_id=self.model_id)

    def log_tail(self, lines: int = 30) -> str:
        return "\n".join(
            f"{path.name}: {line}"
            for path in self.log_paths
            for line in path.read_text(errors="replace").splitlines()[-lines:]
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def service(folder: Path, database_url: str | None, extra_env: dict[str, str], workers: int = 1) -> Iterator[Service]:
    """Register a model, create a token, start ``driftpilot serve --workers N`` (loop on); stop it
    with SIGTERM."""
    home = folder / "home"
    env = {k: v for k, v in os.environ.items() if not k.startswith("DRIFTPILOT_")}
    env["PYTHONPATH"] = str(ROOT)
    url = ["--database-url", database_url] if database_url else []
    model = f"bench{secrets.token_hex(4)}"
    data = history_csv(folder / "history.csv")
    common = ["--home", str(home), *url]
    _cli(*common, "models", "register", model, "--data", str(data), "--target", "defaulted",
         "--time-col", "time", "--entity-col", "customer", env=env, cwd=folder)  # fmt: skip
    token = _cli(*common, "token", "create", "--role", "ingest", "--name", "bench", env=env, cwd=folder)
    running = Service(
        [],
        [],
        model,
        token.strip().splitlines()[-1],
        database_url or f"sqlite:///{home / 'driftpilot.sqlite'}",
        [],
    )
    try:
        port = _free_port()
        log_path = folder / "serve.log"
        with log_path.open("wb") as log:
            running.processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "driftpilot.cli", *common, "serve", "--port", str(port)]
                    + ["--workers", str(workers)],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**env, **extra_env},
                    cwd=folder,
                )
            )
        running.bases.append(f"http://127.0.0.1:{port}")
        running.log_paths.append(log_path)
        deadline = time.monotonic() + 90
        for process, base in zip(running.processes, running.bases, strict=True):
            while True:
                if process.poll() is not None:
                    raise RuntimeError(f"driftpilot serve exited with {process.returncode}:\n{running.log_tail()}")
                try:
                    if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"driftpilot serve did not answer /healthz in 90 s:\n{running.log_tail()}")
                time.sleep(0.2)
        running.sessions = db.connect(running.database_url)
        with running.sessions() as session:
            running.model_id = managed.get_model(session=session, name=model).id
        yield running
    finally:
        for process in running.processes:
            _stop(process)
        if running.sessions is not None:
            running.sessions.kw["bind"].dispose()


# --------------------------------------------------------------------------- HTTP


@dataclass
class HttpRun:
    latencies: list[float] = field(default_factory=list)
    events_ok: int = 0
    inserted: int = 0
    statuses: Counter[str] = field(default_factory=Counter)


async def _post_for(
    client: httpx.AsyncClient, urls: list[str], batches: Batches, clients: int, seconds: float, run: HttpRun
) -> float:
    """Post from ``clients`` concurrent connections (spread over ``urls``) until ``seconds``
    passed; the wall time."""
    stop = time.perf_counter() + seconds

    async def one_client(url: str) -> None:
        while time.perf_counter() < stop:
            _, body = batches.next()
            began = time.perf_counter()
            try:
                answer = await client.post(url, content=body)
            except httpx.HTTPError as exc:
                run.statuses[type(exc).__name__] += 1
                continue
            took = time.perf_counter() - began
            run.statuses[str(answer.status_code)] += 1
            if 200 <= answer.status_code < 300:
                run.latencies.append(took)
                run.events_ok += BATCH
                run.inserted += int(answer.json()["inserted"])

    began = time.perf_counter()
    await asyncio.gather(*(one_client(urls[i % len(urls)]) for i in range(clients)))
    return time.perf_counter() - began


def bench_http(running: Service, seconds: float, clients: int, warmup: float) -> dict[str, Any]:
    urls = [f"{base}/models/{running.model}/events" for base in running.bases]
    headers = {"Authorization": f"Bearer {running.token}", "Content-Type": "application/json"}
    before = running.stored()
    batches = Batches(prefix=f"h{secrets.token_hex(3)}")

    async def main() -> tuple[HttpRun, HttpRun, float, float, float, float]:
        limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
        async with httpx.AsyncClient(headers=headers, limits=limits, timeout=60) as client:
            warm = HttpRun()
            await _post_for(client, urls, batches, clients, warmup, warm)
            measured = HttpRun()
            server_cpu, client_cpu, machine_cpu = running.cpu_seconds(), time.process_time(), machine_busy_seconds()
            wall = await _post_for(client, urls, batches, clients, seconds, measured)
            server_cpu = running.cpu_seconds() - server_cpu
            client_cpu = time.process_time() - client_cpu
            return warm, measured, wall, server_cpu, client_cpu, machine_busy_seconds() - machine_cpu

    warm, measured, wall, server_cpu, client_cpu, machine_cpu = asyncio.run(main())
    stored = running.stored() - before
    acknowledged = warm.events_ok + measured.events_ok
    latencies_ms = np.array(measured.latencies) * 1000
    batches_ok = len(measured.latencies)
    return {
        "events_per_second": round(measured.events_ok / wall, 1),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 2) if batches_ok else None,
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 2) if batches_ok else None,
        "details": {
            "clients": clients,
            "api_processes": len(running.bases),
            "seconds": round(wall, 2),
            "warmup_seconds": warmup,
            "batches_ok": batches_ok,
            "answers": dict(measured.statuses + warm.statuses),
            "max_ms": round(float(latencies_ms.max()), 2) if batches_ok else None,
            "mean_ms": round(float(latencies_ms.mean()), 2) if batches_ok else None,
            "acknowledged_events": acknowledged,
            "stored_events": stored,
            "stored_matches_acknowledged": stored == acknowledged and warm.inserted + measured.inserted == acknowledged,
            "server_cpu_ms_per_batch": round(1000 * server_cpu / batches_ok, 2) if batches_ok else None,
            "server_cores_busy": round(server_cpu / wall, 2),
            "client_cores_busy": round(client_cpu / wall, 2),
            "machine_cores_busy": round(machine_cpu / wall, 2),
        },
    }


# --------------------------------------------------------------------------- MQTT and JetStream


class MqttPublisher:
    """QoS 1 publisher of the bench's own (clean) session."""

    def __init__(self, topic: str) -> None:
        import paho.mqtt.client as mqtt

        self.topic = topic
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=f"driftpilot-bench-{secrets.token_hex(4)}", clean_session=True
        )
        self.client.max_queued_messages_set(0)
        self.client.connect("127.0.0.1", 1883, keepalive=30)
        self.client.loop_start()

    def publish(self, payload: bytes) -> None:
        self.client.publish(self.topic, payload, qos=1)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


class JetStreamPublisher:
    """Publishes to JetStream (each publish waits for the stream's ack) from a loop thread of its own."""

    def __init__(self, subject: str) -> None:
        self.subject = subject
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = self._call(self._connect())
        self.js = self.client.jetstream()

    async def _connect(self) -> Any:
        import nats

        return await nats.connect(NATS_URL)

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout=30)

    def publish(self, payload: bytes) -> None:
        self._call(self.js.publish(self.subject, payload, stream=JETSTREAM_STREAM))

    def purge_and_forget(self, consumer_existed: bool) -> None:
        """Remove the bench's messages from the stream, and the service's consumer if the bench made it."""
        self._call(self.js.purge_stream(JETSTREAM_STREAM, subject=self.subject))
        if not consumer_existed:
            self._call(self.js.delete_consumer(JETSTREAM_STREAM, SERVICE_DURABLE))

    def close(self) -> None:
        self._call(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()


def jetstream_consumer_state() -> dict[str, Any] | None:
    """The service's durable consumer as the bench found it (None: there is none)."""
    import nats
    import nats.js.errors

    async def probe() -> dict[str, Any] | None:
        client = await nats.connect(NATS_URL)
        try:
            info = await client.jetstream().consumer_info(JETSTREAM_STREAM, SERVICE_DURABLE)
            return {"pending": info.num_pending, "ack_pending": info.num_ack_pending}
        except nats.js.errors.NotFoundError:
            return None
        finally:
            await client.close()

    return asyncio.run(probe())


def forget_mqtt_session() -> None:
    """Drop the persistent session ``driftpilot serve`` left on the broker (clean session on its id)."""
    import paho.mqtt.client as mqtt

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=SERVICE_CLIENT_ID, clean_session=True)
    client.connect("127.0.0.1", 1883, keepalive=10)
    client.loop_start()
    time.sleep(0.5)
    client.disconnect()
    client.loop_stop()


class Stored:
    """How many events were stored since this was made: the largest event id, less the one then.

    The service's database holds this model's events only, and its one consumer commits them in
    order, so the ids grow by one an event; reading the largest is a look at the end of the
    primary key, where a count (``events.arrivals`` too) walks every event of the model, and
    would slow the publisher down as the table grows.
    """

    def __init__(self, running: Service) -> None:
        self.running = running
        self.start = self._largest_id()
        self.count = 0

    def _largest_id(self) -> int:
        with self.running.sessions() as session:
            return int(session.scalar(sa.select(sa.func.max(Event.id))) or 0)

    def poll(self) -> int:
        self.count = self._largest_id() - self.start
        return self.count


def bench_broker(
    running: Service, publisher: MqttPublisher | JetStreamPublisher, prefix: str, seconds: float, window: int
) -> dict[str, Any]:
    """Publish for ``seconds`` at most ``window`` batches ahead of the store, then wait for the rest."""
    stored = Stored(running)
    batches = Batches(prefix=prefix)
    published: dict[int, float] = {}
    server_cpu, client_cpu, machine_cpu = running.cpu_seconds(), time.process_time(), machine_busy_seconds()
    first = time.time()
    stop = time.perf_counter() + seconds
    last_poll = 0.0
    while time.perf_counter() < stop:
        now = time.perf_counter()
        if now - last_poll > 0.02:
            stored.poll()
            last_poll = now
        if len(published) - stored.count // BATCH < window:
            number, body = batches.next()
            published[number] = time.time()
            publisher.publish(body)
        else:
            time.sleep(0.002)
    drain_deadline = time.perf_counter() + 120
    while stored.poll() < len(published) * BATCH and time.perf_counter() < drain_deadline:
        time.sleep(0.05)
    server_cpu, client_cpu = running.cpu_seconds() - server_cpu, time.process_time() - client_cpu
    machine_cpu = machine_busy_seconds() - machine_cpu
    # When each batch was committed: ingested_at of its first event (a read, for the record).
    with running.sessions() as session:
        rows = session.execute(
            sa.select(Event.key, Event.ingested_at).where(
                Event.model_id == running.model_id, Event.key.like(f"{prefix}-%-000")
            )
        ).all()
    committed = {int(key.split("-")[1]): at.replace(tzinfo=at.tzinfo or UTC).timestamp() for key, at in rows}
    latencies_ms = np.array([1000 * (committed[n] - sent) for n, sent in published.items() if n in committed])
    last_commit = max(committed.values(), default=first)
    span = max(last_commit - first, 1e-9)
    n_stored = stored.count
    return {
        "events_per_second": round(n_stored / span, 1),
        "p50_ms": round(float(np.percentile(latencies_ms, 50)), 2) if len(latencies_ms) else None,
        "p99_ms": round(float(np.percentile(latencies_ms, 99)), 2) if len(latencies_ms) else None,
        "details": {
            "window_batches": window,
            "seconds": round(span, 2),
            "published_events": len(published) * BATCH,
            "stored_events": n_stored,
            "stored_matches_published": n_stored == len(published) * BATCH,
            "latency": "publish to commit, with up to window batches queued ahead",
            "server_cpu_ms_per_batch": round(1000 * server_cpu / max(len(published), 1), 2),
            "server_cores_busy": round(server_cpu / span, 2),
            "client_cores_busy": round(client_cpu / span, 2),
            "machine_cores_busy": round(machine_cpu / span, 2),
        },
    }


# --------------------------------------------------------------------------- one target


def run_target(
    target: str,
    seconds: float,
    clients: int,
    window: int,
    warmup: float,
    workers: int = 1,
    broker_database: str = "sqlite",
) -> dict[str, Any]:
    if target not in TARGETS:
        raise ValueError(f"unknown target {target!r}; targets are {TARGETS}")
    with ExitStack() as stack:
        folder = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"ingest-bench-{target}-")))
        on_postgres = target == "http_postgres" or (not target.startswith("http") and broker_database == "postgres")
        url = stack.enter_context(postgres_schema()) if on_postgres else None
        if target.startswith("http"):
            running = stack.enter_context(service(folder, url, {}, workers))
            return bench_http(running, seconds, clients, warmup)
        if target == "mqtt":
            stack.callback(forget_mqtt_session)
            running = stack.enter_context(service(folder, url, {"DRIFTPILOT_MQTT_URL": MQTT_URL}))
            mqtt_publisher = MqttPublisher(f"driftpilot/{running.model}/events")
            stack.callback(mqtt_publisher.close)
            return bench_broker(running, mqtt_publisher, "m", seconds, window)
        found = jetstream_consumer_state()
        running = stack.enter_context(service(folder, url, {"DRIFTPILOT_NATS_URL": NATS_URL}))
        publisher = JetStreamPublisher(f"driftpilot.{running.model}.events")
        # Run last to first: stop the service (its consumer), then tidy the stream, then disconnect.
        stack.callback(publisher.close)
        stack.callback(publisher.purge_and_forget, consumer_existed=found is not None)
        stack.callback(_stop, running.process)
        result = bench_broker(running, publisher, "j", seconds, window)
        result["details"]["service_consumer_before"] = found
        return result


# --------------------------------------------------------------------------- report


def _met(target: str, row: dict[str, Any]) -> bool:
    fast = (row["events_per_second"] or 0) >= GOALS[target]
    if target.startswith("http"):
        return fast and row["p99_ms"] is not None and row["p99_ms"] <= P99_GOAL_MS
    return fast


def markdown(results: dict[str, Any]) -> str:
    workers = ", `serve --workers` " + ", ".join(f"{t}: {n}" for t, n in results["workers"].items())
    database = {"sqlite": "SQLite", "postgres": "PostgreSQL"}[results["broker_database"]]
    lines = [
        "# Ingest bench: events into a running `driftpilot serve` from a second process on loopback",
        "",
        f"Batches of {BATCH} unique events; {results['seconds']} s per target on {results['cores']} cores shared by "
        f"server, client and database; the service's background loop running (tick 5 s). HTTP: {results['clients']} "
        f"concurrent keep-alive clients{workers}, latency from request to answer (after the commit). "
        f"MQTT / JetStream: consumed by the service into {database}, the publisher at most {results['window']} batches "
        "ahead; latency from publish to commit.",
        "",
        "| target | events/s | goal | ratio | p50 ms | p99 ms | p99 goal | server cores | client cores "
        "| machine cores | server CPU ms/batch | stored = acknowledged | met |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- |",
    ]
    for target, row in results["targets"].items():
        if "error" in row:
            lines.append(f"| {target} | error: {row['error']} | | | | | | | | | | | no |")
            continue
        d = row["details"]
        p99_goal = f"{P99_GOAL_MS:.0f}" if target.startswith("http") else "-"
        matches = d.get("stored_matches_acknowledged", d.get("stored_matches_published"))
        lines.append(
            f"| {target} | {row['events_per_second']:,.0f} | {GOALS[target]:,} | {row['ratio']} | {row['p50_ms']} "
            f"| {row['p99_ms']} | {p99_goal} | {d['server_cores_busy']} | {d['client_cores_busy']} "
            f"| {d['machine_cores_busy']} | {d['server_cpu_ms_per_batch']} | {'yes' if matches else 'NO'} "
            f"| {'yes' if row['met'] else 'no'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=30.0, help="measured seconds per target")
    parser.add_argument("--only", default=",".join(TARGETS), help=f"comma-separated subset of {','.join(TARGETS)}")
    parser.add_argument("--clients", type=int, default=6, help="concurrent HTTP clients (keep-alive connections)")
    parser.add_argument("--window", type=int, default=20, help="batches a broker publisher may be ahead of the store")
    parser.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds of HTTP traffic first")
    parser.add_argument(
        "--broker-database", choices=("sqlite", "postgres"), default="sqlite", help="where MQTT / JetStream store"
    )
    parser.add_argument(
        "--workers",
        default="http_sqlite=1,http_postgres=2",
        help="processes answering HTTP per target (`serve --workers N`), as target=N pairs",
    )
    parser.add_argument("--no-write", action="store_true", help="print only; leave evals/results as they are")
    args = parser.parse_args()
    targets = [t.strip() for t in args.only.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown:
        parser.error(f"unknown target {unknown[0]!r}; targets are {', '.join(TARGETS)}")
    workers = {t: 1 for t in TARGETS if t.startswith("http")}
    for pair in filter(None, args.workers.split(",")):
        name, _, count = pair.partition("=")
        if name not in workers or not count.isdigit() or int(count) < 1:
            parser.error(f"--workers takes http_sqlite=N,http_postgres=N with N >= 1, got {pair!r}")
        workers[name] = int(count)
    wall = time.perf_counter()
    table: dict[str, Any] = {}
    for target in targets:
        print(f"{target}: starting a service and sending for {args.seconds:.0f} s ...", flush=True)
        try:
            row = run_target(
                target,
                args.seconds,
                args.clients,
                args.window,
                args.warmup,
                workers.get(target, 1),
                args.broker_database,
            )
        except Exception as exc:  # one target failing must not lose the others' figures
            print(f"{target}: failed: {exc}", flush=True)
            table[target] = {"error": str(exc).splitlines()[0], "events_per_second": None, "p99_ms": None}
            continue
        row["ratio"] = round(row["events_per_second"] / GOALS[target], 2)
        row["met"] = _met(target, row)
        table[target] = row
        print(f"{target}: {row['events_per_second']:,.0f} events/s, p50 {row['p50_ms']} ms, p99 {row['p99_ms']} ms, "
              f"{row['details']}", flush=True)  # fmt: skip
    results = {
        **table,
        "targets": table,
        "goals": {
            "events_per_second": GOALS,
            "http_p99_ms": P99_GOAL_MS,
        },
        "seconds": args.seconds,
        "clients": args.clients,
        "workers": workers,
        "broker_database": args.broker_database,
        "window": args.window,
        "cores": os.cpu_count(),
        "wall_seconds": round(time.perf_counter() - wall, 1),
    }
    text = markdown(results)
    print(text)
    if not args.no_write:
        RESULTS.mkdir(parents=True, exist_ok=True)
        only_targets = {k: v for k, v in results.items() if k != "targets"}
        (RESULTS / "ingest_bench.json").write_text(json.dumps(only_targets, indent=2, default=str))
        (RESULTS / "ingest_bench.md").write_text(text)


if __name__ == "__main__":
    main()
