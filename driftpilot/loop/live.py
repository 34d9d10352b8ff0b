"""Live sources: an MQTT subscription and a NATS JetStream durable consumer feeding ingest.

Both carry the HTTP contract: ``{"events": [...]}`` on MQTT topic ``driftpilot/<model>/events``
or NATS subject ``driftpilot.<model>.events``, ``{"labels": [...]}`` on ``.../labels``. Each
message goes through :func:`store_message`, and is acknowledged to its broker only after that
returned, that is after its rows (or its dead letter) are committed. So a crash between the two
means the broker sends the message again, and ingest, idempotent by key, counts it a duplicate.

A message that can never be stored (not JSON, unknown topic or model, refused by ingest, larger
than ``max_batch``) is kept as a dead letter with the reason, then acknowledged. A database
that cannot be reached is no fault of the message: it is not acknowledged, and is tried again.

A service runs them as::

    sources = live_sources(settings, sessions)
    for source in sources:
        source.start()   # connects and subscribes, or raises ConnectionError
    ...
    for source in sources:
        source.stop()    # what is not stored yet stays with the broker for the next start
"""

from __future__ import annotations

import asyncio
import json
import logging
import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, Literal, Protocol
from urllib.parse import urlsplit

import nats
import nats.errors
import nats.js.errors
import paho.mqtt.client as mqtt
import sqlalchemy as sa
from nats.js.api import AckPolicy, ConsumerConfig
from sqlalchemy.orm import Session

from driftpilot.config import Settings
from driftpilot.memory.dead_letters import record_dead_letter
from driftpilot.memory.ingest import contract_labels, ingest_events, ingest_labels
from driftpilot.memory.managed import UnknownModelError, known_model
from driftpilot.serving.texts import TextFeatures, text_features

log = logging.getLogger(__name__)

Outcome = Literal["stored", "dead-lettered"]
KINDS = ("events", "labels")
#: The JetStream stream created when missing, and the subjects it keeps.
STREAM = "DRIFTPILOT"
STREAM_SUBJECTS = ("driftpilot.>",)
#: The largest batch a message may carry unless told otherwise: the same as over HTTP.
DEFAULT_MAX_BATCH: int = Settings.model_fields["max_batch"].default

# Errors about the values written, which a retry would meet again: the message is refused.
# Every other database error (the server down, a lost connection, a pool timeout, a schema not
# migrated) is the database's: the message is left unacknowledged and comes again.
_REFUSED_BY_DATABASE = (sa.exc.DataError, sa.exc.IntegrityError)
_DATABASE_ERRORS = (sa.exc.DBAPIError, sa.exc.TimeoutError)
# How long a JetStream fetch waits for messages: also how soon the consumer notices stop().
_FETCH_TIMEOUT = 1.0


class LiveSource(Protocol):
    """What a service does with a live source."""

    def start(self) -> None: ...

    def stop(self) -> None: ...


# --------------------------------------------------------------------------- one message


def parse_subject(subject: str) -> tuple[str, str]:
    """``(model, kind)`` of an MQTT topic ``driftpilot/<model>/<kind>`` or a NATS subject
    ``driftpilot.<model>.<kind>``.

    >>> parse_subject("driftpilot/ont/events")
    ('ont', 'events')
    >>> parse_subject("driftpilot.ont.labels")
    ('ont', 'labels')
    >>> parse_subject("driftpilot/ont/alarms")
    Traceback (most recent call last):
    ...
    ValueError: 'driftpilot/ont/alarms' names kind 'alarms'; a live source takes ('events', 'labels')
    """
    for separator in ("/", "."):
        parts = subject.split(separator)
        if len(parts) == 3 and parts[0] == "driftpilot" and parts[1]:
            if parts[2] not in KINDS:
                raise ValueError(f"{subject!r} names kind {parts[2]!r}; a live source takes {KINDS}")
            return parts[1], parts[2]
    raise ValueError(
        f"{subject!r} is neither driftpilot/<model>/<kind> (MQTT) nor driftpilot.<model>.<kind> (NATS)"
        f" with kind one of {KINDS}"
    )


