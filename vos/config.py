"""Model configuration: YAML files in `configs/models/` (installed as `vos.configs`), validated by pydantic.

A model file may `extends:` another file in the same folder (a shallow-per-section
merge), so the SAM 2 / SAM 2.1 families share one base each. Everything that depends
on `image_size` (feature sizes, prompt-encoder grid, mask-input size) is derived here.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from vos.configs import MODELS_DIR as CONFIG_DIR
from vos.errors import ConfigError, plain_problems

M = TypeVar("M", bound=BaseModel)

SUPPORTED_IMAGE_SIZES = (512, 1024)
DEFAULT_CONFIG = "sam2.1_hiera_t"  # the model used when neither a config nor a checkpoint says which
# What the model computes in (`vos.device`): fp32 (Meta's numbers), bf16, int8 (CPUs), or auto (bf16 where native).
Precision = Literal["fp32", "bf16", "int8", "auto"]
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8", "auto")
DEFAULT_PRECISION: Precision = "fp32"
Backend = Literal["pytorch", "onnxruntime", "openvino", "auto"]
"""What runs the tracker's stages: the model's PyTorch modules, the ONNX graphs of `vos export onnx` (on ONNX Runtime
or OpenVINO), or per stage whichever of PyTorch, ONNX Runtime and OpenVINO ran it fastest at load (auto)."""
BACKENDS: tuple[str, ...] = get_args(Backend)


def check_backend(backend: str, onnx_dir: object) -> None:
    """ValueError unless the backend is one vos has, with an ONNX folder exactly when it runs ONNX graphs."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "pytorch" and onnx_dir is not None:
        raise ValueError("an ONNX folder (--onnx-dir) is run by --backend onnxruntime, openvino or auto: give one")
    if backend != "pytorch" and onnx_dir is None:
        raise ValueError(f"backend {backend} runs the graphs `vos export onnx` wrote: give their folder (--onnx-dir)")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class HieraConfig(_Strict):
    """Hiera trunk (Ryali et al. 2023, with the windowed absolute position embedding of Bolya et al.)."""

    kind: Literal["hiera"] = "hiera"  # the trunk module (`vos.modeling.trunks`)
    embed_dim: int = 96
    num_heads: int = 1
    stages: tuple[int, ...] = (2, 3, 16, 3)
    global_att_blocks: tuple[int, ...] = (12, 16, 20)
    window_spec: tuple[int, ...] = (8, 4, 14, 7)
    window_pos_embed_bkg_spatial_size: tuple[int, int] = (14, 14)
    q_pool: int = 3
    q_stride: tuple[int, int] = (2, 2)
    dim_mul: float = 2.0
    head_mul: float = 2.0
    patch_kernel_size: int = 7
    patch_stride: int = 4
    patch_padding: int = 3
    mlp_ratio: float = 4.0

    @model_validator(mode="after")
    def _check(self) -> HieraConfig:
        if len(self.stages) != len(self.window_spec):
            raise ValueError("stages and window_spec must have the same length")
        if not 0 <= self.q_pool <= len(self.stages) - 1:
            raise ValueError("q_pool must be between 0 and len(stages) - 1")
        return self

    @property
    def channel_list(self) -> list[int]:
        """Output channels per stage, lowest resolution first (the FPN neck's order)."""
        dims, dim = [], self.embed_dim
        for i in range(len(self.stages)):
            dims.append(dim)
            dim = int(dim * self.dim_mul)
        return dims[::-1]


class RepViTConfig(_Strict):
    """RepViT trunk (Wang et al. 2024), EdgeTAM's: timm's `repvit_m1` by default."""

    kind: Literal["repvit"] = "repvit"
    embed_dims: tuple[int, ...] = (48, 96, 192, 384)
    depths: tuple[int, ...] = (2, 2, 14, 2)
    mlp_ratio: int = 2
    kernel_size: int = 3

    @property
    def channel_list(self) -> list[int]:
        """Output channels per stage, lowest resolution first (the FPN neck's order)."""
        return list(self.embed_dims[::-1])


class ViTConfig(_Strict):
    """Plain ViT trunk (ViTDet's, Li et al. 2022), EfficientTAM's: one stride-16 map, most blocks attending in
    windows, an absolute position embedding learned at `pretrain_img_size` and interpolated."""

    kind: Literal["vit"] = "vit"
    embed_dim: int = 192
    depth: int = 12
    num_heads: int = 3
    mlp_ratio: float = 4.0
    patch_size: int = 16
    window_size: int = 14
    window_block_indexes: tuple[int, ...] = (0, 1, 3, 4, 6, 7, 9, 10)
    pretrain_img_size: int = 224
    pretrain_use_cls_token: bool = True

    @property
    def channel_list(self) -> list[int]:
        """Output channels: one map."""
        return [self.embed_dim]


