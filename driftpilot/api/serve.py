"""``driftpilot serve`` and ``driftpilot run``: the API, the background loop, the live sources and
the alert sender, in one process or apart.

``serve`` runs uvicorn with the loop beside it by default (``--no-loop`` makes an API-only
worker); ``run`` is the loop alone. Both stop cleanly on SIGTERM or Ctrl-C: the run in progress
finishes, the live sources stop taking messages (what is not stored stays with the broker), the
leases are given back. A process killed with SIGKILL leaves nothing half-written either: its
leases expire and the next loop resumes each model's run from the checkpointer.
"""

from __future__ import annotations

import gc
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

from prometheus_client import values

from driftpilot.api.app import create_app
from driftpilot.config import Settings
from driftpilot.loop.alerts import AlertSender
from driftpilot.loop.live import live_sources
from driftpilot.loop.metrics import LoopMetrics
from driftpilot.loop.service import ServiceLoop, service_loop
from driftpilot.memory import db
from driftpilot.models.registry import Registry

log = logging.getLogger(__name__)


def serve(
    settings: Settings,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    with_api: bool = True,
    with_loop: bool = True,
    policy_path: str | Path | None = None,
    tick: float = 5.0,
    lease_seconds: float = 120.0,
    workers: int = 1,
    fd: int | None = None,
) -> int:
    """Run until stopped; returns the exit status.

    ``workers`` > 1 answers HTTP from that many processes on the one port, the loop staying in
    this one: for PostgreSQL, where one process's GIL, not the database, bounds ingest. SQLite
    takes one writer at a time: keep it at one. This process binds one socket per process, all
    with SO_REUSEPORT, before any serves, and hands each worker its own (``fd``): the kernel then
    spreads connections evenly over them from the first. (uvicorn's own workers share one
    listening socket, and whichever accepts first takes the connection: one process took nine
    tenths of the load in the ingest bench.)
    """
    if workers < 1:
        raise ValueError(f"--workers must be at least 1, got {workers}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings.home.mkdir(parents=True, exist_ok=True)
    if with_api and workers > 1:
        _share_metrics(settings)
    sessions = db.connect(settings.db_url)
    registry = Registry(settings.artifact_dir)
    metrics = LoopMetrics(sessions)
    with ExitStack() as stack:
        loop: ServiceLoop | None = None
        worker: threading.Thread | None = None
        if with_loop:
            loop = stack.enter_context(
                service_loop(
                    sessions,
                    registry,
                    database_url=settings.database_url,
                    home=settings.home,
                    policy_path=policy_path,
                    metrics=metrics,
                    tick=tick,
                    lease=timedelta(seconds=lease_seconds),
                )
            )
            sender = AlertSender.from_settings(sessions, settings).start()
            stack.callback(sender.stop)
            for source in live_sources(settings, sessions):
                source.start()
                stack.callback(source.stop)
        if with_api:
            if loop is not None:
                worker = threading.Thread(target=loop.run, name="driftpilot-loop", daemon=True)
                worker.start()
            if fd is not None:
                listening = socket.socket(fileno=fd)
            else:
                sockets = [_listening_socket(host, port, reuse_port=workers > 1) for _ in range(workers)]
                listening = sockets[0]
                for process in _start_workers(settings, sockets[1:], policy_path):
                    stack.callback(_stop_worker, process)
            _run_uvicorn(settings, sessions, registry, metrics, loop, listening, policy_path)
            if loop is not None and worker is not None:
                loop.stop()
                worker.join()
        elif loop is not None:
            _stop_on_signals(loop)
            log.info("loop %s running (tick %.1f s); SIGTERM stops it", loop.holder, tick)
            loop.run()
    return 0


def _run_uvicorn(
    settings: Settings,
    sessions: Any,
    registry: Registry,
    metrics: LoopMetrics,
    loop: ServiceLoop | None,
    listening: socket.socket,
    policy_path: str | Path | None,
) -> None:
    app = create_app(
        sessions,
        registry,
        policy_path,
        settings=settings,
        metrics=metrics,
        on_alarm=loop.wake if loop is not None else None,
    )
    import uvicorn

    # What start-up left (models, libraries: some 280,000 objects) will live as long as the
    # process: out of the collector's sight, a full collection under load takes ~3 ms, not ~110 ms
    # that every request in flight would wait for.
    gc.collect()
    gc.freeze()
    _server_class()(uvicorn.Config(app, log_level="info", access_log=False)).run(sockets=[listening])


def _share_metrics(settings: Settings) -> None:
    """The folder where all processes of the service write their metrics (prometheus_client's
    multiprocess mode; the workers inherit it), emptied first: files of an earlier run would add
    to this one's counters."""
    shared = settings.home / "metrics"
    shutil.rmtree(shared, ignore_errors=True)
    shared.mkdir(parents=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(shared)
    # prometheus_client chose where values live when it was imported, before the folder was
    # named: choose again, so that this process's metrics, made after, are written there too.
    values.ValueClass = values.get_value_class()


def _start_workers(
    settings: Settings, sockets: list[socket.socket], policy_path: str | Path | None
) -> list[subprocess.Popen[bytes]]:
    """An API-only ``driftpilot serve`` process on each of ``sockets`` (an alarm one of them
    stores is run at the loop's next tick)."""
    command = [sys.executable, "-m", "driftpilot.cli", "--home", str(settings.home)]
    if settings.database_url:
        command += ["--database-url", settings.database_url]
    command += ["serve", "--no-loop"] + (["--policy", str(policy_path)] if policy_path else [])
    started = []
    for listening in sockets:
        fd = listening.fileno()
        started.append(subprocess.Popen([*command, "--fd", str(fd)], pass_fds=[fd]))
    return started


def _stop_worker(process: subprocess.Popen[bytes]) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def _listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    """The socket uvicorn serves on, bound here so that several processes may share the port."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    listening = socket.socket(family, socket.SOCK_STREAM)
    listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuse_port:
        listening.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    listening.bind((host, port))
    listening.listen(2048)  # uvicorn's own backlog
    return listening


def _server_class() -> Any:
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, stopping on SIGTERM or SIGINT as it does (the requests in flight are
        answered), but without raising the signal again once it has stopped: the loop, the live
        sources and the alert sender are stopped after it, and the process exits 0."""

        @contextmanager
        def capture_signals(self) -> Iterator[None]:
            previous = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGTERM, signal.SIGINT)}
            try:
                yield
            finally:
                for sig, handler in previous.items():
                    signal.signal(sig, handler)

    return Server


def _stop_on_signals(loop: ServiceLoop) -> None:
    def handler(signum: int, frame: Any) -> None:
        log.info("signal %d: finishing the run in progress, then stopping", signum)
        loop.stop()

    signal.signal(signal.SIGTERM, handler)
    signal.signal(signal.SIGINT, handler)
