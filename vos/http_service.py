"""Starting an aiohttp application on the running event loop (the web viewer, the metrics endpoint)."""

from __future__ import annotations

from aiohttp import web

from vos.errors import ConfigError


async def start_app(app: web.Application, host: str, port: int, what: str) -> tuple[web.AppRunner, int]:
    """Serves `app` on host:port (0: any free port); (the runner to `cleanup()`, the bound port).

    ConfigError naming `what` if the address cannot be bound (port in use, unknown host).
    """
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except OSError as e:
        await runner.cleanup()
        raise ConfigError(f"cannot serve {what} on {host}:{port}: {e}") from None
    return runner, runner.addresses[0][1]
