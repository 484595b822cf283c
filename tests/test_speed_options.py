"""precision / compile / threads: accepted everywhere, refused clearly when invalid; bf16 agrees with fp32.

Cached memory projections are checked for equality with Meta by the parity tests; here:
that they are dropped with the memory they belong to.
"""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest
import torch

import vos
from tests.video_reference import ground_truth, write_clip
from vos.device import check_device, native_bf16, resolve_precision
from vos.engine.settings import EngineConfig
from vos.errors import ConfigError
from vos.memory.frame_store import FrameRecord, ObjectHistory
from vos.memory.memory_bank import FrameMemory, ObjectMemory

BF16_MIN_PEARSON = 0.98


def test_precision_values_are_checked():
    with pytest.raises(ConfigError, match="precision must be one of fp32, bf16, int8, auto"):
        resolve_precision("fp16")
    assert resolve_precision("int8", "cpu") == "int8"
    with pytest.raises(ConfigError, match="int8 is for CPUs"):
        resolve_precision("int8", "cuda")
    assert resolve_precision("fp32") == "fp32"
    assert resolve_precision("auto") == ("bf16" if native_bf16("cpu") else "fp32")
    with pytest.raises(ConfigError, match="invalid tracker options"):
        vos.config.tracker_config(precision="half")
    with pytest.raises(ConfigError, match="invalid tracker options"):
        vos.config.tracker_config(compile="sometimes")


@pytest.mark.skipif(native_bf16("cpu"), reason="this CPU has native bf16: nothing to warn about")
def test_bf16_without_native_support_warns():
    with pytest.warns(RuntimeWarning, match="slower than fp32"):
        assert resolve_precision("bf16", "cpu") == "bf16"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        resolve_precision("auto", "cpu")


def test_devices_are_checked():
    assert check_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="not a torch device"):
        check_device("gpu0")
    with pytest.raises(ConfigError, match="only cpu and cuda"):
        check_device("meta")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available here"):
            check_device("cuda")


def test_load_model_refuses_before_reading_the_checkpoint(tmp_path):
    missing = tmp_path / "nothing.pt"  # the option is checked first, so no file is needed
    with pytest.raises(ConfigError, match="precision must be one of"):
        vos.load_model("sam2.1_hiera_t", checkpoint=missing, precision="int4")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            vos.load_model("sam2.1_hiera_t", checkpoint=missing, device="cuda")


def test_cli_and_serve_config_take_the_options(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "vos.cli", "track", "x.mp4", "--precision", "fp16"], capture_output=True, text=True
    )
    assert out.returncode == 2 and "--precision" in out.stderr and "fp16" in out.stderr
    out = subprocess.run([sys.executable, "-m", "vos.cli", "track", "--help"], capture_output=True, text=True)
    assert all(flag in out.stdout for flag in ("--precision", "--compile", "--threads"))
    out = subprocess.run([sys.executable, "-m", "vos.cli", "bench", "davis", "--help"], capture_output=True, text=True)
    assert all(flag in out.stdout for flag in ("--precision", "--compile", "--threads"))
    streams = [{"id": "a", "source": "x.mp4"}]
    config = EngineConfig(streams=streams, model={"precision": "auto", "threads": 1}, tracker={"compile": True})
    assert (config.model.precision, config.model.threads, config.tracker.compile) == ("auto", 1, True)
    with pytest.raises(ValueError, match="precision"):
        EngineConfig(streams=streams, model={"precision": "fp16"})


def test_projections_go_with_their_memory(tmp_path):
    memory = ObjectMemory(num_maskmem=3, max_obj_ptrs=6, max_cond_frames=2)
    for t in range(6):
        memory.add(t, FrameMemory(torch.zeros(2, 1, 1), torch.zeros(4), projected=object()), conditioning=t == 0)
    kept = {t: (m.features is not None, m.projected is not None) for t, m in memory.recent_frames.items()}
    # frames 1 and 2 left the spatial window (3 frames): only their pointers stay, projections go with the features
    assert kept == {1: (False, False), 2: (False, False), 3: (True, True), 4: (True, True), 5: (True, True)}

    history = ObjectHistory(tmp_path, num_maskmem=3, max_obj_ptrs=4, cache_size=8)
    for t in range(6):
        record = FrameRecord(torch.zeros(1, 1, 4, 4), torch.zeros(1, 1), FrameMemory(torch.zeros(2, 1, 1), torch.zeros(4), object()), False)
        history.put(t, record)
    # records stay cached, but only the last num_maskmem put or read from disk keep their projections
    assert [t for t in range(6) if history.get(t).memory.projected is not None] == [3, 4, 5]


