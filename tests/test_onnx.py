"""`vos export onnx` and the ONNX Runtime backend: the graphs pass `onnx.checker`, the manifest describes them,
ONNX Runtime computes what the PyTorch model computes in the tracker (≤ 1e-4) for sizes other than the ones traced,
and trackers and sessions on a model loaded with `backend="onnxruntime"` give the PyTorch tracker's masks.

SAM 2.1-T with random weights (the object-score bias shifted, as in the tracker tests) at 512 px.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import vos
from tests.conftest import read_frame
from vos.checkpoints import file_sha256
from vos.errors import ConfigError
from vos.export.onnx import MANIFEST, read_manifest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
try:
    import openvino
except ImportError:  # the openvino extra: its tests skip
    openvino = None
needs_openvino = pytest.mark.skipif(openvino is None, reason="the openvino extra is not installed")

TOLERANCE = 1e-4  # of the output's largest magnitude (at least 1)


@pytest.fixture(scope="module")
def model(tracking_checkpoint):
    return vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=512)


@pytest.fixture(scope="module")
def exported(tracking_checkpoint, tmp_path_factory, model):
    """The export folder, written by the command line."""
    from vos.cli import main

    out = tmp_path_factory.mktemp("onnx") / "tiny-512"
    args = ["export", "onnx", "sam2.1_hiera_t", "--checkpoint", str(tracking_checkpoint), "--image-size", "512"]
    assert main([*args, "--out", str(out), "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def ort_model(tracking_checkpoint, exported):
    return vos.load_model(
        "sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=512, backend="onnxruntime", onnx_dir=exported
    )


class Graphs:
    def __init__(self, folder) -> None:
        self.folder = folder
        self.sessions = {}

    def __call__(self, name: str, **inputs: torch.Tensor) -> list[torch.Tensor]:
        if name not in self.sessions:
            self.sessions[name] = ort.InferenceSession(
                str(self.folder / f"{name}.onnx"), providers=["CPUExecutionProvider"]
            )
        return [torch.from_numpy(x) for x in self.sessions[name].run(None, {k: v.numpy() for k, v in inputs.items()})]


def assert_close(got: torch.Tensor, want: torch.Tensor, what: str, tolerance: float = TOLERANCE) -> None:
    assert got.shape == want.shape, (what, got.shape, want.shape)
    scale = max(1.0, float(want.abs().max()))
    error = float((got - want.float()).abs().max())
    assert error <= tolerance * scale, f"{what}: |error| {error:.2e}, scale {scale:.2e}"


def test_manifest_describes_checked_graphs(exported, tracking_checkpoint):
    manifest = json.loads((exported / MANIFEST).read_text())
    assert manifest["model"] == "sam2.1_hiera_t" and manifest["image_size"] == 512 and manifest["precision"] == "fp32"
    assert manifest["checkpoint_sha256"] == file_sha256(tracking_checkpoint)
    assert set(manifest["graphs"]) == {
        "image_encoder",
        "mask_decoder",
        "mask_prompt",
        "memory_encoder",
        "memory_attention",
    }
    for name, graph in manifest["graphs"].items():
        onnx.checker.check_model(str(exported / graph["file"]), full_check=True)
        inputs = [i.name for i in ort.InferenceSession(str(exported / graph["file"])).get_inputs()]
        assert inputs == [i["name"] for i in graph["inputs"]], name
    attention = {i["name"]: i["shape"] for i in manifest["graphs"]["memory_attention"]["inputs"]}
    assert attention["memory"] == ["objects", "frames", 64, 32, 32] and attention["obj_ptrs"] == [
        "objects",
        "pointers",
        256,
    ]


def test_a_graph_folder_of_another_model_or_size_is_refused(exported, tmp_path):
    assert read_manifest(exported, "sam2.1_hiera_t", 512).image_size == 512
    with pytest.raises(
        ConfigError, match="take 512-px images, not 1024: export the model again with --image-size 1024"
    ):
        read_manifest(exported, image_size=1024)
    with pytest.raises(ConfigError, match="of model sam2.1_hiera_t, not sam2.1_hiera_s"):
        read_manifest(exported, "sam2.1_hiera_s")
    with pytest.raises(ConfigError, match="not a folder written by `vos export onnx`"):
        read_manifest(tmp_path)
    (tmp_path / MANIFEST).write_text((exported / MANIFEST).read_text())
    with pytest.raises(ConfigError, match="image_encoder graph's file image_encoder.onnx is missing"):
        read_manifest(tmp_path)


def test_a_model_loaded_below_fp32_is_refused_for_export(tracking_checkpoint, tmp_path):
    from vos.export.onnx import export_onnx

    int8 = vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=512, precision="int8")
    with pytest.raises(ConfigError, match="cannot be exported to ONNX: it was loaded in int8: load it in fp32"):
        export_onnx(int8, tmp_path)
    assert not list(tmp_path.glob("*.onnx"))


@torch.inference_mode()
def test_onnxruntime_computes_what_the_tracker_computes(exported, model):
    """Each graph against the model code the tracker runs, at sizes the export did not trace: 2 images, 1 and 2
    objects, 1 to 7 memory frames, 1 to 16 pointers, clicks and mask inputs."""
    graphs = Graphs(exported)
    gen = torch.Generator().manual_seed(1)
    images = torch.randn(2, 3, 512, 512, generator=gen)
    embed, pos, hr0, hr1 = graphs("image_encoder", image=images)
    out = model.forward_image(images)
    for got, want, what in zip(
        (embed, hr0, hr1), (out.features[2], out.features[0], out.features[1]), ("embed", "s0", "s1")
    ):
        assert_close(got, want, what)
    assert_close(pos, out.pos[2][:1], "pos")
    embed, pos, high_res = out.features[2][:1], out.pos[2][:1], [f[:1] for f in out.features[:2]]

    for b, points in ((1, 1), (2, 3)):  # the decoder: tracked (no clicks), prompted first frames, corrections
        coords = torch.rand(b, points, 2, generator=gen) * 512
        labels = torch.randint(0, 4, (b, points), generator=gen, dtype=torch.int32)
        mask_input = torch.randn(b, 1, 128, 128, generator=gen) * 5
        has_mask, no_memory = torch.tensor([1.0, 0.0][:b]), torch.tensor([1.0, 1.0][:b])
        feats = embed.expand(b, -1, -1, -1)
        got = graphs(
            "mask_decoder", image_embed=feats, point_coords=coords, point_labels=labels, mask_input=mask_input,
            has_mask_input=has_mask, no_memory=no_memory, high_res_0=high_res[0].expand(b, -1, -1, -1),
            high_res_1=high_res[1].expand(b, -1, -1, -1),
        )  # fmt: skip
        for i in range(b):
            hr = [f.expand(1, -1, -1, -1) for f in high_res]
            masked = mask_input[i : i + 1] if has_mask[i] else None
            want = model.decode(model.add_no_mem_embed(embed), coords[i : i + 1], labels[i : i + 1], masked, hr)
            for g, w, what in zip(got, want, ("masks", "ious", "obj_ptrs", "object_score_logits")):
                assert_close(g[i : i + 1], w, f"decoder {what}, {b} objects")
    mask = (torch.rand(2, 1, 512, 512, generator=gen) > 0.5).float()
    assert_close(graphs("mask_prompt", mask=mask)[0], model.mask_downsample(mask), "mask prompt")

    logits = torch.randn(2, 1, 128, 128, generator=gen) * 8
    scores, binarize = torch.tensor([[3.0], [-2.0]]), torch.tensor([1.0, 0.0])
    [memory] = graphs(
        "memory_encoder", image_embed=embed, mask_logits=logits, object_score_logits=scores, binarize=binarize
    )
    assert_close(memory, model.encode_memory(embed, logits, scores, binarize > 0)[0], "memory encoder")

    for b, slots, distances in ((1, [0], [1]), (2, [0, 0, 1, 3, 4, 5, 6], list(range(1, 17)))):
        memory = torch.randn(b, len(slots), 64, 32, 32, generator=gen).bfloat16().float()  # stored in bf16
        ptrs = torch.randn(b, len(distances), 256, generator=gen)
        max_distance = 15
        projected = [model.project_memory(memory[:, f]) for f in range(len(slots))]
        spatial = [(t, [projected[f][i] for i in range(b)]) for f, t in enumerate(slots)]
        pointers = [(d, ptrs[:, k]) for k, d in enumerate(distances)]
        want = model.condition_on_memory(embed, pos, spatial, pointers, max_distance)
        got = graphs(
            "memory_attention", image_embed=embed, image_pos=pos, memory=memory, memory_slots=torch.tensor(slots),
            obj_ptrs=ptrs, ptr_positions=torch.tensor(distances, dtype=torch.float32) / max_distance,
        )[0]  # fmt: skip
        assert_close(got, want, f"memory attention, {b} objects, {len(slots)} frames")


def test_int8_graphs_agree_with_fp32(exported, tmp_path):
    """ONNX Runtime's dynamic int8 quantization of a graph: smaller, outputs correlated with fp32 (r >= 0.98)."""
    import shutil

    from vos.export.onnx import _quantize

    graphs, quantized = Graphs(exported), Graphs(tmp_path)
    shutil.copy(exported / "memory_attention.onnx", tmp_path / "memory_attention.onnx")
    _quantize(tmp_path / "memory_attention.onnx")
    ops = {node.op_type for node in onnx.load(str(tmp_path / "memory_attention.onnx")).graph.node}
    assert {"MatMulInteger", "DynamicQuantizeLinear"} <= ops
    # int8 matrices; the RoPE tables stay float32
    assert (tmp_path / "memory_attention.onnx").stat().st_size < 0.6 * (exported / "memory_attention.onnx").stat().st_size
    gen = torch.Generator().manual_seed(2)
    inputs = dict(
        image_embed=torch.randn(1, 256, 32, 32, generator=gen), image_pos=torch.randn(1, 256, 32, 32, generator=gen),
        memory=torch.randn(2, 3, 64, 32, 32, generator=gen), memory_slots=torch.tensor([0, 5, 6]),
        obj_ptrs=torch.randn(2, 4, 256, generator=gen), ptr_positions=torch.tensor([0.1, 0.2, 0.3, 0.4]),
    )  # fmt: skip
    fp32, int8 = graphs("memory_attention", **inputs)[0], quantized("memory_attention", **inputs)[0]
    r = np.corrcoef(fp32.flatten().numpy(), int8.flatten().numpy())[0, 1]
    assert 0.98 <= r < 1.0, r  # close, and not the same graph


