"""`vos doctor`: what this machine can do and what vos will pick (`vos.doctor`)."""

from __future__ import annotations

import argparse

from vos.doctor import report


def cmd_doctor(args: argparse.Namespace) -> int:
    text, code = report()
    print(text, end="")
    return code


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "doctor", help="what this machine can do and the model, runtime and precision to use here",
        description="Print the CPU and its instruction sets (native bf16 or not), torch and CUDA, the installed "
        "extras and tools, the cached checkpoints, and the model, runtime and precision recommended for live "
        "tracking here with the commands to run. Exit code 1 when torch or another core requirement is missing.",
    )  # fmt: skip
    p.set_defaults(func=cmd_doctor)
