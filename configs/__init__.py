"""Shipped configuration files: `models/*.yaml` (model configs) and `engine.yaml` (a `vos serve` example)."""

from pathlib import Path

CONFIGS_DIR = Path(__file__).resolve().parent
MODELS_DIR = CONFIGS_DIR / "models"
ENGINE_EXAMPLE = CONFIGS_DIR / "engine.yaml"
