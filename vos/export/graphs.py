"""The tracker's per-frame stages as graphs with fixed inputs: what `vos export onnx` writes.

Each graph is an `nn.Module` over the model's own modules with plain tensors in and out, so that one trace
covers every frame: choices the tracker makes in Python (multimask or not, prompts or none, which memories)
become inputs, and the decoder returns all its candidates for the caller to choose from
(`SAM2Model.select_heads`). Shape letters: `vos.modeling`; F memory frames, P' object-pointer inputs.

    image_encoder     image (B, 3, S, S) -> image_embed (B, C, E, E), image_pos (1, C, E, E)
                      [, high_res_0 (B, C/8, 4E, 4E), high_res_1 (B, C/4, 2E, 2E)]
    mask_decoder      image_embed, point_coords (B, P, 2), point_labels (B, P), mask_input (B, 1, 4E, 4E),
                      has_mask_input (B,), no_memory (B,)[, high_res_0, high_res_1]
                      -> masks (B, 4, 4E, 4E), ious (B, 4), obj_ptrs (B, 4, C), object_score_logits (B, 1)
    mask_prompt       mask (B, 1, S, S) -> mask_input (B, 1, 4E, 4E): a mask prompt as the decoder reads it
    memory_encoder    image_embed (1, C, E, E), mask_logits (B, 1, 4E, 4E), object_score_logits (B, 1),
                      binarize (B,) -> memory (B, C_mem, E, E) (EdgeTAM: its perceiver's latents (B, L, C_mem))
    memory_attention  image_embed (1, C, E, E), image_pos (1, C, E, E), memory (B, F, C_mem, E, E) (EdgeTAM:
                      (B, F, L, C_mem)),
                      memory_slots (F,), obj_ptrs (B, P', C), ptr_positions (P',) -> conditioned (B, C, E, E)
    memory_attention_pooled
                      (EfficientTAM's _1 / _2 only) the same, the F >= 2 spatial memories pooled as the model reads
                      two frames or more; `memory_attention` runs on one frame
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from vos.errors import ConfigError
from vos.modeling.memory_attention import ProjectedMemory
from vos.modeling.sam2 import SAM2Model


@dataclass(frozen=True)
class GraphSpec:
    """One graph: its module, its inputs' and outputs' names, example inputs and which input axes vary (by name)."""

    name: str
    module: nn.Module
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    example: tuple[torch.Tensor, ...]
    dynamic: dict[str, dict[int, str]]


class ImageEncoderGraph(nn.Module):
    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model.forward_image(image)
        return out.features[-1], out.pos[-1][:1], *out.features[:-1]


class MaskDecoderGraph(nn.Module):
    """Prompt encoder + mask decoder with every choice an input: a mask input where `has_mask_input` is 1, the
    learned no-memory embedding added where `no_memory` is 1 (frames segmented from their prompts alone)."""

    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, image_embed: torch.Tensor, point_coords: torch.Tensor, point_labels: torch.Tensor,
        mask_input: torch.Tensor, has_mask_input: torch.Tensor, no_memory: torch.Tensor,
        high_res_0: torch.Tensor | None = None, high_res_1: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        m = self.model
        high_res = None if high_res_0 is None else [high_res_0, high_res_1]
        pe = m.sam_prompt_encoder
        features = torch.where(no_memory.view(-1, 1, 1, 1) > 0, m.add_no_mem_embed(image_embed), image_embed)
        sparse = pe._embed_points(point_coords, point_labels, pad=True)
        masked = pe.mask_downscaling(mask_input)
        unmasked = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand_as(masked)
        dense = torch.where(has_mask_input.view(-1, 1, 1, 1) > 0, masked, unmasked)
        masks, ious, tokens, scores = m.sam_mask_decoder.predict_masks(
            features, pe.get_dense_pe(), sparse, dense, repeat_image=False, high_res_features=high_res
        )
        return masks, ious, m.obj_ptr_proj(tokens), scores


class MaskPromptGraph(nn.Module):
    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, mask: torch.Tensor) -> torch.Tensor:
        return self.model.mask_downsample(mask)


class MemoryEncoderGraph(nn.Module):
    def __init__(self, model: SAM2Model) -> None:
        super().__init__()
        self.model = model

    def forward(
        self,
        image_embed: torch.Tensor,
        mask_logits: torch.Tensor,
        object_score_logits: torch.Tensor,
        binarize: torch.Tensor,
    ) -> torch.Tensor:
        return self.model.encode_memory(image_embed, mask_logits, object_score_logits, binarize > 0)[0]


class MemoryAttentionGraph(nn.Module):
    """Memory attention from unprojected memories: the graph projects and rotates every frame's keys itself.

    memory: (B, F, C_mem, E, E) memory maps, or (B, F, L, C_mem) perceiver latents (EdgeTAM); memory_slots (F,)
    int64: each frame's temporal slot (0: a conditioning frame, 1 .. T-1: recent frames, the oldest first;
    `SAM2Model.condition_on_memory`'s t_pos); ptr_positions (P',): each pointer's temporal distance divided by the
    largest distance a pointer may have. `pooled`: the spatial memories pooled as EfficientTAM's _1 / _2 models read
    two frames or more (`MemoryAttention.pool_frames`); the graph then needs F >= 2.
    """

    def __init__(self, model: SAM2Model, pooled: bool = False) -> None:
        super().__init__()
        self.model = model
        self.pooled = pooled

    def forward(
        self, image_embed: torch.Tensor, image_pos: torch.Tensor, memory: torch.Tensor, memory_slots: torch.Tensor,
        obj_ptrs: torch.Tensor, ptr_positions: torch.Tensor,
    ) -> torch.Tensor:  # fmt: skip
        m = self.model
        attention = m.memory_attention
        tokens, pos = self._tokens(memory)  # (B, F, N, C_mem), (N, C_mem)
        b, f, n, c_mem = tokens.shape
        num_slots = m.cfg.tracking.num_maskmem
        slot = m.maskmem_tpos_enc.view(num_slots, c_mem)[num_slots - 1 - memory_slots]  # (F, C_mem)
        ptr_tokens, ptr_pos = m.pointer_tokens(obj_ptrs, ptr_positions)
        spatial_in, ptr_in = tokens, ptr_tokens
        if attention.cfg.pos_enc_at_cross_attn_keys:
            spatial_in, ptr_in = tokens + pos + slot[:, None], ptr_tokens + ptr_pos
        keys = []
        for layer in attention.layers:
            attn = layer.cross_attn_image
            k = attn.project_keys(spatial_in.flatten(1, 2), rotate=True)  # (B, h, F*N, D)
            keys.append(torch.cat((k, attn.split_heads(attn.k_proj(ptr_in))), dim=2))
        memory = ProjectedMemory(keys, torch.cat((tokens.reshape(b, f * n, c_mem), ptr_tokens), dim=1))
        e = image_embed.shape[-1]
        if self.pooled:
            memory = attention.pool_frames(memory, f, e)
        curr = image_embed.flatten(2).transpose(1, 2)
        out = attention(curr, image_pos.flatten(2).transpose(1, 2), memory)
        return out.transpose(1, 2).reshape(b, -1, e, e)

    def _tokens(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Memory frames as tokens (B, F, N, C_mem) with their key positions (N, C_mem)."""
        m = self.model
        if m.spatial_perceiver is not None:
            return memory, m.spatial_perceiver.positions(memory.device)[0]
        e = memory.shape[-1]
        pos = m.memory_encoder.position_encoding.encoding(e, e, memory.device).flatten(1).t()
        return memory.flatten(3).transpose(2, 3), pos


