"""Errors a user can act on. The CLI prints their message and exits with `exit_code`."""


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
