"""Prompt encoder: points and box corners -> sparse tokens, a low-res mask -> a dense embedding."""

from __future__ import annotations

import torch
from torch import nn

from vos.modeling.common import LayerNorm2d
from vos.modeling.position_encoding import PositionEmbeddingRandom

# Point labels as SAM defines them.
LABEL_PAD, LABEL_NEGATIVE, LABEL_POSITIVE, LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT = -1, 0, 1, 2, 3
NUM_POINT_EMBEDDINGS = 4  # negative, positive, box top-left, box bottom-right


def prepend_box(
    boxes: torch.Tensor, points: tuple[torch.Tensor, torch.Tensor] | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A (B, 2, 2) box becomes two labelled corner points placed before any clicks (how SAM 2 is trained)."""
    labels = torch.tensor([[LABEL_BOX_TOP_LEFT, LABEL_BOX_BOTTOM_RIGHT]], dtype=torch.int32, device=boxes.device)
    labels = labels.repeat(boxes.shape[0], 1)
    if points is None:
        return boxes, labels
    return torch.cat([boxes, points[0]], dim=1), torch.cat([labels, points[1].to(torch.int32)], dim=1)


class PromptEncoder(nn.Module):
    """Encodes prompts for the mask decoder.

    Points are (B, P, 2) pixel coordinates in the model's input frame (S x S) with (B, P)
    labels; masks are (B, 1, 4E, 4E) logits for an E x E image embedding.
    """

    def __init__(self, embed_dim: int, image_embedding_size: int, image_size: int, mask_in_chans: int) -> None:
        super().__init__()
        self.embed_dim = embed_dim
        self.input_image_size = (image_size, image_size)
        self.image_embedding_size = (image_embedding_size, image_embedding_size)
        self.mask_input_size = (4 * image_embedding_size, 4 * image_embedding_size)
        self.pe_layer = PositionEmbeddingRandom(embed_dim // 2)
        self.point_embeddings = nn.ModuleList(nn.Embedding(1, embed_dim) for _ in range(NUM_POINT_EMBEDDINGS))
        self.not_a_point_embed = nn.Embedding(1, embed_dim)
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mask_in_chans // 4, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans // 4),
            nn.GELU(),
            nn.Conv2d(mask_in_chans // 4, mask_in_chans, kernel_size=2, stride=2),
            LayerNorm2d(mask_in_chans),
            nn.GELU(),
            nn.Conv2d(mask_in_chans, embed_dim, kernel_size=1),
        )
        self.no_mask_embed = nn.Embedding(1, embed_dim)

    def get_dense_pe(self) -> torch.Tensor:
        """(1, C, E, E) positional encoding of the image embedding grid."""
        return self.pe_layer(self.image_embedding_size).unsqueeze(0)

    def _embed_points(self, points: torch.Tensor, labels: torch.Tensor, pad: bool) -> torch.Tensor:
        points = points + 0.5  # pixel centres
        if pad:
            points = torch.cat([points, points.new_zeros(points.shape[0], 1, 2)], dim=1)
            labels = torch.cat([labels, -labels.new_ones(labels.shape[0], 1)], dim=1)
        emb = self.pe_layer.forward_with_coords(points, self.input_image_size)
        labels = labels.unsqueeze(-1)
        emb = torch.where(labels == LABEL_PAD, torch.zeros_like(emb) + self.not_a_point_embed.weight, emb)
        for label, table in enumerate(self.point_embeddings):
            emb = torch.where(labels == label, emb + table.weight, emb)
        return emb

    def _embed_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        corners = self.pe_layer.forward_with_coords((boxes + 0.5).reshape(-1, 2, 2), self.input_image_size)
        corners[:, 0, :] += self.point_embeddings[LABEL_BOX_TOP_LEFT].weight
        corners[:, 1, :] += self.point_embeddings[LABEL_BOX_BOTTOM_RIGHT].weight
        return corners

    def forward(
        self,
        points: tuple[torch.Tensor, torch.Tensor] | None,
        boxes: torch.Tensor | None,
        masks: torch.Tensor | None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> sparse (B, N, C) and dense (B, C, E, E) embeddings.

        Points get a padding point when no box follows them (SAM's convention).
        """
        if points is not None:
            bs = points[0].shape[0]
        elif boxes is not None:
            bs = boxes.shape[0]
        elif masks is not None:
            bs = masks.shape[0]
        else:
            bs = 1
        device = self.no_mask_embed.weight.device
        sparse = torch.empty((bs, 0, self.embed_dim), device=device)
        if points is not None:
            sparse = torch.cat([sparse, self._embed_points(*points, pad=boxes is None)], dim=1)
        if boxes is not None:
            sparse = torch.cat([sparse, self._embed_boxes(boxes)], dim=1)
        if masks is not None:
            dense = self.mask_downscaling(masks)
        else:
            dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, *self.image_embedding_size)
        return sparse, dense
