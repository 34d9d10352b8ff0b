"""The HTTP face of driftpilot (FastAPI): prediction routing, rollback, serving history,
approvals and the operator chat."""

from driftpilot.api.app import create_app

__all__ = ["create_app"]
