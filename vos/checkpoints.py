"""Checkpoints: reading Meta's files safely, strict matching against a config, and downloading.

Files are read with `torch.load(weights_only=True)`: never unpickle arbitrary objects.
Accepted layouts: Meta's `{"model": state_dict}` and a bare state dict.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Mapping

from tqdm import tqdm

from vos.config import DEFAULT_CONFIG, ModelConfig, available_models, load_config
from vos.errors import CheckpointError, DownloadError

if TYPE_CHECKING:
    import torch

CACHE_ENV = "VOS_CACHE_DIR"
MIRROR_ENV = "VOS_CHECKPOINT_MIRROR"  # base URL that replaces Meta's, e.g. an internal mirror
DOWNLOAD_CHUNK_BYTES = 1 << 20
DOWNLOAD_TIMEOUT_S = 60.0
MAX_KEYS_IN_MESSAGE = 8
RANDOM_WEIGHTS_KEY = "vos_random_weights"  # in a checkpoint made by `save_random_checkpoint`: {"config", "seed"}
# Added to the object-score head's output bias of random weights: objects then score as present and are tracked
# (with untrained weights they score as absent after the prompted frame: nothing would be tracked).
OBJECT_SCORE_BIAS_OFFSET = 1.0

log = logging.getLogger(__name__)

StateDict = Mapping[str, "torch.Tensor"]


def cache_dir() -> Path:
    """Where downloaded checkpoints live: $VOS_CACHE_DIR or ~/.cache/vos/checkpoints."""
    env = os.environ.get(CACHE_ENV)
    return Path(env) if env else Path.home() / ".cache" / "vos" / "checkpoints"


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a state dict (Meta's `{"model": ...}` or bare)."""
    import torch

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for corrupt or unsafe files
        # torch's own message is not shown: it advises loading with weights_only=False, which runs the file's code.
        unsafe = zipfile.is_zipfile(path) and "weights only load failed" in str(e).lower()
        why = (
            "it holds Python objects other than tensors, and vos never unpickles those (they can run code)"
            if unsafe else "it is not a PyTorch checkpoint (a text or HTML file, another format) or it is truncated"
        )  # fmt: skip
        raise CheckpointError(
            f"cannot read checkpoint {path}: {why}. A checkpoint is a torch.save file of {{'model': state_dict}} or a "
            "state dict: download it again (vos checkpoints download NAME) or check the path"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict):
        if isinstance(obj.get(RANDOM_WEIGHTS_KEY), dict):
            log.warning(
                "%s holds random, untrained weights (`vos checkpoints random`): its masks follow no object. "
                "Trained weights: `vos checkpoints download NAME`", path,
            )  # fmt: skip
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in obj.items()):
        raise CheckpointError(f"checkpoint {path} holds no state dict (expected {{'model': state_dict}} or a state dict)")
    return obj


@functools.lru_cache(maxsize=None)
def _expected_shapes(name: str) -> dict[str, tuple[int, ...]]:
    import torch

    from vos.modeling.sam2 import SAM2Model

    with torch.device("meta"):
        model = SAM2Model(load_config(name))
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def matching_configs(state_dict: StateDict) -> list[str]:
    """Names of the shipped configs whose keys and shapes the state dict fits exactly."""
    shapes = {k: tuple(v.shape) for k, v in state_dict.items()}
    return [name for name in available_models() if _expected_shapes(name) == shapes]


def pick_config(fits: list[str], checkpoint: str | Path, image_size: int | None = None) -> str:
    """The config to load a checkpoint with, among those its keys and shapes fit (`matching_configs`, not empty).

    Several fit where variants differ only in settings (EfficientTAM's 1024 and 512x512 files): the one whose
    published file name the checkpoint has, or whose name and a dash the file name starts with
    (`efficienttam_ti_512x512-random-untrained.pt`), else one of `image_size`, else the default model, else the first.
    """
    name = Path(checkpoint).name
    published = lambda n: (info := load_config(n).checkpoint) is not None and info.filename == name  # noqa: E731
    named = [n for n in fits if published(n) or name.startswith(f"{n}-")]
    sized = [n for n in fits if image_size is not None and load_config(n).image_size == image_size]
    return (named or sized or [n for n in fits if n == DEFAULT_CONFIG] or fits)[0]


def _listing(keys: list[str]) -> str:
    shown = ", ".join(keys[:MAX_KEYS_IN_MESSAGE])
    more = len(keys) - MAX_KEYS_IN_MESSAGE
    return shown + (f", ... (+{more} more)" if more > 0 else "")


def check_state_dict(state_dict: StateDict, expected: dict[str, tuple[int, ...]], config_name: str, source: str) -> None:
    """Raise CheckpointError naming missing/unexpected/misshapen keys and the config the file fits, if any."""
    missing = sorted(set(expected) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(expected))
    misshapen = sorted(
        f"{k} {tuple(state_dict[k].shape)} != {expected[k]}"
        for k in set(expected) & set(state_dict)
        if tuple(state_dict[k].shape) != expected[k]
    )
    if not (missing or unexpected or misshapen):
        return
    lines = [f"checkpoint {source} does not match model config {config_name}:"]
    if missing:
        lines.append(f"  {len(missing)} missing keys: {_listing(missing)}")
    if unexpected:
        lines.append(f"  {len(unexpected)} unexpected keys: {_listing(unexpected)}")
    if misshapen:
        lines.append(f"  {len(misshapen)} keys with other shapes: {_listing(misshapen)}")
    fits = matching_configs(state_dict)
    if fits:
        lines.append(f"  this looks like {' or '.join(fits)}, not {config_name}")
    else:
        lines.append("  it fits none of the shipped configs: " + ", ".join(available_models()))
    raise CheckpointError("\n".join(lines))


