"""Where and in which precision the model computes: device checks, native bf16 detection, `precision` choice.

`precision` is one of
- "fp32": everything in float32, equal to Meta's reference (the default);
- "bf16": image encoder, memory attention, memory encoder and mask decoder under bfloat16
  autocast, with the linear and convolution weights stored in bfloat16
  (`SAM2Model.set_precision`); outputs (mask logits, scores) stay float32;
- "int8" (CPUs): the linear layers run as int8 matrix products with activations quantized on the
  fly (`SAM2Model.set_precision`; torch's dynamic quantization, fbgemm), the rest in float32; for
  CPUs without native bf16. Not equal to fp32: per-frame agreement is tested (`tests/test_efficienttam.py`);
- "auto": bf16 where the hardware multiplies bf16 natively (CUDA GPUs with bf16, CPUs with
  AVX-512 BF16 or AMX), fp32 elsewhere. On CPUs without native bf16 (AVX2 only), bf16 is
  emulated and several times *slower* than fp32. `auto` never picks int8, which changes the numbers
  more than bf16 does: ask for it.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import logging
import warnings
from pathlib import Path
from typing import Literal

import torch

from vos.config import PRECISIONS
from vos.errors import ConfigError

log = logging.getLogger("vos")


def check_device(device: str | torch.device) -> torch.device:
    """The torch device, or ConfigError when it is malformed or not present on this machine."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device {device!r} is not a torch device: use cpu, cuda or cuda:N") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device {device!r} was asked for but CUDA is not available here "
                "(no GPU, or a CPU-only build of torch): use --device cpu, or install a CUDA build of torch"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ConfigError(f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ConfigError(f"device {device!r}: only cpu and cuda are supported")
    return dev


def native_bf16(device: str | torch.device = "cpu") -> bool:
    """Whether bf16 matrix multiplication runs natively (faster than fp32) on `device`."""
    dev = torch.device(device)
    if dev.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
    if dev.type == "cpu":
        has = lambda name: bool(getattr(torch.cpu, name, lambda: False)())  # noqa: E731
        return has("_is_avx512_bf16_supported") or has("_is_amx_tile_supported")
    return False


def resolve_precision(precision: str, device: str | torch.device = "cpu") -> Literal["fp32", "bf16", "int8"]:
    """"fp32" / "bf16" / "int8" / "auto" -> what runs on `device`; warns when bf16 is asked for where it is slow."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if precision == "int8" and torch.device(device).type != "cpu":
        raise ConfigError(f"precision int8 is for CPUs, not {torch.device(device)}: use bf16 or auto there")
    native = native_bf16(device)
    if precision == "auto":
        chosen = "bf16" if native else "fp32"
        log.info("precision auto: %s on %s (%s native bf16)", chosen, torch.device(device), "has" if native else "no")
        return chosen
    if precision == "bf16" and not native:
        warnings.warn(
            f"precision bf16 on {torch.device(device)}, which has no native bf16 matrix multiplication: "
            "it runs, but slower than fp32 (use precision='auto' to pick the faster one)",
            RuntimeWarning,
            stacklevel=3,
        )
    return precision  # type: ignore[return-value]


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bfloat16 autocast on `device` for precision "bf16"; nothing for "fp32" and "int8"."""
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


OMP_PAUSE_SOFT = 1  # omp_pause_resource_t


@functools.cache
def _libgomp() -> ctypes.CDLL | None:
    """The GNU OpenMP runtime torch runs on, when loaded in this process and new enough (OpenMP 5.0)."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/maps").read_text().splitlines():
            path = line.split()[-1]
            if "/libgomp" in path:
                lib = ctypes.CDLL(path)
                return lib if hasattr(lib, "omp_pause_resource_all") else None
    return None


def release_openmp_threads() -> bool:
    """Ends the calling thread's idle OpenMP worker threads; False where torch does not run on libgomp.

    torch keeps an OpenMP worker team per thread that has run parallel work. Once the teams of
    all threads hold more workers than there are cores, libgomp stops spinning between parallel
    regions (its "throttled" wait): every worker sleeps and is woken on each of the thousands of
    regions of a frame. A model loaded in one thread and stepped in another ran 20-30 % slower
    so (2-core AVX2 machine, `vos track` against the tracker alone). A thread that is done with
    torch calls this, so that the stepping thread's team is the only one; the next parallel
    work in the calling thread starts a new team.
    """
    lib = _libgomp()
    if lib is None:
        return False
    return lib.omp_pause_resource_all(OMP_PAUSE_SOFT) == 0


def set_threads(threads: int | None) -> None:
    """torch's intra-op thread count, when given (None: torch's choice, one per core)."""
    if threads is not None:
        torch.set_num_threads(threads)
