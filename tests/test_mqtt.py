"""streams.mqtt.MqttLink against a real Mosquitto broker: order, status, prompts, errors, outages."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from tests.mqtt_broker import Subscriber, free_port
from tests.prompt_fuzz import fuzzed_prompts
from vos.streams.messages import AddPrompt, MaskMessage, ObjectMask, RemoveObject
from vos.streams.sinks.mqtt import MqttLink, MqttSettings, MqttUnavailable


def settings(port: int, **kw) -> MqttSettings:
    return MqttSettings(port=port, prefix="t/vos", reconnect_initial=0.1, reconnect_max=0.5, **kw)


def mask_message(index: int) -> MaskMessage:
    mask = np.zeros((6, 8), bool)
    mask[1 : 2 + index % 4, 2:5] = True
    return MaskMessage(stream="cam", frame_index=index, pts=index / 10, width=8, height=6, objects=[ObjectMask.from_mask(1, mask, 2.5)])


def frame_indices(messages: list[tuple[str, bytes]], topic: str) -> list[int]:
    return [json.loads(p)["frame_index"] for t, p in messages if t == topic]


def test_masks_arrive_in_order_with_status_and_prompts(broker):
    async def main():
        received = []
        async with Subscriber(broker.port, "t/vos/cam/#") as sub:
            link = MqttLink(settings(broker.port), "cam")
            await link.start()
            for i in range(30):
                link.publish_masks(mask_message(i))
            assert await sub.wait_for(lambda m: len(frame_indices(m, "t/vos/cam/masks")) == 30, 10)
            # A prompt published by someone else reaches the handler.
            async with __import__("aiomqtt").Client("127.0.0.1", broker.port) as client:
                await client.publish("t/vos/cam/prompts", b'{"action": "remove", "obj_id": 4}', qos=1)
                await client.publish("t/vos/cam/prompts", b'{"action": "add", "obj_id": 2, "box": [1, 1, 5, 5]}', qos=1)
            for _ in range(100):
                received += link.inbox.take()
                if len(received) == 2:
                    break
                await asyncio.sleep(0.05)
            lost = await link.close()
        return sub.messages, received, lost, link.stats

    messages, received, lost, stats = asyncio.run(main())
    assert frame_indices(messages, "t/vos/cam/masks") == list(range(30))
    first = MaskMessage.model_validate_json(next(p for t, p in messages if t == "t/vos/cam/masks"))
    assert first.objects[0].mask.to_mask().shape == (6, 8) and first.objects[0].bbox == (2, 1, 3, 1)
    status = [json.loads(p) for t, p in messages if t == "t/vos/cam/status"]
    assert status[0]["state"] == "online"
    assert received == [RemoveObject(action="remove", obj_id=4), AddPrompt(obj_id=2, box=(1, 1, 5, 5))]
    assert lost == 0 and stats.published == 30 and stats.dropped == 0


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"not json", "invalid"),
        (b'{"action": "add", "obj_id": "one", "points": [[1, 2]], "labels": [1]}', "obj_id"),
        (b'{"action": "add", "obj_id": 1, "mask": {"size": [4, 4], "counts": "' + b"1" * 5_000_000 + b'"}}', "mask"),
        (b'{"action": "add", "obj_id": 1, "mask": {"size": [16000, 16000], "counts": "0"}}', "do not cover"),
        (b'{"action": "explode"}', "action"),
        (b"\xff\xfe\x00", "invalid"),
        (b"x" * 9_000_000, "larger than"),
    ],
    ids=["not-json", "wrong-type", "huge-rle", "rle-size", "unknown-action", "binary", "oversized"],
)
def test_malformed_prompts_are_answered_on_the_errors_topic(broker, payload, reason):
    async def main():
        async with Subscriber(broker.port, "t/vos/cam/errors") as sub:
            async with MqttLink(settings(broker.port), "cam") as link:
                async with __import__("aiomqtt").Client("127.0.0.1", broker.port) as client:
                    await client.publish("t/vos/cam/prompts", payload, qos=1)
                assert await sub.wait_for(lambda m: len(m) == 1, 10)
                received = link.inbox.take()
        return sub.messages, received

    messages, received = asyncio.run(main())
    assert received == []
    error = json.loads(messages[0][1])
    assert error["stream"] == "cam" and reason in error["error"] and len(error["payload"]) <= 200


def test_unreachable_broker_is_a_clear_error():
    async def main():
        async with MqttLink(settings(free_port(), connect_timeout=2), "cam"):
            pass

    with pytest.raises(MqttUnavailable, match="cannot connect to MQTT broker 127.0.0.1"):
        asyncio.run(main())


def test_broker_restart_delivers_buffered_messages_and_counts_overflow(broker):
    """While the broker is down the newest `buffer_size` messages wait; older ones are counted as dropped."""

    async def main():
        async with Subscriber(broker.port, "t/vos/cam/masks") as sub:
            link = MqttLink(settings(broker.port, buffer_size=3), "cam")
            await link.start()
            link.publish_masks(mask_message(0))
            assert await sub.wait_for(lambda m: len(m) == 1, 10)
            broker.stop()
            for i in range(1, 11):
                link.publish_masks(mask_message(i))
                await asyncio.sleep(0.01)
            assert link.stats.dropped == 7 and link.pending == 3 and not link.stats.connected
            broker.start()
            assert await sub.wait_for(lambda m: len(m) >= 4, 15)
            lost = await link.close()
        return sub.messages, link.stats, lost

    messages, stats, lost = asyncio.run(main())
    assert frame_indices(messages, "t/vos/cam/masks") == [0, 8, 9, 10]
    assert stats.reconnects >= 1 and stats.dropped == 7 and lost == 0


def test_status_announced_after_a_reconnect_has_the_current_counters(broker):
    """A reconnect re-announces the stream's status built then (`StreamRunner` gives the link `status_now`): the
    counters as they are now, not those of the last status published, which may be STATUS_INTERVAL old."""
    from types import SimpleNamespace

    from vos.engine.stream import StreamRunner

    def status(messages: list[tuple[str, bytes]]) -> list[dict]:
        return [json.loads(p) for _, p in messages]

    async def main():
        source = SimpleNamespace(name="cam", stats=SimpleNamespace(dropped=0, skipped=0, reconnects=0))
        link = MqttLink(settings(broker.port), "cam")
        runner = StreamRunner(source, None, None, mqtt=link)
        async with Subscriber(broker.port, "t/vos/cam/status") as sub:
            await link.start()  # announces "online" before the runner's first status
            runner._status("online")
            assert await sub.wait_for(lambda m: len(m) == 2, 10)
            runner.frames, source.stats.dropped = 42, 7  # not published: the next status is up to 5 s away
            broker.stop()
            broker.start()
            assert await sub.wait_for(lambda m: any(s["frames"] == 42 for s in status(m)), 15), status(sub.messages)
            assert link.stats.reconnects == 1
            await link.close()
        async with Subscriber(broker.port, "t/vos/cam/status", identifier="late") as late:
            assert await late.wait_for(lambda m: len(m) == 1, 10)
        return status(sub.messages), status(late.messages)

    published, [retained] = asyncio.run(main())
    assert [s["state"] for s in published[:2]] == ["online", "online"] and published[1]["frames"] == 0
    assert retained == published[-1] == {"stream": "cam", "state": "online", "detail": "", "frames": 42, "dropped_frames": 7,
                                         "skipped_frames": 0, "source_reconnects": 0, "dropped_messages": 0,
                                         "discovered_objects": 0}


def test_prompts_above_the_packet_limit_never_reach_the_link(broker):
    """MQTT 5 Maximum Packet Size: the broker drops a 20 MB prompt instead of sending it (the link never holds it and
    stays connected); a 9 MB one still arrives and is answered "larger than"; a valid prompt after both arrives."""
    from vos.streams.prompt_inbox import MAX_PROMPT_BYTES
    from vos.streams.sinks.mqtt import MAX_PACKET_BYTES

    valid = b'{"action": "remove", "obj_id": 4}'
    assert MAX_PROMPT_BYTES < 9_000_000 < MAX_PACKET_BYTES < 20_000_000

    async def main():
        async with Subscriber(broker.port, "t/vos/cam/errors") as sub:
            async with MqttLink(settings(broker.port), "cam") as link:
                arrived, submit = [], link.inbox.submit
                link.inbox.submit = lambda payload, reply=None: arrived.append(len(payload)) or submit(payload, reply)
                async with __import__("aiomqtt").Client("127.0.0.1", broker.port) as client:
                    for payload in (b"x" * 20_000_000, b"x" * 9_000_000, valid):
                        await client.publish("t/vos/cam/prompts", payload, qos=1)
                assert await sub.wait_for(lambda m: len(arrived) == 2 and len(m) == 1, 10), arrived
                await asyncio.sleep(0.5)
                assert link.stats.connected
                return sub.messages, arrived, link.inbox.take(), link.stats

    errors, arrived, prompts, stats = asyncio.run(main())
    assert arrived == [9_000_000, len(valid)] and prompts == [RemoveObject(action="remove", obj_id=4)]
    assert len(errors) == 1 and "9000000 bytes is larger than 8000000" in json.loads(errors[0][1])["error"]
    assert stats.reconnects == 0 and stats.last_error is None
    assert "Dropping too large outgoing PUBLISH" in (broker.folder / "mosquitto.log").read_text()


def test_last_will_reports_offline_when_the_engine_dies(broker):
    """A process holding a link is killed: the broker publishes the retained "offline" status."""
    code = textwrap.dedent(f"""
        import asyncio, sys
        from vos.streams.sinks.mqtt import AvailabilityLink, MqttLink, MqttSettings
        async def connected(*links, timeout=5.0):
            for _ in range(int(timeout / 0.05)):
                if all(link.stats.connected for link in links):
                    return True
                await asyncio.sleep(0.05)
            return False
        async def main():
            link = MqttLink(MqttSettings(port={broker.port}, prefix="t/vos"), "cam")
            available = AvailabilityLink(MqttSettings(port={broker.port}, prefix="t/vos"))
            await link.start()
            await available.start()
            print("UP" if await connected(link, available) else "NOT CONNECTED", flush=True)
            await asyncio.sleep(60)
        asyncio.run(main())
    """)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    try:
        assert proc.stdout.readline().strip() == b"UP"
        proc.kill()
        proc.wait()

        async def main():
            async with Subscriber(broker.port, "t/vos/cam/status", identifier="late") as sub:
                assert await sub.wait_for(lambda m: m and json.loads(m[-1][1])["state"] == "offline", 10)
            return sub.messages

        assert json.loads(asyncio.run(main())[-1][1]) == {"stream": "cam", "state": "offline", "detail": "", "frames": 0,
                                                           "dropped_frames": 0, "skipped_frames": 0, "source_reconnects": 0, "dropped_messages": 0,
                                                           "discovered_objects": 0}

        async def availability():
            async with Subscriber(broker.port, "t/vos/available", identifier="later") as sub:
                assert await sub.wait_for(lambda m: m and m[-1][1] == b"offline", 10)

        asyncio.run(availability())
    finally:
        proc.kill()


def test_prompts_beyond_the_pending_limit_are_refused(broker):
    """Prompts wait for the next frame in a bounded queue: one more than it holds drops the oldest, answered."""
    from vos.streams.prompt_inbox import MAX_PENDING_PROMPTS

    async def main():
        async with Subscriber(broker.port, "t/vos/cam/errors") as sub:
            async with MqttLink(settings(broker.port), "cam") as link:
                async with __import__("aiomqtt").Client("127.0.0.1", broker.port) as client:
                    for i in range(MAX_PENDING_PROMPTS + 1):
                        await client.publish("t/vos/cam/prompts", b'{"action": "remove", "obj_id": %d}' % (i + 1), qos=1)
                assert await sub.wait_for(lambda m: len(m) == 1, 10)
                return sub.messages, link.inbox.take(), link.inbox.take()

    messages, first, second = asyncio.run(main())
    assert [p.obj_id for p in first] == list(range(2, MAX_PENDING_PROMPTS + 2)) and second == []
    error = json.loads(messages[0][1])
    assert "the oldest is dropped" in error["error"] and error["payload"] == '{"action": "remove", "obj_id": 1}'
    assert error["obj_id"] == 1 and error["action"] == "remove"


def test_every_refusal_echoes_the_prompt_as_received():
    """Refused on receipt (malformed, not fitting the frame), in the queue, or by the engine: one form, the text as
    received plus obj_id and action where they could be read."""
    from vos.streams.prompt_inbox import ERROR_PAYLOAD_ECHO, PromptInbox

    inbox = PromptInbox("cam", limit=1)
    errors = []
    inbox.listeners.append(lambda message, reply: errors.append((message, reply)))
    inbox.frame_size = (480, 854)
    outside = '{"action":"add",  "obj_id":1, "box":[-16384,-16384,32768,32768]}'
    inbox.submit(outside)
    inbox.submit('{"action": "add", "obj_id": 2, "points": [[1, 2]], "labels": [7]}')  # a bad label: not parsed
    inbox.submit('{"action": "remove", "obj_id": 3}')
    inbox.submit(b'{"action": "remove",    "obj_id": 4}')  # the queue holds one: obj 3 is dropped
    [received] = inbox.take_received()
    inbox.refuse("unknown object id 4", received=received)  # as the engine refuses
    inbox.submit(b"[1, 2")
    inbox.submit("x" * (ERROR_PAYLOAD_ECHO + 50))
    got = [(m.payload, m.obj_id, m.action) for m, _ in errors]
    assert got == [
        (outside, 1, "add"),
        ('{"action": "add", "obj_id": 2, "points": [[1, 2]], "labels": [7]}', 2, "add"),
        ('{"action": "remove", "obj_id": 3}', 3, "remove"),
        ('{"action": "remove",    "obj_id": 4}', 4, "remove"),
        ("[1, 2", None, None),
        ("x" * ERROR_PAYLOAD_ECHO, None, None),
    ]
    assert all(reply is None for _, reply in errors) and inbox.refused == 6


def test_a_refusal_carries_the_prompts_correlation_data_to_its_response_topic(broker):
    """MQTT 5 request/response: a refused prompt's Correlation Data comes back on the errors topic and on the
    prompt's Response Topic; a Response Topic that cannot be published to is not used."""
    import aiomqtt
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.properties import Properties

    def request(correlation: bytes, topic: str | None) -> Properties:
        properties = Properties(PacketTypes.PUBLISH)
        properties.CorrelationData = correlation
        if topic is not None:
            properties.ResponseTopic = topic
        return properties

    async def main():
        got = []
        async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as listener:
            await listener.subscribe("t/vos/cam/errors", qos=1)
            await listener.subscribe("t/replies/#", qos=1)
            async with MqttLink(settings(broker.port), "cam") as link:
                link.inbox.frame_size = (10, 10)
                async with aiomqtt.Client("127.0.0.1", broker.port, protocol=aiomqtt.ProtocolVersion.V5) as client:
                    await client.publish("t/vos/cam/prompts", b"not json", qos=1, properties=request(b"c-1", "t/replies/me"))
                    await client.publish("t/vos/cam/prompts", b'{"action": "add", "obj_id": 5, "points": [[50, 50]], "labels": [1]}',
                                         qos=1, properties=request(b"\x00c-2", "$SYS/replies"))  # fmt: skip
                    await client.publish("t/vos/cam/prompts", b'{"action": "remove", "obj_id": 6}', qos=1)
                async with asyncio.timeout(10):
                    async for message in listener.messages:
                        correlation = getattr(message.properties, "CorrelationData", None)
                        got.append((str(message.topic), json.loads(message.payload), correlation))
                        if len(got) == 3:
                            break
                assert [p.obj_id for p in link.inbox.take()] == [6]
        return got

    got = asyncio.run(main())
    by_topic = sorted((topic, error["payload"][:8], correlation) for topic, error, correlation in got)
    assert by_topic == [
        ("t/replies/me", "not json", b"c-1"),
        ("t/vos/cam/errors", "not json", b"c-1"),
        ("t/vos/cam/errors", '{"action', b"\x00c-2"),  # a $ Response Topic: the errors topic only
    ]
    refused = next(error for _, error, c in got if c == b"\x00c-2")
    assert refused["obj_id"] == 5 and refused["action"] == "add" and "outside the 10x10 frame" in refused["error"]