TrunkConfig = Annotated[Union[HieraConfig, RepViTConfig, ViTConfig], Field(discriminator="kind")]
"""The image-encoder trunk, by `kind` (`hiera` when a config does not say)."""


class NeckConfig(_Strict):
    """FPN neck: lateral 1x1 convs, top-down fusion on some levels, sine position encoding."""

    kind: Literal["fpn"] = "fpn"
    d_model: int = 256
    fpn_top_down_levels: tuple[int, ...] = (2, 3)
    fpn_interp_model: str = "nearest"
    fuse_type: str = "sum"
    scalp: int = 1

    @field_validator("fpn_interp_model")
    @classmethod
    def _interp(cls, v: str) -> str:
        if v not in ("nearest", "bilinear", "bicubic"):
            raise ValueError(f"unsupported fpn_interp_model {v!r}")
        return v

    @field_validator("fuse_type")
    @classmethod
    def _fuse(cls, v: str) -> str:
        if v not in ("sum", "avg"):
            raise ValueError("fuse_type must be 'sum' or 'avg'")
        return v


class ViTDetNeckConfig(_Strict):
    """ViTDet's simple neck on a one-map trunk (EfficientTAM): 1x1 conv, 3x3 conv, each followed by a channel
    LayerNorm when `norm` (then without biases), and a sine position encoding."""

    kind: Literal["vitdet"] = "vitdet"
    d_model: int = 256
    norm: bool = True
    scalp: Literal[0] = 0


NeckKind = Annotated[Union[NeckConfig, ViTDetNeckConfig], Field(discriminator="kind")]
"""The neck, by `kind` (`fpn` when a config does not say)."""


class PromptEncoderConfig(_Strict):
    mask_in_chans: int = 16


class MaskDecoderConfig(_Strict):
    """SAM mask decoder and its two-way transformer."""

    num_multimask_outputs: int = 3
    transformer_depth: int = 2
    transformer_num_heads: int = 8
    transformer_mlp_dim: int = 2048
    attention_downsample_rate: int = 2
    iou_head_depth: int = 3
    iou_head_hidden_dim: int = 256
    iou_prediction_use_sigmoid: bool = True
    pred_obj_scores: bool = True
    pred_obj_scores_mlp: bool = True
    use_multimask_token_for_obj_ptr: bool = True
    dynamic_multimask_via_stability: bool = True
    dynamic_multimask_stability_delta: float = 0.05
    dynamic_multimask_stability_thresh: float = 0.98


class MemoryAttentionConfig(_Strict):
    """Memory attention: self-attention + cross-attention to memories, both with 2-D RoPE."""

    num_layers: int = 4
    dim_feedforward: int = 2048
    num_heads: int = 1
    rope_theta: float = 10000.0
    pos_enc_at_input: bool = True
    pos_enc_at_attn: bool = False
    pos_enc_at_cross_attn_keys: bool = True
    pos_enc_at_cross_attn_queries: bool = False
    activation: str = "relu"
    # EfficientTAM's efficient cross-attention (its *_1 and *_2 models): when more than one memory frame is read,
    # their spatial keys (rotated) and values are averaged over `memory_pool` x `memory_pool` cells, and a pooled key
    # stands for the cells' tokens: `logits` adds log(pool^2) to its attention logits (EfficientRoPEAttention1),
    # `keys` adds 2 log(pool) to each of its components (EfficientRoPEAttention2). 1: no pooling (SAM 2).
    memory_pool: int = Field(1, ge=1)
    memory_pool_bias: Literal["logits", "keys"] = "logits"


class MemoryEncoderConfig(_Strict):
    """Memory encoder: mask downsampler + pixel projection + ConvNeXt fuser + output projection."""

    out_dim: int = 64
    mask_kernel_size: int = 3
    mask_stride: int = 2
    mask_padding: int = 1
    mask_total_stride: int = 16
    fuser_num_layers: int = 2
    fuser_kernel_size: int = 7
    fuser_padding: int = 3
    fuser_layer_scale_init_value: float = 1e-6


