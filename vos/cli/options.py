"""Command-line flags made from the settings models, so a flag, a YAML key and a Python argument share
one name and one default: `--max-cond-frames` is `TrackerConfig.max_cond_frames`."""

from __future__ import annotations

import argparse
import os
import types
import typing
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from pydantic import BaseModel, ValidationError

from vos.config import DetectorSettings, DiscoverySettings, MaskGeneratorSettings, TrackerConfig
from vos.engine.metrics import MetricsSettings
from vos.errors import ConfigError, plain_message, plain_problems
from vos.streams.sinks.mqtt import MqttSettings, TlsSettings
from vos.viewer import WebSettings

S = TypeVar("S", bound=BaseModel)

MQTT_PASSWORD_ENV = "VOS_MQTT__PASSWORD"  # the same variable as for `vos serve`
WEB_TOKEN_ENV = "VOS_WEB__TOKEN"
TRACKER_FLAGS = [
    f for f in TrackerConfig.model_fields
    if f not in ("precision", "clear_non_cond_mem_around_input", "discover", "detector")
]
"""Tracker settings with a flag (precision is the model's; clearing memory is `VideoSession`'s; discovery and the
detector have their own flags, `add_discovery_arguments` and `add_detector_arguments`)."""


def _flag_type(annotation: Any) -> tuple[type, tuple | None]:
    """(scalar type, choices) of a field annotation such as `int | None` or `Literal["a", "b"]`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType) and len(args) == 1:
        annotation = args[0]
    if typing.get_origin(annotation) is Literal:
        choices = typing.get_args(annotation)
        return type(choices[0]), choices
    if annotation in (bool, int, float, str, Path):
        return annotation, None
    raise TypeError(f"no command-line flag for a field of type {annotation}")


def add_settings_arguments(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    settings: type[BaseModel],
    fields: Sequence[str],
    prefix: str = "",
) -> None:
    """`--field-name` flags for some fields of a settings model; their help names the model's default."""
    for name in fields:
        info = settings.model_fields[name]
        kind, choices = _flag_type(info.annotation)
        flag = "--" + (prefix + name).replace("_", "-")
        default = info.default
        shown = f"{default:.4g}" if isinstance(default, float) else default  # 0.3413, not 0.3413333333333333
        text = info.description if "default" in info.description else f"{info.description} (default: {shown})"
        dest = f"{settings.__name__}.{name}"
        if kind is bool:
            parser.add_argument(flag, dest=dest, action=argparse.BooleanOptionalAction, default=None, help=text)
        else:
            parser.add_argument(flag, dest=dest, type=kind, choices=choices, default=None, help=text, metavar=None if choices else name.upper())


class _Renamed(argparse.Action):
    def __init__(self, option_strings, dest, new: str, **kwargs) -> None:
        super().__init__(option_strings, dest, nargs="?", help=argparse.SUPPRESS, **kwargs)
        self.new = new

    def __call__(self, parser, namespace, values, option_string=None) -> None:
        parser.error(f"{option_string} is now {self.new}")


def add_renamed_flags(parser: argparse.ArgumentParser, renamed: dict[str, str]) -> None:
    """Flags of earlier versions: given, they stop the command (exit code 2) with the new spelling."""
    for old, new in renamed.items():
        parser.add_argument(old, action=_Renamed, new=new, dest=f"renamed{old}")


def settings_if_given(args: argparse.Namespace, settings: type[S]) -> S | None:
    """`settings_from_args` when a flag of `settings` was given, else None."""
    given = any(k.startswith(f"{settings.__name__}.") and v is not None for k, v in vars(args).items())
    return settings_from_args(args, settings) if given else None


def given_settings(args: argparse.Namespace, settings: type[BaseModel]) -> dict[str, Any]:
    """The values of the flags of `settings` that were given, by field name."""
    return {k.split(".", 1)[1]: v for k, v in vars(args).items() if k.startswith(f"{settings.__name__}.") and v is not None}