def test_int8_export_leaves_the_memory_encoder_in_fp32(model, exported, tmp_path):
    """int8 quantizes the heavy graphs only: the memory encoder (no faster quantized) is written as in fp32, and
    says so."""
    from vos.export.graphs import graph_specs
    from vos.export.onnx import OnnxExportSettings, write_graph

    spec = next(s for s in graph_specs(model) if s.name == "memory_encoder")
    info = write_graph(spec, tmp_path, OnnxExportSettings(precision="int8", simplify=False))
    assert not info.quantized
    ops = {node.op_type for node in onnx.load(str(tmp_path / "memory_encoder.onnx")).graph.node}
    assert "MatMul" in ops and not ops & {"MatMulInteger", "DynamicQuantizeLinear"}
    got, want = Graphs(tmp_path), Graphs(exported)
    inputs = dict(zip(spec.inputs, spec.example))
    for g, w in zip(got("memory_encoder", **inputs), want("memory_encoder", **inputs), strict=True):
        assert_close(g, w, "int8 export's memory encoder", tolerance=1e-6)


def test_fp16_graphs_compute_in_float16_with_float32_inputs_and_outputs(model, exported, tmp_path, monkeypatch):
    """fp16 export converts a graph inside only (callers feed and read float32), within 2e-2 of fp32's outputs, and
    refuses a conversion that changes them more. ONNX Runtime's CPU provider runs float16 graphs too (mostly
    through casts): enough to check the files; the GPU tests run the tracker on them."""
    import shutil

    from vos.export import onnx as export
    from vos.export.graphs import graph_specs

    specs = {s.name: s for s in graph_specs(model, objects=2, frames=3, pointers=4, points=2)}
    for name in ("mask_decoder", "memory_attention"):
        shutil.copy(exported / f"{name}.onnx", tmp_path / f"{name}.onnx")
        export._to_fp16(tmp_path / f"{name}.onnx", specs[name])
        graph = onnx.load(str(tmp_path / f"{name}.onnx")).graph
        assert {i.type.tensor_type.elem_type for i in [*graph.input, *graph.output]} <= {1, 6, 7}  # no float16
        assert any(t.data_type == onnx.TensorProto.FLOAT16 for t in graph.initializer)
        inputs = dict(zip(specs[name].inputs, specs[name].example))
        for g, w in zip(Graphs(tmp_path)(name, **inputs), Graphs(exported)(name, **inputs), strict=True):
            assert_close(g, w, f"{name} in fp16", tolerance=export.FP16_TOLERANCE)
            assert g.dtype == torch.float32 and not torch.equal(g, w)
    monkeypatch.setattr(export, "FP16_TOLERANCE", 1e-7)
    shutil.copy(exported / "memory_attention.onnx", tmp_path / "memory_attention.onnx")
    with pytest.raises(ConfigError, match="memory_attention graph in float16 changes its output conditioned"):
        export._to_fp16(tmp_path / "memory_attention.onnx", specs["memory_attention"])