class PerceiverConfig(_Strict):
    """EdgeTAM's spatial perceiver: a memory frame's (C_mem, E, E) map -> `num_latents` global latents (attending to
    the whole map, no position) then `num_latents_2d` 2-D latents (each attending to its window of the map)."""

    depth: int = 2
    dim_head: int = 64
    heads: int = 1
    ff_mult: int = 4
    num_latents: int = 256
    num_latents_2d: int = 256
    use_self_attn: bool = True

    @property
    def grid(self) -> int:
        """Side of the 2-D latents' grid."""
        return math.isqrt(self.num_latents_2d)

    @model_validator(mode="after")
    def _square(self) -> PerceiverConfig:
        if self.grid**2 != self.num_latents_2d:
            raise ValueError(f"num_latents_2d must be a square number, got {self.num_latents_2d}")
        return self


class TrackingConfig(_Strict):
    """Model-level settings of SAM2Base that govern tracking (names as Meta's)."""

    num_maskmem: int = 7
    max_obj_ptrs_in_encoder: int = 16
    sigmoid_scale_for_mem_enc: float = 20.0
    sigmoid_bias_for_mem_enc: float = -10.0
    binarize_mask_from_pts_for_mem_enc: bool = True
    # A mask prompt is the frame's output as it is (Meta's SAM 2 / 2.1 configs); running the decoder on it
    # instead is not implemented, so a config asking for that is refused.
    use_mask_input_as_output_without_sam: Literal[True] = True
    directly_add_no_mem_embed: bool = True
    no_obj_embed_spatial: bool = True
    use_high_res_features_in_sam: bool = True
    multimask_output_in_sam: bool = True
    multimask_min_pt_num: int = 0
    multimask_max_pt_num: int = 1
    multimask_output_for_tracking: bool = True
    use_obj_ptrs_in_encoder: bool = True
    add_tpos_enc_to_obj_ptrs: bool = True
    proj_tpos_enc_in_obj_ptrs: bool = True
    use_signed_tpos_enc_to_obj_ptrs: bool = True
    only_obj_ptrs_in_the_past_for_eval: bool = True
    fixed_no_obj_ptr: bool = True
    soft_no_obj_ptr: bool = False
    use_mlp_for_obj_ptr_proj: bool = True
    memory_temporal_stride_for_eval: int = 1
    # Meta's video predictor runs each object on its own, where this constraint changes nothing; so does vos.
    non_overlap_masks_for_mem_enc: bool = False
    # Conditioning frames in memory attention: -1 all, else the temporally closest (at least 2).
    max_cond_frames_in_attn: int = -1

    @field_validator("max_cond_frames_in_attn")
    @classmethod
    def _cond_in_attn(cls, v: int) -> int:
        if v != -1 and v < 2:
            raise ValueError(f"max_cond_frames_in_attn must be -1 (all) or at least 2, got {v}")
        return v


OutputMode = Literal["binary_mask", "uncompressed_rle", "coco_rle"]


class MaskGeneratorSettings(_Strict):
    """How the everything mode (`vos.MaskGenerator`, `vos segment`) prompts and filters: Meta's names and defaults."""

    points_per_side: int = Field(32, ge=1, le=256, description="clicks per side of the grid on the whole image")
    points_per_batch: int = Field(
        64, ge=1, le=4096,
        description="clicks per batch: bounds the memory of their masks (the decoder takes 16 at a time at 512 px, "
        "4 at 1024)",
    )  # fmt: skip
    pred_iou_thresh: float = Field(0.8, ge=0, le=1, description="drop masks whose predicted IoU is not above this")
    stability_score_thresh: float = Field(0.95, ge=0, le=1, description="drop masks less stable than this")
    stability_score_offset: float = Field(1.0, ge=0, description="logit offset of the stability score's two masks")
    mask_threshold: float = Field(0.0, description="logit threshold of a mask")
    box_nms_thresh: float = Field(0.7, gt=0, le=1, description="box IoU above which a crop's duplicates are dropped")
    crop_n_layers: int = Field(0, ge=0, le=4, description="layers of crops: layer i has (2^i)^2 crops")
    crop_nms_thresh: float = Field(0.7, gt=0, le=1, description="box IoU above which duplicates across crops go")
    crop_overlap_ratio: float = Field(512 / 1500, ge=0, lt=1, description="overlap of neighbouring crops")
    crop_n_points_downscale_factor: int = Field(1, ge=1, description="grid per side divided by this per layer")
    min_mask_region_area: int = Field(
        0, ge=0, description="holes and islands of at most this many pixels are flipped in the logits (0: off)"
    )
    output_mode: OutputMode = Field("binary_mask", description="segmentation as a mask, an RLE or a COCO RLE")
    use_m2m: bool = Field(False, description="refine each mask once more, given itself as the mask prompt")
    multimask_output: bool = Field(True, description="three masks per click (SAM's ambiguity-aware output)")
    hierarchical: bool = Field(
        False, description="TinySAM's two passes: a 4x sparser grid, then the full grid where no mask is confident"
    )
    hierarchical_logit_thresh: float = Field(
        8.5, description="hierarchical: pixels of the sparse pass's masks above this logit get no dense click"
    )

    @model_validator(mode="after")
    def _grid_not_empty(self) -> MaskGeneratorSettings:
        last = int(self.points_per_side / self.crop_n_points_downscale_factor**self.crop_n_layers)
        if last < 1:
            raise ValueError(f"the grid of crop layer {self.crop_n_layers} would have no point: "
                             "lower crop_n_points_downscale_factor or crop_n_layers")  # fmt: skip
        return self


