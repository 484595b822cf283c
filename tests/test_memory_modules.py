"""Memory encoder and memory attention (2-D RoPE) against Meta's modules with the same weights.

The tracker that strings them together is tested against Meta's video predictor separately;
here each module gets identical random inputs.
"""

from __future__ import annotations

import pytest
import torch

import vos
from vos.modeling.memory_attention import ProjectedMemory
from vos.modeling.rope import apply_rope, axial_rope_tables

TOL = 1e-4


def attend_sequence_first(attention, curr, memory, curr_pos, memory_pos, num_ptr_tokens):
    """Meta's memory-attention inputs, sequence-first: curr (N, B, C), memory (M, B, C_mem) with positions, the
    last `num_ptr_tokens` of M object pointers -> (N, B, C), through `project_memory` and the module's forward."""
    memory, memory_pos = memory.transpose(0, 1), memory_pos.transpose(0, 1)
    num_spatial = memory.shape[1] - num_ptr_tokens
    parts = []
    if num_spatial:
        parts.append(attention.project_memory(memory[:, :num_spatial], memory_pos[:, :num_spatial], rotate=True))
    if num_ptr_tokens:
        parts.append(attention.project_memory(memory[:, num_spatial:], memory_pos[:, num_spatial:], rotate=False))
    projected = ProjectedMemory(
        [torch.cat(ks, dim=2) for ks in zip(*(p.keys for p in parts))], torch.cat([p.tokens for p in parts], dim=1)
    )
    curr, curr_pos = curr.transpose(0, 1), curr_pos.transpose(0, 1)
    out = torch.cat([attention(curr[i : i + 1], curr_pos[i : i + 1], projected[i]) for i in range(curr.shape[0])])
    return out.transpose(0, 1)


@pytest.mark.parametrize("size", [pytest.param(1024, marks=pytest.mark.slow), 512])
@torch.inference_mode()
def test_memory_encoder_matches(tiny_checkpoint, meta_tiny, size):
    ours = vos.load_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, image_size=size)
    e = size // 16
    g = torch.Generator().manual_seed(0)
    pix_feat = torch.randn(2, 256, e, e, generator=g)
    masks = torch.randn(2, 1, size, size, generator=g) * 5
    ref = meta_tiny[size].memory_encoder(pix_feat, masks, skip_mask_sigmoid=False)
    feats, pos = ours.memory_encoder(pix_feat, masks)
    assert feats.shape == (2, 64, e, e)
    assert (feats - ref["vision_features"]).abs().max() <= TOL
    assert (pos - ref["vision_pos_enc"][0]).abs().max() <= TOL


