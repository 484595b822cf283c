"""Many videos on Ray (`vos batch`): each video is one unit of work for a pool of actors, one model per actor.

    summary = run_batch(jobs_from_inputs(["a.mp4", "frames/b"], annotations="DAVIS/Annotations/480p"),
                        "out/", ModelSettings(image_size=512), workers=2)

Each video runs through the same engine as `vos track VIDEO --mask ... --out OUT/NAME`, so its
folder (label-map PNGs named by frame index + masks.jsonl) is the one `vos track` writes. A video's
folder appears only when it is complete: the worker writes `OUT/.NAME.partial-*` and renames it,
so a rerun skips finished videos (resumable) and never mistakes a half-written one for done. A video
whose worker fails or dies (Ray restarts the actor, which reloads its model) is tried again, up to
`retries` more times.

Throughput: videos are independent, so N machines with W workers each process about N x W times the
videos/s of one worker, as long as there are at least N x W videos and each worker has the cores
(or GPU) its model needs; on one 2-core machine, 2 workers of 1 thread each are about 1 worker of 2.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vos.build import load_from_settings
from vos.config import ModelSettings, TrackerConfig
from vos.distributed import init_ray
from vos.engine.metrics import BatchMetrics, MetricsSettings, serve_in_thread
from vos.engine.settings import EngineConfig, RaySettings, StreamPrompt, StreamSettings
from vos.errors import ConfigError
from vos.streams.label_map import read_label_map, read_mask_png
from vos.streams.messages import Rle
from vos.streams.sinks.mqtt import MqttSettings

log = logging.getLogger(__name__)

PARTIAL = ".{name}.partial-"


@dataclass(frozen=True)
class BatchJob:
    """One video: where its frames are, the folder name of its results, its prompts."""

    name: str
    source: str
    prompts: tuple[StreamPrompt, ...]


@dataclass
class BatchSummary:
    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # complete before this run
    failed: dict[str, str] = field(default_factory=dict)  # name -> the last error
    retried: int = 0
    frames: int = 0
    seconds: float = 0.0  # wall time of the pool, once it is done
    running: int = 0  # videos a worker is tracking now
    started: float | None = None  # time.monotonic() when the pool started

    @property
    def fps(self) -> float:
        """Frames of the videos done per second: over the whole run, or so far while it runs."""
        seconds = self.seconds or (time.monotonic() - self.started if self.started is not None else 0.0)
        return self.frames / seconds if seconds else 0.0

    def text(self) -> str:
        parts = [f"{len(self.done)} videos done ({self.frames} frames in {self.seconds:.1f} s, {self.fps:.2f} frames/s)"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} already complete, skipped")
        if self.retried:
            parts.append(f"{self.retried} retries")
        if self.failed:
            parts.append(f"{len(self.failed)} failed: " + "; ".join(f"{k}: {v}" for k, v in self.failed.items()))
        return ", ".join(parts)


# -- inputs and prompts --------------------------------------------------------------------------
def read_inputs(inputs: list[str | Path]) -> list[str]:
    """Video files and frame folders; a .txt file lists more (one per line, # comments; relative to the file)."""
    sources: list[str] = []
    for item in map(Path, inputs):
        if item.suffix == ".txt" and item.is_file():
            lines = [line.strip() for line in item.read_text(encoding="utf-8").splitlines()]
            sources += [str(item.parent / line) for line in lines if line and not line.startswith("#")]
        elif item.exists():
            sources.append(str(item))
        else:
            raise ConfigError(f"no such video file or folder of frames: {item}")
    if not sources:
        raise ConfigError("no videos given")
    return sources


def video_name(source: str) -> str:
    """The results folder name of a video: the name `vos track` gives its stream."""
    from vos.engine.engine import topic_safe
    from vos.streams.sources import open_source

    return topic_safe(open_source(source).name)


def mask_prompts(path: Path, frame: int = 0) -> list[StreamPrompt]:
    """A first-frame annotation as prompts: one mask per label value (a binary image: object 1)."""
    try:
        labels = read_label_map(path)
    except OSError as e:
        raise ConfigError(f"cannot read the annotation {path}: {e}") from None
    if labels.ndim == 3:
        labels = labels[..., :3].max(axis=2)
    values = [int(v) for v in np.unique(labels) if v != 0]
    if not values:
        raise ConfigError(f"the annotation {path} has no object pixel")
    if len(values) == 1:
        return [StreamPrompt(obj_id=1, frame=frame, mask=Rle.from_mask(labels != 0))]
    return [StreamPrompt(obj_id=v, frame=frame, mask=Rle.from_mask(labels == v)) for v in values]


def _file_prompts(prompts_file: Path) -> dict[str, list[StreamPrompt]]:
    """`{"video name": [{"frame", "obj_id", "mask": "PNG path" | "points" + "labels" | "box"}, ...]}`."""
    try:
        data = json.loads(prompts_file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read the prompts file {prompts_file}: {e}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{prompts_file}: expected an object mapping video names to lists of prompts")
    prompts: dict[str, list[StreamPrompt]] = {}
    for name, items in data.items():
        if not isinstance(items, list):
            raise ConfigError(f"{prompts_file}: {name} must be a list of prompts")
        prompts[name] = []
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise ConfigError(f"{prompts_file}: {name}[{i}] is not a prompt object")
            item = dict(item)
            if isinstance(item.get("mask"), str) and isinstance(item.get("obj_id"), int):
                item["mask"] = Rle.from_mask(read_mask_png(prompts_file.parent / item["mask"], item["obj_id"]))
            try:
                prompts[name].append(StreamPrompt(**item))
            except ValueError as e:
                raise ConfigError(f"{prompts_file}: {name}[{i}]: {e}") from None
    return prompts


def jobs_from_inputs(
    inputs: list[str | Path],
    annotations: str | Path | None = None,
    prompts_file: str | Path | None = None,
    discover: bool = False,
) -> list[BatchJob]:
    """One job per video, prompted by `annotations` (ROOT/NAME/00000.png) or `prompts_file` (JSON); with `discover`
    (the tracker finds its objects itself) prompts are optional."""
    if annotations is not None and prompts_file is not None:
        raise ConfigError("give one of --annotations ROOT and --prompts FILE, not both")
    if annotations is None and prompts_file is None and not discover:
        raise ConfigError(
            "give the prompts: --annotations ROOT (ROOT/NAME/00000.png) or --prompts FILE (JSON), or --discover "
            "or --detector FILE"
        )
    by_file = _file_prompts(Path(prompts_file)) if prompts_file is not None else {}
    jobs: list[BatchJob] = []
    for source in read_inputs(inputs):
        name = video_name(source)
        if any(job.name == name for job in jobs):
            raise ConfigError(f"two videos are named {name!r}; their results would share OUT/{name}")
        if annotations is None and prompts_file is None:
            prompts = []
        elif annotations is not None:
            first = Path(annotations) / name / "00000.png"
            if not first.is_file():
                raise ConfigError(f"no annotation for {source}: {first} is missing")
            prompts = mask_prompts(first)
        elif name not in by_file:
            raise ConfigError(f"{prompts_file} has no prompts for {name!r} ({source})")
        else:
            prompts = by_file[name]
        jobs.append(BatchJob(name, source, tuple(prompts)))
    return jobs


# -- one video -----------------------------------------------------------------------------------
def track_video(
    model, job: BatchJob, out: Path, tracker: TrackerConfig, max_frames: int | None = None,
    mqtt: MqttSettings | None = None,
) -> int:  # fmt: skip
    """Blocking: the engine over one video into `out/NAME`, written in a partial folder then renamed. Frames.

    With `mqtt`, its masks are also published as stream NAME; a video whose messages are lost has failed
    (MessagesLost) and keeps no folder, so a rerun does it again."""
    from vos.engine.engine import Engine

    final = out / job.name
    partial = out / f"{PARTIAL.format(name=job.name)}{uuid.uuid4().hex[:8]}"
    stream = StreamSettings(source=job.source, id=job.name, out=partial, prompts=list(job.prompts), max_frames=max_frames)
    config = EngineConfig(tracker=tracker, mqtt=mqtt, streams=[stream])

    async def run():
        async with Engine(config, model, availability=False) as engine:
            return await engine.run()

    try:
        [report] = asyncio.run(run())
        if report.error is not None:
            raise report.error
        if final.exists():  # another attempt finished first (a retry racing a slow worker)
            shutil.rmtree(partial)
        else:
            os.replace(partial, final)
        return report.frames
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def _worker_class():
    import ray

    @ray.remote(max_task_retries=0)
    class TrackWorker:
        """A Ray actor holding one model; `track` runs one video."""

        def __init__(self, model: ModelSettings, tracker: TrackerConfig, mqtt: MqttSettings | None) -> None:
            self.model = load_from_settings(model)
            self.tracker = tracker
            self.mqtt = mqtt

        def ready(self) -> bool:
            return True

        def track(self, job: BatchJob, out: str, max_frames: int | None) -> int:
            return track_video(self.model, job, Path(out), self.tracker, max_frames, self.mqtt)

    return TrackWorker


# -- the pool ------------------------------------------------------------------------------------
def run_batch(
    jobs: list[BatchJob],
    out: str | Path,
    model: ModelSettings = ModelSettings(),
    tracker: TrackerConfig = TrackerConfig(),
    ray_settings: RaySettings = RaySettings(),
    *,
    max_frames: int | None = None,
    progress: bool = False,
    metrics: MetricsSettings | None = None,
    mqtt: MqttSettings | None = None,
) -> BatchSummary:
    """Runs the jobs on a Ray pool of `ray_settings.workers` actors (`address`: a cluster; None: a local Ray).

    `out` must be writable by every worker (shared storage on a cluster). With `metrics`, Prometheus
    /metrics (videos done/failed/skipped/running, retries, frames) and /healthz are served meanwhile. With `mqtt`,
    each video's masks are published too (stream NAME), and a video whose messages are lost has failed.
    Each actor reserves `RaySettings.actor_cpus` CPUs, also its torch threads unless the model sets them.
    """
    import ray
    from tqdm import tqdm

    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise ConfigError(f"cannot create the output folder {out}: {e.strerror or e}") from None
    summary = BatchSummary(skipped=[job.name for job in jobs if (out / job.name).is_dir()])
    todo = [job for job in jobs if job.name not in summary.skipped]
    if not todo:
        return summary
    with contextlib.ExitStack() as stack:  # closed in reverse: partial folders, Ray, the metrics server
        if metrics is not None:
            server = stack.enter_context(serve_in_thread(metrics, BatchMetrics(summary)))
            log.info("metrics on %smetrics", server.url)
        if not ray.is_initialized():
            init_ray(ray_settings.address, log_to_driver=False)
            stack.callback(ray.shutdown)
        stack.callback(_remove_partials, out, jobs)  # what killed attempts left behind
        cpus = ray_settings.actor_cpus(int(ray.cluster_resources().get("CPU", 1)), pool=True)
        if model.threads is None:
            model = model.model_copy(update={"threads": max(1, int(cpus))})
        worker = _worker_class().options(num_cpus=cpus, num_gpus=ray_settings.num_gpus, max_restarts=ray_settings.max_restarts)
        pool = [worker.remote(model, tracker, mqtt) for _ in range(min(ray_settings.workers, len(todo)))]
        summary.started = time.monotonic()
        bar = tqdm(total=len(todo), unit="video", disable=not progress)
        try:
            _schedule(pool, todo, str(out), max_frames, ray_settings.retries, summary, bar)
        finally:
            summary.seconds, summary.running = time.monotonic() - summary.started, 0
    return summary


def _remove_partials(out: Path, jobs: list[BatchJob]) -> None:
    for job in jobs:
        for partial in out.glob(f"{PARTIAL.format(name=job.name)}*"):
            shutil.rmtree(partial, ignore_errors=True)


def _schedule(pool, todo: list[BatchJob], out: str, max_frames, retries: int, summary: BatchSummary, bar) -> None:
    """Keeps every actor busy until each job is done or has failed `retries` + 1 times.

    A worker that dies mid-video costs that video an attempt; Ray restarts the actor (reloading its
    model), and it gets work again only once it answers `ready`.
    """
    import ray
    from ray.exceptions import ActorUnavailableError, RayActorError

    queue = list(todo)
    attempts: dict[str, int] = {}
    running: dict = {}  # future -> (actor, the job, or None for a readiness probe)
    idle = list(pool)
    with bar:
        while queue or any(job is not None for _, job in running.values()):
            while queue and idle:
                job, actor = queue.pop(0), idle.pop()
                attempts[job.name] = attempts.get(job.name, 0) + 1
                running[actor.track.remote(job, out, max_frames)] = (actor, job)
            summary.running = sum(job is not None for _, job in running.values())
            [ready], _ = ray.wait(list(running), num_returns=1)
            actor, job = running.pop(ready)
            summary.running -= job is not None
            try:
                frames = ray.get(ready)
            except (ActorUnavailableError, RayActorError) as e:
                if job is None:  # still restarting
                    time.sleep(0.2)
                else:  # it died holding the video (calls go only to actors that answered `ready`)
                    _failed(job, e, attempts, retries, queue, summary, bar)
                running[actor.ready.remote()] = (actor, None)
                continue
            except Exception as e:  # the video's own error (unreadable file, bad prompt)
                idle.append(actor)
                _failed(job, e, attempts, retries, queue, summary, bar)
                continue
            idle.append(actor)
            if job is not None:
                summary.frames += frames
                summary.done.append(job.name)
                bar.update()
                bar.set_postfix(frames=summary.frames)


def _failed(job: BatchJob, error: BaseException, attempts: dict[str, int], retries: int, queue: list, summary, bar) -> None:
    """Queues `job` again, or records it as failed after `retries` + 1 attempts."""
    if attempts[job.name] <= retries:
        summary.retried += 1
        queue.append(job)
        return
    cause = getattr(error, "cause", None) or error
    summary.failed[job.name] = f"{type(cause).__name__}: {cause}"
    bar.update()