class DiscoverySettings(_Strict):
    """Auto-discovery (`TrackerConfig.discover`, `vos track --discover`): the everything mode on some frames of a
    stream; its masks that are no tracked object become new objects, prompted by their mask on that frame."""

    every_n_frames: int = Field(0, ge=0, description="look on frames 0, N, 2N, ... (0: only on the first frame)")
    min_area: int = Field(64, ge=1, description="masks of fewer pixels are not added")
    max_new_per_frame: int = Field(8, ge=1, description="objects added per look at most, the most confident first")
    overlap_thresh: float = Field(
        0.5, gt=0, le=1, description="a mask is a tracked object when the share of it tracked objects cover is above "
        "this (as it is when its IoU with one of them is)",
    )  # fmt: skip
    everything: MaskGeneratorSettings = Field(
        default_factory=lambda: MaskGeneratorSettings(hierarchical=True),
        description="the everything mode's settings (here hierarchical unless set otherwise)",
    )

    @field_validator("everything", mode="before")
    @classmethod
    def _hierarchical_unless_said(cls, v: Any) -> Any:
        return {"hierarchical": True, **v} if isinstance(v, dict) else v


class DetectorSettings(_Strict):
    """A detection model (an ONNX file of a YOLO layout, `vos.detection`): what it finds, and how a tracker adds its
    detections as objects (`TrackerConfig.detector`, `vos track --detector`)."""

    model: Path = Field(description="the detector: an ONNX file (YOLOv8 / YOLO11 / YOLO26 layouts, as Ultralytics exports)")
    classes: list[str] | None = Field(
        None, description="the class names (or ids) to keep, e.g. [person, car] (None: every class)"
    )
    labels: Path | None = Field(
        None, description="class names: a text file, one per line, or a YAML file with `names` (default: the "
        "file's own metadata, as Ultralytics writes it)",
    )  # fmt: skip
    conf: float = Field(0.25, ge=0, le=1, description="detections scoring at most this are dropped")
    iou: float = Field(0.7, ge=0, le=1, description="NMS: a box overlapping a better one of its class by more is dropped")
    max_det: int = Field(300, ge=1, description="detections per frame at most, the best first")
    backend: Literal["onnxruntime", "openvino"] = Field("onnxruntime", description="what runs the detector")
    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="what the detector computes in: bf16 with backend openvino on CPUs with native bf16"
    )
    every_n_frames: int = Field(10, ge=0, description="tracking: detect on frames 0, N, 2N, ... (0: only on the first)")
    cover_thresh: float = Field(
        0.5, gt=0, le=1, description="tracking: a detection is a tracked object when its box's IoU with the box "
        "around that object's last mask is above this",
    )  # fmt: skip
    retire_after: int = Field(
        30, ge=0, description="tracking: an object the detector added is removed after this many frames absent "
        "(object score below 0); 0: never",
    )  # fmt: skip
    max_new_per_frame: int = Field(8, ge=1, description="tracking: objects added per detection frame at most, best first")


