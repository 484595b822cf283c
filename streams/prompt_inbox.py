"""Prompts waiting for a stream's next frame, from every channel (MQTT, the web viewer), with one set of checks.

    inbox = PromptInbox("cam1")
    inbox.listeners.append(lambda refusal: print(refusal.error))
    inbox.submit(payload)            # parse + queue; a bad payload is refused (listeners hear it) and queues nothing
    prompts = inbox.take()           # between frames, oldest first

Refusals are answered on receipt wherever the frame is not needed: malformed or too large payloads, too many
waiting, and, once the stream has set `frame_size`, prompts that cannot fit its frames (a point outside, a mask
declaring another size). The queue is bounded: one prompt more than it holds refuses the oldest. Every refusal, also those
the engine makes when applying a prompt (unknown object, mask of another size), goes to every
listener, so a prompt's sender hears why on the channel it used, and all refusals are counted once. Each refusal
echoes the prompt as it was received, with its MQTT 5 reply details (`ReplyTo`), however far it got.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from vos.streams.messages import AddPrompt, ErrorMessage, PromptMessage, parse_prompt

log = logging.getLogger(__name__)

ERROR_PAYLOAD_ECHO = 200  # characters of a refused prompt echoed in its error message
MAX_PROMPT_BYTES = 8_000_000  # larger prompt payloads are refused before parsing; MQTT: see streams.mqtt.MAX_PACKET_BYTES
MAX_PENDING_PROMPTS = 32  # prompts waiting for the next frame; more refuse the oldest


@dataclass(frozen=True)
class ReplyTo:
    """How to answer a prompt (MQTT 5 request/response): its Correlation Data and Response Topic, or None."""

    correlation: bytes | None = None
    topic: str | None = None


@dataclass(frozen=True)
class Received:
    """A parsed prompt with what its refusal gives back: the payload as received (truncated) and `ReplyTo`."""

    prompt: PromptMessage
    echo: str
    reply: ReplyTo | None = None


Listener = Callable[[ErrorMessage, ReplyTo | None], None]


def _echo(payload: bytes | bytearray | str) -> str:
    text = payload[:ERROR_PAYLOAD_ECHO * 4]  # a UTF-8 character is at most 4 bytes
    text = text.decode("utf-8", "replace") if isinstance(text, (bytes, bytearray)) else text
    return text[:ERROR_PAYLOAD_ECHO]


def _read_fields(payload: bytes | bytearray | str) -> dict:
    """obj_id and action of a payload that is JSON but not a valid prompt, where they can be read."""
    try:
        data = json.loads(payload)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return {}
    if not isinstance(data, dict):
        return {}
    obj_id, action = data.get("obj_id"), data.get("action")
    return {
        "obj_id": obj_id if isinstance(obj_id, int) and not isinstance(obj_id, bool) and abs(obj_id) < 2**63 else None,
        "action": action[:32] if isinstance(action, str) else None,
    }


class PromptInbox:
    """One stream's pending prompts (bounded) and its refusals (counted, sent to `listeners`)."""

    def __init__(self, stream: str, limit: int = MAX_PENDING_PROMPTS) -> None:
        self.stream = stream
        self.limit = limit
        self.listeners: list[Listener] = []
        self.refused = 0
        self.frame_size: tuple[int, int] | None = None  # (H, W) of the stream's latest frame, once known
        self._prompts: deque[Received] = deque()

    def refuse(
        self, error: str, payload: bytes | bytearray | str = b"", reply: ReplyTo | None = None,
        received: Received | None = None,
    ) -> ErrorMessage:  # fmt: skip
        """Counts a refused prompt and tells every listener: a `received` (parsed) prompt, or a raw `payload`."""
        if received is not None:
            prompt, reply = received.prompt, received.reply
            fields = {"obj_id": getattr(prompt, "obj_id", None), "action": prompt.action}
            echo = received.echo
        else:
            size = len(payload)
            fields = _read_fields(payload) if 0 < size <= MAX_PROMPT_BYTES else {}
            echo = _echo(payload)
        message = ErrorMessage(stream=self.stream, error=error, payload=echo, **fields)
        self.refused += 1
        log.warning("stream %s: prompt refused: %s", self.stream, error)
        for listener in self.listeners:
            listener(message, reply)
        return message

    def submit(self, payload: bytes | bytearray | str, reply: ReplyTo | None = None) -> PromptMessage | ErrorMessage:
        """Parses and queues a prompt message (JSON); returns it, or the refusal if it is malformed, too large or
        cannot fit the stream's frames. `reply`: how its sender wants to be answered (MQTT 5)."""
        size = len(payload.encode() if isinstance(payload, str) else payload)
        if size > MAX_PROMPT_BYTES:
            return self.refuse(f"prompt message of {size} bytes is larger than {MAX_PROMPT_BYTES}", payload, reply)
        try:
            prompt = parse_prompt(bytes(payload) if isinstance(payload, bytearray) else payload)
        except ValueError as e:
            return self.refuse(str(e), payload, reply)
        received = Received(prompt, _echo(payload), reply)
        if isinstance(prompt, AddPrompt) and self.frame_size is not None:
            try:
                prompt.check_fits(self.frame_size)
            except ValueError as e:
                return self.refuse(f"object {prompt.obj_id}: {e}", received=received)
        self.put(received)
        return prompt

    def put(self, received: Received) -> None:
        """Queues a parsed prompt; when the queue is full the oldest is refused."""
        if len(self._prompts) >= self.limit:
            oldest = self._prompts.popleft()
            self.refuse(f"more than {self.limit} prompts waiting for the next frame: the oldest is dropped", received=oldest)
        self._prompts.append(received)

    def take_received(self) -> list[Received]:
        """The prompts received since the last call, oldest first, with what their refusal would give back."""
        received = list(self._prompts)
        self._prompts.clear()
        return received

    def take(self) -> list[PromptMessage]:
        """The prompts received since the last call, oldest first."""
        return [r.prompt for r in self.take_received()]

    def __len__(self) -> int:
        return len(self._prompts)
