"""Command-line options shared by `vos track` and `vos bench davis`: how fast the model runs."""

from __future__ import annotations

import argparse

from vos.config import DEFAULT_PRECISION, PRECISIONS


def _threads(text: str) -> int:
    n = int(text)
    if n < 1:
        raise argparse.ArgumentTypeError("--threads must be at least 1")
    return n


def add_speed_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--precision", choices=PRECISIONS, default=DEFAULT_PRECISION,
        help="fp32 (equal to Meta's), bf16, or auto: bf16 where the hardware has native bf16 (default %(default)s)",
    )
    parser.add_argument("--compile", action="store_true", help="torch.compile the model's stages (the first frames compile)")
    parser.add_argument(
        "--threads", type=_threads, default=None, metavar="N",
        help="torch intra-op threads (default: torch's choice, one per core)",
    )


def apply_threads(threads: int | None) -> None:
    """torch's intra-op thread count, when given."""
    if threads is not None:
        import torch

        torch.set_num_threads(threads)
