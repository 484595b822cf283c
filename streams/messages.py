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

from vos.errors import plain_problems
from vos.tracking.prompts import Prompt, check_mask_size

MAX_POINTS = 64
MAX_SIDE = 16384  # pixels, per side of a mask
MAX_RLE_CHARS = 4_000_000
ObjectId = Annotated[int, Field(ge=1, le=2**16 - 1)]  # a label-map pixel value (0 is background)
Coordinate = Annotated[float, Field(ge=-MAX_SIDE, le=2 * MAX_SIDE)]
Label = Annotated[int, Field(strict=True, ge=0, le=1)]  # 1 object, 0 background; not true/false or 1.0


class _Message(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _rle_runs(counts: str) -> np.ndarray:
    """The run lengths of a COCO compressed RLE string, vectorized (int64).

    Each run is a little-endian group of 5-bit chunks (char - 48; bit 0x20: more chunks follow;
    the last chunk's 0x10 bit: negative), and from the 4th run on a run is stored as the
    difference to the run two before it. ValueError for anything malformed.
    """
    codes = np.frombuffer(counts.encode("ascii", "replace"), dtype=np.uint8).astype(np.int64) - 48
    if codes.size == 0:
        return np.zeros(0, np.int64)
    if ((codes < 0) | (codes >= 64)).any():
        raise ValueError("invalid character in RLE string")
    more = (codes & 0x20) != 0
    if more[-1]:
        raise ValueError("truncated RLE string")
    last = np.flatnonzero(~more)  # index of each run's last chunk
    starts = np.concatenate(([0], last[:-1] + 1))
    lengths = last - starts + 1
    if lengths.max() > 12:
        raise ValueError("RLE run too long")
    position = np.arange(codes.size) - np.repeat(starts, lengths)  # chunk index within its run
    values = np.add.reduceat((codes & 0x1F) << (5 * position), starts)
    negative = (codes[last] & 0x10) != 0
    values[negative] |= -1 << (5 * lengths[negative])
    runs = values.copy()
    for parity in (0, 1):  # run m (m >= 3) += run m - 2: cumulative sums over every other run from run 1 / 2
        first = 2 - parity
        runs[first::2] = np.cumsum(values[first::2])
    return runs


class Rle(_Message):
    """A binary mask as COCO RLE: `size` is (height, width), `counts` pycocotools' compressed string."""

    size: tuple[Annotated[int, Field(ge=1, le=MAX_SIDE)], Annotated[int, Field(ge=1, le=MAX_SIDE)]]
    counts: str = Field(max_length=MAX_RLE_CHARS)

    @model_validator(mode="after")
    def _runs_cover_the_mask(self) -> Rle:
        runs = _rle_runs(self.counts)
        if (runs < 0).any() or int(runs.sum()) != self.size[0] * self.size[1]:
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
    class_name: str | None = None  # objects a detector found: their class
    class_score: float | None = None  # and the detector's score when it found them

    @classmethod
    def from_mask(
        cls, obj_id: int, mask: np.ndarray, score: float, class_name: str | None = None,
        class_score: float | None = None,
    ) -> ObjectMask:  # fmt: skip
        rle = Rle.from_mask(mask)
        area = int(mask.sum())
        bbox = None
        if area:
            ys, xs = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
            bbox = (int(xs[0]), int(ys[0]), int(xs[-1] - xs[0] + 1), int(ys[-1] - ys[0] + 1))
        return cls(
            id=obj_id, score=score, bbox=bbox, area=area, mask=rle, class_name=class_name, class_score=class_score
        )


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
    labels: list[Label] | None = Field(None, max_length=MAX_POINTS)
    box: tuple[Coordinate, Coordinate, Coordinate, Coordinate] | None = None
    mask: Rle | None = None

    @model_validator(mode="after")
    def _one_kind_of_prompt(self) -> AddPrompt:
        """The tracker's own rules, checked on arrival; a mask is not decoded here (see `to_prompt`)."""
        if self.mask is not None:
            if self.points is not None or self.labels is not None or self.box is not None:
                raise ValueError("give a mask or points/box, not both")
        else:
            Prompt.make(None, self.points, self.labels, self.box)
        return self

    def to_prompt(self, frame_size: tuple[int, int] | None = None) -> Prompt:
        """The prompt, checked against `frame_size` (H, W) when given (`Prompt.check_size`); a mask of another size
        is refused before it is decoded."""
        if frame_size is not None:
            self.check_fits(frame_size)
        mask = None if self.mask is None else self.mask.to_mask()
        return Prompt.make(mask, self.points, self.labels, self.box)

    def check_fits(self, frame_size: tuple[int, int]) -> None:
        """ValueError unless the prompt fits an (H, W) frame (`Prompt.check_size`), without decoding a mask: cheap
        enough to answer on receipt."""
        if self.mask is not None:
            check_mask_size(self.mask.size, frame_size)
        else:
            Prompt.make(None, self.points, self.labels, self.box).check_size(frame_size)


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
        reasons = plain_problems(e, where=lambda loc: ".".join(map(str, loc)) or "message")
        raise ValueError(f"invalid prompt message: {reasons}") from None


class ErrorMessage(_Message):
    """Published when a prompt message is refused (nothing changed), in one form wherever it was refused: `payload`
    is the prompt as received (its first `ERROR_PAYLOAD_ECHO` characters); `obj_id` and `action` are the prompt's,
    when they could be read. Over MQTT 5, a prompt sent with Correlation Data gets it back on its refusal, which is
    also published to the prompt's Response Topic if it named one."""

    stream: str
    error: str
    payload: str
    obj_id: int | None = None
    action: str | None = None


class StatusMessage(_Message):
    """A stream's state, published retained; the broker publishes state "offline" if the engine vanishes."""

    stream: str
    state: Literal["online", "offline", "reconnecting", "ended", "stopped"]  # stopped: asked to (SIGTERM, Ctrl-C)
    detail: str = ""
    frames: int = 0  # frames processed
    dropped_frames: int = 0  # stale live frames skipped
    skipped_frames: int = 0  # frames that could not be decoded (corrupt file or packet)
    source_reconnects: int = 0
    dropped_messages: int = 0  # masks messages lost to a full buffer while the broker was away
    discovered_objects: int = 0  # objects auto-discovery added (their masks are in the masks messages from then on)


def json_schemas() -> dict[str, dict]:
    """JSON Schemas of the published and accepted messages, by file name."""
    return {
        "masks.schema.json": MaskMessage.model_json_schema(),
        "prompts.schema.json": _PROMPT.json_schema(),
        "errors.schema.json": ErrorMessage.model_json_schema(),
        "status.schema.json": StatusMessage.model_json_schema(),
    }
