"""The tracking stage: frames in, per-object masks out (model + memory bank).

- `prompts`, `transforms`, `postprocess`: user prompts (torch-free), frame pre/post-processing, hole filling.
- `segmenter`: one frame's SAM 2 step for several objects, batched; `stages`: what it runs, PyTorch (eager or
  compiled); `onnx_stages`: the same on ONNX Runtime (a model loaded with `backend="onnxruntime"`).
- `tracker`: `Tracker` for streams; `video_session`: `VideoSession` (offline, seekable);
  `inference_queue`: frames of several streams through one model.
"""
