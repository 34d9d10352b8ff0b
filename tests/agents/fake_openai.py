"""A local OpenAI-compatible chat server with scripted replies, over real HTTP.

It answers ``POST /v1/chat/completions`` with the next reply of its script (a plain text, tool
calls, or a raw body to break the client) and keeps every request body it received, so that a
test can assert what the model was shown. Nothing of langchain or openai is mocked: the client
under test speaks HTTP to it exactly as it would to OpenAI, vLLM or Ollama.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass(frozen=True)
class Reply:
    """One scripted reply: ``text`` and/or ``tool_calls`` ((name, arguments) pairs; arguments
    as a dict, or a string sent as is to script malformed JSON); ``raw`` replaces the whole body
    (with ``status``) to script a broken server."""

    text: str | None = None
    tool_calls: list[tuple[str, dict[str, Any] | str]] = field(default_factory=list)
    raw: bytes | None = None
    status: int = 200


class FakeOpenAI:
    """Start with ``with FakeOpenAI([Reply(...), ...]) as server:``; ``server.base_url`` is the
    ``OPENAI_BASE_URL`` to use and ``server.requests`` the bodies received, in order. A request
    beyond the script gets a 500 naming the problem."""

    def __init__(self, replies: list[Reply]) -> None:
        self.script: deque[Reply] = deque(replies)
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        assert self._server is not None, "start the server first"
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> FakeOpenAI:
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        assert self._server is not None and self._thread is not None
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)

    def _next(self, body: dict[str, Any]) -> Reply | None:
        with self._lock:
            self.requests.append(body)
            return self.script.popleft() if self.script else None

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                if self.path.rstrip("/") != "/v1/chat/completions":
                    self._send(404, json.dumps({"error": {"message": f"no route {self.path}"}}).encode())
                    return
                reply = fake._next(body)
                if reply is None:
                    self._send(500, json.dumps({"error": {"message": "the fake's script is exhausted"}}).encode())
                elif reply.raw is not None:
                    self._send(reply.status, reply.raw)
                else:
                    self._send(reply.status, json.dumps(_completion(body.get("model", "fake"), reply)).encode())

            def _send(self, status: int, payload: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 (the base's name)
                pass  # keep test output quiet

        return Handler


def _completion(model: str, reply: Reply) -> dict[str, Any]:
    """A ``chat.completion`` object as OpenAI's API documents it."""
    message: dict[str, Any] = {"role": "assistant", "content": reply.text}
    if reply.tool_calls:
        message["tool_calls"] = [
            {
                "id": f"call_{i}",
                "type": "function",
                "function": {"name": name, "arguments": args if isinstance(args, str) else json.dumps(args)},
            }
            for i, (name, args) in enumerate(reply.tool_calls, start=1)
        ]
    return {
        "id": "chatcmpl-fake",
        "object": "chat.completion",
        "created": 0,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if reply.tool_calls else "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
