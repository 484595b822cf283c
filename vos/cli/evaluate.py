"""`vos eval davis` and `vos eval sav`: score result PNGs with J&F and write the official CSV tables.
`vos bench davis` and `vos bench sav`: track every sequence from its ground-truth prompts, write the PNGs, score them.

The evaluation modules (numba) are imported when a command runs, so other `vos` commands stay quick.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vos.cli.options import add_renamed_flags, add_settings_arguments, settings_from_args, settings_if_given
from vos.config import ModelSettings, TrackerConfig
from vos.engine.settings import RaySettings


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _frame_limit(text: str) -> int:
    from vos.evaluation.davis import MIN_FRAMES

    value = int(text)
    if value < MIN_FRAMES:
        raise argparse.ArgumentTypeError(
            f"must be at least {MIN_FRAMES} (the first and the last frame are not scored)"
        )
    return value


def _sequence_names(text: str) -> list[str]:
    names = [n.strip() for n in text.split(",") if n.strip()]
    if not names:
        raise argparse.ArgumentTypeError("give sequence names separated by commas")
    return names


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--out", type=Path, default=None, help="folder for the CSV files (default: --results)")
    parser.add_argument("--threads", type=_positive_int, default=None, help="scoring threads (default: all CPUs)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the results, no progress bar")
    add_renamed_flags(parser, {"--workers": "--threads"})


def register_cli(sub: argparse._SubParsersAction) -> None:
    """Add `eval davis` and `eval sav` to the top-level subparsers."""
    evaluate = sub.add_parser("eval", help="score results with J&F (DAVIS, SA-V)", description=__doc__)
    commands = evaluate.add_subparsers(dest="eval_command", required=True, metavar="BENCHMARK")

    davis = commands.add_parser(
        "davis",
        help="DAVIS 2016/2017 semi-supervised protocol",
        description="Score RESULTS/<seq>/<frame>.png (object ids) against ROOT/Annotations/480p, "
        "as davisvideochallenge/davis2017-evaluation does (first and last frames excluded).",
    )
    davis.add_argument("--davis-root", type=Path, required=True, help="DAVIS folder with Annotations/480p")
    davis.add_argument("--results", type=Path, required=True, help="folder with one folder of PNGs per sequence")
    davis.add_argument("--set", dest="subset", default="val", help="ImageSets list to evaluate (default: val)")
    davis.add_argument("--sequences", type=_sequence_names, default=None, help="comma-separated sequences instead")
    davis.add_argument("--strict", action="store_true", help="fail when a sequence has no results")
    davis.add_argument("--resolution", default="480p", help="Annotations/JPEGImages sub-folder (default: 480p)")
    davis.add_argument(
        "--max-frames", type=_frame_limit, default=None, metavar="N",
        help="score each sequence as if it ended after its first N annotated frames (N >= 3)",
    )
    _add_common(davis)
    davis.set_defaults(func=run_davis)

    sav = commands.add_parser(
        "sav",
        help="SA-V val/test protocol",
        description="Score RESULTS/<video>/<obj>/<frame>.png against GT_ROOT/<video>/<obj>/<frame>.png "
        "(one binary mask folder per object), as Meta's sav_dataset/sav_evaluator.py does.",
    )
    sav.add_argument("--gt-root", type=Path, required=True, help="SA-V annotations, e.g. sav_val/Annotations_6fps")
    sav.add_argument("--results", type=Path, required=True, help="same layout as --gt-root")
    sav.add_argument(
        "--keep-first-last",
        "--do-not-skip-first-and-last-frame",
        dest="keep_first_last",
        action="store_true",
        help="also score the first and last annotated frames (skipped by default, as in SA-V val/test)",
    )
    sav.add_argument("--strict", action="store_true", help="fail unless results and ground truth have the same videos")
    _add_common(sav)
    sav.set_defaults(func=run_sav)


def run_davis(args: argparse.Namespace) -> int:
    from vos.evaluation.davis import evaluate_davis, format_davis, write_davis_csv

    result = evaluate_davis(
        args.davis_root,
        args.results,
        subset=args.subset,
        sequences=args.sequences,
        strict=args.strict,
        resolution=args.resolution,
        threads=args.threads,
        progress=not args.quiet and sys.stderr.isatty(),
        max_frames=args.max_frames,
    )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    global_path, per_sequence_path = write_davis_csv(result, args.out or args.results)
    print(format_davis(result))
    print(f"\nGlobal results saved in {global_path}")
    print(f"Per-sequence results saved in {per_sequence_path}")
    print(f"Total time: {result.seconds:.2f} s ({len(result.objects)} objects)")
    return 0


def run_sav(args: argparse.Namespace) -> int:
    from vos.evaluation.sav import evaluate_sav, format_sav, write_sav_csv

    result = evaluate_sav(
        args.gt_root,
        args.results,
        skip_first_last=not args.keep_first_last,
        strict=args.strict,
        threads=args.threads,
        progress=not args.quiet and sys.stderr.isatty(),
    )
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    path = write_sav_csv(result, args.out or args.results)
    print(format_sav(result))
    print(f"\nResults saved in {path}")
    print(f"Total time: {result.seconds:.2f} s ({len(result.objects)} objects)")
    return 0


def register_bench_cli(sub: argparse._SubParsersAction) -> None:
    """Add `bench davis` and `bench sav` to the top-level subparsers."""

    bench = sub.add_parser(
        "bench",
        help="track a benchmark's sequences and score them (DAVIS, SA-V)",
        description="Run vos.Tracker on every sequence of a benchmark, write the masks and score them with J&F.",
    )
    commands = bench.add_subparsers(dest="bench_command", required=True, metavar="BENCHMARK")
    davis = commands.add_parser(
        "davis",
        help="DAVIS 2016/2017 semi-supervised: first-frame masks in, J&F and frames/s out",
        description="Track every sequence of ROOT with vos.Tracker, each object prompted with its first-frame "
        "ground-truth mask; write OUT/<seq>/<frame>.png (palette, pixel = object id; where masks overlap, the "
        "object with the highest logit) and score OUT as `vos eval davis` does.",
    )
    davis.add_argument("--davis-root", type=Path, required=True, help="DAVIS folder with JPEGImages/ and Annotations/")
    davis.add_argument("--out", type=Path, required=True, help="folder for the PNGs (one folder per sequence) and CSVs")
    davis.add_argument("--set", dest="subset", default="val", help="ImageSets list to run (default: val)")
    davis.add_argument("--sequences", type=_sequence_names, default=None, help="comma-separated sequences instead")
    davis.add_argument(
        "--max-frames", type=_frame_limit, default=None, metavar="N",
        help="track and score only the first N frames of each sequence (N >= 3)",
    )
    davis.add_argument("--resolution", default="480p", help="Annotations/JPEGImages sub-folder (default: 480p)")
    _add_bench_options(davis)
    davis.set_defaults(func=run_bench_davis)

    sav = commands.add_parser(
        "sav",
        help="SA-V val/test: each object prompted on its first annotated frame, J&F and frames/s out",
        description="Track every video of ROOT (JPEGImages_24fps/, Annotations_6fps/) with vos.Tracker, each object "
        "prompted with its ground-truth mask on the first annotated frame where it shows; write "
        "OUT/<video>/<obj>/<frame>.png for the annotated frames (where masks overlap, the object with the highest "
        "logit) and score OUT as `vos eval sav` does.",
    )
    sav.add_argument("--sav-root", type=Path, required=True, help="SA-V split folder, e.g. sav_val/")
    sav.add_argument("--out", type=Path, required=True, help="folder for the PNGs (<video>/<obj>/) and results.csv")
    sav.add_argument("--videos", type=_sequence_names, default=None, help="comma-separated videos (default: all)")
    _add_bench_options(sav)
    sav.set_defaults(func=run_bench_sav)


def _add_bench_options(parser: argparse.ArgumentParser) -> None:
    """The model, Ray and scoring options every benchmark takes."""
    model = parser.add_argument_group("model")
    add_settings_arguments(model, ModelSettings, list(ModelSettings.model_fields))
    add_settings_arguments(model, TrackerConfig, ["compile"])
    ray = parser.add_argument_group("Ray: any of these tracks on `vos batch`'s pool instead of in this process (needs vos[ray])")
    add_settings_arguments(ray, RaySettings, list(RaySettings.model_fields))
    parser.add_argument("--eval-threads", type=_positive_int, default=None, help="scoring threads (default: all CPUs)")
    parser.add_argument("-q", "--quiet", action="store_true", help="print only the results, no progress bar")
    add_renamed_flags(parser, {"--eval-workers": "--eval-threads"})


def _bench_options(args: argparse.Namespace) -> dict:
    """`_add_bench_options`' values as arguments of `bench_davis` / `bench_sav`."""
    return dict(
        model=settings_from_args(args, ModelSettings), tracker=settings_from_args(args, TrackerConfig),
        ray=settings_if_given(args, RaySettings), eval_threads=args.eval_threads,
        progress=not args.quiet and sys.stderr.isatty(),
    )  # fmt: skip


