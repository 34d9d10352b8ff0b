"""API tokens: created with a role and a name, stored as the SHA-256 of their secret, revoked at once.

The secret is 32 random bytes (``secrets.token_urlsafe``) shown once when the token is created.
A plain SHA-256 suffices to store it, unlike a password: the secret is random and long, so there
is nothing to guess, and looking it up by digest keeps every request one indexed read.
"""

from __future__ import annotations

import hashlib
import secrets
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from driftpilot.memory.db import committing
from driftpilot.memory.tables import TOKEN_ROLES, ApiToken
from driftpilot.memory.times import utcnow

__all__ = ["TOKEN_ROLES", "create_token", "list_tokens", "revoke_token", "token_of"]

#: Tokens carry this prefix, so that a leaked one is recognisable in logs and secret scanners.
PREFIX = "dp_"


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def create_token(*, session: Session, name: str, role: str, now: datetime | None = None) -> tuple[ApiToken, str]:
    """A new token named ``name`` with ``role``, and its secret (returned here only).

    Raises ``ValueError`` naming the fault: an unknown role, an empty name, or a name already
    given to another token (revoked ones included: the decision log names actors by it).
    """
    if role not in TOKEN_ROLES:
        raise ValueError(f"role {role!r} is not one of {', '.join(TOKEN_ROLES)}")
    if not name.strip():
        raise ValueError("a token needs a non-empty name: it is who the decision log says acted")
    secret = PREFIX + secrets.token_urlsafe(32)
    try:
        with committing(session):
            row = ApiToken(name=name, role=role, secret_sha256=_digest(secret), created_at=now or utcnow())
            session.add(row)
    except IntegrityError as exc:
        raise ValueError(f"a token named {name!r} exists already: names are never reused") from exc
    return row, secret


def token_of(*, session: Session, secret: str) -> ApiToken | None:
    """The live (not revoked) token whose secret is ``secret``, or None."""
    row = session.scalars(sa.select(ApiToken).where(ApiToken.secret_sha256 == _digest(secret))).first()
    if row is None or row.revoked_at is not None:
        return None
    return row


def revoke_token(*, session: Session, name: str, now: datetime | None = None) -> ApiToken:
    """Revoke the token named ``name`` (revoking it again changes nothing); ``LookupError`` if
    there is none."""
    row = session.scalars(sa.select(ApiToken).where(ApiToken.name == name)).first()
    if row is None:
        raise LookupError(f"no token is named {name!r}")
    if row.revoked_at is None:
        with committing(session):
            row.revoked_at = now or utcnow()
    return row


def list_tokens(*, session: Session) -> list[ApiToken]:
    """Every token, oldest first (their digests, never their secrets)."""
    return list(session.scalars(sa.select(ApiToken).order_by(ApiToken.id)))
