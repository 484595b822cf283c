"""`vos serve --ray` on a real local Ray and a real broker: a stream's actor is killed, Ray restarts it and the
stream is back (reconnecting, then online, masks flowing, configured prompts re-applied) within 30 s; the
driver's /metrics and /healthz show the actors' counters and the restart."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time

import aiohttp

from tests.mqtt_broker import Subscriber, free_port
from tests.ray_fixtures import ray_or_skip, ray_pids
from vos.streams.messages import MaskMessage, StatusMessage

BACK_WITHIN = 30.0  # seconds from the kill to masks flowing again (the target)


def masks(messages) -> list[MaskMessage]:
    return [MaskMessage.model_validate_json(p) for t, p in messages if t.endswith("/masks")]


def states(messages) -> list[str]:
    return [StatusMessage.model_validate_json(p).state for t, p in messages if t.endswith("/status")]


async def scrape(port: int) -> tuple[bool, dict[str, float]]:
    """(GET /healthz is 200, the series of GET /metrics)."""
    async with aiohttp.ClientSession() as http:
        async with http.get(f"http://127.0.0.1:{port}/healthz") as r:
            healthy = r.status == 200
        async with http.get(f"http://127.0.0.1:{port}/metrics") as r:
            text = await r.text()
    return healthy, {k: float(v) for k, v in (line.rsplit(" ", 1) for line in text.splitlines() if line.startswith("vos_"))}


def test_serve_on_ray_brings_a_killed_stream_back(tracking_checkpoint, broker, tmp_path):
    ray_or_skip()
    metrics_port = free_port()
    config = tmp_path / "engine.yaml"
    config.write_text(
        f"model: {{checkpoint: {tracking_checkpoint}, image_size: 512}}\n"
        f"mqtt: {{host: 127.0.0.1, port: {broker.port}, prefix: ray}}\n"
        f"metrics: {{port: {metrics_port}}}\n"
        "ray: {num_cpus: 1}\n"
        "streams:\n"
        "  - {id: cam, source: 'lavfi:testsrc=size=320x240:rate=5', prompts: [{frame: 0, obj_id: 7, box: [40, 40, 200, 160]}]}\n"
    )

    log_file = tmp_path / "serve.log"

    async def main():
        async with Subscriber(broker.port, "ray/#") as sub:
            with log_file.open("wb") as log:  # a pipe nobody reads would block the driver once full
                proc = await asyncio.create_subprocess_exec(sys.executable, "-m", "vos.cli", "serve", str(config), "--ray", stderr=log)
            try:
                assert await sub.wait_for(lambda m: len(masks(m)) >= 2, 180), "no masks from the first actor"
                healthy, first_scrape = await scrape(metrics_port)
                assert healthy and first_scrape['vos_frames_processed_total{stream="cam"}'] >= 1
                assert first_scrape['vos_ray_actor_restarts_total{stream="cam"}'] == 0
                [pid] = ray_pids("ray::StreamActor")
                before = len(sub.messages)
                os.kill(pid, signal.SIGKILL)
                killed_at = time.monotonic()
                back = await sub.wait_for(lambda m: len(masks(m[before:])) >= 2, BACK_WITHIN)
                seconds = time.monotonic() - killed_at
                assert back, f"no masks {BACK_WITHIN} s after the kill: {states(sub.messages[before:])}\n{log_file.read_text()[-3000:]}"
                assert ray_pids("ray::StreamActor") and pid not in ray_pids("ray::StreamActor")  # a new process
                healthy, second_scrape = await scrape(metrics_port)  # the new actor's counters, the driver's restarts
                assert healthy and second_scrape['vos_ray_actor_restarts_total{stream="cam"}'] == 1
                assert 'vos_model_seconds_count{stream="cam"}' in second_scrape
                proc.send_signal(signal.SIGTERM)
                await asyncio.wait_for(proc.wait(), 60)
            finally:
                if proc.returncode is None:
                    proc.kill()
            await sub.wait_for(lambda m: ("ray/available", b"stopped") in m, 10)
        return sub.messages, before, seconds, proc.returncode, log_file.read_text()

    messages, before, seconds, code, log = asyncio.run(main())
    print(f"stream back {seconds:.1f} s after the kill")
    after = messages[before:]
    assert states(after)[:3] == ["offline", "reconnecting", "online"], states(after)  # last will, driver, new actor
    assert [m.frame_index for m in masks(after)][:2] == [0, 1]  # the new actor starts the source again ...
    assert all([o.id for o in m.objects] == [7] for m in masks(messages))  # ... with the configured prompt
    assert states(after)[-1] == "stopped" and ("ray/available", b"stopped") in after
    assert code == 130, log  # stopped on request
    assert "cam: stopped" in log and "1 source reconnects" in log, log


def test_serve_on_ray_refuses_what_it_cannot_do(tmp_path, capsys):
    import vos.cli

    ray_or_skip()
    config = tmp_path / "engine.yaml"
    config.write_text("web: {port: 0}\nstreams: [{id: cam, source: 'lavfi:testsrc'}]\n")
    assert vos.cli.main(["serve", str(config), "--ray"]) == 2
    assert "web: the viewer is not available with --ray" in capsys.readouterr().err
    config.write_text("ray: {num_cpus: 0}\nstreams: [{id: cam, source: 'lavfi:testsrc'}]\n")
    assert vos.cli.main(["serve", str(config)]) == 2
    assert "ray.num_cpus: Input should be greater than 0" in capsys.readouterr().err
