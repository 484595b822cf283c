"""Test-only stand-in for torchvision: the names `timm` imports (its PyPI wheels do not import beside the CPU torch
used here). Nothing here runs: timm only needs them to exist to build a model such as `repvit_m1`."""

from torchvision import datasets, ops, transforms  # noqa: F401
