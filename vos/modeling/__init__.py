"""SAM 2 / SAM 2.1 building blocks, one module per component of the paper.

A model family is a config naming its components (`configs/models/_sam2.1.yaml` and the files that extend
it): the trunk by `trunk.kind` (`trunks/`), the neck by `neck.kind` (`neck.py`), then the prompt encoder, mask
decoder, memory encoder and memory attention, each a module of its own; `sam2.py` puts them together.

    family        trunk              neck               memory frames in attention
    SAM 2 / 2.1   hiera              fpn (3 levels)     E*E tokens each
    EdgeTAM       repvit (RepViT-M1) fpn (3 levels)     compressed by perceiver.py to 256 + 256 latents
    EfficientTAM  vit (ViT-Ti / -S)  vitdet (1 level)   E*E tokens each (`_1`, `_2` models: pooled 2x2 from two
                                                        frames on, memory_attention.py `pool_frames`)

Shape letters used in shape docstrings across vos:

    B       batch: images, or objects (one row per object)
    S       side of the square model input, `image_size` (1024 or 512)
    E       side of the image embedding, S / 16 (4E, 2E: the stride-4 and stride-8 grids)
    H, W    height and width of a map or image
    C       channels (in the SAM heads and the memory path: the model width `hidden_dim`)
    C_mem   memory channels (the memory encoder's `out_dim`)
    C_kv    key/value input channels of an attention
    D       channels per attention head: C / heads
    N       tokens of a sequence (of the current frame, in memory attention)
    M       memory tokens: spatial memories, then object pointers
    K       mask outputs of the decoder: 1, or 3 with multimask output
    P       prompt points of one object: clicks and box corners
    T       temporal memory slots (`num_maskmem`)

Other sizes are written out (`heads`, `window`, `num_pos_feats`); a subscript or prime marks
a variant defined where it is used (H_i, W_i: level i; Nq, Nk: queries, keys; H': pooled).
"""