def decode_batch(kind: str, payload: bytes | str) -> list[Any]:
    """The list a payload ``{"<kind>": [...]}`` carries.

    >>> decode_batch("labels", b'{"labels": [{"key": "e1", "label": "ok"}]}')
    [{'key': 'e1', 'label': 'ok'}]
    >>> decode_batch("events", b'{"labels": []}')
    Traceback (most recent call last):
    ...
    ValueError: payload must be an object {"events": [...]}, got an object with fields ['labels']
    """
    try:
        body = json.loads(payload)
    except ValueError as exc:  # JSONDecodeError, or bytes that are not UTF-8
        raise ValueError(f"payload is not JSON: {exc}") from None
    if not isinstance(body, dict) or set(body) != {kind}:
        got = f"an object with fields {sorted(body)}" if isinstance(body, dict) else f"a {type(body).__name__}"
        raise ValueError(f'payload must be an object {{"{kind}": [...]}}, got {got}')
    items = body[kind]
    if not isinstance(items, list):
        raise ValueError(f"field {kind!r} must be a list, got a {type(items).__name__}")
    return items


#: Encodes the texts of a text model's events (see :mod:`driftpilot.serving.texts`);
#: :func:`live_sources` gives the service's, which the API shares.
TEXTS: TextFeatures = text_features(None)


def _ingest(session: Session, subject: str, payload: bytes | str, max_batch: int) -> None:
    """Store a message's events or labels; ``ValueError`` or ``UnknownModelError`` says why not."""
    model, kind = parse_subject(subject)
    items = decode_batch(kind, payload)
    if len(items) > max_batch:
        raise ValueError(f"a message may carry at most {max_batch} {kind} (max_batch), got {len(items)}: split it")
    if kind == "events":
        _, schema = known_model(session=session, name=model)
        ingest_events(session=session, model=model, events=TEXTS.expand(schema, items))
    else:
        ingest_labels(session=session, model=model, labels=contract_labels(items))


def store_message(
    sessions: Callable[[], Session],
    source: str,
    subject: str,
    payload: bytes | str,
    *,
    max_batch: int = DEFAULT_MAX_BATCH,
) -> Outcome:
    """Store one message from ``source`` (``"mqtt"``, ``"nats"``); returns after the commit.

    Returns ``"stored"`` when ingest took the batch (re-sent records count as duplicates), or
    ``"dead-lettered"`` when the message was refused and kept as a dead letter with the reason.

    Raises
    ------
    sqlalchemy.exc.DBAPIError, sqlalchemy.exc.TimeoutError
        When the database cannot take the write (``OperationalError``: it is down), except for
        the errors about the values written (``DataError``, ``IntegrityError``), which refuse
        the message. Nothing is stored then; the caller leaves the message unacknowledged.
    """
    with sessions() as session:
        try:
            _ingest(session, subject, payload, max_batch)
            return "stored"
        except (ValueError, UnknownModelError, *_REFUSED_BY_DATABASE) as exc:
            reason = str(exc).splitlines()[0] if isinstance(exc, sa.exc.DBAPIError) else str(exc)
        except _DATABASE_ERRORS:
            raise
        except Exception as exc:
            # A fault of ours, not of the message: keep it as a dead letter (to re-send once fixed)
            # rather than let it come back for ever and hold up the messages behind it.
            log.exception("could not store %s message on %r", source, subject)
            reason = f"internal error: {exc!r}"
        session.rollback()
        record_dead_letter(session=session, source=source, subject=subject, payload=payload, reason=reason)
    log.warning("dead letter from %s on %r: %s", source, subject, reason)
    return "dead-lettered"


# --------------------------------------------------------------------------- MQTT