class TrackerConfig(_Strict):
    """Options of `vos.Tracker` and `vos.VideoSession`: post-processing and memory bounds."""

    # Meta's video predictor fills holes too (its default is 8; its CPU path silently skips it).
    fill_hole_area: int = Field(
        8, ge=0, description="background holes of at most this many pixels (stride-4 logit grid) become foreground; 0: off"
    )
    non_overlap_masks: bool = Field(False, description="where objects overlap, only the highest-scoring one stays")
    max_objects: int = Field(
        16, ge=1, description="objects tracked at once; a prompt for one more is refused (each costs a tracking step)"
    )
    max_cond_frames: int = Field(16, ge=1, description="streaming: prompted frames kept per object, oldest dropped first")
    keep_first_cond_frame: bool = Field(True, description="never drop an object's first prompted frame")
    clear_non_cond_mem_around_input: bool = Field(
        False,
        description="VideoSession: after a prompt, tracked frames within num_maskmem frames of it are no longer "
        "read as memory (Meta's option for corrections: no outdated memories next to new information)",
    )
    precision: Precision | None = Field(
        None, description="fp32, bf16, int8 or auto (vos.device); default: the precision the model was loaded with"
    )
    compile: bool = Field(False, description="torch.compile the model's stages (vos.tracking.stages); the first frames compile")
    discover: DiscoverySettings | None = Field(
        None, description="add the new objects the everything mode finds on the stream (None: off)"
    )
    detector: DetectorSettings | None = Field(
        None, description="add the objects a detection model finds on the stream, with their class (None: off)"
    )

    @model_validator(mode="after")
    def _one_discovery(self) -> TrackerConfig:
        if self.discover is not None and self.detector is not None:
            raise ValueError("objects are found by the everything mode (discover) or by a detector, not both: give one")
        return self


