"""The live web viewer: settings here (light to import); the server is `vos.viewer.server.WebViewer`."""

from __future__ import annotations

import ipaddress

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator

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
    jpeg_quality: int = Field(80, ge=10, le=100, description="JPEG quality of the live pictures")

    @model_validator(mode="after")
    def _token_off_loopback(self) -> WebSettings:
        if not is_loopback(self.host) and self.token is None:
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
