"""One frame of SAM 2 video segmentation for several objects: the step that the streaming
tracker and the offline session share.

For each object the frame is either
- an *initial* prompted frame: segmented from the prompt alone, as SAM does on an image;
- a *tracked* frame: the image features are conditioned on the object's memory (memory
  attention), then decoded without prompts;
- a *correction*: a tracked frame that also gets clicks; the decoder sees the
  memory-conditioned features, the clicks and the logits tracked so far on that frame.
A mask prompt is always used directly as the output.

Objects whose memories have the same layout (the usual case: prompted on the same frames)
go through memory attention and the decoder as one batch. The result of every object is
what later frames read: its memory features, object pointer and mask logits.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vos.device import resolve_precision
from vos.errors import ConfigError
from vos.memory.memory_bank import FrameMemory, MemoryReader
from vos.modeling.memory_attention import ProjectedMemory
from vos.modeling.prompt_encoder import prepend_box
from vos.modeling.sam2 import SAM2Model, SamHeadsOutput
from vos.tracking.onnx_stages import onnx_stages
from vos.tracking.postprocess import fill_holes
from vos.tracking.prompts import Prompt
from vos.tracking.stages import Stages, stages
from vos.tracking.transforms import check_rgb_image, preprocess_video_frame, to_input_frame

MEMORY_DTYPE = torch.bfloat16  # stored memory features, as Meta's video predictor stores them
MASK_PROMPT_THRESHOLD = 0.5
PREV_LOGITS_CLAMP = 32.0  # Meta clamps the logits it feeds back with a correction


@dataclass
class FrameFeatures:
    """The image encoder's output for one frame."""

    features: list[torch.Tensor]  # [(1, C/8, 4E, 4E), (1, C/4, 2E, 2E), (1, C, E, E)] (the last alone without
    # high-resolution features)
    pos: torch.Tensor  # (1, C, E, E) the sine encoding of the last
    size: tuple[int, int]  # the frame's H, W


@dataclass
class ObjectRequest:
    """What to do with one object on the frame.

    prompt None: track from `memory`. A prompt with `memory` None: an initial prompted frame.
    A click/box prompt with `memory`: a correction of the tracked mask, refining
    `prev_logits` (1, 1, 4E, 4E) when the frame was already segmented, else the frame is
    tracked first.
    """

    prompt: Prompt | None = None
    memory: MemoryReader | None = None
    prev_logits: torch.Tensor | None = None


@dataclass
class ObjectStep:
    """One object on one frame: what is shown and what later frames read."""

    low_res_logits: torch.Tensor  # (1, 1, 4E, 4E) float32, holes filled (Meta's pred_masks)
    score: torch.Tensor  # (1, 1) object score logit
    obj_ptr: torch.Tensor  # (C,)
    memory_features: torch.Tensor  # (C_mem, E, E) or (L, C_mem) perceiver latents, in MEMORY_DTYPE
    conditioning: bool  # prompted: kept as a conditioning frame
    projected: ProjectedMemory | None  # memory_features as memory attention reads them (None: read unprojected)

    @property
    def memory(self) -> FrameMemory:
        """What this frame leaves in the object's memory."""
        return FrameMemory(self.memory_features, self.obj_ptr, self.projected)


def model_stages(model: SAM2Model, compile: bool = False) -> Stages:
    """The model's ONNX Runtime stages when it was loaded with them, else its PyTorch ones."""
    if model.onnx_graphs is None:
        return stages(model, compile)
    if compile:
        raise ConfigError("compile is for the PyTorch backend: this model runs its ONNX graphs")
    return onnx_stages(model)