@pytest.mark.parametrize("size", [pytest.param(1024, marks=pytest.mark.slow), 512])
@pytest.mark.parametrize("num_ptr_tokens", [0, 8])
@torch.inference_mode()
def test_memory_attention_matches(tiny_checkpoint, meta_tiny, size, num_ptr_tokens):
    ours = vos.load_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, image_size=size)
    hw = (size // 16) ** 2
    g = torch.Generator().manual_seed(1)
    curr, curr_pos = torch.randn(hw, 2, 256, generator=g), torch.randn(hw, 2, 256, generator=g)
    n_mem = 3 * hw + num_ptr_tokens  # three memory frames, then object-pointer tokens
    memory, memory_pos = torch.randn(n_mem, 2, 64, generator=g), torch.randn(n_mem, 2, 64, generator=g)
    ref = meta_tiny[size].memory_attention(
        curr=[curr], curr_pos=[curr_pos], memory=memory, memory_pos=memory_pos, num_obj_ptr_tokens=num_ptr_tokens
    )
    out = attend_sequence_first(ours.memory_attention, curr, memory, curr_pos, memory_pos, num_ptr_tokens)
    assert out.shape == (hw, 2, 256)
    assert (out - ref).abs().max() <= TOL


def test_real_rope_equals_complex_rotation():
    from sam2.modeling.position_encoding import apply_rotary_enc, compute_axial_cis

    g = torch.Generator().manual_seed(2)
    q = torch.randn(2, 1, 16, 32, generator=g)
    k = torch.randn(2, 1, 48, 32, generator=g)  # three frames of 4x4 tokens
    cos, sin = axial_rope_tables(32, 4, 4, 10000.0)
    ref_q, ref_k = apply_rotary_enc(q, k, compute_axial_cis(32, 4, 4), repeat_freqs_k=True)
    assert torch.allclose(apply_rope(q, cos, sin), ref_q, atol=1e-6)
    assert torch.allclose(apply_rope(k, cos, sin), ref_k, atol=1e-6)
    with pytest.raises(ValueError, match="whole number"):
        apply_rope(torch.randn(1, 1, 20, 32), cos, sin)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@torch.inference_mode()
def test_blocked_cross_attention_equals_softmax_attention(dtype):
    """`mix_tokens` over several query chunks and key blocks, with each key block scoring higher than the
    last (so the online softmax rescales what earlier blocks added), against softmax attention in float64."""
    from vos.modeling import memory_attention as ma

    g = torch.Generator().manual_seed(3)
    n, m, d = ma.QUERY_CHUNK + 37, 3 * ma.KEY_BLOCK + 100, 32
    q = torch.randn(2, 1, n, d, generator=g)
    growth = torch.linspace(0.5, 3.0, m)[:, None]  # later blocks get larger scores
    k = torch.randn(2, 1, m, d, generator=g) * growth
    x = torch.randn(2, m, 8, generator=g)
    ref = torch.softmax(q.double() @ k.double().transpose(-1, -2) / d**0.5, -1) @ x.double()[:, None]
    out = ma.mix_tokens(q.to(dtype), k.to(dtype), x)
    assert out.dtype == dtype and out.shape == (2, 1, n, 8)
    tol = 1e-5 if dtype == torch.float32 else 0.05
    assert (out.double() - ref).abs().max() <= tol
    # The case needs rescaling: most rows find their largest score after the first key block.
    assert ((q @ k.transpose(-1, -2)).argmax(-1) >= ma.KEY_BLOCK).float().mean() > 0.9


@torch.inference_mode()
def test_bf16_cpu_attention_equals_softmax_attention():
    """`attention` in bf16 on the CPU (score matmuls, over several query blocks) against float64 softmax attention."""
    from vos.modeling import attention as at

    g = torch.Generator().manual_seed(4)
    q = torch.randn(1, 2, at.QUERY_ROWS + 50, 32, generator=g)
    k, v = torch.randn(1, 2, 300, 32, generator=g), torch.randn(1, 2, 300, 32, generator=g)
    ref = torch.softmax(q.double() @ k.double().transpose(-1, -2) / 32**0.5, -1) @ v.double()
    out = at.attention(q.bfloat16(), k.bfloat16(), v.bfloat16())
    assert out.dtype == torch.bfloat16 and out.shape == q.shape
    assert (out.double() - ref).abs().max() <= 0.05
    assert torch.equal(at.attention(q, k, v), torch.nn.functional.scaled_dot_product_attention(q, k, v))


@torch.inference_mode()
def test_reassociated_cross_attention_equals_attention():
    """`few_to_many` / `many_to_few` (the decoder's token <-> image cross-attentions with the image side's projections
    moved onto the tokens; the image side's residual added inside the product) give `Attention.forward`'s output,
    on per-click images and on one image shared by every click (batch 1 against B), with scores large enough that
    the softmax is far from uniform."""
    from vos.modeling.attention import Attention

    torch.manual_seed(5)
    attn = Attention(64, 4, downsample_rate=2)
    for p in attn.parameters():
        torch.nn.init.normal_(p, std=0.3)
    tokens, image = torch.randn(3, 7, 64), torch.randn(3, 200, 64)
    assert torch.softmax(attn.split_heads(attn.q_proj(image)) @ attn.split_heads(attn.k_proj(tokens)).transpose(-1, -2)
                         / 4, -1).amax(-1).mean() > 0.6  # fmt: skip  (peaked, not uniform, attention weights)
    for img in (image, image[:1]):
        want = attn(tokens, img, img)
        assert (attn.few_to_many(tokens, img, img) - want).abs().max() <= 1e-5 * want.abs().max()
        want = img + attn(img, tokens, tokens)
        got = attn.many_to_few(img, tokens, tokens, residual=img)
        assert got.shape == want.shape == (3, 200, 64) and (got - want).abs().max() <= 1e-5 * want.abs().max()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32, torch.float64])
