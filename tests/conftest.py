"""Settings every test shares."""

from __future__ import annotations

from hypothesis import settings

# The property tests draw the same examples on every run, so that the suite passes or fails the
# same way twice in a row and on every machine, and keep no example database in the checkout.
# `pytest --hypothesis-profile=explore` draws fresh examples to hunt for a counterexample.
settings.register_profile("driftpilot", derandomize=True, database=None)
settings.register_profile("explore", database=None)
settings.load_profile("driftpilot")
