"""The model's per-frame stages as the segmenter calls them: eager, or `torch.compile`d (`compile=True`).

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

from vos.modeling.memory_attention import ProjectedMemory
from vos.modeling.sam2 import SAM2Model, SamHeadsOutput


class Stages:
    """forward_image, memory_attention, decode_tracked and encode_memory of one model."""

    def __init__(self, model: SAM2Model) -> None:
        self.model = model
        self.forward_image: Callable = model.forward_image
        self.memory_attention: Callable = model.memory_attention
        self.encode_memory: Callable = model.encode_memory
        self.decode_tracked: Callable = self._decode_tracked

    def _decode_tracked(self, pix: torch.Tensor, high_res: list[torch.Tensor]) -> SamHeadsOutput:
        """Memory-conditioned features (B, C, E, E) -> the decoder's output without prompts."""
        multimask = self.model.use_multimask(0, is_init_cond_frame=False)
        return self.model.forward_sam_heads(pix, high_res_features=high_res, multimask_output=multimask)


class CompiledStages(Stages):
    def __init__(self, model: SAM2Model) -> None:
        super().__init__(model)
        self._image = torch.compile(model.forward_image)
        self._attention = torch.compile(model.memory_attention)
        self._encode = torch.compile(model.encode_memory)
        self.decode_tracked = torch.compile(self._decode_tracked, dynamic=False)
        self.forward_image, self.memory_attention, self.encode_memory = self._forward_image, self._attend, self._encode_memory

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
    """The model's stages, compiled or not; one set per model, shared by its trackers."""
    cache, cls = (_compiled, CompiledStages) if compile else (_eager, Stages)
    if model not in cache:
        cache[model] = cls(model)
    return cache[model]

