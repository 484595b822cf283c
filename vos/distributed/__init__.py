"""Scale-out on Ray: `batch` (many videos on an actor pool, `vos batch`) and `serve` (one actor per stream,
`vos serve --ray`). Ray is the `vos[ray]` extra; it is imported only when these run."""