@pytest.mark.parametrize("prefix", ["a/#", "+", "cams/+/x", "$SYS", "a\0b", "site//cams"])
def test_wildcard_and_reserved_prefixes_are_refused(prefix):
    with pytest.raises(ValueError, match="topic prefix"):
        MqttSettings(prefix=prefix)


def test_password_never_shows():
    s = MqttSettings.from_url("mqtt://cam:hunter2@127.0.0.1:1884", prefix="/site/a/")
    assert (s.host, s.port, s.username, s.prefix) == ("127.0.0.1", 1884, "cam", "site/a")
    assert s.password.get_secret_value() == "hunter2"
    assert "hunter2" not in repr(s) and "hunter2" not in s.model_dump_json()


def test_mqtt_over_tls_checks_the_broker_certificate(tmp_path):
    """mqtts:// against a real Mosquitto TLS listener: with the CA the link works; without it (system CAs)
    the broker's certificate is refused clearly; `insecure` skips the check."""
    from tests.certificates import make_certificates
    from tests.mqtt_broker import MosquittoBroker
    from vos.streams.sinks.mqtt import TlsSettings

    ca, cert, key = make_certificates(tmp_path)
    broker = MosquittoBroker(tmp_path / "broker", tls=(ca, cert, key))
    broker.start()
    try:
        url = f"mqtts://127.0.0.1:{broker.tls_port}"

        async def send(tls: TlsSettings) -> list:
            async with Subscriber(broker.port, "t/vos/cam/masks") as sub:
                async with MqttLink(MqttSettings.from_url(url, prefix="t/vos", tls=tls), "cam") as link:
                    link.publish_masks(mask_message(0))
                    assert await sub.wait_for(lambda m: len(m) == 1, 10)
            return sub.messages

        assert frame_indices(asyncio.run(send(TlsSettings(ca_file=ca))), "t/vos/cam/masks") == [0]
        assert frame_indices(asyncio.run(send(TlsSettings(insecure=True))), "t/vos/cam/masks") == [0]
        with pytest.raises(MqttUnavailable, match="certificate verify failed"):
            asyncio.run(send(TlsSettings()))
        assert MqttSettings.from_url("mqtts://broker.example").port == 8883
    finally:
        broker.stop()