class MqttSource:
    """Subscribes to gateway telemetry on an MQTT broker and stores each message.

    The session is persistent (``clean_session=False`` under the fixed ``client_id``) and the
    subscription QoS 1, so the broker keeps what arrives while the source is stopped. Messages
    are stored by one worker thread in the order they came, and each PUBACK is sent (paho's
    ``manual_ack``) only after :func:`store_message` returned; while the database is down the
    worker retries the same message every ``retry_delay`` seconds, unacknowledged.

    Parameters
    ----------
    sessions
        The session factory of memory (:func:`driftpilot.memory.db.connect`).
    url
        ``mqtt://[user:password@]host[:port]``.
    topic
        The topic filter subscribed to; ``driftpilot/<model>/+`` reads one model.
    client_id
        The broker keeps the session (subscription, unacknowledged messages) under this name:
        one per service, the same across restarts.
    """

    source = "mqtt"

    def __init__(
        self,
        sessions: Callable[[], Session],
        *,
        url: str = "mqtt://127.0.0.1:1883",
        topic: str = "driftpilot/+/+",
        client_id: str = "driftpilot",
        max_batch: int = DEFAULT_MAX_BATCH,
        retry_delay: float = 1.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.sessions = sessions
        self.url = url
        self.topic = topic
        self.client_id = client_id
        self.max_batch = max_batch
        self.retry_delay = retry_delay
        self.connect_timeout = connect_timeout
        self._client: mqtt.Client | None = None
        self._worker: threading.Thread | None = None
        self._messages: queue.Queue[mqtt.MQTTMessage | None] = queue.Queue()
        self._stopping = threading.Event()
        self._subscribed = threading.Event()

    def start(self) -> None:
        """Connect, subscribe and start storing; returns once the broker granted the subscription.

        Raises
        ------
        ConnectionError
            If the broker did not grant it within ``connect_timeout`` seconds.
        """
        if self._client is not None:
            raise RuntimeError("this MqttSource is running already: stop() it first")
        parts = urlsplit(self.url)
        client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            clean_session=False,
            manual_ack=True,
        )
        if parts.username:
            client.username_pw_set(parts.username, parts.password)
        client.on_connect = self._on_connect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        self._messages = queue.Queue()
        self._stopping.clear()
        self._subscribed.clear()
        self._worker = threading.Thread(
            target=self._work, args=(client,), name=f"mqtt-store-{self.client_id}", daemon=True
        )
        self._worker.start()
        client.connect_async(parts.hostname or "127.0.0.1", parts.port or 1883, keepalive=30)
        client.loop_start()
        if not self._subscribed.wait(self.connect_timeout):
            self.stop()
            raise ConnectionError(
                f"MQTT broker {self.url} did not grant a subscription to {self.topic!r} within "
                f"{self.connect_timeout} s: is it running?"
            )

    def stop(self) -> None:
        """Finish the message being stored, then disconnect. Messages received but not stored
        stay unacknowledged: the broker sends them again on the next start."""
        client, worker = self._client, self._worker
        if client is None or worker is None:
            return
        self._stopping.set()
        self._messages.put(None)
        worker.join()
        client.disconnect()
        client.loop_stop()
        self._client = self._worker = None

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            log.error("MQTT broker %s refused the connection: %s", self.url, reason)
            return
        # The broker keeps the subscription of a persistent session; subscribing again is
        # harmless and needed when the broker lost its sessions.
        client.subscribe(self.topic, qos=1)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: Any, properties: Any) -> None:
        if any(reason.is_failure for reason in reasons):
            log.error("MQTT broker %s refused the subscription to %r: %s", self.url, self.topic, reasons)
            return
        self._subscribed.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, message: mqtt.MQTTMessage) -> None:
        # paho's network thread only hands over: storing here would stall keep-alives.
        self._messages.put(message)

    def _work(self, client: mqtt.Client) -> None:
        while not self._stopping.is_set():
            message = self._messages.get()
            if message is None or not self._store_until_stopped(message):
                return
            # PUBACKs go out in the order the messages came, as MQTT 3.1.1 (4.6) asks.
            client.ack(message.mid, message.qos)

    def _store_until_stopped(self, message: mqtt.MQTTMessage) -> bool:
        """Store ``message``, trying again while the database is down; False if stopped first."""
        while not self._stopping.is_set():
            try:
                store_message(self.sessions, self.source, message.topic, message.payload, max_batch=self.max_batch)
                return True
            except Exception as exc:
                log.warning("MQTT message on %r not stored, retrying in %s s: %s", message.topic, self.retry_delay, exc)
                self._stopping.wait(self.retry_delay)
        return False


# --------------------------------------------------------------------------- NATS JetStream


