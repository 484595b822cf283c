"""MQTT link of one stream (aiomqtt): masks, errors and status out, prompts in, reconnecting forever.

Topics, under a configurable prefix:

    {prefix}/{stream}/masks    one MaskMessage per processed frame           (QoS `qos`)
    {prefix}/{stream}/prompts  subscribed: prompt messages                   (QoS `qos`)
    {prefix}/{stream}/errors   an ErrorMessage per refused prompt            (QoS `qos`)
    {prefix}/{stream}/status   StatusMessage, retained; last will: "offline" (QoS 1)

    async with MqttLink(settings, "cam") as link:   # connects once, or MqttUnavailable
        link.publish_masks(message)                 # never waits for the broker
        prompts = link.inbox.take()                 # parsed prompts received since the last call

Prompts go to the stream's `PromptInbox` (shared with the web viewer); a refusal of any of
them, wherever it is made, is answered on the errors topic, echoing the prompt as received
(`ErrorMessage`). MQTT 5 request/response: a prompt published with Correlation Data gets it back
as a property of its refusal, which also goes to the prompt's Response Topic if it names one
(`reply_to`).

aiomqtt does not reconnect by itself, so the link runs a loop: `async with` a client
(connect), subscribe, announce the status, then send and receive until the connection
fails; wait (exponential backoff) and connect again. Each connection gets a new client:
a reused one keeps paho's queue of unacknowledged messages and re-sends them besides
this link's buffer (duplicates, and messages counted as dropped arriving anyway). Outgoing
messages wait in a bounded buffer, so the tracker never waits for the broker: when the buffer
is full the oldest message is dropped and counted. A message leaves the buffer only once the
broker acknowledged it (QoS 1), so a message in flight when the connection drops is sent
again after the reconnect (at least once; a subscriber may see a message twice). The status
announced on each connection is the current one (`status_now`, given by the engine), not the last
one published.

`close()` drains: for up to `flush_timeout` it keeps delivering what is buffered, in order, and
while the broker is away it retries every `DRAIN_RETRY` seconds rather than on the back-off
schedule, so a broker restarting meanwhile still gets every message. What is left after that is
lost, and counted per topic (`MqttStats.lost_topics`) beside the messages dropped to a full buffer.

The link speaks MQTT 5 and tells the broker, in its CONNECT packet, the largest packet it
takes (`MAX_PACKET_BYTES`, twice the prompt limit `MAX_PROMPT_BYTES`): a prompt whose packet
is larger than that is dropped by the broker (MQTT 5 section 3.1.2.11.4; Mosquitto logs "Dropping
too large outgoing PUBLISH") and never reaches this process, so it is never held whole. A
prompt between the two limits still arrives and is refused on the errors topic ("larger
than"), so its sender hears why. The broker must speak MQTT 5 (Mosquitto 1.6 and later).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlparse

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from vos.streams.messages import ErrorMessage, MaskMessage, StatusMessage
from vos.streams.prompt_inbox import MAX_PROMPT_BYTES, PromptInbox, ReplyTo
from vos.streams.redact import read_secret_file, redact

if TYPE_CHECKING:
    import numpy as np

    from vos.streams.sources.base import Frame

log = logging.getLogger(__name__)

TLS_PORT = 8883
TOPIC_FORBIDDEN = set("+#/\0")
DRAIN_RETRY = 0.25
"""Seconds between connection attempts while `close()` drains the buffer (the live back-off may be seconds)."""
MAX_PACKET_BYTES = 2 * MAX_PROMPT_BYTES
"""The largest MQTT packet the broker may send a link (MQTT 5 Maximum Packet Size): larger prompts never reach
it. Above `MAX_PROMPT_BYTES`, so that a prompt a bit too large still arrives and is answered "larger than"."""


class TlsSettings(BaseModel):
    """MQTT over TLS (`mqtts://`, `tls:` in YAML): the broker's certificate is checked unless `insecure`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_file: Path | None = Field(None, description="CA certificate(s) that signed the broker's (default: the system's CAs)")
    cert_file: Path | None = Field(None, description="client certificate, for brokers that require one")
    key_file: Path | None = Field(None, description="the client certificate's private key (default: in cert_file)")
    insecure: bool = Field(False, description="do not check the broker's certificate and name (tests only)")

    def context(self) -> ssl.SSLContext:
        """The SSL context (ValueError if a file cannot be read)."""
        try:
            context = ssl.create_default_context(cafile=self.ca_file)
            if self.cert_file is not None:
                context.load_cert_chain(self.cert_file, self.key_file)
        except (OSError, ssl.SSLError) as e:
            raise ValueError(f"MQTT TLS: cannot load certificates: {e}") from None
        if self.insecure:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context


class MqttSettings(BaseModel):
    """Broker and topics; the same for `vos track --mqtt` and `vos serve`."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(1883, ge=1, le=65535)
    prefix: str = "vos"
    qos: int = Field(1, ge=0, le=2)
    username: str | None = None
    password: SecretStr | None = None  # never printed: repr and logs show **********
    password_file: Path | None = None  # or read it from this file (first line), e.g. a container secret
    tls: TlsSettings | None = None  # None: plain TCP
    keepalive: int = Field(30, ge=5)  # seconds
    connect_timeout: float = Field(5.0, gt=0)  # seconds, first connection and each reconnect
    buffer_size: int = Field(1000, ge=1)  # outgoing messages held while the broker is away
    reconnect_initial: float = Field(0.5, gt=0)  # seconds before the first reconnect attempt, doubling
    reconnect_max: float = Field(10.0, gt=0)
    flush_timeout: float = Field(30.0, ge=0)  # seconds `close()` keeps delivering buffered messages (a broker restart)

    @model_validator(mode="after")
    def _one_password(self) -> MqttSettings:
        if self.password is not None and self.password_file is not None:
            raise ValueError("give password or password_file, not both")
        return self

    def password_value(self) -> str | None:
        """The password, from `password` or `password_file` (ValueError if that cannot be read)."""
        if self.password_file is None:
            return None if self.password is None else self.password.get_secret_value()
        return read_secret_file(self.password_file, "MQTT password")

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        v = v.strip("/")
        if set("+#\0") & set(v) or v.startswith("$") or "//" in v:
            raise ValueError(
                f"topic prefix {v!r} cannot hold + # NUL or empty levels, or start with $ (broker-reserved topics)"
            )
        return v

    @classmethod
    def from_url(cls, url: str, **fields: object) -> MqttSettings:
        """`mqtt[s]://[USER[:PASSWORD]@]HOST[:PORT]` plus other fields (ValueError if invalid); mqtts: TLS, port 8883."""
        parsed = urlparse(url if "://" in url else f"mqtt://{url}")
        if parsed.scheme not in ("mqtt", "mqtts") or not parsed.hostname:
            raise ValueError(f"{redact(url)!r}: expected mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
        values: dict[str, object] = {"host": parsed.hostname, "username": parsed.username}
        if parsed.password is not None:
            values["password"] = parsed.password
        if parsed.scheme == "mqtts":
            values["tls"] = TlsSettings()
        if parsed.port or parsed.scheme == "mqtts":
            values["port"] = parsed.port or TLS_PORT
        return cls(**{**values, **fields})


def check_topic_level(name: str, what: str) -> str:
    """A stream id or prefix level must be a plain MQTT topic level (no wildcards, no '/')."""
    if not name or TOPIC_FORBIDDEN & set(name):
        raise ValueError(f"{what} {name!r} cannot be used in an MQTT topic (empty, or has + # / or NUL)")
    return name


class MqttUnavailable(Exception):
    """The broker could not be reached (or refused the connection)."""


@dataclass
class MqttStats:
    published: int = 0
    dropped: int = 0  # outgoing messages lost: to a full buffer, or still buffered at `close()`
    lost: int = 0  # of those, still buffered at `close()`
    dropped_topics: Counter[str] = field(default_factory=Counter)  # `dropped` per topic
    reconnects: int = 0
    connected: bool = False
    last_error: str | None = None

    def dropped_text(self) -> str:
        """`N MQTT messages lost (topic: n, ...)`, the topics with the most first."""
        topics = ", ".join(f"{topic}: {n}" for topic, n in self.dropped_topics.most_common())
        return f"{self.dropped} MQTT messages lost ({topics})"


MAX_RESPONSE_TOPIC = 256  # characters of a prompt's Response Topic; a longer one is not answered there


def reply_to(properties: Properties | None) -> ReplyTo | None:
    """A prompt's MQTT 5 Correlation Data and Response Topic, if it had them. A Response Topic that cannot be
    published to (empty, wildcards, `$...`, longer than MAX_RESPONSE_TOPIC) is ignored: the refusal still goes to the errors
    topic, with the Correlation Data."""
    correlation = getattr(properties, "CorrelationData", None)
    topic = getattr(properties, "ResponseTopic", None)
    unusable = not isinstance(topic, str) or not topic or len(topic) > MAX_RESPONSE_TOPIC or topic.startswith("$")
    if unusable or any(c in topic for c in "+#\0"):
        topic = None
    correlation = bytes(correlation) if isinstance(correlation, (bytes, bytearray)) else None
    return ReplyTo(correlation, topic) if correlation is not None or topic is not None else None


class MqttLink:
    """Connection of one stream to the broker: `async with` it (or `start()` / `close()`), `publish_*` from the
    engine, `inbox.take()` between frames. It is also a `Sink` (masks). `inbox`: the stream's, if it has one.
    `status_now`: builds the current status, announced on each connection (default: the last one published)."""

    def __init__(
        self,
        settings: MqttSettings,
        stream: str,
        inbox: PromptInbox | None = None,
        status_now: Callable[[], StatusMessage] | None = None,
    ) -> None:
        self.settings = settings
        self.stream = check_topic_level(stream, "stream id")
        base = "/".join([settings.prefix.rstrip("/"), stream]) if settings.prefix else stream
        self.topics = {k: f"{base}/{k}" for k in ("masks", "prompts", "errors", "status")}
        self.stats = MqttStats()
        self._password = settings.password_value()
        self._tls = settings.tls.context() if settings.tls is not None else None
        self.inbox = inbox if inbox is not None else PromptInbox(stream)
        self.inbox.listeners.append(self._publish_error_message)
        self._buffer: deque[tuple[str, bytes, int, bool, Properties | None]] = deque()
        self._wakeup = asyncio.Event()
        self._closing = False
        self._close_requested = asyncio.Event()  # cuts a back-off short
        self._closed: asyncio.Future | None = None  # the number lost, once `close()` is done
        self._status = StatusMessage(stream=stream, state="online")
        self.status_now = status_now
        self._task: asyncio.Task | None = None

    # -- outgoing ---------------------------------------------------------------------------

    def _enqueue(self, topic: str, payload: bytes, qos: int, retain: bool = False, properties: Properties | None = None) -> None:
        if len(self._buffer) >= self.settings.buffer_size:
            self._drop(self._buffer.popleft()[0])
        self._buffer.append((topic, payload, qos, retain, properties))
        self._wakeup.set()

    def _drop(self, topic: str) -> None:
        self.stats.dropped += 1
        self.stats.dropped_topics[topic] += 1

    def publish_masks(self, message: BaseModel) -> None:
        self._enqueue(self.topics["masks"], message.model_dump_json().encode(), self.settings.qos)

    async def write(self, frame: Frame, message: MaskMessage, labels: np.ndarray) -> None:
        self.publish_masks(message)

    def _publish_error_message(self, message: ErrorMessage, reply: ReplyTo | None = None) -> None:
        """On the errors topic; with the prompt's Correlation Data, and also on its Response Topic, if it had them."""
        payload = message.model_dump_json().encode()
        properties = None
        if reply is not None and reply.correlation is not None:
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = reply.correlation
        self._enqueue(self.topics["errors"], payload, self.settings.qos, properties=properties)
        if reply is not None and reply.topic is not None:
            self._enqueue(reply.topic, payload, self.settings.qos, properties=properties)

    def publish_status(self, status: StatusMessage) -> None:
        """Retained: a subscriber arriving later sees the last state."""
        self._status = status
        self._enqueue(self.topics["status"], status.model_dump_json().encode(), 1, retain=True)

    @property
    def pending(self) -> int:
        """Messages waiting for the broker."""
        return len(self._buffer)

    # -- connection -------------------------------------------------------------------------

    def _last_will(self) -> tuple[str, bytes]:
        """(topic, payload) the broker publishes, retained, if this connection dies."""
        return self.topics["status"], StatusMessage(stream=self.stream, state="offline").model_dump_json().encode()

    def _announcement(self) -> tuple[str, bytes]:
        """(topic, payload) published, retained, on every connection: the current state and counters."""
        status = self.status_now() if self.status_now is not None else self._status
        return self.topics["status"], status.model_dump_json().encode()

    def _subscriptions(self) -> list[str]:
        return [self.topics["prompts"]]

    def _client(self) -> aiomqtt.Client:
        """An MQTT 5 client (a clean start, its session ending with the connection, as v3.1.1's clean session) that
        the broker sends no packet above `MAX_PACKET_BYTES`."""
        s = self.settings
        will_topic, will = self._last_will()
        properties = Properties(PacketTypes.CONNECT)
        properties.MaximumPacketSize = MAX_PACKET_BYTES
        return aiomqtt.Client(
            s.host, s.port, username=s.username, password=self._password, tls_context=self._tls, keepalive=s.keepalive,
            timeout=s.connect_timeout, will=aiomqtt.Will(will_topic, will, qos=1, retain=True),
            protocol=aiomqtt.ProtocolVersion.V5, properties=properties,
        )

    async def __aenter__(self) -> MqttLink:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Connects once (MqttUnavailable if the broker cannot be reached), then keeps the link up in a task."""
        first = asyncio.get_running_loop().create_future()
        self._task = asyncio.create_task(self._run(first), name=f"mqtt-{self.stream}")
        await asyncio.wait([first, self._task], return_when=asyncio.FIRST_COMPLETED)
        if not first.done():
            self._task.result()  # the loop failed before connecting: its error
        first.result()

    async def _run(self, first: asyncio.Future) -> None:
        """Connect, work, and after a failure wait and reconnect, until `close()`; `first` hears the first try."""
        delay = self.settings.reconnect_initial
        while not self._drained:
            try:
                async with self._client() as client:
                    if first.done():
                        self.stats.reconnects += 1
                        log.info("MQTT %s: reconnected", self.stream)
                    else:
                        first.set_result(None)
                    delay = self.settings.reconnect_initial
                    await self._session(client)
            except aiomqtt.MqttError as e:
                if not first.done():
                    s = self.settings
                    first.set_exception(MqttUnavailable(f"cannot connect to MQTT broker {s.host}:{s.port}: {e}"))
                    return
                if self.stats.last_error != str(e) or not self._closing:  # draining retries often: said once
                    log.warning("MQTT %s: connection lost (%s), retrying in %.1f s", self.stream, e,
                                DRAIN_RETRY if self._closing else delay)  # fmt: skip
                self.stats.last_error = str(e)
            finally:
                self.stats.connected = False
            if self._drained:
                break
            await self._wait_to_reconnect(delay)
            delay = min(2 * delay, self.settings.reconnect_max)

    @property
    def _drained(self) -> bool:
        """Closing with nothing left to send."""
        return self._closing and not self._buffer

    async def _wait_to_reconnect(self, delay: float) -> None:
        """The back-off `delay` before the next connection, cut short by `close()`: draining retries every
        `DRAIN_RETRY` seconds."""
        if not self._closing:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._close_requested.wait(), delay)
        if self._closing:
            await asyncio.sleep(DRAIN_RETRY)

    async def _session(self, client: aiomqtt.Client) -> None:
        """One connection's life: subscribe, re-announce the status, then send and receive until it fails."""
        for topic in self._subscriptions():
            await client.subscribe(topic, qos=self.settings.qos)
        topic, payload = self._announcement()
        await client.publish(topic, payload, qos=1, retain=True)
        self.stats.connected = True
        receiver = asyncio.create_task(self._receive(client))
        try:
            while True:
                if receiver.done():
                    receiver.result()  # raises the connection error
                if not self._buffer:
                    if self._closing:
                        return
                    self._wakeup.clear()
                    waiter = asyncio.create_task(self._wakeup.wait())
                    await asyncio.wait([receiver, waiter], return_when=asyncio.FIRST_COMPLETED)
                    waiter.cancel()
                    continue
                topic, payload, qos, retain, properties = self._buffer[0]
                await client.publish(
                    topic, payload, qos=qos, retain=retain, properties=properties, timeout=self.settings.keepalive
                )
                if self._buffer and self._buffer[0][0] is topic and self._buffer[0][1] is payload:
                    self._buffer.popleft()
                self.stats.published += 1
        finally:
            receiver.cancel()

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, (bytes, bytearray)):
                payload = b"" if payload is None else str(payload).encode()
            self.inbox.submit(payload, reply_to(message.properties))

    async def close(self) -> int:
        """Delivers what is buffered (for up to `flush_timeout`, reconnecting as often as `DRAIN_RETRY`), then
        disconnects; how many messages were lost at close. Calling it again waits for the first call."""
        if self._closed is not None:
            return await asyncio.shield(self._closed)
        self._closed = asyncio.get_running_loop().create_future()
        self._closing = True
        self._close_requested.set()
        self._wakeup.set()
        if self._task is not None:
            if self._buffer and not self.stats.connected:
                log.warning(
                    "MQTT %s: %d messages wait for the broker; trying to deliver them for up to %.0f s",
                    self.stream, len(self._buffer), self.settings.flush_timeout,
                )  # fmt: skip
            done, _ = await asyncio.wait([self._task], timeout=self.settings.flush_timeout)
            if not done:
                self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        lost = len(self._buffer)
        self.stats.lost += lost
        for topic, *_ in self._buffer:
            self._drop(topic)
        self._buffer.clear()
        self._closed.set_result(lost)
        return lost


