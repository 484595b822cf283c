"""Secrets: kept out of texts that leave the process (status, errors, logs: `rtsp://user:secret@host` ->
`rtsp://user:***@host`), and read from files rather than command lines (`ps` shows those)."""

from __future__ import annotations

import re
from pathlib import Path

_URL_PASSWORD = re.compile(r"(?P<head>\b[A-Za-z][A-Za-z0-9+.-]*://[^/@:\s]*):[^/@\s]*@")


def redact(text: str) -> str:
    """`text` with the password of every URL in it replaced by ***."""
    return _URL_PASSWORD.sub(r"\g<head>:***@", text)


def read_secret_file(path: Path, what: str) -> str:
    """The first line of a secret file (a container secret, a file only its owner reads); ValueError naming `what`."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise ValueError(f"cannot read the {what} file {path}: {e}") from None
    return lines[0] if lines else ""
