#!/usr/bin/env bash
# Installs vos for development and testing on Debian with Python 3.11.
# - Debian packages the tests start for real: Mosquitto (MQTT broker) and GStreamer's RTSP
#   server with its Python bindings (run under /usr/bin/python3, not a virtual environment).
# - torch is pinned to the CPU wheel; Meta's sam2 (the test oracle) is installed without its
#   dependencies, which would otherwise pull a CUDA torch and torchvision.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

APT_PACKAGES=(
    mosquitto
    python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly gstreamer1.0-libav
)
missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo "sudo")
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

"$PY" -m pip install --quiet "torch==2.13.0" -e ".[test]"
SAM2_BUILD_CUDA=0 "$PY" -m pip install --quiet --no-deps --no-build-isolation "sam2==1.1.0"
