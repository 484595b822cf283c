#!/usr/bin/env bash
# Installs vos for development and testing on Debian with Python 3.11.
# torch is pinned to the CPU wheel; Meta's sam2 (the test oracle) is installed
# without its dependencies, which would otherwise pull a CUDA torch and torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet "torch==2.13.0" -e ".[test]"
SAM2_BUILD_CUDA=0 "$PY" -m pip install --quiet --no-deps --no-build-isolation "sam2==1.1.0"
