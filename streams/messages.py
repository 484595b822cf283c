"""The engine's messages as JSON: per-frame masks out, prompts in (pydantic models).

Masks are COCO run-length encodings (pycocotools' compressed strings). Prompt messages
come from the network, so everything in them is bounded and checked before use: an RLE
is decoded only after its runs are checked to cover exactly its size.
"""

from __future__ import annotations

from typing import Annotated, Literal

import numpy as np
import pycocotools.mask as coco_mask
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, model_validator

from vos.prompts import Prompt

MAX_POINTS = 64
MAX_SIDE = 16384  # pixels, per side of a mask
MAX_RLE_CHARS = 4_000_000
ObjectId = Annotated[int, Field(ge=1, le=2**16 - 1)]  # a label-map pixel value (0 is background)
Coordinate = Annotated[float, Field(ge=-MAX_SIDE, le=2 * MAX_SIDE)]


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _rle_runs(counts: str) -> list[int]:
    """The run lengths of a COCO compressed RLE string (LEB128-like, 5 bits per char, deltas from i-2)."""
    runs: list[int] = []
    i, n = 0, len(counts)
    while i < n:
        x, shift, more = 0, 0, True
        while more:
            if i >= n:
                raise ValueError("truncated RLE string")
            c = ord(counts[i]) - 48
            if not 0 <= c < 64:
                raise ValueError("invalid character in RLE string")
            x |= (c & 0x1F) << (5 * shift)
            more = bool(c & 0x20)
            i += 1
            shift += 1
            if not more and c & 0x10:
                x |= -1 << (5 * shift)
            if shift > 12:
                raise ValueError("RLE run too long")
        if len(runs) > 2:
            x += runs[-2]
        runs.append(x)
    return runs


class Rle(_Message):
    """A binary mask as COCO RLE: `size` is (height, width), `counts` pycocotools' compressed string."""

    size: tuple[Annotated[int, Field(ge=1, le=MAX_SIDE)], Annotated[int, Field(ge=1, le=MAX_SIDE)]]
    counts: str = Field(max_length=MAX_RLE_CHARS)

    @model_validator(mode="after")
    def _runs_cover_the_mask(self) -> Rle:
        runs = _rle_runs(self.counts)
        if any(r < 0 for r in runs) or sum(runs) != self.size[0] * self.size[1]:
            raise ValueError(f"RLE runs do not cover a {self.size[0]}x{self.size[1]} mask")
        return self

    @classmethod
    def from_mask(cls, mask: np.ndarray) -> Rle:
        """(H, W) bool -> RLE."""
        rle = coco_mask.encode(np.asfortranarray(mask.astype(np.uint8)))
        return cls(size=tuple(rle["size"]), counts=rle["counts"].decode("ascii"))

    def to_mask(self) -> np.ndarray:
        """RLE -> (H, W) bool."""
        return coco_mask.decode({"size": list(self.size), "counts": self.counts.encode("ascii")}).astype(bool)


class ObjectMask(_Message):
    id: ObjectId
    score: float  # object score logit (> 0: present)
    bbox: tuple[int, int, int, int] | None  # x, y, width, height (COCO); None when the mask is empty
    area: int  # pixels
    mask: Rle

    @classmethod
    def from_mask(cls, obj_id: int, mask: np.ndarray, score: float) -> ObjectMask:
        rle = Rle.from_mask(mask)
        area = int(mask.sum())
        bbox = None
        if area:
            ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
            bbox = (int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1))
        return cls(id=obj_id, score=score, bbox=bbox, area=area, mask=rle)


class MaskMessage(_Message):
    """One processed frame of a stream: every tracked object's mask."""

    stream: str
    frame_index: int
    pts: float | None  # presentation time, seconds
    width: int
    height: int
    objects: list[ObjectMask]


class AddPrompt(_Message):
    """Start tracking an object, or correct a tracked one: clicks with labels and/or a box, or a mask."""

    action: Literal["add"] = "add"
    obj_id: ObjectId
    points: list[tuple[Coordinate, Coordinate]] | None = Field(None, max_length=MAX_POINTS)
    labels: list[Literal[0, 1]] | None = Field(None, max_length=MAX_POINTS)
    box: tuple[Coordinate, Coordinate, Coordinate, Coordinate] | None = None
    mask: Rle | None = None

    @model_validator(mode="after")
    def _one_kind_of_prompt(self) -> AddPrompt:
        self.to_prompt()  # the tracker's own rules, checked on arrival
        return self

    def to_prompt(self) -> Prompt:
        mask = None if self.mask is None else self.mask.to_mask()
        return Prompt.make(mask, self.points, self.labels, self.box)


class RemoveObject(_Message):
    action: Literal["remove"]
    obj_id: ObjectId


class Reset(_Message):
    """Forget every object."""

    action: Literal["reset"]


PromptMessage = Annotated[AddPrompt | RemoveObject | Reset, Field(discriminator="action")]
_PROMPT = TypeAdapter(PromptMessage)


def parse_prompt(payload: bytes | str) -> AddPrompt | RemoveObject | Reset:
    """A prompt message from JSON; ValueError with a readable reason if it is not one."""
    try:
        return _PROMPT.validate_json(payload)
    except ValidationError as e:
        reasons = "; ".join(f"{'.'.join(map(str, err['loc'])) or 'message'}: {err['msg']}" for err in e.errors())
        raise ValueError(f"invalid prompt message: {reasons}") from None


class ErrorMessage(_Message):
    """Published when a prompt message is refused (nothing changed)."""

    stream: str
    error: str
    payload: str  # the start of what was received


class StatusMessage(_Message):
    """A stream's state, published retained; the broker publishes state "offline" if the engine vanishes."""

    stream: str
    state: Literal["online", "offline", "reconnecting", "ended", "stopped"]  # stopped: asked to (SIGTERM, Ctrl-C)
    detail: str = ""
    frames: int = 0  # frames processed
    dropped_frames: int = 0  # stale live frames skipped
    source_reconnects: int = 0
    dropped_messages: int = 0  # masks messages lost to a full buffer while the broker was away


def json_schemas() -> dict[str, dict]:
    """JSON Schemas of the published and accepted messages, by file name."""
    return {
        "masks.schema.json": MaskMessage.model_json_schema(),
        "prompts.schema.json": _PROMPT.json_schema(),
        "errors.schema.json": ErrorMessage.model_json_schema(),
        "status.schema.json": StatusMessage.model_json_schema(),
    }