class JetStreamSource:
    """A durable pull consumer of NATS JetStream that stores each message, then acks it.

    The stream (``STREAM``, subjects ``driftpilot.>``) is created if missing; the consumer is
    durable, so the server remembers what was acknowledged across restarts. Batches of up to
    ``batch`` messages are fetched and stored one message at a time, each acked after
    :func:`store_message` returned. While the database is down, the message and the rest of its
    batch are nak'ed with a delay of ``retry_delay`` seconds: the server delivers them again.
    The consumer runs in a thread of its own with its own asyncio loop.

    Parameters
    ----------
    sessions
        The session factory of memory (:func:`driftpilot.memory.db.connect`).
    url
        ``nats://[user:password@]host[:port]``.
    subject
        The consumer's filter subject; ``driftpilot.<model>.>`` reads one model. It is used
        only when the durable consumer is created.
    durable
        The consumer's name: one per service, the same across restarts.
    ack_wait
        Seconds after which the server delivers a message again that was not acked (the
        process died while storing it).
    """

    source = "nats"

    def __init__(
        self,
        sessions: Callable[[], Session],
        *,
        url: str = "nats://127.0.0.1:4222",
        subject: str = "driftpilot.>",
        durable: str = "driftpilot",
        stream: str = STREAM,
        batch: int = 100,
        max_batch: int = DEFAULT_MAX_BATCH,
        retry_delay: float = 1.0,
        ack_wait: float = 30.0,
        connect_timeout: float = 10.0,
    ) -> None:
        self.sessions = sessions
        self.url = url
        self.subject = subject
        self.durable = durable
        self.stream = stream
        self.batch = batch
        self.max_batch = max_batch
        self.retry_delay = retry_delay
        self.ack_wait = ack_wait
        self.connect_timeout = connect_timeout
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        """Start the consumer's thread; returns once it is connected and bound to its consumer.

        Raises
        ------
        ConnectionError
            If NATS could not be reached, or the stream or consumer not set up, within
            ``connect_timeout`` seconds.
        """
        if self._thread is not None:
            raise RuntimeError("this JetStreamSource is running already: stop() it first")
        self._stopping.clear()
        self._ready.clear()
        self._error = None
        self._thread = threading.Thread(target=self._main, name=f"jetstream-{self.durable}", daemon=True)
        self._thread.start()
        if not self._ready.wait(self.connect_timeout + 5) or self._error is not None:
            self.stop()
            raise ConnectionError(f"JetStream at {self.url} (consumer {self.durable!r}): {self._error or 'no answer'}")

    def stop(self) -> None:
        """Finish the batch in hand (messages not stored yet are nak'ed), then disconnect."""
        if self._thread is None:
            return
        self._stopping.set()
        self._thread.join()
        self._thread = None

    def _main(self) -> None:
        try:
            asyncio.run(self._consume())
        except Exception as exc:
            log.exception("JetStream consumer %r stopped", self.durable)
            self._error = exc
        finally:
            self._ready.set()

    async def _consume(self) -> None:
        client = await asyncio.wait_for(
            nats.connect(self.url, connect_timeout=self.connect_timeout, max_reconnect_attempts=-1),
            timeout=self.connect_timeout,
        )
        try:
            js = client.jetstream()
            await self._ensure_stream(js)
            config = ConsumerConfig(ack_policy=AckPolicy.EXPLICIT, ack_wait=self.ack_wait)
            subscription = await js.pull_subscribe(
                self.subject, durable=self.durable, stream=self.stream, config=config
            )
            self._ready.set()
            while not self._stopping.is_set():
                await self._fetch_and_store(subscription)
            await client.flush()
        finally:
            await client.close()

    async def _ensure_stream(self, js: Any) -> None:
        try:
            await js.stream_info(self.stream)
        except nats.js.errors.NotFoundError:
            await js.add_stream(name=self.stream, subjects=list(STREAM_SUBJECTS))

    async def _fetch_and_store(self, subscription: Any) -> None:
        try:
            messages = await subscription.fetch(self.batch, timeout=_FETCH_TIMEOUT)
        except nats.errors.TimeoutError:
            return
        except nats.errors.Error as exc:
            # Reconnecting, or the server busy: the client reconnects by itself.
            log.warning("JetStream fetch of %r failed, retrying in %s s: %s", self.durable, self.retry_delay, exc)
            await asyncio.sleep(self.retry_delay)
            return
        try:
            await self._store_batch(messages)
        except nats.errors.Error as exc:
            # An ack lost with the connection: the server delivers the message again after
            # ack_wait, and ingest counts it a duplicate.
            log.warning("JetStream ack of %r failed: %s", self.durable, exc)

    async def _store_batch(self, messages: Sequence[Any]) -> None:
        for i, message in enumerate(messages):
            if self._stopping.is_set():
                await self._nak(messages[i:], delay=None)
                return
            try:
                await asyncio.to_thread(
                    store_message, self.sessions, self.source, message.subject, message.data, max_batch=self.max_batch
                )
            except Exception as exc:
                log.warning(
                    "JetStream message on %r not stored, redelivery in %s s: %s", message.subject, self.retry_delay, exc
                )
                await self._nak(messages[i:], delay=self.retry_delay)
                return
            await message.ack()

    @staticmethod
    async def _nak(messages: Sequence[Any], delay: float | None) -> None:
        for message in messages:
            await message.nak(delay=delay)


# --------------------------------------------------------------------------- the service's sources


def live_sources(settings: Settings, sessions: Callable[[], Session]) -> list[LiveSource]:
    """The live sources the settings configure (``mqtt_url``, ``nats_url``), not started."""
    global TEXTS
    TEXTS = text_features(settings.embedding_cache_dir)
    sources: list[LiveSource] = []
    if settings.mqtt_url:
        sources.append(MqttSource(sessions, url=settings.mqtt_url, max_batch=settings.max_batch))
    if settings.nats_url:
        sources.append(JetStreamSource(sessions, url=settings.nats_url, max_batch=settings.max_batch))
    return sources
