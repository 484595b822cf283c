"""Streaming tracker: one per stream, frame in, masks out, with a bounded memory per object.

    tracker = vos.Tracker(model)
    tracker.add_prompt(obj_id=1, mask=bool_hw)        # or points=[(x, y)], labels=[1], or box=(x0, y0, x1, y1)
    result = tracker.step(frame)                      # prompts added before a step apply to that frame

A prompt makes its frame a conditioning frame of that object: the object is segmented
from the prompt alone (as SAM does on an image) and the frame's memory is kept. Other
frames are segmented from the current image conditioned on the object's memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from memory.memory_bank import FrameMemory, ObjectMemory
from vos.modeling.prompt_encoder import prepend_box
from vos.modeling.sam2 import SAM2Model, SamHeadsOutput
from vos.transforms import check_rgb_image, preprocess_image, to_input_frame, upscale_logits

DEFAULT_MAX_COND_FRAMES = 16
MEMORY_DTYPE = torch.bfloat16  # stored memory features, as Meta's video predictor stores them
MASK_PROMPT_THRESHOLD = 0.5


@dataclass
class _Prompt:
    mask: np.ndarray | None = None  # bool (H, W) at the frame's resolution
    points: np.ndarray | None = None  # (N, 2) clicks, x, y in frame pixels
    labels: np.ndarray | None = None  # (N,) 1 object, 0 background
    box: np.ndarray | None = None  # (2, 2) x0, y0 / x1, y1 in frame pixels


@dataclass
class TrackResult:
    frame_index: int
    masks: dict[int, np.ndarray] = field(default_factory=dict)  # bool (H, W)
    logits: dict[int, np.ndarray] = field(default_factory=dict)  # float32 (H, W), Meta's video_res_masks
    scores: dict[int, float] = field(default_factory=dict)  # object score logits


class Tracker:
    """Tracks any number of objects through a stream of frames of one size."""

    def __init__(self, model: SAM2Model, max_cond_frames: int = DEFAULT_MAX_COND_FRAMES) -> None:
        self.model = model.eval()
        self.max_cond_frames = max_cond_frames
        self.reset()

    def reset(self) -> None:
        """Forget every object and prompt; the next frame is frame 0."""
        self.frame_index = 0
        self._memories: dict[int, ObjectMemory] = {}
        self._pending: dict[int, _Prompt] = {}
        self._memory_pos: torch.Tensor | None = None

    @property
    def object_ids(self) -> list[int]:
        return list(self._memories) + [i for i in self._pending if i not in self._memories]

    def add_prompt(
        self,
        obj_id: int,
        mask: np.ndarray | None = None,
        points: list | np.ndarray | None = None,
        labels: list | np.ndarray | None = None,
        box: tuple | np.ndarray | None = None,
    ) -> None:
        """Prompt an object on the next frame: a bool mask (H, W), or clicks with labels (1 / 0), and/or a box."""
        if mask is not None and (points is not None or box is not None):
            raise ValueError("give a mask or points/box, not both")
        if mask is not None:
            mask = np.asarray(mask)
            if mask.ndim != 2:
                raise ValueError(f"mask must be 2-D (H, W), got shape {mask.shape}")
            self._pending[obj_id] = _Prompt(mask=mask.astype(bool))
            return
        if points is None and box is None:
            raise ValueError("a prompt needs a mask, points or a box")
        coords = lab = corners = None
        if points is not None:
            coords = np.asarray(points, dtype=np.float32).reshape(-1, 2)
            if labels is None:
                raise ValueError("labels must be given with points")
            lab = np.asarray(labels, dtype=np.int32).reshape(-1)
            if len(lab) != len(coords):
                raise ValueError(f"{len(coords)} points but {len(lab)} labels")
            if not np.isin(lab, (0, 1)).all():
                raise ValueError("point labels must be 1 (object) or 0 (background)")
        if box is not None:
            corners = np.asarray(box, dtype=np.float32).reshape(2, 2)
        self._pending[obj_id] = _Prompt(points=coords, labels=lab, box=corners)

    def remove_object(self, obj_id: int) -> None:
        self._memories.pop(obj_id, None)
        self._pending.pop(obj_id, None)

    def _new_memory(self) -> ObjectMemory:
        t = self.model.cfg.tracking
        return ObjectMemory(
            t.num_maskmem, t.max_obj_ptrs_in_encoder, self.max_cond_frames, t.memory_temporal_stride_for_eval
        )

    def _segment_prompted(self, feats: list[torch.Tensor], prompt: _Prompt, hw: tuple[int, int]) -> SamHeadsOutput:
        s = self.model.image_size
        if prompt.mask is not None:
            mask = torch.from_numpy(prompt.mask)[None, None].float().to(feats[-1].device)
            if mask.shape[-2:] != (s, s):
                mask = F.interpolate(mask, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
                mask = (mask >= MASK_PROMPT_THRESHOLD).float()
            return self.model.use_mask_as_output(feats[-1], feats[:2], mask)
        device = feats[-1].device
        points = None
        if prompt.points is not None:
            coords = to_input_frame(torch.from_numpy(prompt.points)[None].to(device), hw, s)
            points = (coords, torch.from_numpy(prompt.labels)[None].to(device))
        if prompt.box is not None:
            points = prepend_box(to_input_frame(torch.from_numpy(prompt.box)[None].to(device), hw, s), points)
        coords, labels = points
        return self.model.forward_sam_heads(
            self.model.add_no_mem_embed(feats[-1]), coords, labels, high_res_features=feats[:2],
            multimask_output=self.model.use_multimask(labels.shape[1], is_init_cond_frame=True),  # box corners count
        )

    def _segment_tracked(self, feats: list[torch.Tensor], pos: list[torch.Tensor], memory: ObjectMemory) -> SamHeadsOutput:
        t = self.model.cfg.tracking
        pix = self.model.condition_on_memory(
            feats[-1], pos[-1],
            memory.spatial_memories(self.frame_index),
            self._memory_pos,
            memory.pointers(self.frame_index, past_cond_only=t.only_obj_ptrs_in_the_past_for_eval),
            max_ptr_distance=t.max_obj_ptrs_in_encoder - 1,
        )
        return self.model.forward_sam_heads(
            pix, high_res_features=feats[:2], multimask_output=self.model.use_multimask(0, is_init_cond_frame=False)
        )

    @torch.inference_mode()
    def step(self, frame: np.ndarray) -> TrackResult:
        """Segment every object on an HxWx3 uint8 RGB frame and update their memories."""
        check_rgb_image(frame)
        hw = (frame.shape[0], frame.shape[1])
        for obj_id, prompt in self._pending.items():  # reject before anything changes
            if prompt.mask is not None and prompt.mask.shape != hw:
                raise ValueError(f"mask prompt of object {obj_id} is {prompt.mask.shape}, the frame is {hw}")
        backbone = self.model.forward_image(preprocess_image(frame, self.model.image_size, self.model.device))
        feats, pos = backbone.features, backbone.pos
        result = TrackResult(self.frame_index)
        pending, self._pending = self._pending, {}
        for obj_id in dict.fromkeys([*self._memories, *pending]):
            prompt = pending.get(obj_id)
            if prompt is not None:
                out = self._segment_prompted(feats, prompt, hw)
                memory = self._memories.setdefault(obj_id, self._new_memory())
            else:
                memory = self._memories[obj_id]
                out = self._segment_tracked(feats, pos, memory)
            mem_feats, mem_pos = self.model.encode_memory(
                feats[-1], out.low_res_masks, out.object_score_logits, binarize=prompt is not None
            )
            if self._memory_pos is None:
                self._memory_pos = mem_pos[0]
            memory.add(self.frame_index, FrameMemory(mem_feats[0].to(MEMORY_DTYPE), out.obj_ptr[0]), conditioning=prompt is not None)
            logits = upscale_logits(out.low_res_masks, hw)[0, 0].cpu().numpy()
            result.logits[obj_id] = logits
            result.masks[obj_id] = logits > 0
            result.scores[obj_id] = float(out.object_score_logits[0, 0])
        self.frame_index += 1
        return result
