"""Settings every test shares."""

from __future__ import annotations

import pytest
from hypothesis import settings

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