def test_password_from_a_file(tmp_path):
    secret = tmp_path / "password"
    secret.write_text("hunter2\n")
    s = MqttSettings.from_url("mqtt://cam@127.0.0.1", password_file=secret)
    assert s.password_value() == "hunter2" and "hunter2" not in repr(s)
    with pytest.raises(ValueError, match="not both"):
        MqttSettings.from_url("mqtt://cam:x@127.0.0.1", password_file=secret)
    with pytest.raises(ValueError, match="cannot read the MQTT password file"):
        MqttSettings(password_file=tmp_path / "missing").password_value()


def test_a_thousand_fuzzed_prompts_are_each_answered_or_applied(broker):
    """Every malformed message gets its own error, every valid one arrives, in order; the link keeps working
    and memory does not grow (RSS)."""
    messages = fuzzed_prompts(1000)

    def rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    async def main():
        received = []
        async with Subscriber(broker.port, "t/vos/cam/errors") as sub:
            async with MqttLink(settings(broker.port), "cam") as link:
                rss_before = rss()
                async with __import__("aiomqtt").Client("127.0.0.1", broker.port) as client:
                    for payload, _ in messages:
                        await client.publish("t/vos/cam/prompts", payload, qos=1)
                        received += link.inbox.take()
                bad = sum(not ok for _, ok in messages)
                assert await sub.wait_for(lambda m: len(m) >= bad, 60)
                await asyncio.sleep(0.5)
                received += link.inbox.take()
                link.publish_masks(mask_message(0))
                rss_after = rss()
        return received, sub.messages, rss_after - rss_before

    received, errors, growth = asyncio.run(main())
    assert len(errors) == sum(not ok for _, ok in messages)
    assert [json.loads(p.model_dump_json()) for p in received] == [
        json.loads(AddPrompt.model_validate_json(p).model_dump_json()) if b'"add"' in p else json.loads(p)
        for p, ok in messages if ok
    ]  # fmt: skip
    assert all(json.loads(p)["stream"] == "cam" and len(json.loads(p)["payload"]) <= 200 for _, p in errors)
    assert growth < 100 * 2**20, growth
