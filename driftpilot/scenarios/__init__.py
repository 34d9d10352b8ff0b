"""Sources of events and their labels: simulators of the use cases (the ONT fleet in
:mod:`~driftpilot.scenarios.ont`, broadband offers in :mod:`~driftpilot.scenarios.offers`), real
queries with emerging intents (:mod:`~driftpilot.scenarios.banking`), river's drift benchmarks
(:mod:`~driftpilot.scenarios.synthetic`), and their export as CSV files ready to replay
(:mod:`~driftpilot.scenarios.export`).

A scenario knows its own fields, scripted changes and alarms; the generic layers learn what they
need from a managed model's schema (its ``slice_keys``, ``group_key``) and from the drivers.
"""
