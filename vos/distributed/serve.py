"""`vos serve --ray`: each stream of an engine config runs in its own Ray actor, restarted by Ray when it dies.

    config = load_engine_config("engine.yaml")              # ray: {address: null, num_cpus: 1, num_gpus: 0}
    async with RayServe(config) as serve:
        reports = await serve.run()                         # serve.stop() (SIGTERM) ends every stream cleanly

An actor holds one stream and its own model (the `Engine` of a one-stream config), placed by Ray
where its CPUs/GPUs are free, so a cluster runs as many cameras as it has room for. Prompts
still arrive over MQTT, so it does not matter where a stream runs.

When an actor dies (its process killed, its node lost), Ray starts it again (`max_restarts`); its
last will says `offline`, this driver publishes `reconnecting` on the stream's status topic and
calls the new actor, which reconnects to its source and broker, re-applies the configured prompts
and publishes `online` once it runs. What the dead actor had tracked (its memory bank, prompts
that came over MQTT) is lost. This process keeps `{prefix}/available`: `online` while it supervises
the actors, `stopped` after a clean exit, `offline` (last will) if it dies, and serves `metrics:`
(each actor's engine metrics, asked for when scraped and merged, plus `vos_ray_actor_restarts_total`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
from dataclasses import dataclass

from vos.distributed import init_ray
from vos.engine.settings import EngineConfig, RaySettings
from vos.engine.stream import StreamReport
from vos.errors import ConfigError, VosError
from vos.streams.sources.base import SourceError

log = logging.getLogger(__name__)

RESTART_POLL = 0.5  # seconds between readiness probes of an actor Ray is restarting


def stream_config(config: EngineConfig, index: int, threads: int) -> EngineConfig:
    """The one-stream config an actor runs: the stream `index`, nothing process-wide (viewer, metrics, Ray)."""
    model = config.model if config.model.threads is not None else config.model.model_copy(update={"threads": threads})
    return config.model_copy(update={"streams": [config.streams[index]], "model": model, "web": None, "metrics": None, "ray": None})


def _actor_class():
    import ray

    @ray.remote(max_task_retries=0)
    class StreamActor:
        """One stream's engine; `run` returns its report when the stream ends or `stop` is called."""

        def __init__(self, config: EngineConfig) -> None:
            logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
            self.config = config
            self.engine = None

        async def ready(self) -> bool:
            return True

        async def run(self) -> StreamReport:
            from vos.engine.engine import Engine

            self.engine = Engine(self.config, wait_for_cameras=True, availability=False)
            async with self.engine:
                [report] = await self.engine.run()
            report.error = _portable(report.error)
            return report

        async def metrics_text(self) -> bytes:
            """The engine's metrics (served by the driver, which merges every actor's)."""
            return self.engine.metrics.text() if self.engine is not None and self.engine.metrics is not None else b""

        async def states(self) -> dict[str, str]:
            return {r.stream: r.state for r in self.engine.runners} if self.engine is not None else {}

        async def stop(self) -> None:
            if self.engine is not None:
                self.engine.stop()

    return StreamActor


def _portable(error: BaseException | None) -> BaseException | None:
    """An error that pickles back to the driver: ours as they are, others as a VosError naming them."""
    if error is None or isinstance(error, (VosError, SourceError)):
        return error
    return VosError(f"{type(error).__name__}: {error}")


@dataclass
class _Stream:
    id: str
    actor: object
    restarts: int = 0


