from __future__ import annotations

from pathlib import Path

import pytest

import vos
from vos.config import CONFIG_DIR, load_config


@pytest.mark.parametrize("name", vos.available_models())
def test_every_shipped_config_validates(name):
    cfg = load_config(name)
    assert cfg.name == name
    assert cfg.checkpoint is not None and cfg.checkpoint.url.endswith(cfg.checkpoint.filename)
    first_stage = cfg.trunk.embed_dims[0] if cfg.trunk.kind == "repvit" else cfg.trunk.embed_dim
    assert cfg.trunk.channel_list[-1] == first_stage


def test_every_family_ships():
    names = vos.available_models()
    assert len([n for n in names if n.startswith(("sam2_", "sam2.1_"))]) == 8 and "edgetam" in names
    assert load_config("edgetam").trunk.kind == "repvit" and load_config("edgetam").perceiver is not None
    efficient = [n for n in names if n.startswith("efficienttam_")]
    assert efficient == [f"efficienttam_{size}{variant}" for size in ("s", "ti") for variant in ("", "_1", "_2", "_512x512")]
    for name in efficient:
        cfg = load_config(name)
        assert (cfg.trunk.kind, cfg.neck.kind, cfg.tracking.use_high_res_features_in_sam) == ("vit", "vitdet", False)
        assert cfg.image_size == (512 if name.endswith("_512x512") else 1024)
        assert cfg.memory_attention.memory_pool == (2 if name.endswith(("_1", "_2")) else 1)


def test_a_section_of_another_kind_replaces_the_base_section(tmp_path):
    (tmp_path / "child.yaml").write_text(f"extends: {CONFIG_DIR / '_sam2.1.yaml'}\nneck: {{kind: vitdet}}\n"
                                         "trunk: {kind: vit}\ntracking: {use_high_res_features_in_sam: false}\n")
    cfg = load_config(tmp_path / "child.yaml")
    assert cfg.neck.kind == "vitdet" and cfg.neck.scalp == 0 and cfg.tracking.num_maskmem == 7  # others still merge
    (tmp_path / "bad.yaml").write_text("trunk: {kind: vit}\n")  # one map, yet high-resolution features asked for
    with pytest.raises(vos.ConfigError, match="use_high_res_features_in_sam: false"):
        load_config(tmp_path / "bad.yaml")


@pytest.mark.parametrize("size, embed, mask_in", [(1024, 64, 256), (512, 32, 128)])
def test_sizes_are_derived_from_image_size(size, embed, mask_in):
    cfg = load_config("sam2.1_hiera_t", image_size=size)
    assert cfg.image_embedding_size == embed
    assert cfg.mask_input_size == mask_in
    assert cfg.feat_sizes == [(4 * embed, 4 * embed), (2 * embed, 2 * embed), (embed, embed)]
    model = vos.build_model(cfg)
    assert model.sam_prompt_encoder.mask_input_size == (mask_in, mask_in)
    assert model.sam_prompt_encoder.get_dense_pe().shape == (1, 256, embed, embed)


def test_sam2_and_sam21_differ_where_meta_does():
    v1, v21 = load_config("sam2_hiera_t").tracking, load_config("sam2.1_hiera_t").tracking
    assert (v1.no_obj_embed_spatial, v1.proj_tpos_enc_in_obj_ptrs) == (False, False)
    assert (v21.no_obj_embed_spatial, v21.proj_tpos_enc_in_obj_ptrs) == (True, True)


def test_bad_settings_get_clear_errors(tmp_path):
    with pytest.raises(vos.ConfigError, match="image_size must be one of") as refused:
        load_config("sam2.1_hiera_t", image_size=800)
    assert not any(w in str(refused.value) for w in ("pydantic", "type=", "For further information", "\n"))
    with pytest.raises(vos.ConfigError, match="unknown model 'sam3'.*sam2.1_hiera_t"):
        load_config("sam3")
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: _sam2.1.yaml\ntrunk:\n  embed_dim: 96\n  stagez: [1]\n")
    with pytest.raises(vos.ConfigError, match="not found|cannot read"):
        load_config(bad)  # the base file is looked up beside the file
    bad.write_text("name: x\ntrunk:\n  stagez: [1]\n")
    with pytest.raises(vos.ConfigError, match="stagez"):
        load_config(bad)
    bad.write_text("name: [unclosed\n")
    with pytest.raises(vos.ConfigError, match="not valid YAML"):
        load_config(bad)


@pytest.mark.parametrize(
    "field, value, reason",
    [
        ("use_mask_input_as_output_without_sam", "false", "use_mask_input_as_output_without_sam"),
        ("max_cond_frames_in_attn", "1", "at least 2"),
        ("max_cond_frames_in_attn", "0", "at least 2"),
    ],
)
def test_tracking_values_vos_cannot_honour_are_refused(tmp_path, field, value, reason):
    path = tmp_path / "custom.yaml"
    shipped = Path(vos.config.CONFIG_DIR) / "sam2.1_hiera_t.yaml"
    path.write_text(shipped.read_text().replace("extends: _sam2.1.yaml", f"extends: {shipped.parent / '_sam2.1.yaml'}") + f"tracking:\n  {field}: {value}\n")
    with pytest.raises(vos.ConfigError, match=reason):
        load_config(path)
