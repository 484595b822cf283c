"""The segmenter's stages run by an ONNX runtime: the graphs of `vos export onnx` (`vos.export.graphs`) in place of
the model's modules, for a model loaded with `backend="onnxruntime"` or `"openvino"` (the same calls on
`vos.export.runtime.OnnxGraphs` or `vos.export.openvino_runtime.OpenVinoGraphs`); with `backend="auto"`, only the
graphs that ran faster than PyTorch at load, each on the runtime that ran it fastest
(`vos.export.stage_timing.ChosenGraphs`), PyTorch running the other stages.

Tensors cross to numpy and back on the CPU. With memory attention on ONNX Runtime, memories are read unprojected
(the graph projects and rotates their keys itself), so nothing is kept beside them. What stays PyTorch: pre-processing, choosing
among the decoder's candidates (`SAM2Model.select_heads`), hole filling and the memory bank.
"""

from __future__ import annotations

import weakref

import numpy as np
import torch

from vos.errors import ConfigError
from vos.export.graphs import attention_graph, unsupported
from vos.modeling.memory_attention import ProjectedMemory
from vos.modeling.sam2 import DecoderCandidates, SAM2Model
from vos.tracking.stages import SpatialMemory, Stages


def _np(x: torch.Tensor, dtype: torch.dtype = torch.float32) -> np.ndarray:
    return x.detach().to("cpu", dtype).contiguous().numpy()


class OnnxStages(Stages):
    """`Stages` computed by the graphs of `model.onnx_graphs` (ONNX Runtime sessions or OpenVINO compiled models)."""

    def __init__(self, model: SAM2Model) -> None:
        reason = unsupported(model)
        if reason is not None:
            raise ConfigError(f"this model cannot run its ONNX graphs: {reason}")
        super().__init__(model)
        self.graphs = model.onnx_graphs

    def _torch(self, x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(x).to(self.model.device)

    def _runs(self, graph: str) -> bool:
        return graph in self.graphs.used

    def encode_images(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        if not self._runs("image_encoder"):
            return super().encode_images(images)
        embed, pos, *high_res = (self._torch(x) for x in self.graphs.run("image_encoder", image=_np(images)))
        return [*high_res, embed], pos

    def condition(
        self, top: torch.Tensor, top_pos: torch.Tensor, spatial: SpatialMemory,
        pointers: list[tuple[int, torch.Tensor]], max_ptr_distance: int,
    ) -> torch.Tensor:  # fmt: skip
        if not self._runs("memory_attention"):
            return super().condition(top, top_pos, spatial, pointers, max_ptr_distance)
        b = len(spatial[0][1]) if spatial else pointers[0][1].shape[0]
        memory = np.stack([np.stack([_np(m.features) for m in mems]) for _, mems in spatial], axis=1)
        if not self.model.cfg.tracking.use_obj_ptrs_in_encoder:
            pointers = []
        if pointers:
            ptrs = _np(torch.stack([p for _, p in pointers], dim=1))
            positions = np.asarray([d for d, _ in pointers], dtype=np.float32) / np.float32(max_ptr_distance)
        else:
            ptrs, positions = np.zeros((b, 0, self.model.hidden_dim), np.float32), np.zeros(0, np.float32)
        (out,) = self.graphs.run(
            attention_graph(self.model, len(spatial)), image_embed=_np(top), image_pos=_np(top_pos), memory=memory,
            memory_slots=np.asarray([t for t, _ in spatial], dtype=np.int64), obj_ptrs=ptrs, ptr_positions=positions,
        )  # fmt: skip
        return self._torch(out)

    def decode(
        self, features: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None,
        high_res: list[torch.Tensor], no_memory: bool,
    ) -> DecoderCandidates:  # fmt: skip
        if not self._runs("mask_decoder"):
            return super().decode(features, coords, labels, mask_input, high_res, no_memory)
        b = features.shape[0]
        flags = np.ones(b, np.float32)
        has_mask = mask_input is not None
        if not has_mask:
            mask_input = features.new_zeros(b, 1, *self.model.sam_prompt_encoder.mask_input_size)
        inputs = {
            "image_embed": _np(features), "point_coords": _np(coords), "point_labels": _np(labels, torch.int32),
            "mask_input": _np(mask_input), "has_mask_input": flags * has_mask,
            "no_memory": flags * no_memory,
        }  # fmt: skip
        if self.model.cfg.tracking.use_high_res_features_in_sam:
            inputs.update({f"high_res_{i}": _np(x.expand(b, -1, -1, -1)) for i, x in enumerate(high_res)})
        return DecoderCandidates(*(self._torch(x) for x in self.graphs.run("mask_decoder", **inputs)))

    def mask_prompt(self, mask: torch.Tensor) -> torch.Tensor:
        if not self._runs("mask_prompt"):
            return super().mask_prompt(mask)
        return self._torch(self.graphs.run("mask_prompt", mask=_np(mask))[0])

    def encode_memory(
        self, top: torch.Tensor, masks: torch.Tensor, scores: torch.Tensor, binarize: torch.Tensor
    ) -> torch.Tensor:
        if not self._runs("memory_encoder"):
            return super().encode_memory(top, masks, scores, binarize)
        (memory,) = self.graphs.run(
            "memory_encoder", image_embed=_np(top), mask_logits=_np(masks), object_score_logits=_np(scores),
            binarize=_np(binarize),
        )  # fmt: skip
        return self._torch(memory)

    def project(self, memory: torch.Tensor) -> list[ProjectedMemory] | None:
        return None if self._runs("memory_attention") else super().project(memory)


_stages: weakref.WeakKeyDictionary[SAM2Model, OnnxStages] = weakref.WeakKeyDictionary()


def onnx_stages(model: SAM2Model) -> OnnxStages:
    """The ONNX Runtime stages of a model loaded with its graphs; one set per model, shared by its trackers."""
    if model not in _stages:
        _stages[model] = OnnxStages(model)
    return _stages[model]