class FrameSegmenter:
    """Runs SAM 2's per-frame video step for any number of objects."""

    def __init__(self, model: SAM2Model, fill_hole_area: int = 0, precision: str | None = None, compile: bool = False) -> None:
        """`precision`: "fp32", "bf16" or "auto" (`vos.device`), None: the model's; `compile`: `vos.tracking.stages`."""
        self.model = model.eval()
        self.fill_hole_area = fill_hole_area
        chosen = model.precision if precision is None else resolve_precision(precision, model.device)
        self.precision = model.check_precision(chosen)
        self.stages = model_stages(model, compile)

    def encode_image(self, frame: np.ndarray) -> FrameFeatures:
        """HxWx3 uint8 RGB -> the frame's features."""
        return self.encode_images([frame])[0]

    def encode_images(self, frames: list[np.ndarray]) -> list[FrameFeatures]:
        """Several frames (of any sizes) through the image encoder as one batch."""
        for frame in frames:
            check_rgb_image(frame)
        images = torch.cat([preprocess_video_frame(f, self.model.image_size, self.model.device) for f in frames])
        with self.model.autocast(self.precision):
            features, pos = self.stages.encode_images(images)
        return [
            FrameFeatures([x[i : i + 1] for x in features], pos, (f.shape[0], f.shape[1])) for i, f in enumerate(frames)
        ]

    def run(
        self,
        ff: FrameFeatures,
        requests: list[ObjectRequest],
        frame_idx: int,
        reverse: bool = False,
        num_frames: int | None = None,
    ) -> list[ObjectStep]:
        """Segment the objects of `requests` on one frame; `num_frames` is the video's length, None on a stream.

        Prompts must already be checked against the frame's size (`Prompt.check_size`).
        """
        with self.model.autocast(self.precision):
            return self._run(ff, requests, frame_idx, reverse, num_frames)

    def _run(
        self, ff: FrameFeatures, requests: list[ObjectRequest], frame_idx: int, reverse: bool, num_frames: int | None
    ) -> list[ObjectStep]:
        outs: list[SamHeadsOutput | None] = [None] * len(requests)
        tracked = [i for i, r in enumerate(requests) if r.memory is not None and not self._is_mask_prompt(r)]
        conditioned = self._condition_on_memory(ff, [requests[i].memory for i in tracked], frame_idx, reverse, num_frames)
        for i, pix in zip(tracked, conditioned):
            outs[i] = self._decode_tracked(ff, pix, requests[i])
        for i, r in enumerate(requests):
            if outs[i] is None:
                outs[i] = self._decode_prompted(ff, r.prompt, r.prev_logits)
        return self._finish(ff, requests, outs)

    @staticmethod
    def _is_mask_prompt(r: ObjectRequest) -> bool:
        return r.prompt is not None and r.prompt.mask is not None

    def _condition_on_memory(
        self, ff: FrameFeatures, memories: list[MemoryReader], frame_idx: int, reverse: bool, num_frames: int | None
    ) -> list[torch.Tensor]:
        """(1, C, E, E) memory-conditioned features per memory, batched by memory layout."""
        t = self.model.cfg.tracking
        max_ptrs = t.max_obj_ptrs_in_encoder if num_frames is None else min(num_frames, t.max_obj_ptrs_in_encoder)
        reads = []
        for memory in memories:
            spatial = memory.spatial_memories(frame_idx, reverse, t.max_cond_frames_in_attn)
            pointers = memory.pointers(
                frame_idx, reverse, t.only_obj_ptrs_in_the_past_for_eval, max_ptrs, t.max_cond_frames_in_attn,
                t.use_signed_tpos_enc_to_obj_ptrs,
            )  # fmt: skip
            reads.append((spatial, pointers))
        groups: dict[tuple, list[int]] = {}
        for i, (spatial, pointers) in enumerate(reads):
            groups.setdefault((tuple(p for p, _ in spatial), tuple(d for d, _ in pointers)), []).append(i)
        out: list[torch.Tensor | None] = [None] * len(memories)
        for (t_pos, distances), members in groups.items():
            frames = [[reads[i][0][k][1] for i in members] for k in range(len(t_pos))]
            pointers = [(d, torch.stack([reads[i][1][k][1] for i in members])) for k, d in enumerate(distances)]
            pix = self.stages.condition(ff.features[-1], ff.pos, list(zip(t_pos, frames)), pointers, max_ptrs - 1)
            for j, i in enumerate(members):
                out[i] = pix[j : j + 1]
        return out

    def _prompt_tensors(self, ff: FrameFeatures, prompt: Prompt) -> tuple[torch.Tensor, torch.Tensor]:
        """Clicks and box corners -> (1, P, 2) coordinates in the model's input frame and (1, P) labels."""
        device, s = self.model.device, self.model.image_size
        points = None
        if prompt.points is not None:
            coords = to_input_frame(torch.from_numpy(prompt.points)[None].to(device), ff.size, s)
            points = (coords, torch.from_numpy(prompt.labels)[None].to(device))
        if prompt.box is not None:
            points = prepend_box(to_input_frame(torch.from_numpy(prompt.box)[None].to(device), ff.size, s), points)
        return points

    def _decode_prompted(self, ff: FrameFeatures, prompt: Prompt, prev_logits: torch.Tensor | None) -> SamHeadsOutput:
        """An initial prompted frame (no memory), or a mask prompt."""
        feats, s = ff.features, self.model.image_size
        if prompt.mask is not None:
            mask = torch.from_numpy(prompt.mask)[None, None].float().to(feats[-1].device)
            if mask.shape[-2:] != (s, s):
                mask = F.interpolate(mask, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
                mask = (mask >= MASK_PROMPT_THRESHOLD).float()
            return self._mask_as_output(ff, mask)
        coords, labels = self._prompt_tensors(ff, prompt)
        multimask = self.model.use_multimask(prompt.num_points, is_init_cond_frame=True)
        return self._heads(feats[-1], coords, labels, self._clamped(prev_logits), feats[:-1], multimask, no_memory=True)

    def _mask_as_output(self, ff: FrameFeatures, mask: torch.Tensor) -> SamHeadsOutput:
        """A (1, 1, S, S) binary mask prompt as the output; its object pointer from the decoder given the mask."""
        m, feats = self.model, ff.features
        obj_ptr = None
        if m.cfg.tracking.use_obj_ptrs_in_encoder:
            coords, labels = m.no_points(1, mask.device)
            mask_input = self.stages.mask_prompt(mask)
            obj_ptr = self._heads(feats[-1], coords, labels, mask_input, feats[:-1], False, no_memory=False).obj_ptr
        return m.mask_as_output(mask, obj_ptr)

    def _heads(
        self, features: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None,
        high_res: list[torch.Tensor], multimask: bool, no_memory: bool,
    ) -> SamHeadsOutput:  # fmt: skip
        """The decoder on (1, C, E, E) features with clicks and an optional mask input, then its heads chosen."""
        if mask_input is not None and mask_input.shape[-2:] != self.model.sam_prompt_encoder.mask_input_size:
            mask_input = self.model.resize_mask_input(mask_input)
        raw = self.stages.decode(features, coords, labels, mask_input, high_res, no_memory)
        return self.model.select_heads(raw, multimask)

    def _decode_tracked(self, ff: FrameFeatures, pix: torch.Tensor, r: ObjectRequest) -> SamHeadsOutput:
        """A tracked frame, and a correction on it when the request has clicks."""
        high_res = ff.features[:-1]
        prev = r.prev_logits
        if r.prompt is None or prev is None:
            out = self.stages.decode_tracked(pix, high_res)
            if r.prompt is None:
                return out
            prev = fill_holes(out.low_res_masks, self.fill_hole_area)
        coords, labels = self._prompt_tensors(ff, r.prompt)
        multimask = self.model.use_multimask(r.prompt.num_points, is_init_cond_frame=False)
        return self._heads(pix, coords, labels, self._clamped(prev), high_res, multimask, no_memory=False)

    @staticmethod
    def _clamped(logits: torch.Tensor | None) -> torch.Tensor | None:
        return None if logits is None else logits.clamp(-PREV_LOGITS_CLAMP, PREV_LOGITS_CLAMP)

    def _finish(self, ff: FrameFeatures, requests: list[ObjectRequest], outs: list[SamHeadsOutput]) -> list[ObjectStep]:
        """Memory encoding for all objects in one batch, then hole filling.

        Tracked frames are encoded from the decoder's logits; prompted frames from the
        filled logits, binarized (Meta encodes them later, from what it stored).
        """
        if not outs:
            return []
        raw = torch.cat([o.low_res_masks for o in outs])
        filled = fill_holes(raw, self.fill_hole_area)
        prompted = torch.tensor([r.prompt is not None for r in requests], device=raw.device)
        scores = torch.cat([o.object_score_logits for o in outs])
        mem_feats = self.stages.encode_memory(
            ff.features[-1], torch.where(prompted.view(-1, 1, 1, 1), filled, raw), scores, prompted
        ).to(MEMORY_DTYPE)
        projected = self.stages.project(mem_feats) or [None] * len(requests)
        return [
            ObjectStep(filled[i : i + 1], scores[i : i + 1], o.obj_ptr[0], mem_feats[i], r.prompt is not None, projected[i])
            for i, (r, o) in enumerate(zip(requests, outs))
        ]
