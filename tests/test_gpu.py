"""On a CUDA GPU (skipped elsewhere): the tracker equals Meta's video predictor on the same GPU in fp32,
bf16 agrees with fp32, and the compiled tracker equals the eager one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import vos
from tests.test_tracker_parity import CORRECTION_FRAME, meta_reference, run_tracker
from tests.video_reference import assert_frame_matches, centroid_click, ground_truth, write_clip

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
SIZE = 512


@pytest.fixture(scope="module")
def clip(davis_root, tmp_path_factory):
    folder = tmp_path_factory.mktemp("clip")
    frames = write_clip(davis_root, "car-shadow", SIZE, folder)
    gt = ground_truth(davis_root, "car-shadow", 0, SIZE)
    click = np.array([[SIZE * 0.2, SIZE * 0.8]], dtype=np.float32)
    correction = np.concatenate([centroid_click(ground_truth(davis_root, "car-shadow", CORRECTION_FRAME, SIZE)), click])
    return folder, frames, gt, click, correction


def track(checkpoint, clip, precision="fp32", **options):
    _, frames, gt, click, correction = clip
    model = vos.load_model("sam2.1_hiera_t", checkpoint=checkpoint, image_size=SIZE, device="cuda", precision=precision)
    with torch.inference_mode():
        return list(run_tracker(model, frames, gt, click, correction, **options))


@pytest.fixture(scope="module")
def fp32_results(tracking_checkpoint, clip):
    return track(tracking_checkpoint, clip)


def test_fp32_matches_meta_on_the_gpu(tracking_checkpoint, clip, fp32_results):
    folder, _, gt, click, correction = clip
    with torch.inference_mode():
        ref = meta_reference(tracking_checkpoint, folder, SIZE, gt, click, correction, device="cuda")
    for f, result in enumerate(fp32_results):
        assert_frame_matches(result, ref[f], (1, 2), f)


def test_auto_is_bf16_and_agrees_with_fp32(tracking_checkpoint, clip, fp32_results):
    bf16 = track(tracking_checkpoint, clip, precision="auto")
    for a, b in zip(fp32_results, bf16):
        for obj in (1, 2):
            assert b.logits[obj].dtype == np.float32
            assert np.corrcoef(a.logits[obj].ravel(), b.logits[obj].ravel())[0, 1] >= 0.98
    assert max(np.abs(a.logits[1] - b.logits[1]).max() for a, b in zip(fp32_results, bf16)) > 1e-3  # bf16 ran


# Inductor's fused kernels round differently from cuBLAS/cuDNN; over 16 recurrent frames the logits drift
# by up to ~4e-4 on an H100 (on CPU, 1e-6): held to the bound of parity with Meta.
COMPILED_TOL = 1e-3


def test_compiled_equals_eager(tracking_checkpoint, clip, fp32_results):
    compiled = track(tracking_checkpoint, clip, compile=True)
    worst = max(np.abs(a.logits[o] - b.logits[o]).max() for a, b in zip(fp32_results, compiled) for o in (1, 2))
    print(f"compiled vs eager on {torch.cuda.get_device_name()}: max |d| {worst:.2e}")
    assert worst <= COMPILED_TOL, worst


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnxruntime_cuda_tracker_agrees_with_pytorch(tracking_checkpoint, clip, fp32_results, precision, tmp_path):
    """The ONNX Runtime backend on ONNX Runtime's CUDA provider (onnxruntime-gpu): fp32 graphs within 1e-3 of the
    PyTorch tracker on the same GPU (cuDNN and ONNX Runtime's kernels round differently), fp16 graphs correlated
    (r >= 0.98)."""
    ort = pytest.importorskip("onnxruntime")
    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("needs onnxruntime-gpu (ONNX Runtime's CUDA provider)")
    from vos.export.onnx import OnnxExportSettings, export_onnx

    on_cpu = vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=SIZE)
    export_onnx(on_cpu, tmp_path, OnnxExportSettings(precision=precision), checkpoint=tracking_checkpoint)
    _, frames, gt, click, correction = clip
    model = vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=SIZE, device="cuda",
                           precision="auto", backend="onnxruntime", onnx_dir=tmp_path)  # fmt: skip
    with torch.inference_mode():
        results = list(run_tracker(model, frames, gt, click, correction))
    for a, b in zip(fp32_results, results, strict=True):
        for obj in (1, 2):
            if precision == "fp32":
                assert np.abs(a.logits[obj] - b.logits[obj]).max() <= 1e-3
            else:
                assert np.corrcoef(a.logits[obj].ravel(), b.logits[obj].ravel())[0, 1] >= 0.98
