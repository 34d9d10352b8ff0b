"""Live sources against the real Mosquitto (127.0.0.1:1883) and NATS JetStream (127.0.0.1:4222).

Every test uses a model, topic, client id and durable consumer of its own (a uuid), and removes
the broker state it made, so reruns and parallel runs do not meet. Without a broker the tests
skip, except under ``CI=true``, where they fail.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import nats
import paho.mqtt.client as mqtt
import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from driftpilot.config import Settings
from driftpilot.loop.live import STREAM, JetStreamSource, MqttSource, live_sources, store_message
from driftpilot.memory.db import connect
from driftpilot.memory.dead_letters import list_dead_letters, record_dead_letter
from driftpilot.memory.events import count_events
from driftpilot.memory.labels import count_labels
from driftpilot.memory.managed import register_model
from driftpilot.memory.schemas import FeatureSpec, ModelSchema

MQTT_URL = "mqtt://127.0.0.1:1883"
NATS_URL = "nats://127.0.0.1:4222"

SCHEMA = ModelSchema(
    features=[FeatureSpec(name="rx_power", kind="number"), FeatureSpec(name="firmware", kind="category")],
    target="offline",
    classes=["online", "offline"],
    entity_key="ont_id",
    group_key="olt_port",
)


# --------------------------------------------------------------------------- helpers


def _require(port: int, what: str) -> None:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
    except OSError as exc:
        message = f"{what} is not reachable on 127.0.0.1:{port}: {exc}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)


def events(start: int, n: int) -> bytes:
    """A payload of events ``ont-<i>`` for ``i`` in ``[start, start + n)``."""
    batch = [
        {
            "key": f"ont-{i}",
            "time": f"2026-03-01T10:{i % 60:02d}:00Z",
            "entity": f"ont-{i % 7}",
            "group": f"port-{i % 2}",
            "features": {"rx_power": -20.0 - i / 10, "firmware": "v1"},
            "prediction": "online",
            "probabilities": {"online": 0.8, "offline": 0.2},
        }
        for i in range(start, start + n)
    ]
    return json.dumps({"events": batch}).encode()


def labels(indices: range) -> bytes:
    return json.dumps(
        {"labels": [{"key": f"ont-{i}", "label": "offline", "source": "system"} for i in indices]}
    ).encode()


def wait_until(condition: Callable[[], bool], timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not true within {timeout} s: {condition.__doc__ or condition}")
        time.sleep(0.05)


class World:
    """A migrated SQLite memory with one registered model."""

    def __init__(self, folder: Path) -> None:
        self.model = f"ont_{uuid.uuid4().hex[:12]}"
        self.sessions = connect(f"sqlite:///{folder / 'memory.sqlite'}")
        with self.sessions() as session:
            self.model_id = register_model(
                session=session, name=self.model, task="tabular", family="mlp", schema=SCHEMA
            ).id

    def counts(self) -> tuple[int, int]:
        """(events, labels) stored."""
        with self.sessions() as session:
            return count_events(session=session, model_id=self.model_id), count_labels(
                session=session, model_id=self.model_id
            )

    def reasons(self) -> dict[str, str]:
        """The dead letters' reasons by subject."""
        with self.sessions() as session:
            return {letter.subject: letter.reason for letter in list_dead_letters(session=session)}


class Sessions:
    """A session factory whose database is down for the first ``down`` calls, and that may be
    held (``gate``) before it hands out a session: the tests' view into when a source stores."""

    def __init__(self, real: sessionmaker[Session], *, down: int = 0, gate: threading.Event | None = None) -> None:
        self.real = real
        self.down = down
        self.gate = gate
        self.calls = 0
        # A SQLite file in a folder that does not exist: the driver's own OperationalError.
        self.unreachable = sessionmaker(bind=sa.create_engine("sqlite:////nonexistent/driftpilot/memory.sqlite"))

    def __call__(self) -> Session:
        self.calls += 1
        if self.calls <= self.down:
            return self.unreachable()
        if self.gate is not None:
            self.gate.wait()
        return self.real()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    world = World(tmp_path)
    yield world
    world.sessions.kw["bind"].dispose()


# --------------------------------------------------------------------------- one message