class RayServe:
    """The driver of `vos serve --ray`: `async with` starts Ray (or joins `config.ray.address`) and one actor
    per stream, `run()` keeps them running until each ends, `stop()` ends them cleanly."""

    def __init__(self, config: EngineConfig) -> None:
        if config.ray is None:
            raise ConfigError("no Ray settings: give --ray or a ray: section")
        if config.web is not None:
            raise ConfigError("web: the viewer is not available with --ray (streams run in other processes); remove it")
        self.config = config
        self.settings: RaySettings = config.ray
        self.cpus = self.settings.actor_cpus(1, pool=False)  # per stream
        self.streams: list[_Stream] = []
        self.availability = None
        self._stopping = False
        self._stack: contextlib.AsyncExitStack | None = None

    async def __aenter__(self) -> RayServe:
        try:
            import ray
        except ImportError:
            raise ConfigError("--ray needs Ray: pip install 'vos[ray]'") from None
        async with contextlib.AsyncExitStack() as stack:
            if self.config.mqtt is not None:
                from vos.engine.engine import Engine
                from vos.streams.sinks.mqtt import AvailabilityLink

                self.availability = await stack.enter_async_context(Engine.mqtt_link(AvailabilityLink, self.config.mqtt))
            if self.config.metrics is not None:
                from vos.engine.metrics import MetricsServer

                server = await stack.enter_async_context(MetricsServer(self.config.metrics, RayMetrics(self)))
                log.info("metrics on %smetrics", server.url)
            if not ray.is_initialized():
                init_ray(self.settings.address)
                stack.callback(ray.shutdown)
            self._check_resources(ray.cluster_resources())
            actor = _actor_class().options(
                num_cpus=self.cpus, num_gpus=self.settings.num_gpus, max_restarts=self.settings.max_restarts
            )
            threads = max(1, int(self.cpus))
            for i, spec in enumerate(self.config.streams):
                self.streams.append(_Stream(spec.id, actor.remote(stream_config(self.config, i, threads))))
            stack.callback(self._kill_actors)
            self._stack = stack.pop_all()
        return self

    def _check_resources(self, resources: dict) -> None:
        """Warns when the cluster cannot place every stream at once (the rest wait for room)."""
        n = len(self.config.streams)
        for key, each in (("CPU", self.cpus), ("GPU", self.settings.num_gpus)):
            if each and n * each > resources.get(key, 0):
                log.warning(
                    "%d stream(s) x %g %s each > the cluster's %g: streams wait until there is room",
                    n, each, key, resources.get(key, 0),
                )  # fmt: skip

    def _kill_actors(self) -> None:
        import ray

        for stream in self.streams:
            with contextlib.suppress(Exception):
                ray.kill(stream.actor, no_restart=True)

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        self.stop()
        if self.availability is not None:
            clean = exc_type is None or issubclass(exc_type, (asyncio.CancelledError, KeyboardInterrupt))
            self.availability.set_state("stopped" if clean else "offline")
        if self._stack is not None:
            await self._stack.aclose()
            self._stack = None

    async def run(self) -> list[StreamReport]:
        """Runs every stream to its end (or `stop()`), restarting dead actors; one report per stream."""
        if not self.streams:
            raise RuntimeError("enter first: async with RayServe(config) as serve")
        log.info("running %d stream(s) on Ray: %s", len(self.streams), ", ".join(s.id for s in self.streams))
        return list(await asyncio.gather(*(self._keep_running(s) for s in self.streams)))

    async def _keep_running(self, stream: _Stream) -> StreamReport:
        """Calls the actor's `run` until it returns; after the actor died, waits for Ray's restart and calls again."""
        from ray.exceptions import RayActorError, RayTaskError

        while True:
            try:
                await stream.actor.ready.remote()
                report = await stream.actor.run.remote()
                report.stats = dataclasses.replace(report.stats, source_reconnects=report.stats.source_reconnects + stream.restarts)
                return report
            except RayTaskError as e:  # the stream's own failure (a bad checkpoint, say), not a death
                return StreamReport(stream.id, state="failed", error=_portable(e.cause or e))
            except RayActorError as e:
                if self._stopping:
                    return StreamReport(stream.id, state="stopped")
                if not await self._restarted(stream):
                    return StreamReport(stream.id, state="failed", error=VosError(f"its Ray actor died for good: {e}"))

    async def _restarted(self, stream: _Stream) -> bool:
        """After a death: says so on the stream's status topic and waits for Ray's restart (False: none comes)."""
        from ray.exceptions import ActorDiedError, RayActorError

        stream.restarts += 1
        log.warning("stream %s: its Ray actor died; waiting for Ray to restart it (restart %d)", stream.id, stream.restarts)
        if self.availability is not None:
            self.availability.publish_stream_status(stream.id, "reconnecting", "the stream's Ray actor died; restarting it")
        while not self._stopping:
            try:
                await stream.actor.ready.remote()
                return True
            except ActorDiedError:  # out of restarts (ActorUnavailableError while one is under way)
                return False
            except RayActorError:
                await asyncio.sleep(RESTART_POLL)
        return True

    def stop(self) -> None:
        """Asks every actor to end its stream after flushing its frames (safe from a signal handler)."""
        if self._stopping:
            return
        self._stopping = True
        for stream in self.streams:
            stream.actor.stop.remote()


class RayMetrics:
    """/metrics and /healthz of `vos serve --ray`: each actor's engine metrics, read from the actors when scraped
    and merged, plus `vos_ray_actor_restarts_total`; an actor that does not answer counts as reconnecting."""

    TIMEOUT = 2.0  # seconds an actor has to answer a scrape

    def __init__(self, serve: RayServe) -> None:
        self.serve = serve

    async def _ask(self, stream: _Stream, method: str):
        try:
            return await asyncio.wait_for(getattr(stream.actor, method).remote(), self.TIMEOUT)
        except Exception:  # dead, restarting or busy: nothing from this actor this time
            return None

    async def text(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.core import CounterMetricFamily
        from prometheus_client.parser import text_string_to_metric_families

        restarts = CounterMetricFamily("vos_ray_actor_restarts", "restarts of a stream's Ray actor", labels=["stream"])
        families = {}
        texts = await asyncio.gather(*(self._ask(s, "metrics_text") for s in self.serve.streams))
        for stream, text in zip(self.serve.streams, texts):
            restarts.add_metric([stream.id], stream.restarts)
            for family in text_string_to_metric_families((text or b"").decode()):
                if family.name in families:
                    families[family.name].samples.extend(family.samples)
                else:
                    families[family.name] = family
        registry = CollectorRegistry()
        registry.register(_Families([*families.values(), restarts]))
        return generate_latest(registry)

    async def health(self) -> tuple[bool, dict[str, str]]:
        from vos.engine.metrics import HEALTHY_STATES

        answers = await asyncio.gather(*(self._ask(s, "states") for s in self.serve.streams))
        states = {s.id: (answer or {}).get(s.id, "reconnecting") for s, answer in zip(self.serve.streams, answers)}
        return all(v in HEALTHY_STATES for v in states.values()), states


class _Families:
    """A collector yielding metric families it was given (the actors' merged ones)."""

    def __init__(self, families: list) -> None:
        self.families = families

    def collect(self):
        yield from self.families
