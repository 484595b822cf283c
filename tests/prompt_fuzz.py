"""Fuzzed prompt messages for the MQTT link and engine tests: malformed ones of every kind, valid ones interleaved."""

from __future__ import annotations

import json
from collections.abc import Callable

import numpy as np

from vos.streams.messages import Rle

VALID_PROMPTS = [
    {"action": "add", "obj_id": 1, "points": [[10.5, 20]], "labels": [1]},
    {"action": "add", "obj_id": 2, "box": [1, 2, 30, 40]},
    {"action": "add", "obj_id": 3, "mask": Rle.from_mask(np.eye(6, 8, dtype=bool)).model_dump()},
    {"action": "remove", "obj_id": 2},
    {"action": "reset"},
]


def one_run(pixels: int) -> str:
    """COCO's compressed string of a single run (an empty mask of `pixels` pixels)."""
    chars = []
    while True:
        c, pixels = pixels & 0x1F, pixels >> 5
        more = pixels != (-1 if c & 0x10 else 0)
        chars.append(chr(c + 48 + (0x20 if more else 0)))
        if not more:
            return "".join(chars)


def fuzzed_prompts(n: int, seed: int = 0, valid: Callable[[np.random.Generator], dict] | None = None) -> list[tuple[bytes, bool]]:
    """(payload, valid) pairs: random bytes, deep JSON, NaN/huge numbers, huge or lying RLEs, bad boxes and
    labels, unknown actions, with valid prompts interleaved (30 %): `valid(rng)` makes the next one (default:
    one of `VALID_PROMPTS`). Every malformed one is refused when parsed."""
    rng = np.random.default_rng(seed)
    if valid is None:
        valid = lambda rng: VALID_PROMPTS[int(rng.integers(len(VALID_PROMPTS)))]  # noqa: E731
    bad = [
        lambda: bytes(rng.integers(0, 256, int(rng.integers(1, 300)), dtype=np.uint8)),
        lambda: ("[" * int(rng.integers(100, 5000)) + "]" * int(rng.integers(0, 5000))).encode(),
        lambda: b'{"action": "add", "obj_id": 1, "points": [[NaN, 1]], "labels": [1]}',
        lambda: b'{"action": "add", "obj_id": 1, "points": [[1e308, 1]], "labels": [1]}',
        lambda: json.dumps({"action": "add", "obj_id": 1, "mask": {"size": [16384, 16384], "counts": "1" * int(rng.integers(1, 3_000_000))}}).encode(),
        lambda: json.dumps({"action": "add", "obj_id": 1, "mask": {"size": [3, 3], "counts": "00"}}).encode(),
        lambda: json.dumps({"action": "add", "obj_id": 1, "box": [30, 40, 1, 2]}).encode(),
        lambda: json.dumps({"action": "add", "obj_id": 1, "points": [[1, 1]], "labels": [True]}).encode(),
        lambda: json.dumps({"action": "add", "obj_id": 1, "points": [], "labels": []}).encode(),
        lambda: json.dumps({"action": "add", "obj_id": int(rng.integers(-5, 0))}).encode(),
        lambda: json.dumps({"action": rng.choice(["explode", "ADD", "", "remove_all"]), "obj_id": 1}).encode(),
        lambda: json.dumps({"action": "add", "obj_id": 1, "points": [[1, 1]] * 65, "labels": [1] * 65}).encode(),
    ]  # fmt: skip
    out = []
    for _ in range(n):
        if rng.random() < 0.3:
            out.append((json.dumps(valid(rng)).encode(), True))
        else:
            out.append((bad[int(rng.integers(len(bad)))](), False))
    return out
