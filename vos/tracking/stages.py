"""The model's per-frame stages as the segmenter calls them: PyTorch eager, `torch.compile`d (`compile=True`), or
ONNX Runtime graphs (`vos.tracking.onnx_stages`, a model loaded with `backend="onnxruntime"`).

The segmenter calls only these (and `SAM2Model.select_heads` and the model's small pre- and post-processing):
`encode_images`, `condition` (memory attention), `decode` (prompt encoder + mask decoder, all candidates),
`decode_tracked` (a tracked frame without prompts, heads chosen), `mask_prompt`, `encode_memory` and `project`.

Compiled: the image encoder, memory attention, the decoder of tracked frames (no prompts:
one fixed shape) and the memory encoder. Frames with clicks or boxes stay eager, so the
number of clicks never triggers a compilation. The number of objects (B) and of memory
tokens (M, which grows while the bank fills) are marked dynamic, so after the first frames
neither recompiles; a batch of one is compiled apart (torch specializes size-1 dimensions).
The first frames pay the compilation (tens of seconds on a CPU); the compiled stages are
shared by every tracker and session on the same model.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable

import torch

from vos.memory.memory_bank import FrameMemory
from vos.modeling.memory_attention import ProjectedMemory
from vos.modeling.sam2 import DecoderCandidates, SAM2Model, SamHeadsOutput

SpatialMemory = list[tuple[int, list[FrameMemory]]]
"""(t_pos, the B objects' memories of one frame each), as `SAM2Model.condition_on_memory` reads them."""


class Stages:
    """The stages run by the model's PyTorch modules."""

    def __init__(self, model: SAM2Model) -> None:
        self.model = model
        self.forward_image: Callable = model.forward_image
        self.memory_attention: Callable = model.memory_attention
        self.encode: Callable = model.encode_memory
        self.decode_tracked: Callable = self._decode_tracked

    def encode_images(self, images: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """(B, 3, S, S) normalized images -> features [(B, C/8, 4E, 4E), (B, C/4, 2E, 2E), (B, C, E, E)] (only the
        last without high-resolution features) and the last one's sine encoding (1, C, E, E)."""
        out = self.forward_image(images)
        return out.features, out.pos[-1][:1]

    def condition(
        self, top: torch.Tensor, top_pos: torch.Tensor, spatial: SpatialMemory,
        pointers: list[tuple[int, torch.Tensor]], max_ptr_distance: int,
    ) -> torch.Tensor:  # fmt: skip
        """Memory attention for B objects whose memories have one layout: (1, C, E, E) -> (B, C, E, E).

        pointers: (temporal distance, (B, C) object pointers); see `SAM2Model.condition_on_memory`.
        """
        self._project([m for _, mems in spatial for m in mems])
        return self.model.condition_on_memory(
            top, top_pos, [(t, [m.projected for m in mems]) for t, mems in spatial], pointers,
            max_ptr_distance=max_ptr_distance, attention=self.memory_attention,
        )  # fmt: skip

    def _project(self, memories: list[FrameMemory]) -> None:
        """Give every memory its projections (`FrameMemory.projected`), those still missing in one batch."""
        missing = list({id(m): m for m in memories if m.projected is None}.values())
        if missing:
            projected = self.model.project_memory(torch.stack([m.features for m in missing]))
            for i, m in enumerate(missing):
                m.projected = projected[i]

    def decode(
        self, features: torch.Tensor, coords: torch.Tensor, labels: torch.Tensor, mask_input: torch.Tensor | None,
        high_res: list[torch.Tensor], no_memory: bool,
    ) -> DecoderCandidates:  # fmt: skip
        """Prompt encoder + mask decoder on (B, C, E, E) features: clicks (B, P, 2) with labels (B, P), a mask input
        (B, 1, 4E, 4E) or None; `no_memory`: the features take the learned no-memory embedding (prompted frames
        segmented from their prompts alone)."""
        if no_memory:
            features = self.model.add_no_mem_embed(features)
        return self.model.decode(features, coords, labels, mask_input, high_res or None)

    def _decode_tracked(self, pix: torch.Tensor, high_res: list[torch.Tensor]) -> SamHeadsOutput:
        """Memory-conditioned features (B, C, E, E) -> the decoder's output without prompts."""
        m = self.model
        raw = self.decode(pix, *m.no_points(pix.shape[0], pix.device), None, high_res, no_memory=False)
        return m.select_heads(raw, m.use_multimask(0, is_init_cond_frame=False))

    def mask_prompt(self, mask: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S) binary mask prompt -> (B, 1, 4E, 4E), the decoder's mask input for its object pointer."""
        return self.model.mask_downsample(mask)

    def encode_memory(
        self, top: torch.Tensor, masks: torch.Tensor, scores: torch.Tensor, binarize: torch.Tensor
    ) -> torch.Tensor:
        """The frame's memory of B objects: (1, C, E, E) features, (B, 1, 4E, 4E) mask logits, (B, 1) object scores,
        (B,) bool: binarize the mask -> (B, C_mem, E, E) (or a perceiver's (B, L, C_mem) latents)."""
        return self.encode(top, masks, scores, binarize)[0]

    def project(self, memory: torch.Tensor) -> list[ProjectedMemory] | None:
        """Each object's memory as memory attention reads it, kept with the memory (None: not kept)."""
        return list(self.model.project_memory(memory))


class CompiledStages(Stages):
    def __init__(self, model: SAM2Model) -> None:
        super().__init__(model)
        self._image = torch.compile(model.forward_image)
        self._attention = torch.compile(model.memory_attention)
        self._encode = torch.compile(model.encode_memory)
        self.decode_tracked = torch.compile(self._decode_tracked, dynamic=False)
        self.forward_image, self.memory_attention, self.encode = self._forward_image, self._attend, self._encode_memory

    def _forward_image(self, images: torch.Tensor):
        torch._dynamo.maybe_mark_dynamic(images, 0)
        return self._image(images)

    def _attend(self, curr: torch.Tensor, curr_pos: torch.Tensor, memory: ProjectedMemory) -> torch.Tensor:
        for t, m_dim in [*((k, 2) for k in memory.keys), (memory.tokens, 1)]:
            torch._dynamo.maybe_mark_dynamic(t, 0)
            torch._dynamo.maybe_mark_dynamic(t, m_dim)
        return self._attention(curr, curr_pos, memory)

    def _encode_memory(self, pix_feat: torch.Tensor, masks: torch.Tensor, scores: torch.Tensor, binarize: torch.Tensor):
        for t in (masks, scores, binarize):
            torch._dynamo.maybe_mark_dynamic(t, 0)
        return self._encode(pix_feat, masks, scores, binarize)


_eager: weakref.WeakKeyDictionary[SAM2Model, Stages] = weakref.WeakKeyDictionary()
_compiled: weakref.WeakKeyDictionary[SAM2Model, Stages] = weakref.WeakKeyDictionary()


def stages(model: SAM2Model, compile: bool = False) -> Stages:
    """The model's PyTorch stages, compiled or not; one set per model, shared by its trackers."""
    cache, cls = (_compiled, CompiledStages) if compile else (_eager, Stages)
    if model not in cache:
        cache[model] = cls(model)
    return cache[model]
