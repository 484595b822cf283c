"""J&F evaluation of video object segmentation results, equal to the official evaluators.

- `vos.evaluation.metrics`: per-frame region similarity J and boundary accuracy F (numba kernel).
- `vos.evaluation.davis`: the DAVIS semi-supervised protocol (statistics, CSV tables).
- `vos.evaluation.sav`: the SA-V layout and conventions (one binary PNG folder per object).
- `vos.cli.evaluate`: the `vos eval davis` and `vos eval sav` commands.
"""

from vos.errors import VosError


class EvaluationError(VosError):
    """Ground truth or results are missing, of the wrong size or hold unknown object ids."""


__all__ = ["EvaluationError"]
