"""The live web viewer: settings here (light to import); the server is `vos.viewer.server.WebViewer`."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

from vos.streams.redact import read_secret_file

LOOPBACK_NAMES = {"localhost", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """True for localhost and addresses in 127.0.0.0/8 or ::1."""
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class WebSettings(BaseModel):
    """Where the viewer listens; anything but loopback needs a token (the page can steer the tracker)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    host: str = Field("127.0.0.1", description="address to bind; anything but loopback needs a token")
    port: int = Field(8080, ge=0, le=65535, description="port (0: any free port)")
    token: SecretStr | None = Field(None, description="secret a browser must present (opening /?token=...)")
    token_file: Path | None = Field(None, description="or read the token from this file (first line)")
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of the live pictures")

    @model_validator(mode="after")
    def _token_off_loopback(self) -> WebSettings:
        if self.token is not None and self.token_file is not None:
            raise ValueError("give token or token_file, not both")
        if not is_loopback(self.host) and self.token is None and self.token_file is None:
            raise ValueError(
                f"the viewer on {self.host} would let anyone who reaches it steer the tracker: "
                "give a token (--web-token-file FILE, VOS_WEB__TOKEN or web.token) or bind 127.0.0.1"
            )
        return self

    @classmethod
    def from_address(cls, address: str, **fields: object) -> WebSettings:
        """`HOST:PORT` or `PORT` (on 127.0.0.1); ValueError if it is neither."""
        host, _, port = address.rpartition(":")
        if not port.isdigit():
            raise ValueError(f"viewer address {address!r}: expected HOST:PORT or PORT")
        return cls(host=host or "127.0.0.1", port=int(port), **fields)

    def token_value(self) -> str | None:
        """The token, from `token` or `token_file` (ValueError if that cannot be read or is empty)."""
        if self.token_file is None:
            return None if self.token is None else self.token.get_secret_value()
        token = read_secret_file(self.token_file, "viewer token").strip()
        if not token:
            raise ValueError(f"the viewer token file {self.token_file} is empty")
        return token
