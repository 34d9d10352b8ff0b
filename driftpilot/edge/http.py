"""The node's few HTTP calls to the server, on the standard library's ``urllib``: a node needs
onnxruntime and little else, and a JSON POST or a GET is all it sends.

Each call returns the HTTP status (``None`` when the server was not reached) and what came back;
none raises for an answer the server gave or one it could not give.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any

__all__ = ["Answer", "detail", "get", "post_json"]

Answer = tuple[int | None, bytes, dict[str, str]]


def _call(request: urllib.request.Request, timeout: float) -> Answer:
    try:
        with urllib.request.urlopen(request, timeout=timeout) as answer:
            return int(answer.status), answer.read(), {k.lower(): v for k, v in answer.headers.items()}
    except urllib.error.HTTPError as exc:
        return int(exc.code), exc.read(), {k.lower(): v for k, v in (exc.headers or {}).items()}
    except (urllib.error.URLError, OSError) as exc:
        return None, f"{request.full_url} unreachable: {getattr(exc, 'reason', exc)}".encode(), {}


def get(url: str, token: str, *, timeout: float) -> Answer:
    """``GET url`` with the node's bearer token."""
    return _call(urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"}), timeout)


def post_json(url: str, token: str, body: Any, *, timeout: float) -> Answer:
    """``POST url`` with ``body`` as JSON and the node's bearer token."""
    request = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
        method="POST",
    )
    return _call(request, timeout)


def detail(status: int | None, body: bytes) -> str:
    """What an answer says: the API's ``detail`` when it gave one, else the body as text."""
    text = body.decode(errors="replace")
    if status is None:
        return text
    try:
        return str(json.loads(text).get("detail", text))
    except (ValueError, AttributeError):
        return text
