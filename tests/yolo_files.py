"""Hand-made ONNX detector files for tests that need a real file, not a trained model."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def yolo_layout_file(
    path: Path, boxes: list[tuple[float, float, float, float]], classes: list[int], names: dict[int, str],
    size: int = 64,
) -> Path:  # fmt: skip
    """An ONNX file of the YOLO11 layout ((1, 4 + classes, 64) for a (1, 3, size, size) input, `names` in its
    metadata) whose output is constant: the given centre-size boxes (on its input) with their class scoring 0.9."""
    import onnx
    from onnx import TensorProto, helper

    head = np.zeros((1, 4 + len(names), 64), np.float32)
    for i, (box, cls) in enumerate(zip(boxes, classes)):
        head[0, :4, i] = box
        head[0, 4 + cls, i] = 0.9
    value = helper.make_tensor("v", TensorProto.FLOAT, head.shape, head.ravel())
    graph = helper.make_graph(
        [helper.make_node("Constant", [], ["output0"], value=value)], "yolo",
        [helper.make_tensor_value_info("images", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("output0", TensorProto.FLOAT, list(head.shape))],
    )  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.metadata_props.add(key="names", value=str(names))
    onnx.save(model, path)
    return path
