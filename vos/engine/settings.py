"""Engine configuration: model, tracker options, MQTT, viewer, metrics and streams. `vos serve` reads it from YAML,
overridable by VOS_ variables; `vos track` builds it from its flags; Python code makes one directly.

Environment variables override the YAML file, nested with "__": `VOS_MQTT__HOST=10.0.0.5`,
`VOS_MODEL__IMAGE_SIZE=512`, `VOS_STREAMS='[{"id": "cam1", "source": "rtsp://..."}]'`.
Everything is validated once, at start-up (`load_engine_config`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, YamlConfigSettingsSource

from vos.config import DetectorSettings, DiscoverySettings, ModelSettings, TrackerConfig
from vos.engine.metrics import MetricsSettings
from vos.errors import ConfigError, plain_problems
from vos.streams.messages import AddPrompt
from vos.streams.overlay import OverlayStyle
from vos.streams.sinks.mqtt import MqttSettings, check_topic_level
from vos.streams.sources import LiveSettings
from vos.viewer import WebSettings

ENV_PREFIX = "VOS_"


class StreamPrompt(AddPrompt):
    """A prompt of the config, applied on source frame `frame` (prompts over MQTT apply to the next frame)."""

    frame: int = Field(0, ge=0)


class StreamSettings(BaseModel):
    """One stream: where frames come from, where masks go besides MQTT, and its first prompts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source: str  # file, folder, rtsp:// URL, /dev/videoN or lavfi:GRAPH
    id: str | None = None  # the stream's MQTT topic level; None: from the source's name
    out: Path | None = None  # folder for label-map PNGs and masks.jsonl
    render: Path | None = None  # overlay video of this stream, H.264 (.mp4, .mkv, .mov)
    max_frames: int | None = Field(None, ge=1)
    prompts: list[StreamPrompt] = []
    discover: DiscoverySettings | Literal[False] | None = Field(
        None, description="this stream's auto-discovery: settings, or false for none (default: the tracker's)"
    )
    detector: DetectorSettings | Literal[False] | None = Field(
        None, description="this stream's detector: settings, or false for none (default: the tracker's)"
    )

    def tracker_config(self, tracker: TrackerConfig) -> TrackerConfig:
        """The engine's tracker settings with this stream's `discover` and `detector`."""
        update = {k: v or None for k, v in (("discover", self.discover), ("detector", self.detector)) if v is not None}
        if not update:
            return tracker
        if update.get("detector") is not None and "discover" not in update:
            update["discover"] = None  # a stream's own detector stands in for the engine's discovery
        if update.get("discover") is not None and "detector" not in update:
            update["detector"] = None
        return TrackerConfig.model_validate({**tracker.model_dump(), **update})

    def initial_prompts(self) -> dict[int, list[AddPrompt]]:
        by_frame: dict[int, list[AddPrompt]] = {}
        for p in self.prompts:
            by_frame.setdefault(p.frame, []).append(p)
        return by_frame

    @field_validator("id")
    @classmethod
    def _topic_level(cls, v: str | None) -> str | None:
        return v if v is None else check_topic_level(v, "stream id")


class RaySettings(BaseModel):
    """Where work runs on Ray, one model per actor: `vos batch` and `vos bench --workers` (a pool of `workers` actors,
    videos as units of work) and `vos serve --ray` (`ray:` in the YAML: an actor per stream)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None = Field(None, description="Ray cluster address (default: a local Ray on this machine)")
    workers: int = Field(1, ge=1, description="batch and bench: actors in the pool, one model each (serve: one per stream)")
    num_cpus: float | None = Field(
        None, gt=0, description="CPUs Ray reserves per actor, also its torch threads (default: a stream 1; a pool "
        "worker this machine's cores / workers, 1 on a cluster)",
    )  # fmt: skip
    num_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves per actor (0.5: two share a GPU)")
    max_restarts: int = Field(-1, ge=-1, description="restarts of an actor after it dies (-1: forever)")
    retries: int = Field(2, ge=0, description="batch and bench: tries after a video's first failure")

    def actor_cpus(self, local_cpus: int, pool: bool) -> float:
        """CPUs per actor: `num_cpus`, else for a pool worker this machine's share (1 on a cluster), else 1."""
        if self.num_cpus is not None:
            return self.num_cpus
        return max(1, local_cpus // self.workers) if pool and self.address is None else 1


class EngineConfig(BaseModel):
    """Everything an `Engine` runs: the `vos serve` file, or what `vos track` makes of its flags."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    model: ModelSettings = ModelSettings()
    tracker: TrackerConfig = TrackerConfig()
    mqtt: MqttSettings | None = None
    live: LiveSettings = LiveSettings()
    max_batch: int = Field(4, ge=1)  # frames of different streams through the image encoder together
    web: WebSettings | None = None  # the live web viewer; None: off
    overlay: OverlayStyle = OverlayStyle()  # how `render` videos and the viewer draw the masks
    metrics: MetricsSettings | None = None  # Prometheus /metrics and /healthz; None: off
    ray: RaySettings | None = None  # run each stream in a Ray actor (`vos serve --ray`); None: in this process
    heap_trim_interval: float = Field(
        5.0, ge=0, description="seconds between returning freed heap to the system (vos.engine.heap; 0: never)"
    )
    streams: list[StreamSettings] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> EngineConfig:
        ids = [s.id for s in self.streams]
        if None in ids and len(ids) > 1:
            raise ValueError("every stream of a config with several streams needs an id")
        if len(set(ids)) != len(ids):
            raise ValueError(f"stream ids must be unique, got {ids}")
        return self


class _EngineFile(BaseSettings, EngineConfig):
    """An `EngineConfig` from YAML with `VOS_` environment overrides (they win over the file)."""

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, YamlConfigSettingsSource(settings_cls)


def load_engine_config(path: str | Path) -> EngineConfig:
    """The YAML file with VOS_ environment overrides, validated; ConfigError with every problem if invalid."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"engine config not found: {path}")

    class FromFile(_EngineFile):
        model_config = SettingsConfigDict(**{**_EngineFile.model_config, "yaml_file": path})

    try:
        loaded = FromFile()
    except ValidationError as e:
        problems = plain_problems(e, sep="\n  ", where=lambda loc: ".".join(map(str, loc)) or "(top)")
        raise ConfigError(f"invalid engine config {path}:\n  {problems}") from None
    except (ValueError, yaml.YAMLError) as e:  # YAML syntax, unreadable file
        raise ConfigError(f"cannot read engine config {path}: {e}") from None
    return EngineConfig(**{name: getattr(loaded, name) for name in EngineConfig.model_fields})
