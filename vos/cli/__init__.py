"""The `vos` command line.

Each command group is a module of this package that parses its arguments and calls the Python API
(`register_cli(subparsers)`); this module wires them together and maps `VosError` to a readable message
and a non-zero exit code.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

from pydantic import ValidationError

from vos.errors import VosError, plain_problems
from vos.streams.redact import redact


def build_parser() -> argparse.ArgumentParser:
    from vos.cli import annotate, batch, checkpoints, doctor, evaluate, export, render, segment, track, view

    parser = argparse.ArgumentParser(prog="vos", description="Streaming video object segmentation with SAM 2.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    checkpoints.register_cli(sub)
    evaluate.register_cli(sub)
    evaluate.register_bench_cli(sub)
    track.register_cli(sub)
    render.register_cli(sub)
    view.register_cli(sub)
    batch.register_cli(sub)
    segment.register_cli(sub)
    annotate.register_cli(sub)
    export.register_cli(sub)
    doctor.register_cli(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except VosError as e:
        print(f"vos: error: {redact(str(e))}", file=sys.stderr)
        return e.exit_code
    except ValidationError as e:  # settings checked outside a command's own handling: still plain sentences
        print(f"vos: error: {redact(plain_problems(e))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vos: interrupted", file=sys.stderr)
        return 130

