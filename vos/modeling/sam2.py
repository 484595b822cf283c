"""The SAM 2 model: image encoder, prompt encoder, mask decoder, memory encoder and memory attention.

Parameter names equal Meta's `SAM2Base`, so Meta's checkpoints load as they are. This
module holds the per-frame pieces; the tracking loop that strings frames together
lives in the tracker.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.init import trunc_normal_

from vos.config import ModelConfig
from vos.device import autocast
from vos.errors import ConfigError
from vos.modeling.common import MLP, bilinear_matrix, exporting, weights_key
from vos.modeling.image_encoder import ImageEncoder
from vos.modeling.mask_decoder import MaskDecoder
from vos.modeling.memory_attention import KeyLayout, MemoryAttention, ProjectedMemory
from vos.modeling.memory_encoder import MemoryEncoder
from vos.modeling.perceiver import SpatialPerceiver
from vos.modeling.position_encoding import sine_encoding_1d
from vos.modeling.prompt_encoder import LABEL_PAD, PromptEncoder

# Placeholder mask logit for objects judged absent (Meta's NO_OBJ_SCORE).
NO_OBJ_SCORE = -1024.0
# A mask prompt used directly as output becomes logits of -10 / +10 (sigmoid(-10) ~ 4.5e-5).
MASK_AS_OUTPUT_SCALE, MASK_AS_OUTPUT_BIAS = 20.0, -10.0
EMBED_INIT_STD = 0.02


MATMUL_LAYERS = (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)  # the layers autocast runs in bfloat16
# Linear layers whose weights vos reads itself (cached memory keys, values mixed before their projection): kept float.
FLOAT_LINEAR_SUFFIXES = ("cross_attn_image.k_proj", "cross_attn_image.v_proj")


def quantize_linear_layers(model: nn.Module) -> list[str]:
    """Replace the model's linear layers, in place, by int8 ones (torch's dynamic quantization: int8 weights per
    output channel, activations quantized per call; fbgemm's int8 matrix products); the names of those replaced.

    Convolutions stay float (dynamic quantization has none), and so do the layers whose weights vos reads
    directly (`FLOAT_LINEAR_SUFFIXES`).
    """
    import warnings

    from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

    names = [
        name for name, m in model.named_modules() if type(m) is nn.Linear and not name.endswith(FLOAT_LINEAR_SUFFIXES)
    ]
    with warnings.catch_warnings():  # torch marks its quantized tensor types deprecated in favour of torchao
        warnings.simplefilter("ignore")
        quantize_dynamic(model, {name: per_channel_dynamic_qconfig for name in names}, inplace=True)
    return names


class BackboneOutput(NamedTuple):
    """Features of one batch of images, highest resolution first.

    features: [(B, C/8, 4E, 4E), (B, C/4, 2E, 2E), (B, C, E, E)] (the first two already
    projected by the decoder's conv_s0/conv_s1); pos: sine encodings, each (B, C, H_i, W_i).
    """

    features: list[torch.Tensor]
    pos: list[torch.Tensor]


class SamHeadsOutput(NamedTuple):
    low_res_multimasks: torch.Tensor  # (B, K, 4E, 4E)
    high_res_multimasks: torch.Tensor  # (B, K, S, S)
    ious: torch.Tensor  # (B, K)
    low_res_masks: torch.Tensor  # (B, 1, 4E, 4E), the best of the K
    high_res_masks: torch.Tensor  # (B, 1, S, S)
    obj_ptr: torch.Tensor  # (B, C)
    object_score_logits: torch.Tensor  # (B, 1)


class DecoderCandidates(NamedTuple):
    """The mask decoder's output for all its mask tokens (K = 4: the single mask, then 3 candidates)."""

    masks: torch.Tensor  # (B, K, 4E, 4E) mask logits
    ious: torch.Tensor  # (B, K) predicted IoUs
    obj_ptrs: torch.Tensor  # (B, K, C) each mask token's object pointer (before gating)
    object_score_logits: torch.Tensor  # (B, 1)


class SAM2Model(nn.Module):
    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        t = cfg.tracking
        d = cfg.hidden_dim
        self.hidden_dim = d
        self.mem_dim = cfg.memory_encoder.out_dim
        self.image_size = cfg.image_size

        self.image_encoder = ImageEncoder(cfg)
        key_layout = KeyLayout()
        self.spatial_perceiver = None
        if cfg.perceiver is not None:
            self.spatial_perceiver = SpatialPerceiver(self.mem_dim, cfg.perceiver)
            key_layout = KeyLayout(unrotated=cfg.perceiver.num_latents, grid=cfg.perceiver.grid)
        self.memory_attention = MemoryAttention(cfg.memory_attention, d, self.mem_dim, cfg.image_embedding_size, key_layout)
        self.memory_encoder = MemoryEncoder(d, cfg.memory_encoder)

        self.maskmem_tpos_enc = nn.Parameter(torch.zeros(t.num_maskmem, 1, 1, self.mem_dim))
        self.no_mem_embed = nn.Parameter(torch.zeros(1, 1, d))
        self.no_mem_pos_enc = nn.Parameter(torch.zeros(1, 1, d))
        to_init = [self.maskmem_tpos_enc, self.no_mem_embed, self.no_mem_pos_enc]
        if t.use_obj_ptrs_in_encoder:
            # Brings a full-resolution mask prompt to the stride-4 logit grid to derive a pointer from it.
            self.mask_downsample = nn.Conv2d(1, 1, kernel_size=4, stride=4)
        if cfg.mask_decoder.pred_obj_scores and t.use_obj_ptrs_in_encoder:
            self.no_obj_ptr = nn.Parameter(torch.zeros(1, d))
            to_init.append(self.no_obj_ptr)
        if t.no_obj_embed_spatial:
            self.no_obj_embed_spatial = nn.Parameter(torch.zeros(1, self.mem_dim))
            to_init.append(self.no_obj_embed_spatial)
        else:
            self.no_obj_embed_spatial = None
        for p in to_init:
            trunc_normal_(p, std=EMBED_INIT_STD)

        self.sam_prompt_encoder = PromptEncoder(
            d, cfg.image_embedding_size, cfg.image_size, cfg.prompt_encoder.mask_in_chans
        )
        self.sam_mask_decoder = MaskDecoder(d, cfg.mask_decoder, t.use_high_res_features_in_sam)
        if not t.use_obj_ptrs_in_encoder:
            self.obj_ptr_proj = nn.Identity()
        elif t.use_mlp_for_obj_ptr_proj:
            self.obj_ptr_proj = MLP(d, d, d, 3)
        else:
            self.obj_ptr_proj = nn.Linear(d, d)
        self.obj_ptr_tpos_proj = nn.Linear(d, self.mem_dim) if t.proj_tpos_enc_in_obj_ptrs else nn.Identity()
        self._slot_key_cache: tuple[tuple, list[torch.Tensor] | None] | None = None
        self.precision = "fp32"  # what trackers and predictors on this model run in (`vos.load_model` sets it)
        # ONNX Runtime sessions (`vos.export.runtime.OnnxGraphs`) its trackers run instead of these modules:
        # `vos.load_model(backend="onnxruntime")` sets them.
        self.onnx_graphs = None

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    @property
    def memory_shape(self) -> tuple[int, ...]:
        """One object's memory of one frame: (C_mem, E, E), or (L, C_mem) perceiver latents (EdgeTAM)."""
        perceiver, e = self.spatial_perceiver, self.cfg.image_embedding_size
        if perceiver is not None:
            return (perceiver.cfg.num_latents + perceiver.cfg.grid**2, self.mem_dim)
        return (self.mem_dim, e, e)

    def autocast(self, precision: str | None = None) -> contextlib.AbstractContextManager:
        """The autocast context for `precision` ("fp32" or "bf16"; default: the model's)."""
        return autocast(self.device, self.check_precision(precision or self.precision))

    def check_precision(self, precision: str) -> str:
        """`precision` ("fp32", "bf16" or "int8"), or ConfigError when this model cannot run in it."""
        if precision == "fp32" and self.precision == "bf16":
            raise ConfigError(
                "this model was loaded with precision bf16 (its linear and convolution weights are bfloat16): "
                "load it with precision='fp32' to run in fp32"
            )
        if (precision == "int8") != (self.precision == "int8"):
            raise ConfigError(
                f"this model was loaded with precision {self.precision}: int8 is how a model is loaded "
                "(its linear layers quantized), not a tracker option; load it with the precision to run in"
            )
        return precision

    def set_precision(self, precision: str) -> None:
        """What trackers and predictors on this model run in: "fp32", "bf16" or "int8" (`vos.device`).

        bf16 stores the weights of the linear and convolution layers in bfloat16, which autocast
        would otherwise cast them to on every call (the same numbers, without a cast of all weights
        per frame); other parameters stay float32. int8 (CPU) replaces the linear layers by int8 ones
        (`quantize_linear_layers`). Neither can be undone: load the model again for fp32.
        """
        if precision == self.precision:
            return
        if precision not in ("bf16", "int8") or self.precision != "fp32":
            raise ConfigError(f"a {self.precision} model cannot be set to {precision!r}: load it again")
        if precision == "int8":
            quantize_linear_layers(self)
        else:
            for module in self.modules():
                if isinstance(module, MATMUL_LAYERS):
                    module.to(torch.bfloat16)
        self.precision = precision

    @torch.no_grad()
    def fuse(self) -> bool:
        """Folds what is linear at inference into single layers, in place; True if anything was folded: batch norms
        into the convolutions before them and parallel convolution branches into one (RepViT), and the decoder's
        high-resolution projections (conv_s0, conv_s1) into the FPN's lateral convs where nothing is added between
        them. The same numbers up to float rounding, fewer layers; the state dict then no longer has the
        checkpoint's keys."""
        folded = False
        fuse = getattr(self.image_encoder.trunk, "fuse", None)
        if fuse is not None:
            fuse()
            folded = True
        neck = self.image_encoder.neck
        if self.cfg.tracking.use_high_res_features_in_sam and hasattr(neck, "fold_projection"):
            for level, proj in enumerate(self._high_res_projections()):
                if level not in neck.projected and neck.can_project(level):
                    neck.fold_projection(level, proj)
                    folded = True
        return folded

    def _high_res_projections(self) -> tuple[nn.Conv2d, nn.Conv2d]:
        return self.sam_mask_decoder.conv_s0, self.sam_mask_decoder.conv_s1

    def forward_image(self, images: torch.Tensor) -> BackboneOutput:
        """(B, 3, S, S) normalized images -> features for the decoder and the memory path."""
        feats, pos = self.image_encoder(images)
        feats = list(feats)
        if self.cfg.tracking.use_high_res_features_in_sam:
            # Projected once per frame rather than on every click (or by the neck, once fused).
            projected = getattr(self.image_encoder.neck, "projected", ())
            for level, proj in enumerate(self._high_res_projections()):
                if level not in projected:
                    feats[level] = proj(feats[level])
        return BackboneOutput(feats, list(pos))

    def add_no_mem_embed(self, features: torch.Tensor) -> torch.Tensor:
        """Image mode and prompted first frames: add the learned "no memory" embedding to (B, C, E, E) features."""
        return features + self.no_mem_embed.view(1, -1, 1, 1)

    def forward_sam_heads(
        self,
        backbone_features: torch.Tensor,
        point_coords: torch.Tensor | None = None,
        point_labels: torch.Tensor | None = None,
        mask_inputs: torch.Tensor | None = None,
        high_res_features: list[torch.Tensor] | None = None,
        multimask_output: bool = False,
    ) -> SamHeadsOutput:
        """Prompt encoder + mask decoder on (B, C, E, E) features, as in video tracking.

        point_coords (B, P, 2) in input-frame pixels with labels (B, P); mask_inputs
        (B, 1, H, W) logits or binary, resized to the decoder's mask-input size when needed.
        Masks of frames whose object score is negative are replaced by NO_OBJ_SCORE.
        """
        if point_coords is None:
            point_coords, point_labels = self.no_points(backbone_features.shape[0], backbone_features.device)
        if mask_inputs is not None and mask_inputs.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
            mask_inputs = self.resize_mask_input(mask_inputs)
        raw = self.decode(backbone_features, point_coords, point_labels, mask_inputs, high_res_features)
        return self.select_heads(raw, multimask_output)

    def no_points(self, b: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The prompt of a frame without clicks: one padding point per object, (B, 1, 2) and (B, 1)."""
        return torch.zeros(b, 1, 2, device=device), torch.full((b, 1), LABEL_PAD, dtype=torch.int32, device=device)

    def resize_mask_input(self, mask_inputs: torch.Tensor) -> torch.Tensor:
        """(B, 1, H, W) mask logits -> (B, 1, 4E, 4E), the decoder's mask-input size (antialiased)."""
        return F.interpolate(
            mask_inputs.float(), size=self.sam_prompt_encoder.mask_input_size,
            mode="bilinear", align_corners=False, antialias=True,
        )  # fmt: skip

    def decode(
        self,
        backbone_features: torch.Tensor,
        point_coords: torch.Tensor,
        point_labels: torch.Tensor,
        mask_inputs: torch.Tensor | None,
        high_res_features: list[torch.Tensor] | None,
    ) -> DecoderCandidates:
        """Prompt encoder + mask decoder, before any choice between the decoder's outputs.

        point_coords (B, P, 2) with labels (B, P) (a padding point is appended); mask_inputs (B, 1, 4E, 4E) or None.
        """
        sparse, dense = self.sam_prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=mask_inputs)
        masks, ious, tokens, object_score_logits = self.sam_mask_decoder.predict_masks(
            backbone_features, self.sam_prompt_encoder.get_dense_pe(), sparse, dense,
            repeat_image=False, high_res_features=high_res_features,
        )  # fmt: skip
        return DecoderCandidates(masks, ious, self.obj_ptr_proj(tokens), object_score_logits)

    def select_heads(self, raw: DecoderCandidates, multimask_output: bool) -> SamHeadsOutput:
        """The decoder's candidates -> the frame's output: the chosen mask(s) (NO_OBJ_SCORE where the object is
        judged absent), upsampled to S x S, and the object pointer gated by the object's presence."""
        low_res_multimasks, ious, ptrs = self.sam_mask_decoder.select_outputs(
            raw.masks, raw.ious, raw.obj_ptrs, multimask_output
        )
        object_score_logits = raw.object_score_logits
        b, device = ious.shape[0], ious.device
        pred_obj_scores = self.cfg.mask_decoder.pred_obj_scores
        if pred_obj_scores:
            is_obj = object_score_logits > 0
            low_res_multimasks = torch.where(is_obj[:, None, None], low_res_multimasks, NO_OBJ_SCORE)
        low_res_multimasks = low_res_multimasks.float()
        object_score_logits = object_score_logits.float()
        high_res_multimasks = F.interpolate(
            low_res_multimasks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        obj_ptr = ptrs[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=device)
            low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
            high_res_masks = high_res_multimasks[rows, best].unsqueeze(1)
            if ptrs.shape[1] > 1:
                obj_ptr = ptrs[rows, best]
        else:
            low_res_masks, high_res_masks = low_res_multimasks, high_res_multimasks

        obj_ptr = obj_ptr.float()
        if pred_obj_scores:
            presence = object_score_logits.sigmoid() if self.cfg.tracking.soft_no_obj_ptr else is_obj.float()
            obj_ptr = self._gate_obj_ptr(obj_ptr, presence)
        return SamHeadsOutput(
            low_res_multimasks, high_res_multimasks, ious, low_res_masks, high_res_masks, obj_ptr, object_score_logits
        )

    def _gate_obj_ptr(self, obj_ptr: torch.Tensor, presence: torch.Tensor) -> torch.Tensor:
        """Blend (B, C) pointers with the learned no-object pointer by (B, 1) presence in [0, 1]."""
        if self.cfg.tracking.fixed_no_obj_ptr:
            obj_ptr = presence * obj_ptr
        return obj_ptr + (1 - presence) * self.no_obj_ptr

    def mask_as_output(self, mask_inputs: torch.Tensor, obj_ptr: torch.Tensor | None) -> SamHeadsOutput:
        """A (B, 1, S, S) binary mask prompt becomes the output directly (logits -10/+10), as Meta's
        `_use_mask_as_output`. obj_ptr (B, C): the decoder's pointer for the mask given as its mask input
        (`mask_downsample`), None when the model uses no pointers; the mask, not the decoder, decides whether the
        object is present."""
        mask = mask_inputs.float()
        high_res = mask * MASK_AS_OUTPUT_SCALE + MASK_AS_OUTPUT_BIAS
        low_res = F.interpolate(
            high_res, size=(high_res.shape[-2] // 4, high_res.shape[-1] // 4),
            mode="bilinear", align_corners=False, antialias=True,
        )
        ious = mask.new_ones(mask.shape[0], 1)
        if obj_ptr is None:
            obj_ptr = torch.zeros(mask.shape[0], self.hidden_dim, device=mask.device)
        presence = torch.any(mask.flatten(1) > 0.0, dim=1, keepdim=True).float()
        object_score_logits = MASK_AS_OUTPUT_SCALE * presence + MASK_AS_OUTPUT_BIAS
        if self.cfg.mask_decoder.pred_obj_scores:
            obj_ptr = self._gate_obj_ptr(obj_ptr, presence)
        return SamHeadsOutput(low_res, high_res, ious, low_res, high_res, obj_ptr, object_score_logits)

    def use_multimask(self, num_points: int, is_init_cond_frame: bool) -> bool:
        """Whether the decoder gives 3 candidates (Meta's `_use_multimask`): by default the first click only,
        and, for SAM 2.1 configs, also frames tracked without prompts."""
        t = self.cfg.tracking
        return (
            t.multimask_output_in_sam
            and (is_init_cond_frame or t.multimask_output_for_tracking)
            and t.multimask_min_pt_num <= num_points <= t.multimask_max_pt_num
        )

    def encode_memory(
        self,
        pix_feat: torch.Tensor,
        low_res_masks: torch.Tensor,
        object_score_logits: torch.Tensor,
        binarize: bool | torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """A frame's memory: features (B or 1, C, E, E) + mask logits (B, 1, 4E, 4E) -> (B, C_mem, E, E) and its pos enc;
        with a spatial perceiver (EdgeTAM), its latents (B, L, C_mem) and their positions (1, L, C_mem).

        The mask is upsampled to S x S, binarized (prompted frames; `binarize` is a bool or a
        (B,) bool tensor) or squashed by a sigmoid, then scaled; frames judged object-free
        get the learned no-object embedding.
        """
        t = self.cfg.tracking
        if exporting():  # as two matrix products on (B, S, S): graph runtimes ran the S x S one-channel maps slowly
            up = bilinear_matrix(low_res_masks.shape[-1], self.image_size, low_res_masks.device)  # (S, 4E)
            masks = (up @ low_res_masks[:, 0] @ up.t())[:, None]
        else:
            masks = F.interpolate(low_res_masks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        binarize = torch.as_tensor(binarize, device=masks.device) & t.binarize_mask_from_pts_for_mem_enc
        masks = torch.where(binarize.reshape(-1, 1, 1, 1), (masks > 0).float(), torch.sigmoid(masks))
        masks = masks * t.sigmoid_scale_for_mem_enc + t.sigmoid_bias_for_mem_enc
        features, pos = self.memory_encoder(pix_feat, masks, skip_mask_sigmoid=True)
        if self.no_obj_embed_spatial is not None:
            absent = 1 - (object_score_logits > 0).float()
            features = features + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        if self.spatial_perceiver is not None:
            return self.spatial_perceiver(features, pos[:1])
        return features, pos

    def project_memory(self, features: torch.Tensor) -> ProjectedMemory:
        """Memory features of one frame (`encode_memory`'s: (B, C_mem, E, E), or a perceiver's (B, L, C_mem) latents)
        -> what every memory-attention layer reads from them.

        Computed once per frame and object (`FrameMemory.projected`), not on every frame that reads it.
        """
        if self.spatial_perceiver is not None:
            tokens, pos = features, self.spatial_perceiver.positions(features.device)  # (B, L, C_mem), (1, L, C_mem)
        else:
            pos = self.memory_encoder.position_encoding(features[:1]).flatten(2).transpose(1, 2)  # (1, E*E, C_mem)
            tokens = features.flatten(2).transpose(1, 2)  # (B, E*E, C_mem)
        return self.memory_attention.project_memory(tokens.float(), pos.float(), rotate=True)

    def _slot_keys(self, dtype: torch.dtype, num_tokens: int) -> list[torch.Tensor] | None:
        """Per layer (T, heads, N, D): what each temporal slot adds to a frame's keys; None when keys take no position.

        Kept while the weights it is made of do not change.
        """
        layers = [layer.cross_attn_image.k_proj.weight for layer in self.memory_attention.layers]
        key = (dtype, num_tokens, weights_key(self.maskmem_tpos_enc, *layers))
        if self._slot_key_cache is None or self._slot_key_cache[0] != key:
            with torch.autocast(self.device.type, enabled=False):
                tables = self.memory_attention.slot_keys(self.maskmem_tpos_enc.view(-1, self.mem_dim).float(), num_tokens)
            self._slot_key_cache = (key, None if tables is None else [t.to(dtype) for t in tables])
        return self._slot_key_cache[1]

    def condition_on_memory(
        self,
        pix_feat: torch.Tensor,
        pix_pos: torch.Tensor,
        spatial: list[tuple[int, list[ProjectedMemory]]],
        pointers: list[tuple[int, torch.Tensor]],
        max_ptr_distance: int,
        attention: Callable | None = None,
    ) -> torch.Tensor:
        """Memory attention for B objects whose memories have the same layout: (1, C, E, E) -> (B, C, E, E).

        pix_feat: the frame's features, shared by all objects; pix_pos (1, C, E, E) their sine
        encoding; spatial: (t_pos, the B objects' projected memories of one frame each), t_pos 0
        for conditioning frames and 1..num_maskmem-1 for recent ones (oldest first); pointers:
        (temporal distance, (B, C)) object pointers; max_ptr_distance normalizes the distances;
        attention: what runs `self.memory_attention` (a compiled version of it).
        """
        c, (h, w) = self.hidden_dim, pix_feat.shape[-2:]
        ptrs = None
        if self.cfg.tracking.use_obj_ptrs_in_encoder and pointers:
            ptrs = self._project_pointers(pointers, max_ptr_distance)
        out = (attention or self.memory_attention)(
            pix_feat.flatten(2).transpose(1, 2), pix_pos.flatten(2).transpose(1, 2), self._gather_memory(spatial, ptrs)
        )
        return out.transpose(1, 2).reshape(-1, c, h, w)

    def _gather_memory(self, spatial: list[tuple[int, list[ProjectedMemory]]], ptrs: ProjectedMemory | None) -> ProjectedMemory:
        """Every object's frames, each with the keys of its temporal slot, then the pointer tokens, along M."""
        first = spatial[0][1][0] if spatial else ptrs
        b = len(spatial[0][1]) if spatial else ptrs.tokens.shape[0]
        lengths = [mems[0].tokens.shape[-2] for _, mems in spatial] + ([ptrs.tokens.shape[-2]] if ptrs else [])
        tokens = first.tokens.new_empty(b, sum(lengths), first.tokens.shape[-1])
        starts = [sum(lengths[:i]) for i in range(len(lengths))]
        for (_, mems), start, n in zip(spatial, starts, lengths):
            for i, m in enumerate(mems):
                tokens[i, start : start + n] = m.tokens[0]
        if ptrs is not None:
            tokens[:, starts[-1] :] = ptrs.tokens
        keys = []
        for layer, k0 in enumerate(first.keys):
            k = k0.new_empty(b, k0.shape[1], sum(lengths), k0.shape[-1])
            for (t_pos, mems), start, n in zip(spatial, starts, lengths):
                tables = self._slot_keys(k.dtype, n)
                for i, m in enumerate(mems):
                    if tables is None:
                        k[i, :, start : start + n] = m.keys[layer][0]
                    else:
                        slot = tables[layer][self.cfg.tracking.num_maskmem - t_pos - 1]
                        torch.add(m.keys[layer][0], slot, out=k[i, :, start : start + n])
            if ptrs is not None:
                k[:, :, starts[-1] :] = ptrs.keys[layer]
            keys.append(k)
        memory = ProjectedMemory(keys, tokens)
        if self.memory_attention.pools(len(spatial)):
            memory = self.memory_attention.pool_frames(memory, len(spatial), math.isqrt(lengths[0]))
        return memory

    def _project_pointers(self, pointers: list[tuple[int, torch.Tensor]], max_ptr_distance: int) -> ProjectedMemory:
        """(temporal distance, (B, C)) object pointers -> projected pointer tokens (C / C_mem tokens each)."""
        distances, ptrs = zip(*pointers)
        positions = torch.tensor(distances, device=ptrs[0].device, dtype=torch.float32) / max_ptr_distance
        tokens, pos = self.pointer_tokens(torch.stack(ptrs, dim=1), positions)
        return self.memory_attention.project_memory(tokens, pos[None], rotate=False)

    def pointer_tokens(self, ptrs: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Object pointers (B, P, C) at temporal positions (P,) (distance / the largest distance) -> memory tokens
        (B, P', C_mem) and their key position encodings (P', C_mem); each pointer is C / C_mem tokens."""
        t, c = self.cfg.tracking, self.hidden_dim
        ptrs = ptrs.float()
        if t.add_tpos_enc_to_obj_ptrs:
            ptr_pos = self.obj_ptr_tpos_proj(sine_encoding_1d(positions, c if t.proj_tpos_enc_in_obj_ptrs else self.mem_dim))
        else:
            ptr_pos = ptrs.new_zeros(positions.shape[0], self.mem_dim)
        if self.mem_dim < c:
            split = c // self.mem_dim
            ptrs = ptrs.reshape(ptrs.shape[0], -1, self.mem_dim)
            ptr_pos = ptr_pos.repeat_interleave(split, dim=0)
        return ptrs, ptr_pos.float()
