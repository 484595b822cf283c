"""Prometheus /metrics and /healthz of a running engine, scraped over HTTP during and after a run."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import read_frame
from tests.video_reference import write_video
from vos.engine.metrics import MetricsSettings

FRAMES = 5


def samples(text: str) -> dict[str, float]:
    """Every sample of stream "cam" by name (histograms: name_count, name_sum, ...)."""
    return {
        s.name: s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.labels.get("stream") == "cam" and "le" not in s.labels
    }


@pytest.fixture(scope="module")
def short_clip(davis_root, tmp_path_factory):
    path = tmp_path_factory.mktemp("metrics") / "clip.mp4"
    write_video(path, [read_frame(davis_root, "car-shadow", i) for i in range(FRAMES + 1)])
    return path


def test_metrics_move_during_a_run_and_equal_its_summary(short_clip, tracking_checkpoint):
    import vos
    from vos.engine import Engine, EngineConfig, StreamSettings

    stream = StreamSettings(source=str(short_clip), id="cam", max_frames=FRAMES, prompts=[{"obj_id": 1, "box": [300, 100, 650, 300]}])
    model = vos.load_model(checkpoint=tracking_checkpoint, image_size=512)

    async def main():
        async with Engine(EngineConfig(streams=[stream], metrics=MetricsSettings(port=0)), model) as engine:
            url = engine.metrics_server.url
            run = asyncio.create_task(engine.run())
            seen, health = [], []
            async with aiohttp.ClientSession(url) as http:
                while not run.done():
                    async with http.get("/metrics") as r:
                        assert r.status == 200 and r.content_type == "text/plain"
                        seen.append(samples(await r.text()).get("vos_frames_processed_total", 0))
                    async with http.get("/healthz") as r:
                        health.append((seen[-1], r.status))
                    await asyncio.sleep(0.2)
                [report] = await run
                async with http.get("/metrics") as r:
                    final = samples(await r.text())
                async with http.get("/healthz") as r:
                    after = r.status, await r.json()
        return seen, health, report, final, after

    seen, health, report, final, after = asyncio.run(main())
    assert seen == sorted(seen) and any(0 < v < FRAMES for v in seen), seen  # moving while it runs
    assert {status for frames, status in health if frames < FRAMES} == {200}  # the stream's end may come just after
    assert report.frames == FRAMES and final["vos_frames_processed_total"] == report.frames
    for name in ("vos_decode_seconds", "vos_model_seconds", "vos_end_to_end_seconds"):
        assert final[f"{name}_count"] == FRAMES and final[f"{name}_sum"] > 0
    assert final["vos_end_to_end_seconds_sum"] >= final["vos_model_seconds_sum"]
    assert final["vos_frames_dropped_total"] == report.stats.dropped_frames == 0
    assert final["vos_prompts_refused_total"] == 0 and final["vos_objects_tracked"] == 1
    assert final["vos_frames_per_second"] > 0 and final["vos_stream_up"] == 0  # the file has ended
    assert after == (503, {"healthy": False, "streams": {"cam": "ended"}})


def test_a_metrics_port_in_use_is_refused_before_the_model_loads(short_clip, capsys):
    import vos.cli

    async def main():
        from vos.engine.metrics import EngineMetrics, MetricsServer

        async with MetricsServer(MetricsSettings(port=0), EngineMetrics(list)) as taken:
            return await asyncio.to_thread(
                vos.cli.main, ["track", str(short_clip), "--point", "1=1,1", "--out", "/tmp/unused-out",
                               "--checkpoint", "/nonexistent.pt", "--metrics-port", str(taken.port)],
            ), taken.port  # fmt: skip

    code, port = asyncio.run(main())
    assert code == 2 and f"cannot serve metrics on 127.0.0.1:{port}" in capsys.readouterr().err


def test_batch_metrics_equal_the_batch_summary():
    from vos.distributed.batch import BatchSummary
    from vos.engine.metrics import BatchMetrics

    summary = BatchSummary(done=["a", "b"], skipped=["c"], failed={"d": "ValueError: x"}, retried=3, frames=40, seconds=10.0)
    series = {k: float(v) for k, v in (line.rsplit(" ", 1) for line in BatchMetrics(summary).text().decode().splitlines() if line.startswith("vos_"))}
    assert series == {
        'vos_batch_videos_total{state="done"}': 2, 'vos_batch_videos_total{state="skipped"}': 1,
        'vos_batch_videos_total{state="failed"}': 1, "vos_batch_videos_running": 0, "vos_batch_retries_total": 3,
        "vos_batch_frames_processed_total": 40, "vos_batch_frames_per_second": 4.0,
    }  # fmt: skip
    summary.done.append("e")
    assert b'vos_batch_videos_total{state="done"} 3.0' in BatchMetrics(summary).text()  # read at scrape time