def test_fp16_graphs_are_refused_on_a_cpu(tracking_checkpoint, exported, tmp_path):
    import shutil

    folder = shutil.copytree(exported, tmp_path / "fp16")
    manifest = json.loads((folder / MANIFEST).read_text())
    (folder / MANIFEST).write_text(json.dumps({**manifest, "precision": "fp16"}))
    load = dict(checkpoint=tracking_checkpoint, image_size=512, backend="onnxruntime", onnx_dir=folder)
    with pytest.raises(ConfigError, match="are fp16, for GPUs .*: run them with --device cuda"):
        vos.load_model("sam2.1_hiera_t", precision="auto", **load)
    with pytest.raises(ConfigError, match="are fp16, not fp32: give precision auto, or export the model again with"):
        vos.load_model("sam2.1_hiera_t", **load)


@torch.inference_mode()
def test_onnxruntime_stages_compute_what_the_pytorch_stages_compute(model, ort_model):
    """The backend's calls as the segmenter makes them. Pointers are scaled up 40 times: at their own scale, with
    random weights, normalizing their temporal distances by 16 instead of 15 changes the conditioned features by
    less than 1e-4 of their scale; at 40 times, by 1e-2 of it, while the two runtimes' attention (peakier at that
    scale) differs by 1e-4 of it: checked within 5e-4."""
    from vos.memory.memory_bank import FrameMemory
    from vos.tracking.onnx_stages import OnnxStages, onnx_stages
    from vos.tracking.stages import stages

    pt, ox = stages(model), onnx_stages(ort_model)
    assert isinstance(ox, OnnxStages) and ox.graphs.used == set(ox.graphs.manifest.graphs)
    gen = torch.Generator().manual_seed(3)
    images = torch.randn(2, 3, 512, 512, generator=gen)
    (feats, pos), (ort_feats, ort_pos) = pt.encode_images(images), ox.encode_images(images)
    for got, want in zip([*ort_feats, ort_pos], [*feats, pos], strict=True):
        assert_close(got, want, "image features")
    top, high_res = feats[-1][:1], [f[:1] for f in feats[:-1]]
    b = 2
    spatial = [
        (t, [FrameMemory(torch.randn(64, 32, 32, generator=gen).bfloat16(), None) for _ in range(b)])
        for t in (0, 4, 6)
    ]
    pointers = [(d, torch.randn(b, 256, generator=gen) * 40) for d in (-3, 1, 2, 5)]
    want = pt.condition(top, pos, spatial, pointers, 15)
    assert_close(ox.condition(top, pos, spatial, pointers, 15), want, "memory attention", tolerance=5e-4)
    coords, labels = torch.rand(1, 2, 2, generator=gen) * 512, torch.tensor([[1, 0]], dtype=torch.int32)
    for mask_input, no_memory in ((None, True), (torch.randn(1, 1, 128, 128, generator=gen) * 8, False)):
        want = pt.decode(top, coords, labels, mask_input, high_res, no_memory)
        for g, w in zip(ox.decode(top, coords, labels, mask_input, high_res, no_memory), want, strict=True):
            assert_close(g, w, f"decoder, no_memory {no_memory}")
    mask = (torch.rand(1, 1, 512, 512, generator=gen) > 0.5).float()
    assert_close(ox.mask_prompt(mask), pt.mask_prompt(mask), "mask prompt")
    logits, scores = torch.randn(b, 1, 128, 128, generator=gen) * 8, torch.tensor([[2.0], [-1.0]])
    binarize = torch.tensor([True, False])
    want = pt.encode_memory(top, logits, scores, binarize)
    assert_close(ox.encode_memory(top, logits, scores, binarize), want, "memory encoder")
    assert ox.project(want) is None and len(pt.project(want)) == b