def test_store_message_stores_then_counts_resends_as_duplicates(world: World) -> None:
    outcomes = [
        store_message(world.sessions, "mqtt", f"driftpilot/{world.model}/events", events(0, 5)),
        store_message(world.sessions, "nats", f"driftpilot.{world.model}.labels", labels(range(3))),
        store_message(world.sessions, "mqtt", f"driftpilot/{world.model}/events", events(0, 5)),
        store_message(world.sessions, "nats", f"driftpilot.{world.model}.labels", labels(range(3))),
    ]

    assert outcomes == ["stored"] * 4
    assert world.counts() == (5, 3)
    assert world.reasons() == {}


@pytest.mark.parametrize(
    ("subject", "payload", "reason"),
    [
        ("driftpilot/{model}/events", b'{"events": [', "payload is not JSON"),
        ("driftpilot/{model}/events", b"\xff\xfe{", "payload is not JSON"),
        ("driftpilot/{model}/events", b'{"labels": []}', 'payload must be an object {"events": [...]}'),
        ("driftpilot/{model}/events", b'{"events": {}}', "field 'events' must be a list, got a dict"),
        ("driftpilot/{model}/alarms", b'{"alarms": []}', "names kind 'alarms'"),
        ("gateway/{model}/events", b'{"events": []}', "is neither driftpilot/<model>/<kind>"),
        ("driftpilot/ghost/events", events(0, 1), "unknown model 'ghost': register it first"),
        ("driftpilot.{model}.events", events(0, 3).replace(b'"rx_power"', b'"rx"'), "'rx' is not in the schema"),
        ("driftpilot.{model}.labels", labels(range(1)), "has no event with this key"),
        ("driftpilot.{model}.labels", b'{"labels": [{"key": "ont-0", "value": "x"}]}', "unknown field 'value'"),
        ("driftpilot.{model}.events", events(0, 11), "at most 10 events (max_batch), got 11"),
    ],
)
def test_store_message_keeps_a_refused_message_as_a_dead_letter(
    world: World, subject: str, payload: bytes, reason: str
) -> None:
    subject = subject.format(model=world.model)

    outcome = store_message(world.sessions, "nats", subject, payload, max_batch=10)

    assert outcome == "dead-lettered"
    assert world.counts() == (0, 0)
    with world.sessions() as session:
        (letter,) = list_dead_letters(session=session, source="nats")
    assert (letter.subject, letter.source) == (subject, "nats")
    assert reason in letter.reason
    assert letter.payload == payload.decode("utf-8", errors="backslashreplace")


def test_store_message_raises_when_the_database_is_down(world: World) -> None:
    down = Sessions(world.sessions, down=1)

    with pytest.raises(sa.exc.OperationalError):
        store_message(down, "mqtt", f"driftpilot/{world.model}/events", b"not even JSON")

    assert world.counts() == (0, 0)
    assert world.reasons() == {}


def test_dead_letters_are_listed_newest_first_by_source(world: World) -> None:
    with world.sessions() as session:
        for i, source in enumerate(["mqtt", "nats", "mqtt"]):
            record_dead_letter(session=session, source=source, subject=f"s{i}", payload=b"\x80", reason=f"r{i}")

        mqtt_letters = list_dead_letters(session=session, source="mqtt")
        newest = list_dead_letters(session=session, limit=1)

    assert [(d.subject, d.payload) for d in mqtt_letters] == [("s2", "\\x80"), ("s0", "\\x80")]
    assert [d.reason for d in newest] == ["r2"]


def test_live_sources_follow_the_settings(world: World) -> None:
    none = live_sources(Settings(mqtt_url=None, nats_url=None), world.sessions)
    both = live_sources(Settings(mqtt_url=MQTT_URL, nats_url=NATS_URL, max_batch=7), world.sessions)

    assert none == []
    assert [type(s).__name__ for s in both] == ["MqttSource", "JetStreamSource"]
    assert [s.max_batch for s in both if isinstance(s, (MqttSource, JetStreamSource))] == [7, 7]


# --------------------------------------------------------------------------- MQTT


