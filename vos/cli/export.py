"""`vos export onnx MODEL --out DIR`: the model's graphs as ONNX files with a manifest (thin over
`vos.export.onnx.export_onnx`)."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from vos.cli.options import add_settings_arguments, settings_from_args
from vos.config import ModelSettings
from vos.export.onnx import OnnxExportSettings

MODEL_FLAGS = ["checkpoint", "image_size", "threads"]
"""Model settings with a flag here: the config is MODEL; graphs are traced in fp32 on the CPU."""


def cmd_export_onnx(args: argparse.Namespace) -> int:
    from vos.build import load_from_settings
    from vos.export.onnx import export_onnx

    settings = settings_from_args(args, OnnxExportSettings)
    model_settings = settings_from_args(args, ModelSettings, config=args.model, precision="fp32", device="cpu")
    model = load_from_settings(model_settings)
    start = time.perf_counter()

    def progress(name: str) -> None:
        if not args.quiet:
            print(f"vos: export: {name} ({time.perf_counter() - start:.0f} s)", file=sys.stderr)

    manifest = export_onnx(model, args.out, settings, checkpoint=model_settings.checkpoint, progress=progress)
    names = ", ".join(manifest.graphs)
    print(
        f"vos: export: {manifest.model} at {manifest.image_size} px, {settings.precision}: {names} -> {args.out} "
        f"({time.perf_counter() - start:.0f} s)",
        file=sys.stderr,
    )
    return 0


def register_cli(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="the model as files for other runtimes (ONNX)")
    formats = p.add_subparsers(dest="format", required=True, metavar="FORMAT")
    onnx = formats.add_parser(
        "onnx", help="image encoder, mask decoder, mask prompt, memory encoder and memory attention as ONNX graphs",
        description="Write MODEL's graphs to DIR: image_encoder, mask_decoder (with the prompt encoder), mask_prompt, "
        "memory_encoder and memory_attention .onnx files, and manifest.json (model, config, image size, the "
        "checkpoint's SHA-256, each graph's inputs and outputs). Variable axes: images, objects, points, memory "
        "frames, pointers. docs/runtimes.md says what each graph takes.",
    )  # fmt: skip
    onnx.add_argument("model", nargs="?", metavar="MODEL", help="model config (default: the one the checkpoint fits)")
    onnx.add_argument(
        "--out", type=Path, required=True, metavar="DIR", help="folder of the .onnx files and manifest.json"
    )
    onnx.add_argument("--quiet", action="store_true", help="no progress lines")
    add_settings_arguments(onnx.add_argument_group("export"), OnnxExportSettings, list(OnnxExportSettings.model_fields))
    add_settings_arguments(onnx.add_argument_group("model"), ModelSettings, MODEL_FLAGS)
    onnx.set_defaults(func=cmd_export_onnx)