@torch.inference_mode()
def assert_memory_attention_alike(model, on_ort) -> None:
    """The conditioned features of both runtimes for one memory frame and for three (pooled by EfficientTAM _1 /
    _2), two objects."""
    from vos.memory.memory_bank import FrameMemory
    from vos.tracking.onnx_stages import onnx_stages
    from vos.tracking.stages import stages

    gen = torch.Generator().manual_seed(4)
    feats, pos = stages(model).encode_images(torch.randn(1, 3, 512, 512, generator=gen))
    pointers = [(d, torch.randn(2, model.hidden_dim, generator=gen)) for d in (1, 2)]
    for slots in ((0,), (0, 5, 6)):
        spatial = [
            (t, [FrameMemory(torch.randn(*model.memory_shape, generator=gen).bfloat16(), None) for _ in range(2)])
            for t in slots
        ]
        want = stages(model).condition(feats[-1], pos, spatial, pointers, 15)
        got = onnx_stages(on_ort).condition(feats[-1], pos, spatial, pointers, 15)
        assert_close(got, want, f"memory attention on {len(slots)} frame(s)")


def track(model, frames: list[np.ndarray], remove_at: int | None = None) -> list:
    """Object 1 from a click and object 2 from a mask on frame 0, a correction of object 1 on frame 2 (a click
    added, negative), object 3 from a box on frame 4, object 2 removed on frame `remove_at`; native-size frames."""
    h, w = frames[0].shape[:2]
    mask = np.zeros((h, w), bool)
    mask[h // 3 : h // 2, w // 3 : w // 2] = True
    tracker = vos.Tracker(model)
    results = []
    for i, frame in enumerate(frames):
        if i == 0:
            tracker.add_prompt(1, points=[[w * 0.6, h * 0.7]], labels=[1])
            tracker.add_prompt(2, mask=mask)
        if i == 2:
            tracker.add_prompt(1, points=[[w * 0.6, h * 0.7], [w * 0.2, h * 0.3]], labels=[1, 0])
        if i == 4:
            tracker.add_prompt(3, box=[20, 30, 300, 200])
        if i == remove_at:
            tracker.remove_object(2)
        results.append(tracker.step(frame))
    return results


def assert_same_results(got: list, want: list) -> None:
    """Logits within 1e-4 of their scale and scores within 1e-4 on every frame, for every object."""
    for g, w in zip(got, want, strict=True):
        assert g.logits.keys() == w.logits.keys()
        for o in w.logits:
            assert_close(torch.from_numpy(g.logits[o]), torch.from_numpy(w.logits[o]), f"frame {w.frame_index} {o}")
            assert abs(g.scores[o] - w.scores[o]) <= TOLERANCE * max(1.0, abs(w.scores[o])), (w.frame_index, o)


def test_onnxruntime_tracker_gives_the_pytorch_trackers_masks(davis_root, model, ort_model):
    frames = [read_frame(davis_root, "car-shadow", i) for i in range(7)]
    want, got = track(model, frames), track(ort_model, frames)
    assert_same_results(got, want)
    assert [sorted(r.masks) for r in got] == [[1, 2]] * 4 + [[1, 2, 3]] * 3
    last = got[-1]
    assert all(last.scores[o] > 0 and last.masks[o].any() for o in (1, 2, 3))  # tracked, not judged absent


def test_onnxruntime_session_propagates_both_ways_as_pytorch_does(davis_root, model, ort_model, tmp_path):
    """`VideoSession`: prompts on a middle frame, forward then reverse propagation (pointer distances normalized
    by the clip's length)."""
    from PIL import Image

    for i in range(5):
        Image.fromarray(read_frame(davis_root, "car-shadow", i)).save(tmp_path / f"{i:05d}.jpg", quality=95)
    runs = []
    for m in (model, ort_model):
        with vos.VideoSession(m, tmp_path, store_dir=tmp_path) as session:
            session.add_prompt(2, 1, points=[[500, 300]], labels=[1])
            session.add_prompt(2, 2, box=[50, 50, 300, 250])
            runs.append([*session.propagate(2), *session.propagate(2, reverse=True)])
    assert [r.frame_index for r in runs[1]] == [2, 3, 4, 2, 1, 0]
    assert_same_results(runs[1], runs[0])


@pytest.mark.parametrize(
    "used", [{"image_encoder", "memory_encoder"}, {"memory_attention", "mask_decoder", "mask_prompt"}], ids=str
)
def test_stages_split_between_the_runtimes_give_the_pytorch_trackers_masks(
    davis_root, model, tracking_checkpoint, exported, used
):
    """What `backend="auto"` may choose: some stages on ONNX Runtime, the others on PyTorch (memories projected for
    PyTorch's memory attention, unprojected for the graph's)."""
    mixed = vos.load_model(
        "sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=512, backend="onnxruntime", onnx_dir=exported
    )
    mixed.onnx_graphs.used = frozenset(used)
    frames = [read_frame(davis_root, "car-shadow", i) for i in range(5)]
    assert_same_results(track(mixed, frames), track(model, frames))


def test_auto_runs_each_stage_on_the_runtime_it_measured_fastest(tracking_checkpoint, exported, caplog):
    """Per stage the fastest of PyTorch, ONNX Runtime and OpenVINO (where installed) by a margin over PyTorch; the
    mask prompt on the decoder's runtime; the times and choices logged; the tracker on the mix gives PyTorch's
    masks (checked by test_stages_split_between_the_runtimes_give_the_pytorch_trackers_masks for one split)."""
    from vos.export.stage_timing import fastest

    times = {"image_encoder": (1.0, 0.9, 0.5), "memory_attention": (1.0, 0.97, 0.99), "mask_decoder": (0.02, 0.01, 0.015),
             "memory_encoder": (0.02, 0.03, 0.04)}  # fmt: skip
    graphs = {"image_encoder", "mask_decoder", "mask_prompt", "memory_encoder", "memory_attention"}
    assert fastest(times, graphs) == {"image_encoder": 2, "mask_decoder": 1, "mask_prompt": 1}
    with caplog.at_level("INFO", logger="vos.build"):
        auto = vos.load_model(checkpoint=tracking_checkpoint, image_size=512, backend="auto", onnx_dir=exported)
    (message,) = [r.getMessage() for r in caplog.records if "backend auto" in r.getMessage()]
    runtimes = "PyTorch / ONNX Runtime / OpenVINO" if openvino is not None else "PyTorch / ONNX Runtime per"
    assert runtimes in message
    for stage in ("image_encoder", "memory_attention", "mask_decoder", "memory_encoder"):
        assert f"{stage} " in message
    used = auto.onnx_graphs.used if auto.onnx_graphs is not None else frozenset()
    picks = ", ".join(f"{g}: {auto.onnx_graphs.runtime_of(g)}" for g in sorted(used)) if used else "nothing"
    assert used <= graphs and message.endswith(picks)


def test_the_onnxruntime_backend_refuses_graphs_it_cannot_pair(tracking_checkpoint, tiny_checkpoint, exported):
    load = vos.load_model
    with pytest.raises(ConfigError, match="exported from other weights .* export them again with --checkpoint"):
        load("sam2.1_hiera_t", checkpoint=tiny_checkpoint, image_size=512, backend="onnxruntime", onnx_dir=exported)
    with pytest.raises(ConfigError, match="take 512-px images, not 1024"):
        load("sam2.1_hiera_t", checkpoint=tracking_checkpoint, backend="onnxruntime", onnx_dir=exported)
    with pytest.raises(ConfigError, match="are fp32, not int8: give precision fp32"):
        load(checkpoint=tracking_checkpoint, image_size=512, precision="int8", backend="onnxruntime", onnx_dir=exported)
    with pytest.raises(ConfigError, match=r"is run by --backend onnxruntime, openvino or auto"):
        load(checkpoint=tracking_checkpoint, image_size=512, onnx_dir=exported)
    with pytest.raises(ValueError, match=r"backend onnxruntime runs the graphs .* give their folder \(--onnx-dir\)"):
        vos.ModelSettings(backend="onnxruntime")


def test_track_runs_on_onnxruntime_from_the_command_line(
    davis_root, tracking_checkpoint, exported, ort_model, tmp_path
):
    """`vos track --backend onnxruntime --onnx-dir DIR`: the masks the Python API gives; --compile is refused."""
    from PIL import Image

    from vos.cli import main

    clip = tmp_path / "clip"
    clip.mkdir()
    frames = [read_frame(davis_root, "car-shadow", i) for i in range(3)]
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(clip / f"{i:05d}.png")
    flags = ["--checkpoint", str(tracking_checkpoint), "--image-size", "512", "--backend", "onnxruntime",
             "--onnx-dir", str(exported), "--point", "1=500,300", "--quiet"]  # fmt: skip
    assert main(["track", str(clip), "--out", str(tmp_path / "out"), *flags]) == 0
    lines = [json.loads(line) for line in (tmp_path / "out" / "masks.jsonl").read_text().splitlines()]
    tracker = vos.Tracker(ort_model)
    tracker.add_prompt(1, points=[[500, 300]], labels=[1])
    for line, frame in zip(lines, frames, strict=True):
        assert line["objects"][0]["area"] == int(tracker.step(frame).masks[1].sum())
    assert main(["track", str(clip), "--out", str(tmp_path / "x"), "--compile", *flags]) == 2


def torch_free_python(venv) -> Path:
    """A venv whose Python has numpy, Pillow and ONNX Runtime (this interpreter's, linked in) and nothing else."""
    import subprocess
    import sys
    import sysconfig

    import numpy
    import onnxruntime
    import PIL

    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True,
        text=True,
    ).stdout.strip()  # fmt: skip
    site = Path(sysconfig.get_paths()["purelib"])
    for module in (numpy, onnxruntime, PIL):
        package = Path(module.__file__).parent
        for linked in [package, *site.glob(f"{package.name.lower()}*.libs"), *site.glob("pillow*.libs")]:
            target = Path(purelib) / linked.name
            if not target.exists():
                target.symlink_to(linked)
    return python


