"""`vos serve` configuration: model, tracker options, MQTT and streams, from YAML, overridable by VOS_ variables.

Environment variables override the YAML file, nested with "__": `VOS_MQTT__HOST=10.0.0.5`,
`VOS_MODEL__IMAGE_SIZE=512`, `VOS_STREAMS='[{"id": "cam1", "source": "rtsp://..."}]'`.
Everything is validated once, at start-up (`load_engine_config`).
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from vos.config import ModelSettings, TrackerConfig
from vos.engine.metrics import MetricsSettings
from vos.errors import ConfigError
from vos.streams.messages import AddPrompt
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
    """Where `vos serve --ray` runs its streams: one Ray actor per stream (`ray:` in the YAML)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    address: str | None = Field(None, description="Ray cluster address (None: a local Ray on this machine)")
    num_cpus: float = Field(1.0, gt=0, description="CPUs Ray reserves per stream; also its torch threads (at least 1)")
    num_gpus: float = Field(0.0, ge=0, description="GPUs Ray reserves per stream (0.5: two streams share a GPU)")
    max_restarts: int = Field(-1, ge=-1, description="restarts of a stream's actor after it dies (-1: forever)")


class EngineConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, env_nested_delimiter="__", extra="forbid")

    model: ModelSettings = ModelSettings()
    tracker: TrackerConfig = TrackerConfig()
    mqtt: MqttSettings | None = None
    live: LiveSettings = LiveSettings()
    max_batch: int = Field(4, ge=1)  # frames of different streams through the image encoder together
    web: WebSettings | None = None  # the live web viewer; None: off
    metrics: MetricsSettings | None = None  # Prometheus /metrics and /healthz; None: off
    ray: RaySettings | None = None  # run each stream in a Ray actor (`vos serve --ray`); None: in this process
    streams: list[StreamSettings] = Field(min_length=1)

    @model_validator(mode="after")
    def _unique_ids(self) -> EngineConfig:
        ids = [s.id for s in self.streams]
        if None in ids:
            raise ValueError("every stream of a config needs an id")
        if len(set(ids)) != len(ids):
            raise ValueError(f"stream ids must be unique, got {ids}")
        return self

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

    class FromFile(EngineConfig):
        model_config = SettingsConfigDict(**{**EngineConfig.model_config, "yaml_file": path})

    try:
        return FromFile()
    except ValidationError as e:
        problems = "\n".join(f"  {'.'.join(map(str, err['loc'])) or '(top)'}: {err['msg']}" for err in e.errors())
        raise ConfigError(f"invalid engine config {path}:\n{problems}") from None
    except (ValueError, yaml.YAMLError) as e:  # YAML syntax, unreadable file
        raise ConfigError(f"cannot read engine config {path}: {e}") from None