def load_weights(model: torch.nn.Module, path: str | Path, state_dict: StateDict | None = None) -> None:
    """Strictly load a checkpoint file (or its already read `state_dict`) into `model`: keys and shapes must match."""
    if state_dict is None:
        state_dict = read_state_dict(path)
    cfg = getattr(model, "cfg", None)
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    check_state_dict(state_dict, expected, cfg.name if cfg else type(model).__name__, str(path))
    model.load_state_dict(state_dict, strict=True)


def checkpoint_url(cfg: ModelConfig) -> str:
    if cfg.checkpoint is None:
        raise CheckpointError(f"model config {cfg.name} names no checkpoint to download; pass a checkpoint path")
    mirror = os.environ.get(MIRROR_ENV)
    return f"{mirror.rstrip('/')}/{cfg.checkpoint.filename}" if mirror else cfg.checkpoint.url


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(DOWNLOAD_CHUNK_BYTES):
            digest.update(chunk)
    return digest.hexdigest()


def digest_path(checkpoint: Path) -> Path:
    """Where the cache records a checkpoint's SHA-256 (`sha256sum` format)."""
    return checkpoint.with_name(checkpoint.name + ".sha256")


def recorded_sha256(checkpoint: Path) -> str | None:
    path = digest_path(checkpoint)
    return path.read_text(encoding="utf-8").split()[0] if path.is_file() else None


def verify_checkpoint(cfg: ModelConfig, path: Path) -> str:
    """The file's SHA-256, checked against the config's and the one recorded at download (CheckpointError if either differs)."""
    actual = file_sha256(path)
    for source, expected in (("the model config", cfg.checkpoint and cfg.checkpoint.sha256), ("the cache record", recorded_sha256(path))):
        if expected is not None and expected != actual:
            raise CheckpointError(f"{path}: SHA-256 {actual} differs from {source} ({expected}); delete it and download it again")
    return actual


def cached_checkpoint_path(cfg: ModelConfig) -> Path:
    if cfg.checkpoint is None:
        raise CheckpointError(f"model config {cfg.name} names no checkpoint file; pass a checkpoint path")
    return cache_dir() / cfg.checkpoint.filename


def _fetch(url: str, part: Path, progress: bool) -> None:
    """Download `url` into `part`, resuming from its current size when the server honours Range."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        response = urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the partial file is complete
            return
        raise
    with response:
        if have and response.status != 206:  # server ignored the range: start over
            have = 0
        length = response.headers.get("Content-Length")
        total = have + int(length) if length is not None else None
        with open(part, "ab" if have else "wb") as f, tqdm(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=part.name.removesuffix(".part"), disable=not progress,
        ) as bar:
            while chunk := response.read(DOWNLOAD_CHUNK_BYTES):
                f.write(chunk)
                bar.update(len(chunk))
        if total is not None and part.stat().st_size != total:
            raise DownloadError(f"connection closed after {part.stat().st_size} of {total} bytes")


def download_checkpoint(
    name_or_cfg: str | ModelConfig,
    url: str | None = None,
    dest_dir: str | Path | None = None,
    progress: bool = True,
    allow_http: bool = False,
) -> Path:
    """Download a model's checkpoint into the cache and return its path.

    The file is written to `<name>.part` (resumed if a previous attempt left one), checked against the
    config's SHA-256 when known, loaded strictly into the model, and only then moved into place, its
    digest recorded beside it. Plain http is refused unless `allow_http`.
    """
    cfg = name_or_cfg if isinstance(name_or_cfg, ModelConfig) else load_config(name_or_cfg)
    final = (Path(dest_dir) if dest_dir else cache_dir()) / cached_checkpoint_path(cfg).name
    url = url or checkpoint_url(cfg)
    scheme = urllib.parse.urlsplit(url).scheme
    if scheme != "https" and not (allow_http and scheme == "http"):
        raise DownloadError(f"refusing to download {cfg.name} from {url}: only https:// (http:// with --allow-http)")
    final.parent.mkdir(parents=True, exist_ok=True)
    part = final.with_name(final.name + ".part")
    try:
        _fetch(url, part, progress)
    except (urllib.error.URLError, OSError, DownloadError) as e:
        reason = getattr(e, "reason", None) or e
        raise DownloadError(
            f"could not download {cfg.name} from {url}: {reason}\n"
            f"Download it by hand from {url} and put it at {final} "
            f"(or pass its path as the checkpoint). Run the command again to resume."
        ) from e
    digest = file_sha256(part)
    expected = cfg.checkpoint.sha256 if cfg.checkpoint is not None else None
    if expected is not None and digest != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(f"downloaded {cfg.name} has SHA-256 {digest}, expected {expected}; removed it")
    try:
        check_state_dict(read_state_dict(part), _expected_shapes(cfg.name), cfg.name, url)
    except CheckpointError as e:
        part.unlink(missing_ok=True)
        raise DownloadError(f"downloaded file is not a valid {cfg.name} checkpoint, removed it:\n{e}") from e
    os.replace(part, final)
    digest_path(final).write_text(f"{digest}  {final.name}\n", encoding="utf-8")
    return final


def resolve_checkpoint(cfg: ModelConfig, checkpoint: str | Path | None, download: bool = True) -> Path:
    """The given path, else the cached file, else (when `download`) a fresh download."""
    if checkpoint is not None:
        return Path(checkpoint)
    cached = cached_checkpoint_path(cfg)
    if cached.is_file():
        return cached
    if not download:
        raise CheckpointError(f"no checkpoint for {cfg.name} at {cached}; run `vos checkpoints download {cfg.name}`")
    return download_checkpoint(cfg)