def test_the_torch_free_example_tracks_as_vos_does(davis_root, exported, ort_model, tmp_path):
    """examples/onnx_track.py in a venv without torch: the masks and object scores of vos's tracker (without hole
    filling) on native-size frames, two objects, one with two clicks; a folder it cannot read gets one line."""
    import shutil
    import subprocess

    assert_example_tracks_as_vos(exported, ort_model, davis_root, tmp_path)
    corrupt = shutil.copytree(exported, tmp_path / "corrupt", ignore=shutil.ignore_patterns("image_encoder.onnx"))
    (corrupt / "image_encoder.onnx").write_bytes(b"not a graph")
    example = Path(__file__).resolve().parents[1] / "examples" / "onnx_track.py"
    python = torch_free_python(tmp_path / "venv")
    for folder, frames, said in (
        (tmp_path / "missing", tmp_path / "clip", "no readable manifest.json"),
        (corrupt, tmp_path / "clip", "image_encoder.onnx: ONNX Runtime cannot load it"),
        (exported, tmp_path / "no-frames", "is not a folder of frames"),
    ):
        run = subprocess.run([python, example, folder, frames, "--point", "1=5,5", "--out", tmp_path / "o"],
                             capture_output=True, text=True, timeout=300)  # fmt: skip
        assert run.returncode == 1 and said in run.stderr and "Traceback" not in run.stderr, run.stderr


