"""``driftpilot serve`` and ``driftpilot run``: the API, the background loop, the live sources and
the alert sender, in one process or apart.

``serve`` runs uvicorn with the loop beside it by default (``--no-loop`` makes an API-only
worker); ``run`` is the loop alone. Both stop cleanly on SIGTERM or Ctrl-C: the run in progress
finishes, the live sources stop taking messages (what is not stored stays with the broker), the
leases are given back. A process killed with SIGKILL leaves nothing half-written either: its
leases expire and the next loop resumes each model's run from the checkpointer.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

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
) -> int:
    """Run until stopped; returns the exit status."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings.home.mkdir(parents=True, exist_ok=True)
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
            _run_uvicorn(settings, sessions, registry, metrics, loop, host, port, policy_path)
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
    host: str,
    port: int,
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

    _server_class()(uvicorn.Config(app, host=host, port=port, log_level="info", access_log=False)).run()


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
