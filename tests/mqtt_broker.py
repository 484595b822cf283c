"""A real Mosquitto broker for tests, on a free loopback port, with its own config and folder."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path

import aiomqtt
import pytest

START_TIMEOUT = 10.0  # seconds


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MosquittoBroker:
    """`mosquitto -c FOLDER/mosquitto.conf` listening on 127.0.0.1:`port`; stop() and start() keep the port.

    Persistence is on (saved on a clean stop), so a subscriber's persistent session and its
    queued QoS 1 messages survive a restart, as on a production broker.
    """

    def __init__(self, folder: Path, port: int | None = None, tls: tuple[Path, Path, Path] | None = None) -> None:
        """`tls`: (CA, server certificate, server key) adds a TLS listener on `tls_port`."""
        self.binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.folder = folder
        self.folder.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self.tls_port = free_port() if tls else None
        self.config = folder / "mosquitto.conf"
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            "allow_anonymous true\n"
            "persistence true\n"
            f"persistence_location {folder}/\n"
            f"pid_file {folder}/mosquitto.pid\n"
            f"log_dest file {folder}/mosquitto.log\n"
            "max_queued_messages 10000\n"
            + (f"listener {self.tls_port} 127.0.0.1\ncafile {tls[0]}\ncertfile {tls[1]}\nkeyfile {tls[2]}\n" if tls else "")
            # Started as root, mosquitto would switch to its own user, who cannot write in a private test folder.
            + ("user root\n" if os.geteuid() == 0 else "")
        )
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen([self.binary, "-c", str(self.config)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.process.stderr.read().decode(errors='replace')}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"mosquitto did not listen on port {self.port} within {START_TIMEOUT} s")

    def stop(self) -> None:
        """SIGTERM by pid (mosquitto saves its persistence file), SIGKILL if it lingers."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


class Subscriber:
    """Collects (topic, payload) of a topic filter in a background task; reconnects with a persistent session."""

    def __init__(self, port: int, topic: str, identifier: str = "vos-test-subscriber") -> None:
        self.port, self.topic, self.identifier = port, topic, identifier
        self.messages: list[tuple[str, bytes]] = []
        self.times: list[float] = []  # time.monotonic() of each message's arrival
        self.connections = 0
        self._task = None

    async def __aenter__(self) -> Subscriber:
        self._subscribed = asyncio.Event()
        self._task = asyncio.create_task(self._run())
        await asyncio.wait_for(self._subscribed.wait(), START_TIMEOUT)
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            try:
                async with aiomqtt.Client("127.0.0.1", self.port, identifier=self.identifier, clean_session=False) as client:
                    await client.subscribe(self.topic, qos=1)
                    self.connections += 1
                    self._subscribed.set()
                    async for message in client.messages:
                        self.messages.append((str(message.topic), bytes(message.payload)))
                        self.times.append(time.monotonic())
            except aiomqtt.MqttError:
                await asyncio.sleep(0.1)

    async def wait_for(self, predicate, timeout: float) -> bool:
        """Waits until predicate(messages) holds; False on timeout."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(self.messages):
            if asyncio.get_running_loop().time() > deadline:
                return False
            await asyncio.sleep(0.05)
        return True


@pytest.fixture
def broker(tmp_path):
    """A running Mosquitto for one test; `broker.stop()` / `broker.start()` restart it on the same port."""
    b = MosquittoBroker(tmp_path / "broker")
    b.start()
    yield b
    b.stop()
