"""Credentials out of texts that leave the process (status, errors, logs): `rtsp://user:secret@host` -> `rtsp://user:***@host`."""

from __future__ import annotations

import re

_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):[^/@\s]*@")


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)
