"""Track objects through a folder of frames with the graphs of `vos export onnx`, using numpy, Pillow and ONNX
Runtime only (no torch, no vos): vos's tracking step written out plainly, to port to C++ or another runtime.

    vos export onnx sam2.1_hiera_t --checkpoint sam2.1_hiera_tiny.pt --image-size 512 --out onnx/tiny-512
    python examples/onnx_track.py onnx/tiny-512 frames/ --point 1=500,300 --point 2=100,80 --out masks/

Objects are prompted by clicks (x, y in frame pixels) on the first frame and tracked forward, frame by frame, as
vos's `Tracker` with `fill_hole_area=0` does (no hole filling here): the same masks. Writes OUT/<frame>_<id>.png
(0 or 255) and prints each object's object score logit per frame (> 0: present).

Per frame, per object (names are the manifest's graph inputs and outputs):
1. `image_encoder`: the frame resized to S x S (PIL bicubic), /255, ImageNet-normalized.
2. The prompted frame: `mask_decoder` on `image_embed` with the clicks (scaled to S x S), `no_memory` 1.
   A tracked frame: `memory_attention` on the object's memory (`memory_attention_pooled` where the folder has it
   and the memory holds two frames or more), then `mask_decoder` on `conditioned` with one padding point
   (label -1) and `no_memory` 0.
3. Choosing among the decoder's 4 outputs (`choose`), then `memory_encoder` on the chosen mask (binarized on the
   prompted frame); the memory is rounded to bfloat16, as vos stores it.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image

MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)
NO_OBJ_SCORE = np.float32(-1024.0)  # the mask logits of an object judged absent
FRAME_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
FORMAT = 1  # the export folder format this example reads (manifest.json's "format")


class Graphs:
    """The folder's graphs; calling one gives its outputs by name."""

    def __init__(self, folder: Path) -> None:
        try:
            self.manifest = json.loads((folder / "manifest.json").read_text())
        except (OSError, ValueError) as e:
            raise SystemExit(f"{folder}: no readable manifest.json ({e}): give a folder written by `vos export onnx`")
        if self.manifest.get("format") != FORMAT:
            raise SystemExit(f"{folder}: graph format {self.manifest.get('format')}, this example reads format "
                             f"{FORMAT}: export the model again with this vos")  # fmt: skip
        self.sessions = {}
        for name, graph in self.manifest["graphs"].items():
            try:
                self.sessions[name] = ort.InferenceSession(str(folder / graph["file"]), providers=["CPUExecutionProvider"])
            except Exception as e:  # ONNX Runtime's own errors: a missing, corrupt or foreign file
                first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise SystemExit(f"{folder / graph['file']}: ONNX Runtime cannot load it ({first}): export the model again")

    def __call__(self, name: str, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        session = self.sessions[name]
        names = [o.name for o in session.get_outputs()]
        return dict(zip(names, session.run(names, inputs)))


@dataclass
class Memory:
    """One object's past: (memory (C_mem, E, E), pointer (C,)) of its prompted frame(s) and its tracked frames."""

    prompted: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    tracked: dict[int, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)


def preprocess(frame: np.ndarray, size: int) -> np.ndarray:
    """HxWx3 uint8 RGB -> (1, 3, S, S) float32."""
    if frame.shape[:2] != (size, size):
        frame = np.asarray(Image.fromarray(frame).resize((size, size), Image.Resampling.BICUBIC))
    x = (frame.astype(np.float32) / np.float32(255.0) - MEAN) / STD
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


def to_bfloat16(x: np.ndarray) -> np.ndarray:
    """float32 rounded to the nearest bfloat16 (ties to even), kept as float32."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    u = (u + np.uint32(0x7FFF) + ((u >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return u.view(np.float32)


def resize_bilinear(x: np.ndarray, h: int, w: int) -> np.ndarray:
    """(h0, w0) -> (h, w), bilinear with half-pixel centres (torch's align_corners=False, no antialiasing)."""

    def axis(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        src = np.maximum((np.arange(n_out, dtype=np.float32) + np.float32(0.5)) * np.float32(n_in / n_out) - 0.5, 0)
        i0 = np.minimum(src.astype(np.int64), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)

    y0, y1, wy = axis(x.shape[0], h)
    x0, x1, wx = axis(x.shape[1], w)
    top = x[y0][:, x0] * (1 - wx) + x[y0][:, x1] * wx
    bottom = x[y1][:, x0] * (1 - wx) + x[y1][:, x1] * wx
    return top * (1 - wy[:, None]) + bottom * wy[:, None]


class OnnxTracker:
    def __init__(self, folder: Path) -> None:
        self.g = Graphs(folder)
        m = self.g.manifest
        if m.get("no_obj_ptr") is None and m["config"]["mask_decoder"]["pred_obj_scores"]:
            raise SystemExit(f"{folder}: its manifest has no no_obj_ptr: export the model again with this vos")
        self.size, self.cfg, self.t = m["image_size"], m["config"], m["config"]["tracking"]
        self.no_obj_ptr = np.asarray(m["no_obj_ptr"] or [], np.float32)
        shapes = {(g, t["name"]): t["shape"] for g, graph in m["graphs"].items() for t in graph["inputs"]}
        self.mask_input_size = shapes[("mask_decoder", "mask_input")][2]  # 4E
        self.ptr_dim = shapes[("memory_attention", "obj_ptrs")][2]  # C
        self.memories: dict[int, Memory] = {}
        self.index = 0

    def use_multimask(self, num_points: int, prompted: bool) -> bool:
        t = self.t
        return (
            t["multimask_output_in_sam"]
            and (prompted or t["multimask_output_for_tracking"])
            and t["multimask_min_pt_num"] <= num_points <= t["multimask_max_pt_num"]
        )

    def choose(self, out: dict[str, np.ndarray], multimask: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The decoder's 4 outputs -> (mask logits (4E, 4E), object score (1,), pointer (C,)), as
        `SAM2Model.select_heads`: with multimask the best of outputs 1-3 by predicted IoU; else output 0, or (SAM 2.1)
        the best of 1-3 when output 0 is unstable; the pointer gated by the object's presence."""
        md, t = self.cfg["mask_decoder"], self.t
        masks, ious, ptrs, score = out["masks"][0], out["ious"][0], out["obj_ptrs"][0], out["object_score_logits"][0]
        best = 1 + int(np.argmax(ious[1:]))
        if multimask:
            k, k_ptr = best, best if md["use_multimask_token_for_obj_ptr"] else 0
        elif md["dynamic_multimask_via_stability"]:
            delta = md["dynamic_multimask_stability_delta"]
            union = np.count_nonzero(masks[0] > -delta)
            stability = np.count_nonzero(masks[0] > delta) / union if union else 1.0
            k, k_ptr = (0 if stability >= md["dynamic_multimask_stability_thresh"] else best), 0
        else:
            k, k_ptr = 0, 0
        mask, ptr = masks[k], ptrs[k_ptr]
        if md["pred_obj_scores"]:
            mask = np.where(score[0] > 0, mask, NO_OBJ_SCORE)
            presence = 1 / (1 + np.exp(-score)) if t["soft_no_obj_ptr"] else (score > 0).astype(np.float32)
            if t["fixed_no_obj_ptr"]:
                ptr = presence * ptr
            ptr = ptr + (1 - presence) * self.no_obj_ptr
        return mask.astype(np.float32), score, ptr.astype(np.float32)

    def decode(
        self, features: np.ndarray, coords: np.ndarray, labels: np.ndarray, no_memory: bool, high_res: dict
    ) -> dict[str, np.ndarray]:
        e4 = self.mask_input_size
        return self.g(
            "mask_decoder", image_embed=features, point_coords=coords, point_labels=labels,
            mask_input=np.zeros((1, 1, e4, e4), np.float32), has_mask_input=np.zeros(1, np.float32),
            no_memory=np.full(1, float(no_memory), np.float32), **high_res,
        )  # fmt: skip

    def read_memory(self, memory: Memory, embed: np.ndarray, pos: np.ndarray) -> np.ndarray:
        """Memory attention: the prompted frames (slot 0), the last num_maskmem - 1 tracked frames (slots 1..,
        oldest first), the pointers of the prompted frames and of up to max_obj_ptrs - 1 previous tracked frames."""
        t, i = self.t, self.index
        n, stride = t["num_maskmem"], t["memory_temporal_stride_for_eval"]
        frames = [(0, f) for f, _ in memory.prompted.values()]
        for slot in range(1, n):
            back = n - slot
            prev = i - 1 if back == 1 else ((i - 2) // stride) * stride - (back - 2) * stride
            if prev in memory.tracked:
                frames.append((slot, memory.tracked[prev][0]))
        max_ptrs = t["max_obj_ptrs_in_encoder"]
        past_only = t["only_obj_ptrs_in_the_past_for_eval"]
        pointers = [(i - f if t["use_signed_tpos_enc_to_obj_ptrs"] else abs(i - f), p)
                    for f, (_, p) in memory.prompted.items() if f <= i or not past_only]  # fmt: skip
        pointers += [(d, memory.tracked[i - d][1]) for d in range(1, max_ptrs) if i - d in memory.tracked]
        if not t["use_obj_ptrs_in_encoder"]:
            pointers = []
        pooled = len(frames) > 1 and "memory_attention_pooled" in self.g.sessions  # EfficientTAM's _1 / _2
        out = self.g(
            "memory_attention_pooled" if pooled else "memory_attention", image_embed=embed, image_pos=pos,
            memory=np.stack([f for _, f in frames])[None], memory_slots=np.array([s for s, _ in frames], np.int64),
            obj_ptrs=np.asarray([p for _, p in pointers], np.float32).reshape(1, len(pointers), self.ptr_dim),
            ptr_positions=np.array([d for d, _ in pointers], np.float32) / np.float32(max_ptrs - 1),
        )  # fmt: skip
        return out["conditioned"]

    def step(self, frame: np.ndarray, clicks: dict[int, list[tuple[float, float, int]]]) -> dict[int, tuple]:
        """One frame: {object id: (mask logits (H, W), object score)}; `clicks` prompt new objects on it."""
        h, w = frame.shape[:2]
        s = self.size
        feats = self.g("image_encoder", image=preprocess(frame, s))
        embed, pos = feats["image_embed"], feats["image_pos"]
        high_res = {k: v for k, v in feats.items() if k.startswith("high_res_")}
        results = {}
        for obj_id in sorted(set(self.memories) | set(clicks)):
            prompted = obj_id in clicks
            if prompted:
                points = np.array([[x, y] for x, y, _ in clicks[obj_id]], np.float32)
                coords = (points / np.array([w, h], np.float32) * np.float32(s))[None]
                labels = np.array([[label for _, _, label in clicks[obj_id]]], np.int32)
                out = self.decode(embed, coords, labels, True, high_res)
                mask, score, ptr = self.choose(out, self.use_multimask(len(points), prompted=True))
            else:
                conditioned = self.read_memory(self.memories[obj_id], embed, pos)
                out = self.decode(conditioned, np.zeros((1, 1, 2), np.float32), np.full((1, 1), -1, np.int32), False,
                                  high_res)  # fmt: skip
                mask, score, ptr = self.choose(out, self.use_multimask(0, prompted=False))
            memory = self.g(
                "memory_encoder", image_embed=embed, mask_logits=mask[None, None], object_score_logits=score[None],
                binarize=np.full(1, float(prompted), np.float32),
            )["memory"][0]  # fmt: skip
            bank = self.memories.setdefault(obj_id, Memory())
            (bank.prompted if prompted else bank.tracked)[self.index] = (to_bfloat16(memory), ptr)
            keep = max(self.t["num_maskmem"], self.t["max_obj_ptrs_in_encoder"])
            for old in [f for f in bank.tracked if f <= self.index - keep]:
                del bank.tracked[old]
            results[obj_id] = (resize_bilinear(mask, h, w), float(score[0]))
        self.index += 1
        return results


def parse_point(text: str) -> tuple[int, tuple[float, float, int]]:
    obj_id, _, rest = text.partition("=")
    values = [float(v) for v in rest.split(",")]
    if not obj_id.isdigit() or len(values) not in (2, 3):
        raise SystemExit(f"--point {text}: expected ID=X,Y or ID=X,Y,LABEL")
    return int(obj_id), (values[0], values[1], int(values[2]) if len(values) == 3 else 1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("onnx_dir", type=Path, help="a folder written by `vos export onnx`")
    parser.add_argument("frames", type=Path, help="a folder of frames (JPEG, PNG), in name order")
    parser.add_argument("--point", action="append", required=True, metavar="ID=X,Y[,LABEL]",
                        help="a click on the first frame (label 1, or 0 for a negative click); repeatable")  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="folder for the masks")
    args = parser.parse_args()
    clicks: dict[int, list] = {}
    for text in args.point:
        obj_id, click = parse_point(text)
        clicks.setdefault(obj_id, []).append(click)
    if not args.frames.is_dir():
        raise SystemExit(f"{args.frames} is not a folder of frames")
    paths = sorted(p for p in args.frames.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if not paths:
        raise SystemExit(f"no frames in {args.frames}")
    args.out.mkdir(parents=True, exist_ok=True)
    tracker = OnnxTracker(args.onnx_dir)
    for i, path in enumerate(paths):
        results = tracker.step(np.asarray(Image.open(path).convert("RGB")), clicks if i == 0 else {})
        for obj_id, (logits, _) in results.items():
            Image.fromarray(np.where(logits > 0, 255, 0).astype(np.uint8)).save(args.out / f"{path.stem}_{obj_id}.png")
        print(path.name, " ".join(f"{obj_id}:{score:+.2f}" for obj_id, (_, score) in results.items()), flush=True)


if __name__ == "__main__":
    main()
