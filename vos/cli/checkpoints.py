"""`vos checkpoints list|download|verify|random`: published weights in the local cache, and random ones for offline
trials."""

from __future__ import annotations

import argparse
from pathlib import Path

from vos.checkpoints import (
    CACHE_ENV,
    cache_dir,
    cached_checkpoint_path,
    checkpoint_url,
    download_checkpoint,
    recorded_sha256,
    verify_checkpoint,
)
from vos.config import available_models, load_config
from vos.errors import CheckpointError


def _cmd_download(args: argparse.Namespace) -> int:
    path = download_checkpoint(args.name, url=args.url, dest_dir=args.dir, progress=not args.quiet, allow_http=args.allow_http)
    print(path)
    return 0


NAME_WIDTH = max(map(len, available_models()))


def _cmd_verify(args: argparse.Namespace) -> int:
    """Checks every cached checkpoint (or the named ones) against its recorded and known SHA-256."""
    names = args.names or [n for n in available_models() if cached_checkpoint_path(load_config(n)).is_file()]
    for name in names:
        cfg = load_config(name)
        path = (Path(args.dir) if args.dir else cache_dir()) / cached_checkpoint_path(cfg).name
        if not path.is_file():
            raise CheckpointError(f"{name}: no cached checkpoint at {path}")
        digest = verify_checkpoint(cfg, path)
        known = "recorded" if recorded_sha256(path) else "nothing recorded to compare with"
        print(f"{name:{NAME_WIDTH}s} ok  {digest}  ({known})")
    return 0


def _cmd_random(args: argparse.Namespace) -> int:
    from vos.build import save_random_checkpoint

    path = save_random_checkpoint(args.name, args.out, seed=args.seed)
    print(path)
    print(
        f"random, untrained weights of {args.name} (seed {args.seed}): everything runs, but the masks follow no "
        f"object. Trained weights: vos checkpoints download {args.name}"
    )
    return 0


def _cmd_list(args: argparse.Namespace) -> int:
    for name in available_models():
        cfg = load_config(name)
        path = cached_checkpoint_path(cfg)
        print(f"{name:{NAME_WIDTH}s} {'cached' if path.is_file() else '-':7s} {checkpoint_url(cfg)}")
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    parser = sub.add_parser("checkpoints", help="list, download, verify and make (random) checkpoints of SAM 2 / 2.1, EdgeTAM and EfficientTAM")
    commands = parser.add_subparsers(dest="checkpoints_command", required=True, metavar="ACTION")
    down = commands.add_parser("download", help="download a checkpoint into the cache (resumable)")
    down.add_argument("name", choices=available_models(), metavar="NAME", help="model name, e.g. sam2.1_hiera_t")
    down.add_argument("--url", help="download from this URL instead of Meta's")
    down.add_argument("--dir", help=f"target directory (default: ${CACHE_ENV} or ~/.cache/vos/checkpoints)")
    down.add_argument("--quiet", action="store_true", help="no progress bar")
    down.add_argument("--allow-http", action="store_true", help="accept a plain http:// URL or mirror")
    down.set_defaults(func=_cmd_download)
    verify = commands.add_parser("verify", help="check cached checkpoints against their SHA-256")
    verify.add_argument("names", nargs="*", metavar="NAME", help="models to check (default: every cached one)")
    verify.add_argument("--dir", help=f"cache directory (default: ${CACHE_ENV} or ~/.cache/vos/checkpoints)")
    verify.set_defaults(func=_cmd_verify)
    rand = commands.add_parser(
        "random", help="save random, untrained weights of a model (offline trials: runs, but tracks nothing real)"
    )
    rand.add_argument("name", choices=available_models(), metavar="NAME", help="model name, e.g. sam2.1_hiera_t")
    rand.add_argument("--out", help="a file (NAME.pt), or a folder (made if missing) for NAME-random-untrained.pt "
                      "(default: the current folder)")  # fmt: skip
    rand.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    rand.set_defaults(func=_cmd_random)
    listing = commands.add_parser("list", help="list known models, their URLs and whether they are cached")
    listing.set_defaults(func=_cmd_list)
