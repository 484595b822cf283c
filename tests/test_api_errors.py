"""The Python entry points refuse bad arguments as the command line does: `vos.ConfigError` in plain sentences (no
pydantic dump, no URL) that name the allowed values; the same problem through the CLI reads the same."""

from __future__ import annotations

import pytest

import vos
from vos.errors import ConfigError

DATA = "tests/data/davis2016-val/JPEGImages/480p/car-shadow"
PYDANTIC_WORDS = ("pydantic", "type=", "For further information", "validation error", "input_value")


@pytest.fixture(scope="module")
def model(tiny_checkpoint):
    return vos.load_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, image_size=512)


def api_cases(checkpoint):
    load = dict(checkpoint=checkpoint, image_size=512)
    return {
        "backend": (lambda m: vos.load_model("sam2.1_hiera_t", **load, backend="tensorrt"), "pytorch, onnxruntime, openvino, auto"),
        "precision": (lambda m: vos.load_model("sam2.1_hiera_t", **load, precision="fp16"), "fp32, bf16, int8, auto"),
        "device": (lambda m: vos.load_model("sam2.1_hiera_t", **load, device="tpu"), "use cpu, cuda or cuda:N"),
        "image size": (lambda m: vos.load_model("sam2.1_hiera_t", checkpoint=checkpoint, image_size=700), "one of (512, 1024)"),
        "image size type": (lambda m: vos.load_model("sam2.1_hiera_t", checkpoint=checkpoint, image_size="big"), "valid integer"),
        "model name": (lambda m: vos.load_model("sam9", checkpoint=checkpoint), "available: edgetam"),
        "tracker zero": (lambda m: vos.Tracker(m, max_objects=0), "max_objects: Input should be greater than or equal to 1"),
        "tracker type": (lambda m: vos.Tracker(m, fill_hole_area="x"), "fill_hole_area: Input should be a valid integer"),
        "tracker unknown": (lambda m: vos.Tracker(m, max_object=3), "the options: fill_hole_area, non_overlap_masks"),
        "session zero": (lambda m: vos.VideoSession(m, DATA, max_cond_frames=0), "max_cond_frames: Input should be greater"),
        "generator negative": (lambda m: vos.MaskGenerator(m, points_per_side=-4), "points_per_side: Input should be greater"),
        "generator type": (lambda m: vos.MaskGenerator(m, pred_iou_thresh="high"), "pred_iou_thresh: Input should be a valid number"),
        "export": (lambda m: export(m, {"opset": 5}), "opset: Input should be greater than or equal to 18"),
        "engine": (lambda m: vos.Engine({"streams": [{"id": "a", "source": DATA}], "tracker": {"max_objects": -1}}, m),
                   "tracker.max_objects: Input should be greater than or equal to 1"),
    }  # fmt: skip


def export(model, settings):
    from vos.export.onnx import export_onnx

    return export_onnx(model, "/nonexistent/never-written", settings=settings)


@pytest.mark.parametrize("case", list(api_cases(None)))
def test_python_entry_points_refuse_in_plain_words(case, model, tiny_checkpoint):
    call, said = api_cases(tiny_checkpoint)[case]
    with pytest.raises(ConfigError) as refused:
        call(model)
    message = str(refused.value)
    assert said in message and not any(word in message for word in PYDANTIC_WORDS), message


@pytest.mark.parametrize(
    "flags, api_case",
    [
        (["--max-objects", "0"], "tracker zero"),
        (["--fill-hole-area", "x"], None),  # argparse refuses the type before the settings: its own words
        (["--image-size", "700"], "image size"),
        (["--device", "tpu"], "device"),
    ],
)
def test_the_command_line_says_what_the_python_api_says(flags, api_case, tiny_checkpoint, model, tmp_path, capsys):
    from vos.cli import main

    args = ["track", DATA, "--point", "1=10,10", "--out", str(tmp_path / "out"), "--checkpoint", str(tiny_checkpoint)]
    try:
        code = main([*args, *flags, "--quiet"])
    except SystemExit as e:  # argparse's own refusals
        code = e.code
    assert code == 2
    err = capsys.readouterr().err
    assert not any(word in err for word in PYDANTIC_WORDS), err
    if api_case is None:
        assert "invalid int value: 'x'" in err
        return
    call, _ = api_cases(tiny_checkpoint)[api_case]
    with pytest.raises(ConfigError) as refused:
        call(model)
    sentence = str(refused.value).rsplit(": ", 1)[-1]  # after the place it names (a field, or its flag)
    assert sentence in err, (sentence, err)