def run_bench_sav(args: argparse.Namespace) -> int:
    from vos.evaluation.bench import format_bench
    from vos.evaluation.bench_sav import bench_sav
    from vos.evaluation.sav import write_sav_csv

    result = bench_sav(args.sav_root, args.out, videos=args.videos, **_bench_options(args))
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    path = write_sav_csv(result.evaluation, args.out)
    print(format_bench(result))
    print(f"\nMasks written to {args.out}/<video>/<obj>/")
    print(f"Results saved in {path}")
    return 0


def run_bench_davis(args: argparse.Namespace) -> int:
    from vos.evaluation.bench import bench_davis, format_bench
    from vos.evaluation.davis import write_davis_csv

    result = bench_davis(
        args.davis_root, args.out, subset=args.subset, sequences=args.sequences, max_frames=args.max_frames,
        resolution=args.resolution, **_bench_options(args),
    )  # fmt: skip
    for note in result.notes:
        print(f"note: {note}", file=sys.stderr)
    global_path, per_sequence_path = write_davis_csv(result.evaluation, args.out)
    print(format_bench(result))
    print(f"\nMasks written to {args.out}/<sequence>/")
    print(f"Global results saved in {global_path}")
    print(f"Per-sequence results saved in {per_sequence_path}")
    return 0
