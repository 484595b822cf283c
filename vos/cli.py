"""The `vos` command line.

Each command group lives next to the code it drives and contributes a
`register(subparsers)` function; this module only wires them together and maps
`VosError` to a readable message and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from vos.errors import VosError
from vos.streams.redact import redact


def build_parser() -> argparse.ArgumentParser:
    from vos import batch_cli, checkpoints, engine_cli, render_cli
    from vos.evaluation import cli as eval_cli
    from vos.viewer import review

    parser = argparse.ArgumentParser(prog="vos", description="Streaming video object segmentation with SAM 2.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    checkpoints.register_cli(sub)
    eval_cli.register_cli(sub)
    eval_cli.register_bench_cli(sub)
    engine_cli.register_cli(sub)
    render_cli.register_cli(sub)
    review.register_cli(sub)
    batch_cli.register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VosError as e:
        print(f"vos: error: {redact(str(e))}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print("vos: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