def settings_from_args(args: argparse.Namespace, settings: type[S], prefix: str = "", **values: Any) -> S:
    """The settings model from the flags given (others keep the model's defaults) and `values`; `prefix`: of the
    flags' names (`add_settings_arguments`), for the errors."""
    try:
        return settings(**{**given_settings(args, settings), **values})
    except ValidationError as e:
        flag = lambda loc: "--" + prefix.replace("_", "-") + ".".join(map(str, loc)).replace("_", "-") if loc else ""  # noqa: E731  (no loc: the whole)
        raise ConfigError(plain_problems(e, where=flag)) from None


DISCOVERY_FLAGS = [f for f in DiscoverySettings.model_fields if f != "everything"]
"""Discovery settings with a flag (`--discover-every-n-frames`, ...)."""
EVERYTHING_FLAGS = ["points_per_side", "pred_iou_thresh", "stability_score_thresh", "hierarchical"]
"""The everything mode's settings with a discovery flag (`--discover-points-per-side`, ...): what decides how many
objects it finds; the others: YAML or Python (`DiscoverySettings.everything`)."""


def add_discovery_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("auto-discovery")
    group.add_argument(
        "--discover", action="store_true",
        help="add the objects the everything mode (hierarchical) finds and no tracked object is: with no prompt, "
        "every object of the first frame",
    )  # fmt: skip
    add_settings_arguments(group, DiscoverySettings, DISCOVERY_FLAGS, prefix="discover_")
    add_settings_arguments(group, MaskGeneratorSettings, EVERYTHING_FLAGS, prefix="discover_")


DETECTOR_FLAGS = {
    "--classes": "classes", "--labels": "labels", "--conf": "conf", "--detect-iou": "iou",
    "--detect-every": "every_n_frames", "--retire-after": "retire_after", "--detector-backend": "backend",
    "--detector-precision": "precision",
}  # fmt: skip
"""The detector's flags beside --detector FILE, by `DetectorSettings` field."""
DETECTOR_METAVARS = {"classes": "A,B", "labels": "FILE", "conf": "X", "iou": "X", "every_n_frames": "N", "retire_after": "N"}


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def add_detector_arguments(
    parser: argparse.ArgumentParser,
    help: str = "add the objects a detection model finds (an ONNX file of a YOLO layout, e.g. `yolo export "
    "model=yolo11n.pt format=onnx`), with their class; with no prompt, every object it finds",
    exclude: Sequence[str] = (),
) -> None:
    """--detector FILE and the `DETECTOR_FLAGS` but those of `exclude` (field names)."""
    group = parser.add_argument_group("objects found by class (a detector)")
    group.add_argument("--detector", type=Path, metavar="FILE", help=help)
    for flag, name in DETECTOR_FLAGS.items():
        if name in exclude:
            continue
        info = DetectorSettings.model_fields[name]
        kind, choices = (_names, None) if name == "classes" else _flag_type(info.annotation)
        said = "default" in info.description or "(None:" in info.description
        group.add_argument(
            flag, dest=f"detector_{name}", type=kind, choices=choices, default=None, metavar=DETECTOR_METAVARS.get(name),
            help=info.description if said else f"{info.description} (default: {info.default})",
        )  # fmt: skip


def detector_from_args(args: argparse.Namespace) -> DetectorSettings | None:
    given = {name: v for name in DETECTOR_FLAGS.values() if (v := getattr(args, f"detector_{name}", None)) is not None}
    if getattr(args, "detector", None) is None:
        if given:
            flags = ", ".join(f for f, name in DETECTOR_FLAGS.items() if name in given)
            raise ConfigError(f"{flags} set up the detector: give --detector FILE too")
        return None
    return checked(DetectorSettings, model=args.detector, **given)


def tracker_from_args(args: argparse.Namespace) -> TrackerConfig:
    """The tracker flags' settings, with `discover` from --discover and its flags, `detector` from --detector and
    its flags."""
    given = given_settings(args, DiscoverySettings) | given_settings(args, MaskGeneratorSettings)
    if not args.discover and given:
        raise ConfigError("the --discover-... flags set up auto-discovery: give --discover too")
    discover = None
    if args.discover:
        hierarchical = given_settings(args, MaskGeneratorSettings).get("hierarchical", True)  # discovery's default
        everything = settings_from_args(args, MaskGeneratorSettings, prefix="discover_", hierarchical=hierarchical)
        discover = settings_from_args(args, DiscoverySettings, prefix="discover_", everything=everything)
    detector = detector_from_args(args)
    if discover is not None and detector is not None:
        raise ConfigError("objects are found by --discover or by --detector, not both: give one")
    return settings_from_args(args, TrackerConfig, discover=discover, detector=detector)


