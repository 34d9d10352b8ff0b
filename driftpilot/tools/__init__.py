"""Deterministic tools: pure functions with typed inputs and outputs, no SQL, no agents.

Nothing is imported here: each tool is imported from its own module where it is used, so
``import driftpilot.tools`` stays fast and free of heavy dependencies.
"""
