"""`vos doctor`: its exit code and its recommendation on CPUs with and without native bf16 (capabilities
monkeypatched; no model is loaded)."""

from __future__ import annotations

import pytest

from vos import doctor
from vos.cli import main


@pytest.fixture
def machine(monkeypatch, tmp_path):
    """A CPU machine without a GPU, an empty checkpoint cache but for an EdgeTAM file; `installed` answers as the
    real one except for the names set in the returned dict (None: not installed)."""
    real = doctor.installed
    overrides: dict[str, str | None] = {}
    monkeypatch.setattr(doctor, "installed", lambda name: overrides[name] if name in overrides else real(name))
    monkeypatch.setattr(doctor, "cuda_device", lambda: None)
    monkeypatch.setenv("VOS_CACHE_DIR", str(tmp_path))
    (tmp_path / "edgetam.pt").write_bytes(b"")
    return overrides


OPENVINO = {"openvino": "2026.4.0", "nncf": "3.4.0"}


@pytest.mark.parametrize(
    ("native", "packages", "pick", "command"),
    [
        (True, OPENVINO, "backend openvino, precision bf16", "--backend openvino --onnx-dir onnx/edgetam-512 --precision bf16"),
        (True, {"openvino": None}, "backend pytorch, precision bf16", "--out out/ --precision bf16"),
        (False, OPENVINO, "backend pytorch, precision fp32", "--point 1=X,Y --out out/"),
    ],
    ids=["native-bf16-openvino", "native-bf16-no-openvino", "no-native-bf16"],
)  # fmt: skip
def test_recommendation_follows_native_bf16_and_openvino(machine, monkeypatch, capsys, native, packages, pick, command):
    monkeypatch.setattr(doctor, "cpu_native_bf16", lambda: native)
    machine.update(packages)
    assert main(["doctor"]) == 0  # a missing extra is reported, not an error
    out = capsys.readouterr().out
    recommended = out.split("recommended for live tracking here\n", 1)[1]
    assert f"model edgetam, {pick}, device cpu" in recommended
    assert recommended.rstrip().endswith(command)
    assert ("$ vos export onnx edgetam --image-size 512 --out onnx/edgetam-512" in recommended) == (pick == "backend openvino, precision bf16")
    assert ("native bf16 on the CPU: yes" in out) == native
    assert ("vos[openvino]: missing openvino" in out) == (packages["openvino"] is None)
    assert "edgetam.pt: edgetam, 0 MB" in out


def test_a_gpu_is_recommended_with_device_cuda():
    assert doctor.recommend(native_bf16=True, openvino=True, cuda="NVIDIA H100").device == "cuda"
    assert "--device cuda" in doctor.recommend(native_bf16=False, openvino=False, cuda="NVIDIA H100").commands[-1]


@pytest.mark.parametrize("missing", ["numpy", "torch"])
def test_a_missing_core_requirement_fails_with_what_to_install(machine, capsys, missing):
    machine[missing] = None
    assert main(["doctor"]) == 1
    out = capsys.readouterr().out
    assert f"vos needs {missing}>=" in out and "pip install" in out
    assert "recommended for live tracking" not in out
    if missing == "torch":
        assert "torch: not installed" in out


def test_a_core_requirement_too_old_fails(machine, capsys):
    machine["numpy"] = "1.0.0"
    assert main(["doctor"]) == 1
    assert "numpy>=1.24 (have 1.0.0)" in capsys.readouterr().out
