"""What ``GET /metrics`` shows, in Prometheus's text format (prometheus_client).

Two kinds of figures. Counters of what this process took in (events, labels, alarms, dead
letters) and how long ingest took, and the loop's lag, are kept in memory by the code that does
the work. What the loop decided (checks by outcome, findings by cause, decisions by action,
releases, rollbacks) is read from the decision log itself at each scrape, so every process of a
deployment reports the same figures whichever ran the loop; only decisions newer than the last
scrape are read.
"""

from __future__ import annotations

import os
import threading
from collections import Counter
from collections.abc import Iterator
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client import Counter as PromCounter
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.memory.tables import Decision, ManagedModel, Release

__all__ = ["LoopMetrics"]


class _DecisionLog(Collector):
    """Counts from the decision log, read incrementally (by decision id) at each scrape."""

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.sessions = sessions
        self.lock = threading.Lock()
        self.after = 0
        self.decisions: Counter[tuple[str, str, str, str]] = Counter()
        self.checks: Counter[tuple[str, str]] = Counter()
        self.findings: Counter[tuple[str, str]] = Counter()
        self.last_check: dict[str, float] = {}

    def _read(self, session: Session) -> dict[int, str]:
        names = dict(session.execute(sa.select(ManagedModel.id, ManagedModel.name)).all())
        rows = session.execute(
            sa.select(Decision.id, Decision.model_id, Decision.agent, Decision.action, Decision.outcome, Decision.time)
            .where(Decision.id > self.after)
            .order_by(Decision.id)
        ).all()
        causes: dict[int, Any] = dict(
            session.execute(
                sa.select(Decision.id, Decision.diagnosis).where(
                    Decision.id > self.after, Decision.agent == "diagnostician"
                )
            ).all()
        )
        for id_, model_id, agent, action, outcome, time in rows:
            model = names.get(model_id, "") if model_id is not None else ""
            self.decisions[model, agent, action, outcome] += 1
            if agent == "monitor" and action == "check":
                self.checks[model, outcome] += 1
                self.last_check[model] = time.timestamp()
            if id_ in causes:
                cause = (causes[id_] or {}).get("cause") or "none"
                self.findings[model, str(cause)] += 1
            self.after = id_
        return names

    def collect(self) -> Iterator[Any]:
        with self.lock, self.sessions() as session:
            names = self._read(session)
            releases = session.execute(
                sa.select(Release.model_id, Release.verdict, sa.func.count()).group_by(
                    Release.model_id, Release.verdict
                )
            ).all()
        family = CounterMetricFamily(
            "driftpilot_decisions",
            "Decisions logged, by agent, action and outcome.",
            labels=["model", "agent", "action", "outcome"],
        )
        for labels, n in sorted(self.decisions.items()):
            family.add_metric(list(labels), n)
        yield family
        checks = CounterMetricFamily("driftpilot_checks", "Monitor checks, by outcome.", labels=["model", "outcome"])
        for pair, n in sorted(self.checks.items()):
            checks.add_metric(list(pair), n)
        yield checks
        findings = CounterMetricFamily(
            "driftpilot_findings", "Diagnoses of the Monitor's findings, by cause.", labels=["model", "cause"]
        )
        for pair, n in sorted(self.findings.items()):
            findings.add_metric(list(pair), n)
        yield findings
        rollbacks = CounterMetricFamily("driftpilot_rollbacks", "Rollbacks, by the loop or a person.", labels=["model"])
        by_model: Counter[str] = Counter()
        for (model, _agent, action, outcome), n in self.decisions.items():
            if action == "rollback" and outcome == "rolled_back":
                by_model[model] += n
        for model, n in sorted(by_model.items()):
            rollbacks.add_metric([model], n)
        yield rollbacks
        started = GaugeMetricFamily(
            "driftpilot_releases", "Releases, by verdict ('running' while one runs).", labels=["model", "verdict"]
        )
        for model_id, verdict, n in releases:
            started.add_metric([names.get(model_id, ""), verdict or "running"], n)
        yield started
        last = GaugeMetricFamily(
            "driftpilot_last_check_timestamp_seconds", "When each model was last checked.", labels=["model"]
        )
        for model, at in sorted(self.last_check.items()):
            last.add_metric([model], at)
        yield last


class LoopMetrics:
    """The metrics of one process, in their own registry (tests build several apps).

    With ``PROMETHEUS_MULTIPROC_DIR`` set (``driftpilot serve --workers N``), every process of the
    service writes its counters there and a scrape of any of them sums them all
    (prometheus_client's multiprocess mode).
    """

    def __init__(self, sessions: sessionmaker[Session]) -> None:
        self.registry = CollectorRegistry()
        shared = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR"))
        # In multiprocess mode the metrics are written to files, not registered: the collector
        # reads the files of every process.
        own: CollectorRegistry | None = None if shared else self.registry
        self.events = PromCounter(
            "driftpilot_events_ingested",
            "Events stored, by model and route.",
            ["model", "source"],
            registry=self.registry,
        )
        self.labels = PromCounter(
            "driftpilot_labels_ingested",
            "Labels stored, by model and route.",
            ["model", "source"],
            registry=self.registry,
        )
        self.duplicates = PromCounter(
            "driftpilot_duplicates", "Re-sent events and labels, skipped.", ["model", "source"], registry=self.registry
        )
        self.alarms = PromCounter(
            "driftpilot_alarms", "Alarms received, by status.", ["status"], registry=self.registry
        )
        self.refused = PromCounter(
            "driftpilot_requests_refused",
            "Requests refused, by route and status code.",
            ["route", "code"],
            registry=own,
        )
        self.ingest_seconds = Histogram(
            "driftpilot_ingest_seconds",
            "Time to validate and store one ingest request, durable before the answer.",
            ["route"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=own,
        )
        self.loop_lag = Gauge(
            "driftpilot_loop_lag_seconds",
            "How late the loop's latest run of each model started after it was due.",
            ["model"],
            registry=own,
            multiprocess_mode="mostrecent",  # the loop runs in one process of the service
        )
        if shared:
            MultiProcessCollector(self.registry)
        self.registry.register(_DecisionLog(sessions))
