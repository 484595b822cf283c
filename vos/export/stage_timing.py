"""Which runtime runs each of a model's stages fastest here, PyTorch, ONNX Runtime or OpenVINO: what
`backend="auto"` measures at load.

Each stage of a tracked frame at steady state, on random inputs (speed does not depend on the values): the image
encoder (one image), memory attention (a full bank: num_maskmem frames, max_obj_ptrs_in_encoder pointers; PyTorch
with each frame's keys projected once, as the tracker keeps them; pooled where the model pools), the mask decoder
without prompts and the memory encoder, for B objects. The PyTorch call is the one the tracker makes for that
stage; the ONNX inputs do the same work. `benchmarks/bench_onnx.py` prints the same measurements.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from vos.export.graphs import attention_graph
from vos.modeling.sam2 import SAM2Model

MARGIN = 0.05
"""A graph runtime runs a stage when its median time is this much below PyTorch's: a win beyond timing noise."""
FOLLOWS = {"mask_prompt": "mask_decoder", "memory_attention": "memory_attention_pooled"}
"""Graphs that run on the runtime of another: a mask prompt's pointer comes from the decoder; a model that pools
its memory (EfficientTAM's _1 / _2) reads a full bank with `memory_attention_pooled`, and one frame with
`memory_attention`, which must run where the memories are kept as the other reads them."""


def stage_calls(model: SAM2Model, objects: int = 1) -> dict[str, tuple[Callable[[], object], dict[str, np.ndarray]]]:
    """Per graph name: (the PyTorch call, the graph's inputs for the same work)."""
    gen = torch.Generator().manual_seed(0)
    t, s, e = model.cfg.tracking, model.image_size, model.cfg.image_embedding_size
    b, frames, num_ptrs = objects, t.num_maskmem, t.max_obj_ptrs_in_encoder
    image = torch.randn(1, 3, s, s, generator=gen)
    with torch.inference_mode():
        out = model.forward_image(image)
        embed, pos, high_res = out.features[-1], out.pos[-1][:1], out.features[:-1]
        memory = torch.randn(b, frames, *model.memory_shape, generator=gen).bfloat16().float()
        projected = [model.project_memory(memory[:, f]) for f in range(frames)]
    slots, distances = list(range(frames)), list(range(1, num_ptrs + 1))
    ptrs = torch.randn(b, num_ptrs, model.hidden_dim, generator=gen)
    spatial = [(slot, list(projected[f])) for f, slot in enumerate(slots)]
    pointers = [(d, ptrs[:, k]) for k, d in enumerate(distances)]
    pix = embed.expand(b, -1, -1, -1).contiguous()
    coords, labels = model.no_points(b, torch.device("cpu"))
    logits, scores, zeros = torch.randn(b, 1, 4 * e, 4 * e, generator=gen), torch.ones(b, 1), torch.zeros(b)
    high_res_b = [f.expand(b, -1, -1, -1).contiguous() for f in high_res]
    use_high_res = model.cfg.tracking.use_high_res_features_in_sam

    def numpy(**tensors: torch.Tensor) -> dict[str, np.ndarray]:
        return {k: v.contiguous().numpy() for k, v in tensors.items()}

    return {
        "image_encoder": (lambda: model.forward_image(image), numpy(image=image)),
        attention_graph(model, frames): (
            lambda: model.condition_on_memory(embed, pos, spatial, pointers, num_ptrs - 1),
            numpy(
                image_embed=embed,
                image_pos=pos,
                memory=memory,
                memory_slots=torch.tensor(slots),
                obj_ptrs=ptrs,
                ptr_positions=torch.tensor(distances, dtype=torch.float32) / (num_ptrs - 1),
            ),
        ),  # fmt: skip
        "mask_decoder": (
            lambda: model.decode(pix, coords, labels, None, high_res_b if use_high_res else None),
            numpy(
                image_embed=pix,
                point_coords=coords,
                point_labels=labels,
                mask_input=torch.zeros(b, 1, 4 * e, 4 * e),
                has_mask_input=zeros,
                no_memory=zeros,
                **({"high_res_0": high_res_b[0], "high_res_1": high_res_b[1]} if use_high_res else {}),
            ),
        ),  # fmt: skip
        "memory_encoder": (
            lambda: model.encode_memory(embed, logits, scores, torch.zeros(b, dtype=torch.bool)),
            numpy(image_embed=embed, mask_logits=logits, object_score_logits=scores, binarize=zeros),
        ),
    }


WARMUP = 2  # calls of each before timing: the first calls of a process allocate (ONNX Runtime's arena, oneDNN)


def measure(model: SAM2Model, *runtimes, repeats: int = 2, objects: int = 1) -> dict[str, tuple[float, ...]]:
    """Per graph: median seconds per call on PyTorch and on each of `runtimes` (graphs objects: ONNX Runtime's,
    OpenVINO's), calls alternating, after WARMUP calls of each."""
    times = {}
    with torch.inference_mode(), model.autocast():
        for name, (torch_call, inputs) in stage_calls(model, objects).items():
            calls = (torch_call, *(lambda n=name, i=inputs, g=g: g.run(n, **i) for g in runtimes))
            seconds: list[list[float]] = [[] for _ in calls]
            for i in range(WARMUP + repeats):
                for call, out in zip(calls, seconds):
                    start = time.perf_counter()
                    call()
                    if i >= WARMUP:
                        out.append(time.perf_counter() - start)
            times[name] = tuple(statistics.median(s) for s in seconds)
    return times


def fastest(times: dict[str, tuple[float, ...]], graphs: set[str]) -> dict[str, int]:
    """Per graph to run on a graph runtime, which (1: the first of `measure`'s runtimes, ...): the fastest where it
    beat PyTorch by MARGIN; the graphs that follow another (FOLLOWS) with it. Graphs absent: PyTorch runs them."""
    chosen = {}
    for name, (pytorch, *others) in times.items():
        best = min(range(len(others)), key=lambda k: others[k])
        if others[best] < (1 - MARGIN) * pytorch:
            chosen[name] = best + 1
    chosen |= {name: chosen[leader] for name, leader in FOLLOWS.items() if leader in chosen and name in graphs}
    return {name: k for name, k in chosen.items() if name in graphs}


class ChosenGraphs:
    """The graphs of one export folder, each run by the runtime `fastest` chose for it; `run` as the runtimes'."""

    def __init__(self, runtimes: dict[str, tuple[str, object]]) -> None:
        """`runtimes`: per graph, the runtime's name and its graphs object."""
        self._by_graph = runtimes
        self.used = frozenset(runtimes)

    def runtime_of(self, graph: str) -> str:
        return self._by_graph[graph][0]

    def has(self, graph: str) -> bool:
        return graph in self._by_graph

    def run(self, graph: str, **inputs: np.ndarray) -> list[np.ndarray]:
        return self._by_graph[graph][1].run(graph, **inputs)
