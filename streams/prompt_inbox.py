"""Prompts waiting for a stream's next frame, from every channel (MQTT, the web viewer), with one set of checks.

    inbox = PromptInbox("cam1")
    inbox.listeners.append(lambda refusal: print(refusal.error))
    inbox.submit(payload)            # parse + queue; a bad payload is refused (listeners hear it) and queues nothing
    prompts = inbox.take()           # between frames, oldest first

Refusals are answered on receipt wherever the frame is not needed: malformed or too large payloads, too many
waiting, and, once the stream has set `frame_size`, prompts that cannot fit its frames (a point outside, a mask
declaring another size). The queue is bounded: one prompt more than it holds refuses the oldest. Every refusal, also those
the engine makes when applying a prompt (unknown object, mask of another size), goes to every
listener, so a prompt's sender hears why on the channel it used, and all refusals are counted once.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable

from vos.streams.messages import AddPrompt, ErrorMessage, PromptMessage, parse_prompt

log = logging.getLogger(__name__)

ERROR_PAYLOAD_ECHO = 200  # characters of a refused prompt echoed in its error message
MAX_PROMPT_BYTES = 8_000_000  # larger prompt payloads are refused before parsing; MQTT: see streams.mqtt.MAX_PACKET_BYTES
MAX_PENDING_PROMPTS = 32  # prompts waiting for the next frame; more refuse the oldest

Listener = Callable[[ErrorMessage], None]


class PromptInbox:
    """One stream's pending prompts (bounded) and its refusals (counted, sent to `listeners`)."""

    def __init__(self, stream: str, limit: int = MAX_PENDING_PROMPTS) -> None:
        self.stream = stream
        self.limit = limit
        self.listeners: list[Listener] = []
        self.refused = 0
        self.frame_size: tuple[int, int] | None = None  # (H, W) of the stream's latest frame, once known
        self._prompts: deque[PromptMessage] = deque()

    def refuse(self, error: str, payload: bytes | str = b"") -> ErrorMessage:
        """Counts a refused prompt and tells every listener; `payload` is echoed (its start only)."""
        text = payload.decode("utf-8", "replace") if isinstance(payload, (bytes, bytearray)) else payload
        message = ErrorMessage(stream=self.stream, error=error, payload=text[:ERROR_PAYLOAD_ECHO])
        self.refused += 1
        log.warning("stream %s: prompt refused: %s", self.stream, error)
        for listener in self.listeners:
            listener(message)
        return message

    def submit(self, payload: bytes | bytearray | str) -> PromptMessage | ErrorMessage:
        """Parses and queues a prompt message (JSON); returns it, or the refusal if it is malformed, too large or
        cannot fit the stream's frames."""
        size = len(payload.encode() if isinstance(payload, str) else payload)
        if size > MAX_PROMPT_BYTES:
            return self.refuse(f"prompt message of {size} bytes is larger than {MAX_PROMPT_BYTES}", payload[:ERROR_PAYLOAD_ECHO])
        prompt = None
        try:
            prompt = parse_prompt(bytes(payload) if isinstance(payload, bytearray) else payload)
            if isinstance(prompt, AddPrompt) and self.frame_size is not None:
                prompt.check_fits(self.frame_size)
        except ValueError as e:
            where = f"object {prompt.obj_id}: " if isinstance(prompt, AddPrompt) else ""
            return self.refuse(f"{where}{e}", payload[:ERROR_PAYLOAD_ECHO])
        self.put(prompt)
        return prompt

    def put(self, prompt: PromptMessage) -> None:
        """Queues a parsed prompt; when the queue is full the oldest is refused."""
        if len(self._prompts) >= self.limit:
            oldest = self._prompts.popleft()
            self.refuse(f"more than {self.limit} prompts waiting for the next frame: the oldest is dropped", oldest.model_dump_json())
        self._prompts.append(prompt)

    def take(self) -> list[PromptMessage]:
        """The prompts received since the last call, oldest first."""
        prompts = list(self._prompts)
        self._prompts.clear()
        return prompts

    def __len__(self) -> int:
        return len(self._prompts)
