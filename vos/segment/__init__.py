"""Segment everything: masks of every object in an image from a grid of clicks (`MaskGenerator`)."""

from vos.config import MaskGeneratorSettings
from vos.segment.generator import MaskGenerator

__all__ = ["MaskGenerator", "MaskGeneratorSettings"]
