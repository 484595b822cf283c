#!/usr/bin/env bash
# Installs vos for development and testing on Debian with Python 3.11.
# - Debian packages the tests start for real: Mosquitto (MQTT broker) and GStreamer's RTSP
#   server with its Python bindings (run under /usr/bin/python3, not a virtual environment).
# - torch is pinned; VOS_TORCH picks the build: cuda (the index's default wheel, CUDA on PyPI), cpu (PyTorch's
#   CPU index or $VOS_TORCH_CPU_INDEX, else the configured index), auto (default: cuda where nvidia-smi works).
# - Meta's sam2 (the test oracle) is installed without its dependencies, which would pull torchvision; EdgeTAM's
#   and EfficientTAM's (other packages named sam2), timm and Ultralytics go to .refs/, outside the environment.
# Works in a virtual environment too: PYTHON (default python3) is the interpreter that gets the packages.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}

APT_PACKAGES=(
    mosquitto
    python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp
    gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad
    gstreamer1.0-plugins-ugly gstreamer1.0-libav
    chromium
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

TORCH_PIN="torch==2.13.0"
TORCH_CPU_INDEX=${VOS_TORCH_CPU_INDEX:-https://download.pytorch.org/whl/cpu}
mode=${VOS_TORCH:-auto}
if [[ $mode == auto ]]; then
    mode=$(nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)
fi
cpu_torch() {  # from PyTorch's CPU index, once a few seconds show that it answers: offline, pip would wait long
    timeout 10 "$PY" -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=5)' \
        "$TORCH_CPU_INDEX/torch/" >/dev/null 2>&1 \
        && "$PY" -m pip install --quiet --timeout 30 --retries 1 --extra-index-url "$TORCH_CPU_INDEX" "$TORCH_PIN"
}
case $mode in
    cuda) "$PY" -m pip install --quiet "$TORCH_PIN" ;;
    cpu)
        cpu_torch || {
            echo "install-dev: no torch from $TORCH_CPU_INDEX (unreachable?); using the configured index" >&2
            "$PY" -m pip install --quiet "$TORCH_PIN"
        }
        ;;
    *) echo "install-dev: VOS_TORCH must be auto, cpu or cuda, not '$mode'" >&2; exit 2 ;;
esac
"$PY" -m pip install --quiet -e ".[test,ray,onnx,openvino,docs]"
SAM2_BUILD_CUDA=0 "$PY" -m pip install --quiet --no-deps --no-build-isolation "sam2==1.1.0"
# EdgeTAM's reference (test oracle) also installs a package named `sam2`: it goes into a folder of its own, with
# the timm it builds its trunk with, and runs in a process of its own (tests/oracles/edgetam_reference.py).
"$PY" -m pip install --quiet --no-deps --upgrade --target .refs/edgetam "edgetam-dimos==1.0.1"
"$PY" -m pip install --quiet --no-deps --upgrade --target .refs/timm "timm==1.0.15"
# EfficientTAM's reference (another `sam2`), likewise (tests/oracles/tam_reference.py).
"$PY" -m pip install --quiet --no-deps --upgrade --target .refs/efficienttam "efficient-track-anything==1.0"
# Ultralytics (AGPL-3.0, the detector tests' oracle, never imported by vos), likewise: with a torchvision stand-in,
# in a process of its own (tests/oracles/yolo_reference.py). What it imports beyond the test environment: nothing.
"$PY" -m pip install --quiet --no-deps --upgrade --target .refs/ultralytics "ultralytics==8.4.190"
"$PY" - "$mode" <<'EOF'
import sys, torch
print(f"install-dev: torch {torch.__version__}, CUDA {torch.version.cuda or 'none (CPU build)'}")
if sys.argv[1] == "cuda" and not torch.version.cuda:
    print("install-dev: a CPU torch was already installed; pip uninstall torch, then run this again", file=sys.stderr)
EOF