def unsupported(model: SAM2Model) -> str | None:
    """Why this model's tracking cannot be exported yet, or None."""
    if model.precision != "fp32":
        return f"it was loaded in {model.precision}: load it in fp32 to export"
    return None


def attention_graph(model: SAM2Model, frames: int) -> str:
    """The memory attention graph that reads `frames` spatial memory frames: `memory_attention_pooled` where the
    model pools them (EfficientTAM's _1 / _2, two frames or more), else `memory_attention`."""
    return "memory_attention_pooled" if model.memory_attention.pools(frames) else "memory_attention"


def attention_graphs(model: SAM2Model) -> tuple[str, ...]:
    """The memory attention graphs of `model`: one frame's, then a full bank's where that differs."""
    return tuple(dict.fromkeys(attention_graph(model, f) for f in (1, model.cfg.tracking.num_maskmem)))


def graph_specs(
    model: SAM2Model, objects: int = 3, frames: int = 2, pointers: int = 5, points: int = 5
) -> list[GraphSpec]:
    """The graphs of `model` with example inputs of these sizes (each becomes a variable axis; no two of a graph's
    sizes may be equal, nor equal to a fixed size of its inputs, or the tracer takes them for one)."""
    reason = unsupported(model)
    if reason is not None:
        raise ConfigError(f"this model cannot be exported to ONNX: {reason}")
    cfg, s = model.cfg, model.image_size
    e, c = cfg.image_embedding_size, model.hidden_dim
    high_res = cfg.tracking.use_high_res_features_in_sam
    gen = torch.Generator().manual_seed(0)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=gen)

    with torch.no_grad():
        image_out = ImageEncoderGraph(model)(rand(1, 3, s, s))
    embed, pos, hr = image_out[0], image_out[1], list(image_out[2:])
    hr_names = ("high_res_0", "high_res_1") if high_res else ()
    b = {0: "objects"}
    labels = torch.arange(points, dtype=torch.int32).remainder(4).expand(objects, -1).contiguous()
    decoder_in = (
        embed.expand(objects, -1, -1, -1).contiguous(), rand(objects, points, 2).abs() * s / 3, labels,
        rand(objects, 1, 4 * e, 4 * e), torch.arange(objects).remainder(2).float(),
        1 - torch.arange(objects).remainder(2).float(), *(x.expand(objects, -1, -1, -1).contiguous() for x in hr),
    )  # fmt: skip
    attention_in = (
        embed, pos, rand(objects, frames, *model.memory_shape), torch.arange(frames, dtype=torch.int64),
        rand(objects, pointers, c), torch.linspace(0, 1, pointers),
    )  # fmt: skip
    specs = [
        GraphSpec(
            "image_encoder",
            ImageEncoderGraph(model),
            ("image",),
            ("image_embed", "image_pos", *hr_names),
            (rand(2, 3, s, s),),
            {"image": {0: "images"}},
        ),
        GraphSpec(
            "mask_decoder",
            MaskDecoderGraph(model),
            ("image_embed", "point_coords", "point_labels", "mask_input", "has_mask_input", "no_memory", *hr_names),
            ("masks", "ious", "obj_ptrs", "object_score_logits"),
            decoder_in,
            {
                "image_embed": b,
                **{n: b for n in hr_names},
                "point_coords": {0: "objects", 1: "points"},
                "point_labels": {0: "objects", 1: "points"},
                "mask_input": b,
                "has_mask_input": b,
                "no_memory": b,
            },
        ),
        GraphSpec(
            "memory_encoder",
            MemoryEncoderGraph(model),
            ("image_embed", "mask_logits", "object_score_logits", "binarize"),
            ("memory",),
            (embed, rand(objects, 1, 4 * e, 4 * e), rand(objects, 1), torch.arange(objects).remainder(2).float()),
            {"mask_logits": b, "object_score_logits": b, "binarize": b},
        ),
        *(
            GraphSpec(
                name,
                MemoryAttentionGraph(model, pooled=name.endswith("_pooled")),
                ("image_embed", "image_pos", "memory", "memory_slots", "obj_ptrs", "ptr_positions"),
                ("conditioned",),
                attention_in,
                {
                    "memory": {0: "objects", 1: "frames"},
                    "memory_slots": {0: "frames"},
                    "obj_ptrs": {0: "objects", 1: "pointers"},
                    "ptr_positions": {0: "pointers"},
                },
            )
            for name in attention_graphs(model)
        ),
    ]
    if cfg.tracking.use_obj_ptrs_in_encoder:
        specs.insert(2, GraphSpec(
            "mask_prompt", MaskPromptGraph(model), ("mask",), ("mask_input",), (rand(objects, 1, s, s).gt(0).float(),),
            {"mask": b},
        ))  # fmt: skip
    return specs
