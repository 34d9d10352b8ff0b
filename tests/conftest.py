"""Settings and fixtures every test shares.

PostgreSQL tests use ``DRIFTPILOT_TEST_POSTGRES_URL`` or a local server (trust auth, user
``postgres`` or ``root``, database ``test``); each test gets a schema of its own, dropped
afterwards. Without a server they skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from hypothesis import settings
from sqlalchemy.engine import make_url

# The property tests draw the same examples on every run, so that the suite passes or fails the
# same way twice in a row and on every machine, and keep no example database in the checkout.
# `pytest --hypothesis-profile=explore` draws fresh examples to hunt for a counterexample.
settings.register_profile("driftpilot", derandomize=True, database=None)
settings.register_profile("explore", database=None)
settings.load_profile("driftpilot")


@pytest.fixture
def bearer():
    """``bearer(sessions, role, name)``: the Authorization header of a new API token."""
    from driftpilot.memory.tokens import create_token

    def make(sessions, role: str, name: str | None = None) -> dict[str, str]:
        with sessions() as session:
            _, secret = create_token(session=session, name=name or f"{role}-token", role=role)
        return {"Authorization": f"Bearer {secret}"}

    return make


_LOCAL_POSTGRES = (
    "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "postgresql+psycopg://root@127.0.0.1:5432/test",
)


@pytest.fixture(scope="session")
def postgres_base_url() -> str | None:
    """A reachable PostgreSQL URL, or None."""
    configured = os.environ.get("DRIFTPILOT_TEST_POSTGRES_URL")
    candidates = [configured] if configured else list(_LOCAL_POSTGRES)
    errors = []
    for url in candidates:
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://", 1))
        try:
            with engine.connect() as connection:
                connection.execute(sa.text("SELECT 1"))
            return url
        except sa.exc.OperationalError as exc:
            errors.append(f"{url}: {str(exc).splitlines()[0]}")
        finally:
            engine.dispose()
    message = "PostgreSQL is not reachable: " + "; ".join(errors)
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    return None


@pytest.fixture(params=["sqlite", "postgresql"])
def memory_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_base_url: str | None) -> Iterator[str]:
    """The URL of an empty database of its own for one test."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'memory' / 'driftpilot.sqlite'}"
        return
    if postgres_base_url is None:
        pytest.skip("PostgreSQL is not reachable (set DRIFTPILOT_TEST_POSTGRES_URL)")
    base = make_url(postgres_base_url.replace("postgresql://", "postgresql+psycopg://", 1))
    schema = f"t_{secrets.token_hex(6)}"
    admin = sa.create_engine(base)
    try:
        with admin.begin() as connection:
            connection.exec_driver_sql(f"CREATE SCHEMA {schema}")
        yield base.update_query_dict({"options": f"-csearch_path={schema}"}).render_as_string(hide_password=False)
        with admin.begin() as connection:
            connection.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
    finally:
        admin.dispose()
