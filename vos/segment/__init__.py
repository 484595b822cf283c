"""Segment everything: masks of every object in an image from a grid of clicks (`MaskGenerator`)."""

from vos.segment.generator import MaskGenerator, MaskGeneratorSettings

__all__ = ["MaskGenerator", "MaskGeneratorSettings"]