@torch.inference_mode()
def test_bf16_tracker_agrees_with_fp32(davis_root, tracking_checkpoint, tmp_path):
    size, n = 512, 2  # the prompted frame and one tracked from memory
    frames = write_clip(davis_root, "car-shadow", size, tmp_path, n=n)
    gt = ground_truth(davis_root, "car-shadow", 0, size)
    results = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # bf16 on a CPU without native bf16 says it is slower
        for precision in ("fp32", "bf16"):
            model = vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=size, precision=precision)
            assert model.precision == precision
            tracker = vos.Tracker(model, fill_hole_area=0)
            tracker.add_prompt(1, mask=gt)
            tracker.add_prompt(2, points=[(size * 0.2, size * 0.8)], labels=[1])
            results[precision] = [tracker.step(f) for f in frames]
    for f, (a, b) in enumerate(zip(results["fp32"], results["bf16"])):
        for obj in (1, 2):
            assert b.logits[obj].dtype == np.float32 and isinstance(b.scores[obj], float)
            r = np.corrcoef(a.logits[obj].ravel(), b.logits[obj].ravel())[0, 1]
            assert r >= BF16_MIN_PEARSON, (f, obj, r)
            assert np.ptp(a.logits[obj]) > 0.5  # real logits, not an absent object's constant
    # bf16 really ran: the logits differ from fp32's
    assert max(np.abs(a.logits[1] - b.logits[1]).max() for a, b in zip(results["fp32"][1:], results["bf16"][1:])) > 1e-3


def test_weight_caches_follow_the_weights():
    model = vos.build_model("sam2.1_hiera_t", image_size=512).eval()
    with torch.no_grad():
        before = model._slot_keys(torch.float32, 1024)[0].clone()
        model.memory_attention.layers[0].cross_attn_image.k_proj.weight.mul_(2)
        assert torch.allclose(model._slot_keys(torch.float32, 1024)[0], 2 * before, atol=1e-5)
        trunk = model.image_encoder.trunk
        pos = trunk._pos_embed((128, 128)).clone()
        trunk.pos_embed.add_(1.0)
        assert torch.allclose(trunk._pos_embed((128, 128)), pos + 1.0, atol=1e-5)


RELEASE_SCRIPT = """
import os, threading, torch
from vos.device import release_openmp_threads
torch.set_num_threads(2)
counts = []
def work():
    count = lambda: len(os.listdir("/proc/self/task"))
    counts.append(count())
    torch.ones(4_000_000).add_(1)  # parallel work: this thread gets an OpenMP team
    counts.append(count())
    counts.append(release_openmp_threads())
    counts.append(count())
t = threading.Thread(target=work)
t.start(); t.join()
print(*counts)
"""


def test_release_openmp_threads_ends_the_calling_threads_team():
    """The engine calls it where the model was loaded, so that only the inference thread keeps a team
    (two teams on two cores put libgomp into its sleeping wait: the engine ran 20-30 % slower)."""
    from vos.device import _libgomp

    if _libgomp() is None:
        pytest.skip("torch does not run on libgomp here")
    out = subprocess.run([sys.executable, "-c", RELEASE_SCRIPT], capture_output=True, text=True, check=True).stdout
    before, during, released, after = out.split()
    assert int(during) == int(before) + 1  # the team's worker thread
    assert released == "True"
    assert int(after) == int(before)


def test_bf16_model_holds_bf16_matmul_weights_and_refuses_fp32_runs():
    model = vos.build_model("sam2.1_hiera_t", image_size=512).eval()
    model.set_precision("bf16")
    assert model.precision == "bf16"
    assert model.memory_attention.layers[0].linear1.weight.dtype == torch.bfloat16
    assert model.image_encoder.trunk.patch_embed.proj.weight.dtype == torch.bfloat16
    assert model.image_encoder.trunk.pos_embed.dtype == torch.float32  # only what autocast would cast
    assert model.memory_attention.layers[0].norm1.weight.dtype == torch.float32
    with pytest.raises(ConfigError, match="precision='fp32'"):
        vos.Tracker(model, precision="fp32")
    with pytest.raises(ConfigError, match="load it again"):
        model.set_precision("fp32")
    assert vos.Tracker(model).segmenter.precision == "bf16"


@pytest.mark.slow
@torch.inference_mode()
def test_compiled_tracker_equals_eager_on_cpu(davis_root, tracking_checkpoint, tmp_path):
    """compile=True on CPU (inductor; about 2 minutes of compilation on 2 cores)."""
    size = 512
    frames = write_clip(davis_root, "car-shadow", size, tmp_path, n=4)
    gt = ground_truth(davis_root, "car-shadow", 0, size)
    model = vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=size)
    logits = []
    for compile in (False, True):
        tracker = vos.Tracker(model, fill_hole_area=0, compile=compile)
        tracker.add_prompt(1, mask=gt)
        tracker.add_prompt(2, points=[(size * 0.2, size * 0.8)], labels=[1])
        logits.append([np.stack([r.logits[1], r.logits[2]]) for r in map(tracker.step, frames)])
    assert max(np.abs(a - b).max() for a, b in zip(*logits)) <= 1e-4