AVAILABLE_LEVEL = "available"


class AvailabilityLink(MqttLink):
    """The process's availability (Frigate's convention), one retained topic `{prefix}/available`:
    "online" while the engine runs, "offline" if it dies (last will) or fails, "stopped" after a clean exit.

        async with AvailabilityLink(settings) as available:
            ...
            available.set_state("stopped")      # sent before the link closes
    """

    def __init__(self, settings: MqttSettings) -> None:
        super().__init__(settings, AVAILABLE_LEVEL)
        self.topic = "/".join([settings.prefix.rstrip("/"), AVAILABLE_LEVEL]) if settings.prefix else AVAILABLE_LEVEL
        self.state = "online"

    def _last_will(self) -> tuple[str, bytes]:
        return self.topic, b"offline"

    def _announcement(self) -> tuple[str, bytes]:
        return self.topic, self.state.encode()

    def _subscriptions(self) -> list[str]:
        return []

    def set_state(self, state: str) -> None:
        """Publishes `state` (retained) and re-announces it after any reconnect."""
        self.state = state
        self._enqueue(self.topic, state.encode(), 1, retain=True)

    def publish_stream_status(self, stream: str, state: str, detail: str = "") -> None:
        """A stream's retained status, from the process supervising it (`vos serve --ray`: an actor died)."""
        topic = "/".join([self.settings.prefix, stream, "status"]) if self.settings.prefix else f"{stream}/status"
        message = StatusMessage(stream=stream, state=state, detail=detail)
        self._enqueue(topic, message.model_dump_json().encode(), 1, retain=True)