def test_masks_from_tokens_pixel_order_to_image_order(dtype):
    """`_image_order` (sub-pixel pairs moved as one wider element; float64 the plain way): pixel (i, j, di, dj, ei,
    ej) of the token path lands at row 4i + 2di + ei, column 4j + 2dj + ej, for a non-square image."""
    from vos.modeling.mask_decoder import _image_order

    h, w = 3, 5
    i, j, di, dj, ei, ej = torch.meshgrid(*[torch.arange(n) for n in (h, w, 2, 2, 2, 2)], indexing="ij")
    rows, cols = (4 * i + 2 * di + ei).flatten(), (4 * j + 2 * dj + ej).flatten()
    masks = torch.randn(2, 3, 16 * h * w).to(dtype)
    want = torch.zeros(2, 3, 4 * h, 4 * w, dtype=dtype)
    want[:, :, rows, cols] = masks
    assert torch.equal(_image_order(masks, h, w), want)


@torch.inference_mode()
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_softmax_per_head_equals_a_softmax_of_each_head(dtype):
    """`softmax_per_head` (every head shifted by the row's maximum, summed by a block-diagonal product) against
    float64 softmaxes of each head, with one row where a head lies 200 below another: e^-200 underflows, and that
    case must take the per-head path instead of dividing zero by zero."""
    from vos.modeling.attention import softmax_per_head

    g = torch.Generator().manual_seed(6)
    scores = torch.randn(2, 50, 4 * 7, generator=g) * 4
    scores[1, 3, :7] -= 200.0
    for x in (scores[:1].to(dtype), scores.to(dtype)):  # without and with the far head
        want = torch.softmax(x.double().unflatten(-1, (4, 7)), -1).flatten(-2)
        got = softmax_per_head(x, 4)
        assert got.dtype == dtype and torch.isfinite(got).all()
        assert (got.double() - want).abs().max() <= (1e-6 if dtype == torch.float32 else 2e-2)  # 3 bf16 roundings


@pytest.mark.parametrize("high_res", [True, False])
def test_decoder_upscaling_on_tokens_equals_the_transposed_convolutions(high_res):
    """`MaskDecoder.masks_from_tokens` (the two transposed convolutions as matrix products over channels-last tokens,
    in place, the masks reordered once) gives the masks of the NCHW path the decoder takes when exported or under
    autograd, with the stride-4/8 features shared by every prompt or one per prompt, on a non-square image; so do
    `token_rows` made beforehand."""
    from vos.config import MaskDecoderConfig
    from vos.modeling.mask_decoder import MaskDecoder

    torch.manual_seed(6)
    decoder = MaskDecoder(64, MaskDecoderConfig(transformer_mlp_dim=128, iou_head_hidden_dim=64), high_res)
    for p in decoder.parameters():
        torch.nn.init.normal_(p, std=0.3)
    b, h, w = 3, 6, 5
    image, pe, sparse = torch.randn(1, 64, h, w), torch.randn(1, 64, h, w), torch.randn(b, 2, 64)
    dense = torch.randn(1, 64, 1, 1).expand(b, 64, h, w)
    for feat_batch in (1, b):
        feats = None
        if high_res:
            feats = [torch.randn(feat_batch, 8, 4 * h, 4 * w), torch.randn(feat_batch, 16, 2 * h, 2 * w)]
        with torch.no_grad():
            got = decoder.predict_masks(image, pe, sparse, dense, True, feats)[0]
        with torch.enable_grad():
            want = decoder.predict_masks(image, pe, sparse, dense, True, feats)[0].detach()
        assert got.shape == want.shape == (b, 4, 4 * h, 4 * w)
        assert (got - want).abs().max() <= 1e-5 * want.abs().max()
        with torch.no_grad():  # the rows made once per image, as the image predictor hands them over
            rows = decoder.token_rows(feats)
            assert torch.equal(decoder.predict_masks(image, pe, sparse, dense, True, feats, rows)[0], got)