class Mqtt:
    """A publisher, and the name of a persistent session of the test's own."""

    def __init__(self, world: World) -> None:
        self.topic = f"driftpilot/{world.model}"
        self.client_id = f"driftpilot-test-{uuid.uuid4().hex[:12]}"

    def source(self, sessions: Callable[[], Session]) -> MqttSource:
        return MqttSource(sessions, url=MQTT_URL, topic=f"{self.topic}/+", client_id=self.client_id, retry_delay=0.1)

    def publish(self, kind: str, payload: bytes) -> None:
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        client.connect("127.0.0.1", 1883)
        client.loop_start()
        try:
            client.publish(f"{self.topic}/{kind}", payload, qos=1).wait_for_publish(10)
        finally:
            client.disconnect()
            client.loop_stop()

    def forget_session(self) -> None:
        """Connect once with a clean session: the broker drops the test's persistent one."""
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=self.client_id, clean_session=True)
        client.connect("127.0.0.1", 1883)
        client.disconnect()


@pytest.fixture
def broker(world: World) -> Iterator[Mqtt]:
    _require(1883, "Mosquitto (MQTT)")
    broker = Mqtt(world)
    yield broker
    broker.forget_session()


def test_mqtt_stores_events_and_labels_once(world: World, broker: Mqtt) -> None:
    source = broker.source(world.sessions)
    source.start()
    try:
        broker.publish("events", events(0, 5))
        broker.publish("labels", labels(range(3)))
        wait_until(lambda: world.counts() == (5, 3))
        broker.publish("events", events(0, 5))
        broker.publish("labels", labels(range(3)))
        # Messages are stored in order: once this one is in, the re-sent ones were handled.
        broker.publish("events", events(5, 1))
        wait_until(lambda: world.counts()[0] == 6)
    finally:
        source.stop()

    assert world.counts() == (6, 3)
    assert world.reasons() == {}


def test_mqtt_keeps_refused_messages_as_dead_letters(world: World, broker: Mqtt) -> None:
    source = broker.source(world.sessions)
    source.start()
    try:
        broker.publish("events", b'{"events": [')
        broker.publish("alarms", b'{"alarms": []}')
        broker.publish("labels", labels(range(1)))
        wait_until(lambda: len(world.reasons()) == 3)
    finally:
        source.stop()

    reasons = world.reasons()
    assert reasons[f"{broker.topic}/events"].startswith("payload is not JSON")
    assert "names kind 'alarms'" in reasons[f"{broker.topic}/alarms"]
    assert "has no event with this key" in reasons[f"{broker.topic}/labels"]
    assert world.counts() == (0, 0)


def test_mqtt_acks_only_what_it_stored(world: World, broker: Mqtt) -> None:
    # The database is down while the first source holds a message: it is never acknowledged,
    # so the broker sends it again to the next source of the same session, along with what
    # was published while no source ran.
    down = Sessions(world.sessions, down=10**6)
    first = broker.source(down)
    first.start()
    try:
        broker.publish("events", events(0, 4))
        wait_until(lambda: down.calls >= 3)
    finally:
        first.stop()
    assert world.counts() == (0, 0)
    broker.publish("events", events(4, 2))

    second = broker.source(world.sessions)
    second.start()
    try:
        wait_until(lambda: world.counts() == (6, 0))
    finally:
        second.stop()

    assert world.reasons() == {}


def test_mqtt_retries_while_the_database_is_down(world: World, broker: Mqtt) -> None:
    flaky = Sessions(world.sessions, down=3)
    source = broker.source(flaky)
    source.start()
    try:
        broker.publish("events", events(0, 3))
        wait_until(lambda: world.counts() == (3, 0))
    finally:
        source.stop()

    assert flaky.calls == 4
    assert world.reasons() == {}


# --------------------------------------------------------------------------- NATS JetStream


class JetStream:
    """A publisher and a probe of the test's own durable consumer."""

    def __init__(self, world: World) -> None:
        self.subject = f"driftpilot.{world.model}"
        self.durable = f"driftpilot-test-{uuid.uuid4().hex[:12]}"

    def source(self, sessions: Callable[[], Session]) -> JetStreamSource:
        return JetStreamSource(
            sessions, url=NATS_URL, subject=f"{self.subject}.>", durable=self.durable, retry_delay=0.1
        )

    def publish(self, kind: str, payload: bytes) -> None:
        self._call(lambda js: js.publish(f"{self.subject}.{kind}", payload, stream=STREAM))

    def consumer(self) -> Any:
        """The consumer's info: ``num_pending`` (not delivered yet), ``num_ack_pending``."""
        return self._call(lambda js: js.consumer_info(STREAM, self.durable))

    def clean_up(self) -> None:
        async def clean(js: Any) -> None:
            try:
                await js.delete_consumer(STREAM, self.durable)
            finally:
                await js.purge_stream(STREAM, subject=f"{self.subject}.>")

        self._call(clean)

    @staticmethod
    def _call(operation: Callable[[Any], Awaitable[Any]]) -> Any:
        async def run() -> Any:
            client = await nats.connect(NATS_URL)
            try:
                return await operation(client.jetstream())
            finally:
                await client.close()

        return asyncio.run(run())


