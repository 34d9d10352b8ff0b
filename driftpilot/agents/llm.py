"""The optional chat model: it phrases explanations and plans operator tool calls, never decides.

A model is available only when ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` is set (any
OpenAI-compatible server: OpenAI, vLLM, Ollama, ...). Without them :func:`chat_model` returns
None and every agent stays deterministic. What the model says is kept beside the deterministic
output, never in its place, together with what it was shown, so an auditor can judge it.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage
from pydantic import SecretStr

from driftpilot.config import Settings

if TYPE_CHECKING:
    from langchain_openai import ChatOpenAI

log = logging.getLogger(__name__)

#: Seconds one request may take; a narrative is not worth holding the loop longer.
TIMEOUT_SECONDS = 30.0
#: Retries of a failed request (the openai client's backoff between them).
MAX_RETRIES = 1
#: Longest evidence JSON shown to the model, in characters; longer evidence is cut, saying so.
MAX_EVIDENCE_CHARS = 12_000

NARRATOR_PROMPT = (
    "You explain to the people operating a machine-learning model what its monitoring agents found "
    "and decided. Rephrase the draft explanation in plain words for an operations engineer, in at "
    "most five sentences. Use only facts that are in the draft or in the evidence JSON; do not add "
    "causes, numbers or recommendations that are not there, and keep every number you use exactly "
    "as written."
)


def chat_model(settings: Settings | None = None, model_name: str | None = None) -> ChatOpenAI | None:
    """The chat model named ``model_name`` (default: the settings' ``chat_model``, from
    ``DRIFTPILOT_CHAT_MODEL``) when the settings name an OpenAI key or server, else None.

    With only a base URL (a local vLLM or Ollama server) the key sent is ``"not-needed"``. The
    model answers over chat completions, which every OpenAI-compatible server offers, at
    temperature 0 so that a replay asks it the same way twice.

    >>> chat_model(Settings(openai_api_key=None, openai_base_url=None)) is None
    True
    >>> chat = chat_model(Settings(openai_base_url="http://127.0.0.1:9/v1"), model_name="qwen")
    >>> chat.model_name, chat.openai_api_base, chat.max_retries
    ('qwen', 'http://127.0.0.1:9/v1', 1)
    """
    settings = settings or Settings()
    if not (settings.openai_api_key or settings.openai_base_url):
        return None
    # Imported here: langchain_openai takes about a second to import, and `import driftpilot`
    # must stay fast for everyone who runs without a model.
    from langchain_openai import ChatOpenAI

    return ChatOpenAI(
        model=model_name or settings.chat_model,
        api_key=SecretStr(settings.openai_api_key or "not-needed"),
        base_url=settings.openai_base_url,
        timeout=TIMEOUT_SECONDS,
        max_retries=MAX_RETRIES,
        temperature=0,
        use_responses_api=False,
    )


def model_name_of(chat: Any) -> str | None:
    """The name a chat model was configured with (None for one that does not say)."""
    name = getattr(chat, "model_name", None) or getattr(chat, "model", None)
    return str(name) if name else None


def evidence_json(evidence: Any, limit: int = MAX_EVIDENCE_CHARS) -> str:
    """``evidence`` as compact, key-sorted JSON, cut to ``limit`` characters with a note saying so.

    >>> evidence_json({"b": 1, "a": [1, 2]})
    '{"a":[1,2],"b":1}'
    >>> evidence_json({"text": "x" * 50}, limit=20)
    '{"text":"xxxxxxxxxxx... (cut: 41 more characters)'
    """
    text = json.dumps(evidence, sort_keys=True, separators=(",", ":"), default=str, allow_nan=True)
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... (cut: {len(text) - limit} more characters)"


#: langchain's message types as the chat-completions API names their roles.
_ROLES = {"system": "system", "human": "user", "ai": "assistant", "tool": "tool"}


def shown(messages: list[BaseMessage]) -> list[dict[str, str]]:
    """The messages as the model received them (chat-completions roles, exact text), for the audit.

    >>> shown([SystemMessage("Be brief."), HumanMessage("status?")])
    [{'role': 'system', 'content': 'Be brief.'}, {'role': 'user', 'content': 'status?'}]
    """
    return [{"role": _ROLES.get(message.type, message.type), "content": message.text} for message in messages]


def narrate(chat: Any, evidence: dict[str, Any], draft: str) -> dict[str, Any] | None:
    """Ask ``chat`` to rephrase the deterministic ``draft`` from ``evidence``.

    Returns ``{"text", "model", "saw"}`` (``saw``: the messages exactly as the model received
    them), or None when the model cannot be reached, fails, or answers nothing; the failure is
    logged as a warning and never raised, since a narrative is an extra and the loop goes on
    without it.
    """
    messages: list[BaseMessage] = [
        SystemMessage(NARRATOR_PROMPT),
        HumanMessage(f"Draft explanation:\n{draft}\n\nEvidence (JSON):\n{evidence_json(evidence)}"),
    ]
    name = model_name_of(chat)
    try:
        answer = chat.invoke(messages)
    except Exception as exc:  # noqa: BLE001 - any failure of an optional narrator is only logged
        log.warning("chat model %s gave no narrative (%s: %s); keeping the draft only", name, type(exc).__name__, exc)
        return None
    text = answer.text.strip() if isinstance(answer, BaseMessage) else ""
    if not text:
        log.warning("chat model %s answered an empty narrative; keeping the draft only", name)
        return None
    return {"text": text, "model": name, "saw": shown(messages)}
