"""Sends the node's outbox to the server's events route, in batches, oldest first.

A batch leaves the outbox only when the server has answered 200 (the events are then stored and
durable there). While the server cannot be reached, or answers with an error of its own (5xx),
or refuses the node itself (401, 403, 404), everything stays and the next round tries again; the
events route is idempotent by key, so a batch sent twice (an answer lost on the way back) is
stored once. When the server refuses a batch for what it holds (409, 422), the batch is sent
again one record at a time, so that only the records the server refuses are set aside (with its
reason, :meth:`~driftpilot.edge.outbox.Outbox.refused`) and the rest go through.

The calls go through :mod:`driftpilot.edge.http` (the standard library's ``urllib``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from driftpilot.edge.http import detail, post_json
from driftpilot.edge.outbox import Outbox

__all__ = ["Sent", "Uploader"]

#: Answers that judge what a batch holds: sent again one record at a time.
_REFUSED_FOR_CONTENT = (409, 422)


@dataclass(frozen=True)
class Sent:
    """What one round did: records the server took, records it refused (set aside), and why the
    round stopped early (``None`` when it did not)."""

    sent: int
    refused: int
    error: str | None


class Uploader:
    """Uploads ``outbox`` to ``server``'s ``POST /models/{model}/events`` with an ingest token.

    Parameters
    ----------
    batch
        Records per request (at most the server's ``max_batch``).
    timeout
        Seconds to wait for the server before the round counts as failed (nothing is lost).
    """

    def __init__(
        self, outbox: Outbox, server: str, model: str, token: str, *, batch: int = 200, timeout: float = 10.0
    ) -> None:
        if batch < 1:
            raise ValueError(f"batch must be at least 1, got {batch}")
        self.outbox = outbox
        self.url = f"{server.rstrip('/')}/models/{model}/events"
        self.token = token
        self.batch = batch
        self.timeout = timeout

    def send_once(self) -> Sent:
        """Send the oldest batch; see the module's note for what each answer does."""
        records = self.outbox.oldest(self.batch)
        if not records:
            return Sent(0, 0, None)
        status, detail = self._post([r for _, r in records])
        if status == 200:
            self.outbox.ack([seq for seq, _ in records])
            return Sent(len(records), 0, None)
        if status not in _REFUSED_FOR_CONTENT:
            return Sent(0, 0, detail)
        sent = refused = 0
        for seq, record in records:
            status, detail = self._post([record])
            if status == 200:
                self.outbox.ack([seq])
                sent += 1
            elif status in _REFUSED_FOR_CONTENT:
                self.outbox.refuse(seq, f"HTTP {status}: {detail}")
                refused += 1
            else:
                return Sent(sent, refused, detail)
        return Sent(sent, refused, None)

    def drain(self) -> Sent:
        """Send batches until the outbox is empty or a round fails; the totals and the failure."""
        sent = refused = 0
        while True:
            round_ = self.send_once()
            sent, refused = sent + round_.sent, refused + round_.refused
            if round_.error is not None or round_.sent + round_.refused == 0:
                return Sent(sent, refused, round_.error)

    def _post(self, events: list[dict[str, Any]]) -> tuple[int | None, str]:
        """(HTTP status or ``None`` when the server was not reached, the answer's detail)."""
        status, body, _ = post_json(self.url, self.token, {"events": events}, timeout=self.timeout)
        return status, detail(status, body)
