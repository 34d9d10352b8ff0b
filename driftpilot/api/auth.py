"""Who is asking: ``Authorization: Bearer TOKEN``, the token's role, and what each role may do.

Every route but ``/healthz`` names the roles it admits with :func:`allow`; ``admin`` may do
everything. The token is looked up on every request (one indexed read by its digest), so a
revoked token is refused at once. Who acted, in the decision log and on approvals, is the
token's name, never a field of a request's body.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.memory.tokens import token_of

#: Roles by what they do; every route admits ``admin`` as well.
INGEST, OPERATOR, AUDITOR, ADMIN = "ingest", "operator", "auditor", "admin"
READERS = (OPERATOR, AUDITOR)
"""Roles that may read the loop's state and decisions."""
EVERYONE = (INGEST, OPERATOR, AUDITOR)

_bearer = HTTPBearer(auto_error=False, description="A driftpilot API token: `driftpilot token create`.")


@dataclass(frozen=True)
class Caller:
    """The token a request came with: its name (who acted) and role."""

    name: str
    role: str


def allow(*roles: str) -> Callable[..., Caller]:
    """A FastAPI dependency admitting a live token of one of ``roles`` (or ``admin``): 401 without
    a token or with an unknown or revoked one, 403 for a role the route does not admit."""
    admitted = frozenset((*roles, ADMIN))

    def caller(
        request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
    ) -> Caller:
        if credentials is None:
            raise HTTPException(
                status_code=401,
                detail="missing token: send 'Authorization: Bearer TOKEN'",
                headers={"WWW-Authenticate": "Bearer"},
            )
        sessions: sessionmaker[Session] = request.app.state.sessions
        with sessions() as session:
            token = token_of(session=session, secret=credentials.credentials)
        if token is None:
            raise HTTPException(
                status_code=401, detail="unknown or revoked token", headers={"WWW-Authenticate": "Bearer"}
            )
        if token.role not in admitted:
            raise HTTPException(
                status_code=403,
                detail=f"token {token.name!r} has role {token.role!r}; this route needs one of "
                f"{', '.join(sorted(admitted))}",
            )
        return Caller(name=token.name, role=token.role)

    return caller


#: The caller of a route that takes data in, or of one that acts on what is served.
IngestCaller = Annotated[Caller, Depends(allow(INGEST))]
OperatorCaller = Annotated[Caller, Depends(allow(OPERATOR))]
