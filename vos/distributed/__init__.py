"""Scale-out on Ray: `batch` (many videos on an actor pool, `vos batch`) and `serve` (one actor per stream,
`vos serve --ray`). Ray is the `vos[ray]` extra; it is imported only when these run."""

from __future__ import annotations

import logging

RAY_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"
RAY_AUTH_NOTICE = "Token authentication is enabled for this Ray cluster"


def _not_the_auth_notice(record: logging.LogRecord) -> bool:
    return not record.getMessage().startswith(RAY_AUTH_NOTICE)


def init_ray(address: str | None, **options: object) -> None:
    """`ray.init` without the dashboard or Ray's logging set-up. A local Ray (no `address`) keeps Ray's default,
    token authentication, without Ray's notice that it is on (people running `vos batch` on their machine have
    nothing to do about it); other notices, and everything about a cluster, are Ray's as usual."""
    import ray

    if address is None:
        logger = logging.getLogger(RAY_AUTH_LOGGER)
        if _not_the_auth_notice not in logger.filters:
            logger.addFilter(_not_the_auth_notice)
    ray.init(address=address, include_dashboard=False, configure_logging=False, **options)
