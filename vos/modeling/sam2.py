"""The SAM 2 model: image encoder, prompt encoder, mask decoder, memory encoder and memory attention.

Parameter names equal Meta's `SAM2Base`, so Meta's checkpoints load as they are. This
module holds the per-frame pieces; the tracking loop that strings frames together
lives in the tracker.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.init import trunc_normal_

from memory.memory_attention import MemoryAttention
from memory.memory_encoder import MemoryEncoder
from vos.config import ModelConfig
from vos.modeling.common import MLP
from vos.modeling.image_encoder import ImageEncoder
from vos.modeling.mask_decoder import MaskDecoder
from vos.modeling.position_encoding import sine_encoding_1d
from vos.modeling.prompt_encoder import LABEL_PAD, PromptEncoder

# Placeholder mask logit for objects judged absent (Meta's NO_OBJ_SCORE).
NO_OBJ_SCORE = -1024.0
# A mask prompt used directly as output becomes logits of -10 / +10 (sigmoid(-10) ~ 4.5e-5).
MASK_AS_OUTPUT_SCALE, MASK_AS_OUTPUT_BIAS = 20.0, -10.0
EMBED_INIT_STD = 0.02


class BackboneOutput(NamedTuple):
    """Features of one batch of images, highest resolution first.

    features: [(B, C/8, 4E, 4E), (B, C/4, 2E, 2E), (B, C, E, E)] (the first two already
    projected by the decoder's conv_s0/conv_s1); pos: sine encodings, each (B, C, H_i, W_i).
    """

    features: list[torch.Tensor]
    pos: list[torch.Tensor]


class SamHeadsOutput(NamedTuple):
    low_res_multimasks: torch.Tensor  # (B, M, 4E, 4E)
    high_res_multimasks: torch.Tensor  # (B, M, S, S)
    ious: torch.Tensor  # (B, M)
    low_res_masks: torch.Tensor  # (B, 1, 4E, 4E), the best of the M
    high_res_masks: torch.Tensor  # (B, 1, S, S)
    obj_ptr: torch.Tensor  # (B, C)
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
        self.memory_attention = MemoryAttention(cfg.memory_attention, d, self.mem_dim, cfg.image_embedding_size)
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

    @property
    def device(self) -> torch.device:
        return self.no_mem_embed.device

    def forward_image(self, images: torch.Tensor) -> BackboneOutput:
        """(B, 3, S, S) normalized images -> features for the decoder and the memory path."""
        feats, pos = self.image_encoder(images)
        feats = list(feats)
        if self.cfg.tracking.use_high_res_features_in_sam:
            # Projected once per frame rather than on every click.
            feats[0] = self.sam_mask_decoder.conv_s0(feats[0])
            feats[1] = self.sam_mask_decoder.conv_s1(feats[1])
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
        (B, 1, h, w) logits or binary, resized to the decoder's mask-input size when needed.
        Masks of frames whose object score is negative are replaced by NO_OBJ_SCORE.
        """
        b = backbone_features.shape[0]
        device = backbone_features.device
        if point_coords is None:
            point_coords = torch.zeros(b, 1, 2, device=device)
            point_labels = torch.full((b, 1), LABEL_PAD, dtype=torch.int32, device=device)
        sam_mask_prompt = None
        if mask_inputs is not None:
            sam_mask_prompt = mask_inputs
            if mask_inputs.shape[-2:] != self.sam_prompt_encoder.mask_input_size:
                sam_mask_prompt = F.interpolate(
                    mask_inputs.float(), size=self.sam_prompt_encoder.mask_input_size,
                    mode="bilinear", align_corners=False, antialias=True,
                )
        sparse, dense = self.sam_prompt_encoder(points=(point_coords, point_labels), boxes=None, masks=sam_mask_prompt)
        out = self.sam_mask_decoder(
            image_embeddings=backbone_features,
            image_pe=self.sam_prompt_encoder.get_dense_pe(),
            sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense,
            multimask_output=multimask_output,
            repeat_image=False,
            high_res_features=high_res_features,
        )
        low_res_multimasks, ious, sam_tokens, object_score_logits = out
        pred_obj_scores = self.cfg.mask_decoder.pred_obj_scores
        if pred_obj_scores:
            is_obj = object_score_logits > 0
            low_res_multimasks = torch.where(is_obj[:, None, None], low_res_multimasks, NO_OBJ_SCORE)
        low_res_multimasks = low_res_multimasks.float()
        high_res_multimasks = F.interpolate(
            low_res_multimasks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False
        )
        sam_token = sam_tokens[:, 0]
        if multimask_output:
            best = torch.argmax(ious, dim=-1)
            rows = torch.arange(b, device=device)
            low_res_masks = low_res_multimasks[rows, best].unsqueeze(1)
            high_res_masks = high_res_multimasks[rows, best].unsqueeze(1)
            if sam_tokens.shape[1] > 1:
                sam_token = sam_tokens[rows, best]
        else:
            low_res_masks, high_res_masks = low_res_multimasks, high_res_multimasks

        obj_ptr = self.obj_ptr_proj(sam_token)
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

    def use_mask_as_output(
        self, backbone_features: torch.Tensor, high_res_features: list[torch.Tensor], mask_inputs: torch.Tensor
    ) -> SamHeadsOutput:
        """A (B, 1, S, S) binary mask prompt becomes the output directly (logits -10/+10).

        The object pointer still comes from the decoder, prompted with the downsampled mask.
        """
        mask = mask_inputs.float()
        high_res = mask * MASK_AS_OUTPUT_SCALE + MASK_AS_OUTPUT_BIAS
        low_res = F.interpolate(
            high_res, size=(high_res.shape[-2] // 4, high_res.shape[-1] // 4),
            mode="bilinear", align_corners=False, antialias=True,
        )
        ious = mask.new_ones(mask.shape[0], 1)
        if self.cfg.tracking.use_obj_ptrs_in_encoder:
            obj_ptr = self.forward_sam_heads(
                backbone_features, mask_inputs=self.mask_downsample(mask), high_res_features=high_res_features
            ).obj_ptr
        else:
            obj_ptr = torch.zeros(mask.shape[0], self.hidden_dim, device=mask.device)
        # The prompt, not the decoder, decides whether the object is present.
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
        """A frame's memory: features (B, C, E, E) + mask logits (B, 1, 4E, 4E) -> (B, C_mem, E, E) and its pos enc.

        The mask is upsampled to S x S, binarized (prompted frames; `binarize` is a bool or a
        (B,) bool tensor) or squashed by a sigmoid, then scaled; frames judged object-free
        get the learned no-object embedding.
        """
        t = self.cfg.tracking
        masks = F.interpolate(low_res_masks, size=(self.image_size, self.image_size), mode="bilinear", align_corners=False)
        binarize = torch.as_tensor(binarize, device=masks.device) & t.binarize_mask_from_pts_for_mem_enc
        masks = torch.where(binarize.reshape(-1, 1, 1, 1), (masks > 0).float(), torch.sigmoid(masks))
        masks = masks * t.sigmoid_scale_for_mem_enc + t.sigmoid_bias_for_mem_enc
        features, pos = self.memory_encoder(pix_feat, masks, skip_mask_sigmoid=True)
        if self.no_obj_embed_spatial is not None:
            absent = 1 - (object_score_logits > 0).float()
            features = features + absent[..., None, None] * self.no_obj_embed_spatial[..., None, None]
        return features, pos

    def condition_on_memory(
        self,
        pix_feat: torch.Tensor,
        pix_pos: torch.Tensor,
        spatial: list[tuple[int, torch.Tensor]],
        memory_pos: torch.Tensor,
        pointers: list[tuple[int, torch.Tensor]],
        max_ptr_distance: int,
    ) -> torch.Tensor:
        """Memory attention for B objects whose memories have the same layout: (B, C, E, E) -> (B, C, E, E).

        pix_pos: (1, C, E, E) the frame's sine encoding; spatial: (t_pos, (B, C_mem, E, E))
        memories, t_pos 0 for conditioning frames and 1..num_maskmem-1 for recent ones (oldest
        first); memory_pos: (C_mem, E, E) their sine encoding; pointers: (temporal distance,
        (B, C)) object pointers; max_ptr_distance normalizes the distances.
        """
        t = self.cfg.tracking
        b, c, (h, w) = pix_feat.shape[0], self.hidden_dim, pix_feat.shape[-2:]
        num_maskmem = t.num_maskmem
        mem_pos = memory_pos.flatten(1).t().unsqueeze(1)  # (HW, 1, C_mem)
        tokens, token_pos = [], []
        for t_pos, feats in spatial:
            tokens.append(feats.flatten(2).permute(2, 0, 1))  # (HW, B, C_mem)
            token_pos.append((mem_pos + self.maskmem_tpos_enc[num_maskmem - t_pos - 1]).expand(-1, b, -1))
        num_ptr_tokens = 0
        if t.use_obj_ptrs_in_encoder and pointers:
            distances, ptrs = zip(*pointers)
            ptrs = torch.stack(ptrs, dim=0)  # (P, B, C)
            if t.add_tpos_enc_to_obj_ptrs:
                dist = torch.tensor(distances, device=pix_feat.device, dtype=torch.float32) / max_ptr_distance
                ptr_pos = self.obj_ptr_tpos_proj(sine_encoding_1d(dist, c if t.proj_tpos_enc_in_obj_ptrs else self.mem_dim))
                ptr_pos = ptr_pos.unsqueeze(1).expand(-1, b, -1)
            else:
                ptr_pos = ptrs.new_zeros(len(distances), b, self.mem_dim)
            if self.mem_dim < c:  # a pointer becomes C / C_mem tokens
                split = c // self.mem_dim
                ptrs = ptrs.reshape(-1, b, split, self.mem_dim).permute(0, 2, 1, 3).flatten(0, 1)
                ptr_pos = ptr_pos.repeat_interleave(split, dim=0)
            tokens.append(ptrs)
            token_pos.append(ptr_pos)
            num_ptr_tokens = ptrs.shape[0]
        memory = torch.cat(tokens, dim=0).float()
        out = self.memory_attention(
            curr=pix_feat.flatten(2).permute(2, 0, 1),
            memory=memory,
            curr_pos=pix_pos.flatten(2).permute(2, 0, 1).expand(-1, b, -1),
            memory_pos=torch.cat(token_pos, dim=0),
            num_obj_ptr_tokens=num_ptr_tokens,
        )
        return out.permute(1, 2, 0).reshape(b, c, h, w)