def assert_example_tracks_as_vos(folder: Path, model, davis_root: Path, tmp_path: Path) -> None:
    import subprocess

    from PIL import Image

    python = torch_free_python(tmp_path / "venv")
    assert subprocess.run([python, "-c", "import torch"], capture_output=True).returncode != 0
    clip = tmp_path / "clip"
    clip.mkdir()
    frames = [read_frame(davis_root, "car-shadow", i) for i in range(4)]
    for i, frame in enumerate(frames):
        Image.fromarray(frame).save(clip / f"{i:05d}.png")
    example = Path(__file__).resolve().parents[1] / "examples" / "onnx_track.py"
    run = subprocess.run(
        [python, example, folder, clip, "--point", "1=500,300", "--point", "2=150,100", "--point", "2=600,400,0",
         "--out", tmp_path / "out"], capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    printed = [dict(item.split(":") for item in line.split()[1:]) for line in run.stdout.splitlines()]
    tracker = vos.Tracker(model, fill_hole_area=0)
    tracker.add_prompt(1, points=[[500, 300]], labels=[1])
    tracker.add_prompt(2, points=[[150, 100], [600, 400]], labels=[1, 0])
    for i, frame in enumerate(frames):
        want = tracker.step(frame)
        for obj_id in (1, 2):
            got = np.asarray(Image.open(tmp_path / "out" / f"{i:05d}_{obj_id}.png")) > 0
            assert np.mean(got != want.masks[obj_id]) <= 1e-4, (i, obj_id)
            assert abs(float(printed[i][str(obj_id)]) - want.scores[obj_id]) <= 0.01, (i, obj_id)
        assert want.masks[1].any() and want.masks[2].any()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["sam2_hiera_t", "efficienttam_ti", "edgetam"])
@torch.inference_mode()
def test_other_families_export_and_run_in_onnxruntime(name, tmp_path):
    """SAM 2.0 (no pointer positions), a one-map trunk (no high-resolution features) and EdgeTAM (perceiver
    latents as memory): every graph in ONNX Runtime equals its PyTorch module at sizes other than the traced ones."""
    from vos.build import build_model
    from vos.export.graphs import graph_specs
    from vos.export.onnx import export_onnx

    torch.manual_seed(0)
    model = build_model(name, image_size=512).eval()
    manifest = export_onnx(model, tmp_path)
    graphs = Graphs(tmp_path)
    for spec in graph_specs(model, objects=1, frames=7, pointers=16, points=1):
        assert [i.name for i in manifest.graphs[spec.name].inputs] == list(spec.inputs)
        got = graphs(spec.name, **dict(zip(spec.inputs, spec.example)))
        want = spec.module(*spec.example)
        for g, w in zip(got, want if isinstance(want, tuple) else (want,)):
            assert_close(g, w, f"{name} {spec.name}")


@pytest.mark.parametrize(
    "name",
    [
        "efficienttam_ti_1",
        pytest.param("edgetam", marks=pytest.mark.slow),  # the suite's time; EdgeTAM's graphs: also slow, above
        pytest.param("efficienttam_ti_2", marks=pytest.mark.slow),
    ],
)
def test_efficient_trackers_track_on_onnxruntime_as_on_pytorch(name, davis_root, tmp_path):
    """EdgeTAM's memory is its perceiver's latents (global ones unrotated, 2-D ones on their own grid); EfficientTAM
    _1 / _2 pool two memory frames or more (a logit bias, a key shift): the ONNX Runtime tracker gives the PyTorch
    tracker's masks (a click, a mask prompt, a correction, a box), and so does the torch-free example. Graphs
    unslimmed: slimming is checked on SAM 2.1-T."""
    from vos.build import save_random_checkpoint
    from vos.export.onnx import OnnxExportSettings, export_onnx

    checkpoint = save_random_checkpoint(name, tmp_path / f"{name}.pt")
    model = vos.load_model(name, checkpoint=checkpoint, image_size=512)
    manifest = export_onnx(model, tmp_path / "onnx", OnnxExportSettings(simplify=False), checkpoint=checkpoint)
    assert ("memory_attention_pooled" in manifest.graphs) == name.startswith("efficienttam")
    on_ort = vos.load_model(name, checkpoint=checkpoint, image_size=512, backend="onnxruntime",
                            onnx_dir=tmp_path / "onnx")  # fmt: skip
    assert_memory_attention_alike(model, on_ort)
    frames = [read_frame(davis_root, "car-shadow", i) for i in range(6)]
    got, want = track(on_ort, frames), track(model, frames)
    assert_same_results(got, want)
    assert all(got[-1].scores[o] > 0 and got[-1].masks[o].any() for o in (1, 2, 3))
    assert_example_tracks_as_vos(tmp_path / "onnx", on_ort, davis_root, tmp_path)
    if openvino is not None:
        on_ov = vos.load_model(name, checkpoint=checkpoint, image_size=512, backend="openvino", onnx_dir=tmp_path / "onnx")
        assert_memory_attention_alike(model, on_ov)
        assert_same_results(track(on_ov, frames, remove_at=4), track(model, frames, remove_at=4))


