"""Datasets made by a detector and a segmenter (`vos annotate`, `vos.auto_annotate`): YOLO segmentation labels, COCO
instances and, for videos, SA-V-style masklets with one id per object through the clip."""