class ModelSettings(BaseModel):
    """Which model to load and how it computes: `vos track` flags, `model:` in YAML, `vos.build.load_from_settings`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    config: str | None = Field(None, description="model config name or YAML (default: the one the checkpoint fits)")
    checkpoint: Path | None = Field(None, description="checkpoint file (default: the cached download)")
    image_size: int | None = Field(None, description="model input size: 1024, or 512 for about 4x less work (default: the config's)")
    device: str = Field("cpu", description="torch device: cpu, cuda or cuda:N")
    precision: Precision = Field(
        DEFAULT_PRECISION,
        description="fp32 (Meta's numbers), bf16, int8 (CPUs: int8 linear layers; backend openvino: static int8 "
        "image encoder), or auto: bf16 where the hardware "
        "has it natively",
    )
    threads: int | None = Field(None, ge=1, description="torch intra-op threads (default: one per core)")
    backend: Backend = Field(
        "pytorch",
        description="what runs the tracker: pytorch, onnxruntime or openvino (the graphs in --onnx-dir), or auto: "
        "per stage the fastest of pytorch, onnxruntime and openvino (where installed), measured at load",
    )
    onnx_dir: Path | None = Field(
        None,
        description="backend onnxruntime, openvino or auto: the folder `vos export onnx` wrote for this model and "
        "checkpoint",
    )
    calibrate: Path | None = Field(
        None,
        description="backend openvino, precision int8: a folder of frames (JPEG, PNG) to calibrate the image "
        "encoder's int8 on (default: frames shipped with vos)",
    )

    @model_validator(mode="after")
    def _onnx_dir_with_its_backend(self) -> ModelSettings:
        check_backend(self.backend, self.onnx_dir)
        return self

    @field_validator("image_size")
    @classmethod
    def _size(cls, v: int | None) -> int | None:
        if v not in (None, *SUPPORTED_IMAGE_SIZES):
            raise ValueError(f"image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {v}")
        return v


def checked(model: type[M], what: str, /, **values: Any) -> M:
    """`model(**values)`, or ConfigError in the plain sentences the command line prints ("invalid {what}:
    field: problem; ..."), naming the options when one is unknown: what the Python entry points raise."""
    try:
        return model(**values)
    except ValidationError as e:
        problems = plain_problems(e)
        if any(err["type"] == "extra_forbidden" for err in e.errors()):
            problems += f" (the options: {', '.join(model.model_fields)})"
        raise ConfigError(f"invalid {what}: {problems}") from None


def tracker_config(config: TrackerConfig | None = None, **options: Any) -> TrackerConfig:
    """`config` (default: the defaults) with some options replaced, validated."""
    return checked(TrackerConfig, "tracker options", **{**(config or TrackerConfig()).model_dump(), **options})


class CheckpointInfo(_Strict):
    """Where Meta publishes this model's weights, and their SHA-256 when known (downloads are checked
    against it; without it the cache records the digest of the first download, `vos checkpoints verify`)."""

    filename: str
    url: str
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$")


class ModelConfig(_Strict):
    """A complete SAM 2 / SAM 2.1 model description."""

    name: str
    image_size: int = 1024
    backbone_stride: int = 16
    trunk: TrunkConfig = Field(default_factory=HieraConfig)
    perceiver: PerceiverConfig | None = None  # EdgeTAM: memory frames compressed to latents
    neck: NeckKind = Field(default_factory=NeckConfig)
    prompt_encoder: PromptEncoderConfig = Field(default_factory=PromptEncoderConfig)
    mask_decoder: MaskDecoderConfig = Field(default_factory=MaskDecoderConfig)
    memory_attention: MemoryAttentionConfig = Field(default_factory=MemoryAttentionConfig)
    memory_encoder: MemoryEncoderConfig = Field(default_factory=MemoryEncoderConfig)
    tracking: TrackingConfig = Field(default_factory=TrackingConfig)
    checkpoint: CheckpointInfo | None = None

    @field_validator("trunk", mode="before")
    @classmethod
    def _hiera_by_default(cls, v: Any) -> Any:
        return {"kind": "hiera", **v} if isinstance(v, dict) else v

    @field_validator("neck", mode="before")
    @classmethod
    def _fpn_by_default(cls, v: Any) -> Any:
        return {"kind": "fpn", **v} if isinstance(v, dict) else v

    @model_validator(mode="after")
    def _pooling(self) -> ModelConfig:
        pool = self.memory_attention.memory_pool
        if pool > 1 and (self.perceiver is not None or self.image_embedding_size % pool):
            raise ValueError(f"memory_pool {pool} needs spatial memories (no perceiver) on a grid it divides")
        return self

    @model_validator(mode="after")
    def _one_map(self) -> ModelConfig:
        if len(self.trunk.channel_list) - self.neck.scalp < 3 and self.tracking.use_high_res_features_in_sam:
            raise ValueError("a trunk with fewer than 3 feature maps needs tracking.use_high_res_features_in_sam: false")
        return self

    @field_validator("image_size")
    @classmethod
    def _image_size(cls, v: int) -> int:
        if v not in SUPPORTED_IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {SUPPORTED_IMAGE_SIZES}, got {v}")
        return v

    @property
    def hidden_dim(self) -> int:
        return self.neck.d_model

    @property
    def image_embedding_size(self) -> int:
        """Side of the lowest-resolution (stride-16) feature map: 64 at 1024 px, 32 at 512 px."""
        return self.image_size // self.backbone_stride

    @property
    def mask_input_size(self) -> int:
        """Side of the low-resolution mask logits (stride 4): 256 at 1024 px."""
        return 4 * self.image_embedding_size

    @property
    def feat_sizes(self) -> list[tuple[int, int]]:
        """(H, W) of the three feature levels the decoder uses, highest resolution first."""
        s = self.image_embedding_size
        return [(4 * s, 4 * s), (2 * s, 2 * s), (s, s)]


def available_models() -> list[str]:
    """Names of the model configs shipped in `configs/models/` (bases excluded)."""
    return sorted(p.stem for p in CONFIG_DIR.glob("*.yaml") if not p.stem.startswith("_"))


def _merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on top of `base`, section by section; a section naming another `kind` (trunk, neck) replaces the base's."""
    out = dict(base)
    for key, value in over.items():
        base_section = out.get(key)
        both = isinstance(value, dict) and isinstance(base_section, dict)
        if both and value.get("kind", base_section.get("kind")) == base_section.get("kind"):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise ConfigError(f"config {path} extends itself")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except OSError as e:
        raise ConfigError(f"cannot read config {path}: {e}") from e
    except yaml.YAMLError as e:
        raise ConfigError(f"config {path} is not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config {path} must be a mapping")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    return _merge(_read_yaml(path.parent / parent, seen + (path,)), data)


def load_config(name_or_path: str | Path, image_size: int | None = None) -> ModelConfig:
    """Load and validate a model config by name (`sam2.1_hiera_t`) or YAML path.

    `image_size` overrides the file's value (1024 or 512).
    """
    path = Path(name_or_path)
    if path.suffix not in (".yaml", ".yml"):
        path = CONFIG_DIR / f"{name_or_path}.yaml"
        if not path.is_file():
            raise ConfigError(
                f"unknown model {str(name_or_path)!r}; available: {', '.join(available_models())}"
            )
    data = _read_yaml(path)
    data.setdefault("name", path.stem)
    if image_size is not None:
        data["image_size"] = image_size
    try:
        return ModelConfig.model_validate(data)
    except ValidationError as e:
        raise ConfigError(f"invalid model config {path}: {plain_problems(e)}") from None
