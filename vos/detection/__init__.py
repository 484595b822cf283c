"""Objects found by class: detection models exported as ONNX files (YOLO layouts), run by ONNX Runtime or OpenVINO.

`vos.detection.detector.Detector` reads the file and its metadata, `vos.detection.letterbox` fits frames to its
input as Ultralytics does, `vos.detection.layouts` turns its outputs into boxes, scores and classes.
"""