@pytest.mark.slow
def test_onnxruntime_tracker_gives_the_pytorch_trackers_masks_at_1024(davis_root, tracking_checkpoint, tmp_path):
    from vos.export.onnx import export_onnx

    model = vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=1024)
    export_onnx(model, tmp_path, checkpoint=tracking_checkpoint)
    on_ort = vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=1024, backend="onnxruntime",
                            onnx_dir=tmp_path)  # fmt: skip
    frames = [read_frame(davis_root, "car-shadow", i) for i in range(6)]
    got, want = track(on_ort, frames), track(model, frames)
    assert_same_results(got, want)
    assert all(got[-1].scores[o] > 0 and got[-1].masks[o].any() for o in (1, 2, 3))


# -- OpenVINO: the same graphs on another CPU runtime ------------------------------------------------------------


@pytest.fixture(scope="module")
def openvino_cache(tmp_path_factory):
    """$VOS_CACHE_DIR for the module: OpenVINO's compiled models go to its openvino/ folder."""
    with pytest.MonkeyPatch.context() as patch:
        folder = tmp_path_factory.mktemp("cache")
        patch.setenv("VOS_CACHE_DIR", str(folder))
        yield folder / "openvino"


def load_on_openvino(checkpoint, folder, precision="fp32", **options):
    return vos.load_model(
        "sam2.1_hiera_t", checkpoint=checkpoint, image_size=512, backend="openvino", onnx_dir=folder,
        precision=precision, **options,
    )  # fmt: skip


@needs_openvino
def test_openvino_tracker_gives_the_pytorch_trackers_masks(davis_root, model, tracking_checkpoint, exported, openvino_cache):
    """Two objects from a click and a mask, a correction, a box, a removal: OpenVINO fp32 within 1e-4 of PyTorch.
    A second load finds the compiled models in OpenVINO's cache."""
    import time

    from vos.export.openvino_runtime import OpenVinoGraphs

    started = time.perf_counter()
    on_ov = load_on_openvino(tracking_checkpoint, exported)
    first = time.perf_counter() - started
    assert isinstance(on_ov.onnx_graphs, OpenVinoGraphs) and on_ov.onnx_graphs.compute_precision == "fp32"
    cached = sorted(openvino_cache.iterdir())
    assert len(cached) >= len(on_ov.onnx_graphs.manifest.graphs)  # a blob per compiled graph
    started = time.perf_counter()
    load_on_openvino(tracking_checkpoint, exported)
    print(f"OpenVINO load: {first:.2f} s compiling, {time.perf_counter() - started:.2f} s from the cache")
    assert sorted(openvino_cache.iterdir()) == cached  # read, not written again
    frames = [read_frame(davis_root, "car-shadow", i) for i in range(7)]
    got, want = track(on_ov, frames, remove_at=5), track(model, frames, remove_at=5)
    assert_same_results(got, want)
    assert [sorted(r.masks) for r in got] == [[1, 2]] * 4 + [[1, 2, 3]] + [[1, 3]] * 2
    assert all(got[-1].scores[o] > 0 and got[-1].masks[o].any() for o in (1, 3))


@needs_openvino
def test_openvino_bf16_agrees_with_fp32(davis_root, model, tracking_checkpoint, exported, openvino_cache):
    """bf16 inside the graphs (CPUs with AVX-512 BF16 or AMX): logits correlate (Pearson r >= 0.98) with the fp32
    PyTorch tracker's and masks overlap (IoU >= 0.95) on every frame and object; both printed."""
    from vos.export.openvino_runtime import native_bf16

    if not native_bf16(openvino.Core()):
        pytest.skip("no native bf16 on this CPU (the refusal is tested below)")
    on_bf16 = load_on_openvino(tracking_checkpoint, exported, precision="bf16")
    assert on_bf16.onnx_graphs.compute_precision == "bf16"
    frames = [read_frame(davis_root, "car-shadow", i) for i in range(7)]
    worst_r, worst_iou = agreement(track(on_bf16, frames, remove_at=5), track(model, frames, remove_at=5))
    print(f"OpenVINO bf16 against PyTorch fp32: logits r >= {worst_r:.4f}, mask IoU >= {worst_iou:.4f}")
    assert worst_r >= 0.98 and worst_iou >= 0.95


def agreement(got: list, want: list) -> tuple[float, float]:
    """The lowest per-frame, per-object Pearson r of the logits and mask IoU of two runs' results."""
    worst_r, worst_iou = 1.0, 1.0
    for g, w in zip(got, want, strict=True):
        assert g.masks.keys() == w.masks.keys()
        for o in w.masks:
            worst_r = min(worst_r, float(np.corrcoef(g.logits[o].ravel(), w.logits[o].ravel())[0, 1]))
            union = np.logical_or(g.masks[o], w.masks[o]).sum()
            worst_iou = min(worst_iou, np.logical_and(g.masks[o], w.masks[o]).sum() / union if union else 1.0)
    return worst_r, worst_iou


