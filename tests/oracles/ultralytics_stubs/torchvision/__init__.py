"""Test-only stand-in for torchvision under Ultralytics (tests/oracles/yolo_reference.py): its PyPI wheels do not
import beside the CPU torch used here. Ultralytics imports torchvision before predicting and then calls
`torchvision.ops.nms`; here that is Ultralytics' own NMS (`TorchNMS.nms`, written to match torchvision's)."""

from torchvision import ops  # noqa: F401

__version__ = "0.28.0"
