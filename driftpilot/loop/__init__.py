"""The drivers: a clock and a source fed through memory's ingest into the graph.

:mod:`~driftpilot.loop.demo` runs the simulated ONT fleet, :mod:`~driftpilot.loop.replay`
backtests a recorded stream against the baselines of :mod:`~driftpilot.loop.baselines`.
"""
