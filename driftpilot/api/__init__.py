"""The HTTP face of driftpilot (FastAPI): prediction routing, rollback, serving history."""

from driftpilot.api.app import create_app

__all__ = ["create_app"]
