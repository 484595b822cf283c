"""The streaming engine: source -> tracker -> masks -> sinks, for one stream or several.

- `settings`: `EngineConfig` (the `vos serve` file; `vos track` builds one from its flags), `StreamSettings`,
  `RaySettings`.
- `stream`: one stream through the engine (`StreamRunner`) and its counters (`StreamStats`, `StreamReport`).
- `engine`: `Engine`, the entry point; `metrics`: Prometheus metrics and `/healthz`.

Names are imported on first use, so `vos.engine.settings` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from vos.lazy import lazy_exports

_EXPORTS = {
    "Engine": "vos.engine.engine",
    "EngineConfig": "vos.engine.settings",
    "StreamSettings": "vos.engine.settings",
    "StreamReport": "vos.engine.stream",
    "StreamStats": "vos.engine.stream",
}
__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:
    from vos.engine.engine import Engine
    from vos.engine.settings import EngineConfig, StreamSettings
    from vos.engine.stream import StreamReport, StreamStats


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