@pytest.fixture
def jetstream(world: World) -> Iterator[JetStream]:
    _require(4222, "NATS (JetStream)")
    jetstream = JetStream(world)
    yield jetstream
    jetstream.clean_up()


def test_jetstream_stores_events_and_labels_once(world: World, jetstream: JetStream) -> None:
    source = jetstream.source(world.sessions)
    source.start()
    try:
        jetstream.publish("events", events(0, 5))
        jetstream.publish("labels", labels(range(3)))
        wait_until(lambda: world.counts() == (5, 3))
        jetstream.publish("events", events(0, 5))
        jetstream.publish("labels", labels(range(3)))
        jetstream.publish("events", events(5, 1))
        wait_until(lambda: world.counts()[0] == 6)
        wait_until(lambda: jetstream.consumer().num_ack_pending == 0)
    finally:
        source.stop()

    assert world.counts() == (6, 3)
    assert world.reasons() == {}
    assert jetstream.consumer().num_pending == 0


def test_jetstream_acks_refused_messages_once_they_are_dead_letters(world: World, jetstream: JetStream) -> None:
    source = jetstream.source(world.sessions)
    source.start()
    try:
        jetstream.publish("events", events(0, 2).replace(b"-20.0", b'"n/a"'))
        jetstream.publish("labels", b"<xml/>")
        jetstream.publish("alarms", b"{}")
        wait_until(lambda: len(world.reasons()) == 3)
        wait_until(lambda: jetstream.consumer().num_ack_pending == 0)
    finally:
        source.stop()

    reasons = world.reasons()
    assert "feature 'rx_power' must be a number, got 'n/a'" in reasons[f"{jetstream.subject}.events"]
    assert reasons[f"{jetstream.subject}.labels"].startswith("payload is not JSON")
    assert "names kind 'alarms'" in reasons[f"{jetstream.subject}.alarms"]
    assert world.counts() == (0, 0)
    assert jetstream.consumer().num_pending == 0


def test_jetstream_acks_a_message_only_after_it_is_stored(world: World, jetstream: JetStream) -> None:
    gate = threading.Event()
    held = Sessions(world.sessions, gate=gate)
    source = jetstream.source(held)
    source.start()
    try:
        jetstream.publish("events", events(0, 3))
        wait_until(lambda: held.calls == 1)
        while_storing = jetstream.consumer().num_ack_pending, world.counts()
        gate.set()
        wait_until(lambda: jetstream.consumer().num_ack_pending == 0)
    finally:
        gate.set()
        source.stop()

    assert while_storing == (1, (0, 0))
    assert world.counts() == (3, 0)


def test_jetstream_stores_what_came_while_it_was_stopped(world: World, jetstream: JetStream) -> None:
    source = jetstream.source(world.sessions)
    source.start()
    source.stop()
    jetstream.publish("events", events(0, 2))
    pending_while_stopped = jetstream.consumer().num_pending

    source.start()
    try:
        wait_until(lambda: world.counts() == (2, 0))
        wait_until(lambda: jetstream.consumer().num_ack_pending == 0)
    finally:
        source.stop()

    assert pending_while_stopped == 1
    assert jetstream.consumer().num_pending == 0


def test_jetstream_redelivers_while_the_database_is_down(world: World, jetstream: JetStream) -> None:
    flaky = Sessions(world.sessions, down=2)
    source = jetstream.source(flaky)
    source.start()
    try:
        jetstream.publish("events", events(0, 3))
        wait_until(lambda: world.counts() == (3, 0))
        wait_until(lambda: jetstream.consumer().num_ack_pending == 0)
    finally:
        source.stop()

    assert flaky.calls == 3
    assert world.reasons() == {}
