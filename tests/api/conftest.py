"""A service on SQLite with the ONT model registered, and headers for every role."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from driftpilot.api import create_app
from driftpilot.config import Settings
from driftpilot.loop.demo import MODEL_NAME, schema_of_ont
from driftpilot.memory import db, managed
from driftpilot.models.registry import Registry

ROLES = ("ingest", "operator", "auditor", "admin")
SECRET = "hook-secret"


@pytest.fixture
def service(tmp_path, bearer):
    """(client, sessions, headers by role, woken): the app with one managed model; ``woken``
    collects what each stored alarm told the loop."""
    sessions = db.connect(f"sqlite:///{tmp_path / 'm.sqlite'}")
    with sessions() as session:
        managed.register_model(
            session=session,
            name=MODEL_NAME,
            task="tabular_classification",
            family="tabular_mlp",
            schema=schema_of_ont(),
        )
    woken: list[list[str | None]] = []
    settings = Settings(home=tmp_path, hook_secret=SECRET, max_batch=50, alarm_group_labels=["olt_port"])
    app = create_app(sessions, Registry(tmp_path / "artifacts"), settings=settings, on_alarm=woken.append)
    headers = {role: bearer(sessions, role, f"{role}-1") for role in ROLES}
    return TestClient(app), sessions, headers, woken