def web_from_args(address: str | None, token_file: Path | None) -> WebSettings | None:
    """--web HOST:PORT with its token from --web-token-file or $VOS_WEB__TOKEN (never from the command line)."""
    if address is None:
        if token_file is not None:
            raise ConfigError("--web-token-file needs --web HOST:PORT")
        return None
    secret = {"token_file": token_file} if token_file is not None else {"token": os.environ.get(WEB_TOKEN_ENV) or None}
    settings = checked(WebSettings.from_address, address, **secret)
    checked(settings.token_value)  # an unreadable or empty token file: exit code 2 now, not when serving
    return settings


def add_mqtt_arguments(group: argparse._ArgumentGroup, help: str) -> None:
    """--mqtt URL (`help`), its password, TLS, topic prefix, QoS and flush timeout."""
    fields = MqttSettings.model_fields
    group.add_argument("--mqtt", metavar="mqtt[s]://HOST:PORT", help=help)
    group.add_argument(
        "--mqtt-password-file", type=Path, metavar="FILE",
        help=f"read the MQTT password from FILE (or set ${MQTT_PASSWORD_ENV}); a password in the URL shows in `ps`",
    )  # fmt: skip
    group.add_argument("--topic", default=fields["prefix"].default, metavar="PREFIX", help="MQTT topic prefix (default %(default)s)")
    group.add_argument("--qos", type=int, choices=(0, 1, 2), default=fields["qos"].default, help="MQTT QoS of masks and errors (default %(default)s)")
    group.add_argument(
        "--mqtt-flush-timeout", type=float, metavar="SECONDS",
        help=f"at the end, keep delivering buffered messages for up to SECONDS while the broker is away "
        f"(default {fields['flush_timeout'].default:g}); what is left is lost and the exit code is 7",
    )  # fmt: skip
    add_settings_arguments(group, TlsSettings, list(TlsSettings.model_fields), prefix="mqtt_tls_")


def mqtt_from_args(args: argparse.Namespace) -> MqttSettings | None:
    """The flags of `add_mqtt_arguments` as MqttSettings; None without --mqtt."""
    if not args.mqtt:
        if args.mqtt_flush_timeout is not None or args.mqtt_password_file is not None:
            raise ConfigError("--mqtt-flush-timeout and --mqtt-password-file go with --mqtt URL")
        return None
    values: dict[str, Any] = {"prefix": args.topic, "qos": args.qos}
    if args.mqtt_password_file:
        values["password_file"] = args.mqtt_password_file
    elif os.environ.get(MQTT_PASSWORD_ENV):
        values["password"] = os.environ[MQTT_PASSWORD_ENV]
    tls = settings_from_args(args, TlsSettings)
    if tls != TlsSettings():
        values["tls"] = tls
    if args.mqtt_flush_timeout is not None:
        values["flush_timeout"] = args.mqtt_flush_timeout
    return checked(MqttSettings.from_url, args.mqtt, **values)


def metrics_from_args(args: argparse.Namespace) -> MetricsSettings | None:
    """--metrics-port PORT [--metrics-host HOST]; None (off) without a port."""
    if args.metrics_port is None:
        return None
    return checked(MetricsSettings, host=args.metrics_host, port=args.metrics_port)


def add_metrics_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("metrics")
    group.add_argument("--metrics-port", type=int, metavar="PORT", help="serve Prometheus /metrics and /healthz on PORT")
    host = MetricsSettings.model_fields["host"]
    group.add_argument("--metrics-host", default=host.default, metavar="HOST", help=f"{host.description} (default %(default)s)")


def checked(make, *args, **kwargs):
    """A settings model from the CLI; ConfigError (exit code 2) with the reasons, in plain words, if invalid."""
    try:
        return make(*args, **kwargs)
    except ValueError as e:
        raise ConfigError(plain_message(e)) from None
