"""Errors a user can act on. The CLI prints their message and exits with `exit_code`."""

from __future__ import annotations

from collections.abc import Callable

from pydantic import ValidationError

VALUE_ERROR_PREFIX = "Value error, "  # pydantic's prefix on a validator's ValueError


def plain_message(error: Exception) -> str:
    """An exception's message in plain sentences: a pydantic ValidationError through `plain_problems`."""
    return plain_problems(error) if isinstance(error, ValidationError) else str(error)


def plain_problems(error: ValidationError, sep: str = "; ", where: Callable[[tuple], str] | None = None) -> str:
    """A pydantic ValidationError as plain sentences, one per problem: "where: what", without pydantic's input dump,
    error types or documentation URLs. `where(loc)` names a location (default: the dotted field path)."""
    parts = []
    for err in error.errors():
        msg = err["msg"].removeprefix(VALUE_ERROR_PREFIX)
        place = where(err["loc"]) if where is not None else ".".join(map(str, err["loc"]))
        parts.append(f"{place}: {msg}" if place else msg)
    return sep.join(parts)


class VosError(Exception):
    """Base class for errors caused by input or environment, not by a bug."""

    exit_code = 1


class ConfigError(VosError):
    """A config file or setting is invalid."""

    exit_code = 2


class CheckpointError(VosError):
    """A checkpoint file is missing, unreadable or does not match the model config."""

    exit_code = 3


class DownloadError(CheckpointError):
    """A checkpoint could not be downloaded."""

    exit_code = 4


class SourceUnavailable(VosError):
    """A video source cannot be read: missing file, not a video, unreachable camera."""

    exit_code = 5


class BrokerUnavailable(VosError):
    """The MQTT broker cannot be reached or refused the connection."""

    exit_code = 6


class MessagesLost(VosError):
    """Outgoing MQTT messages were lost: dropped from a full buffer while the broker was away, or still undelivered
    when the run ended and the flush window ran out."""

    exit_code = 7
