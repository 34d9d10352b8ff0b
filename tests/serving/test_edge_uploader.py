"""The edge node's uploader (``driftpilot.edge``) against the real API over HTTP on loopback: nothing is lost while the
server is down, a record the server refuses is set aside with its reason, the rest go through."""

from __future__ import annotations

import sqlalchemy as sa

from driftpilot.api import create_app
from driftpilot.edge.outbox import Outbox
from driftpilot.edge.uploader import Uploader
from driftpilot.loop.demo import MODEL_NAME
from driftpilot.memory.tables import Event
from tests.live import free_port, serving

from .test_api_release import _events
from .test_release_serving import world  # noqa: F401 - the fixture


def test_the_outbox_reaches_the_server_once_it_is_back_and_a_bad_record_does_not_block_the_rest(
    world,  # noqa: F811
    bearer,
    tmp_path,
):
    sessions, registry, model_id, tick = world
    token = bearer(sessions, "ingest", "gateway-7")["Authorization"].removeprefix("Bearer ")
    good = [e | {"served_version": 1, "prediction": "online"} for e in _events(tick, 7, "gw7")]
    bad = dict(good[3], key="gw7/bad", features={k: v for k, v in good[3]["features"].items() if k != "firmware"})
    box = Outbox(tmp_path / "node" / "outbox.db")
    box.put(good[:3] + [bad] + good[3:])
    port = free_port()
    uploader = Uploader(box, f"http://127.0.0.1:{port}", MODEL_NAME, token, batch=4, timeout=5)

    down = uploader.drain()  # nothing listens yet
    assert (down.sent, down.refused) == (0, 0) and "unreachable" in (down.error or "")
    assert len(box) == 8

    with serving(create_app(sessions, registry), port):
        up = uploader.drain()
        box.put(good[:2])  # a node restarted before it knew they had gone: sent again
        again = uploader.drain()

    assert (up.sent, up.refused, up.error) == (7, 1, None)
    assert (again.sent, again.error) == (2, None) and len(box) == 0
    [(record, reason)] = box.refused()
    assert record["key"] == "gw7/bad" and reason.startswith("HTTP 422") and "firmware" in reason
    with sessions() as session:
        keys = sorted(session.scalars(sa.select(Event.key).where(Event.model_id == model_id)))
    assert keys == sorted(e["key"] for e in good)  # each once, the re-sent ones included