@needs_openvino
def test_everything_mode_runs_on_the_graphs(davis_root, model, tracking_checkpoint, exported, openvino_cache):
    """`vos.MaskGenerator` on a model loaded with its graphs: the image encoder and the prompted decoder run on ONNX
    Runtime / OpenVINO fp32, and the records are PyTorch's (count, order, each mask IoU >= 0.99, scores within
    1e-3). Every predicted IoU passes (random weights predict low ones), so a hundred masks are compared."""
    from tests.test_segment import FAST, assert_same_records
    from vos.segment import MaskGenerator

    settings = {**FAST, "pred_iou_thresh": 0.0}
    frame = read_frame(davis_root, "car-shadow", 0)
    want = MaskGenerator(model, **settings).generate(frame)
    for on_graphs in (
        vos.load_model("sam2.1_hiera_t", checkpoint=tracking_checkpoint, image_size=512, backend="onnxruntime",
                       onnx_dir=exported),
        load_on_openvino(tracking_checkpoint, exported),
    ):  # fmt: skip
        ran, run = [], on_graphs.onnx_graphs.run
        on_graphs.onnx_graphs.run = lambda name, **inputs: ran.append(name) or run(name, **inputs)
        assert_same_records(MaskGenerator(on_graphs, **settings).generate(frame), want)
        assert ran.count("image_encoder") == 1 and ran.count("mask_decoder") == 64 // 16, ran  # 16 clicks a group


@needs_openvino
def test_openvino_static_int8_agrees_with_fp32_and_is_cached(
    davis_root, model, tracking_checkpoint, exported, openvino_cache, tmp_path, monkeypatch
):  # fmt: skip
    """int8: the image encoder quantized by NNCF (FakeQuantize in its graph), calibrated on the shipped frames; the
    tracker's logits correlate (r >= 0.98) with PyTorch fp32's; a second load reads the cached int8 graph (NNCF not
    called); other calibration frames make another graph. Mask IoU is held to 0.9 here, not 0.95: with random
    weights the logits hover about 0, so a 2% feature error moves mask edges (worst frame and object 0.9496, r
    0.9996; OpenVINO bf16 0.988)."""
    import nncf

    from vos.export import quantize

    on_int8 = load_on_openvino(tracking_checkpoint, exported, precision="int8")
    assert on_int8.onnx_graphs.compute_precision == "int8"
    [cached] = (openvino_cache / "int8").glob("*/image_encoder.xml")
    quantized_ops = {op.get_type_name() for op in openvino.Core().read_model(cached).get_ops()}
    assert "FakeQuantize" in quantized_ops
    frames = [read_frame(davis_root, "car-shadow", i) for i in range(7)]
    worst_r, worst_iou = agreement(track(on_int8, frames, remove_at=5), track(model, frames, remove_at=5))
    print(f"OpenVINO int8 against PyTorch fp32: logits r >= {worst_r:.4f}, mask IoU >= {worst_iou:.4f}")
    assert 0.98 <= worst_r < 1.0 and worst_iou >= 0.9  # close, and not the fp32 graphs

    def never(*args, **kwargs):
        raise AssertionError("quantized again: the cache was not used")

    monkeypatch.setattr(nncf, "quantize", never)
    load_on_openvino(tracking_checkpoint, exported, precision="int8")
    own = tmp_path / "frames"
    own.mkdir()
    (own / "a.png").write_bytes((quantize.CALIBRATION_DIR / "dog-00000.jpg").read_bytes())
    with pytest.raises(AssertionError, match="quantized again"):
        load_on_openvino(tracking_checkpoint, exported, precision="int8", calibrate=own)


@needs_openvino
def test_openvino_refusals_are_plain(tracking_checkpoint, exported, openvino_cache, tmp_path, monkeypatch):
    """bf16 where it would be emulated, int8, a GPU, a graph OpenVINO cannot read, a backend vos does not have."""
    import shutil

    with pytest.raises(ConfigError, match="computes in fp32, bf16, int8, auto, not fp16"):
        load_on_openvino(tracking_checkpoint, exported, precision="fp16")
    with pytest.raises(ConfigError, match=r"--calibrate DIR\) is for backend openvino with precision int8"):
        load_on_openvino(tracking_checkpoint, exported, calibrate=tmp_path)
    with pytest.raises(ConfigError, match="holds no JPEG or PNG frames"):
        load_on_openvino(tracking_checkpoint, exported, precision="int8", calibrate=tmp_path)
    with pytest.raises(ConfigError, match="runs on the CPU, not cuda"):  # (a CPU torch refuses cuda before)
        vos.build._openvino_graphs(exported, read_manifest(exported), "fp32", "cuda")
    monkeypatch.setattr("vos.export.openvino_runtime.native_bf16", lambda core: False)
    with pytest.raises(ConfigError, match="no native bf16 .* give --precision fp32"):
        load_on_openvino(tracking_checkpoint, exported, precision="bf16")
    assert load_on_openvino(tracking_checkpoint, exported, precision="auto").onnx_graphs.compute_precision == "fp32"
    broken = tmp_path / "broken"
    shutil.copytree(exported, broken)
    (broken / "mask_decoder.onnx").write_bytes(b"not a graph")
    with pytest.raises(ConfigError, match="OpenVINO cannot load .*mask_decoder.onnx .* export the model again"):
        load_on_openvino(tracking_checkpoint, broken)
    with pytest.raises(ConfigError, match="backend must be one of pytorch, onnxruntime, openvino, auto, not 'tensorrt'"):
        vos.load_model(checkpoint=tracking_checkpoint, image_size=512, backend="tensorrt", onnx_dir=exported)
