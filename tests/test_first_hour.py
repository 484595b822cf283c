"""A new user's first hour offline: random weights from `vos checkpoints random`, and README's offline "Get started"
run as written on a copy of the repository files it names."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
import sys
from pathlib import Path

import av
import torch

import vos
from vos.build import random_weights_name
from vos.checkpoints import OBJECT_SCORE_BIAS_OFFSET, RANDOM_WEIGHTS_KEY
from vos.streams.messages import MaskMessage

REPO = Path(__file__).resolve().parent.parent
OFFLINE_BLOCK = re.compile(r"make a model with \*\*random, untrained weights\*\*.*?```bash\n(.*?)```", re.S)


def vos_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vos.cli", *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_random_weights_are_official_named_untrained_and_keep_objects_present(tmp_path, caplog):
    run = vos_cli("checkpoints", "random", "efficienttam_ti_512x512", "--out", str(tmp_path), "--seed", "3")
    assert run.returncode == 0, run.stderr
    path = tmp_path / "efficienttam_ti_512x512-random-untrained.pt"
    assert run.stdout.splitlines()[0] == str(path) and "untrained" in run.stdout and "download" in run.stdout
    saved = torch.load(path, map_location="cpu", weights_only=True)
    assert saved[RANDOM_WEIGHTS_KEY] == {"config": "efficienttam_ti_512x512", "seed": 3}
    bias = saved["model"]["sam_mask_decoder.pred_obj_score_head.layers.2.bias"]
    torch.manual_seed(3)
    fresh = vos.build_model("efficienttam_ti_512x512").state_dict()["sam_mask_decoder.pred_obj_score_head.layers.2.bias"]
    assert torch.allclose(bias, fresh + OBJECT_SCORE_BIAS_OFFSET)

    with caplog.at_level(logging.WARNING):
        model = vos.load_model(checkpoint=path)  # its name picks the 512x512 config among those its tensors fit
    assert model.cfg.name == "efficienttam_ti_512x512"
    assert any("random, untrained weights" in r.getMessage() for r in caplog.records)


def test_random_weights_go_into_a_folder_unless_a_file_is_named(tmp_path):
    from vos.build import random_weights_path

    name = random_weights_name("edgetam")
    assert random_weights_path("edgetam", f"{tmp_path}/w/") == tmp_path / "w" / name  # not a file named w
    assert random_weights_path("edgetam", tmp_path / "weights") == tmp_path / "weights" / name
    assert random_weights_path("edgetam", tmp_path) == tmp_path / name
    assert random_weights_path("edgetam", tmp_path / "mine.pt") == tmp_path / "mine.pt"
    (tmp_path / "v1.0").mkdir()
    assert random_weights_path("edgetam", tmp_path / "v1.0") == tmp_path / "v1.0" / name


def test_the_offline_get_started_runs_as_written(davis_root, tmp_path):
    """README's commands, run by bash from a folder holding only the repository files they name."""
    block = OFFLINE_BLOCK.search((REPO / "README.md").read_text()).group(1)
    data = "tests/data/davis2016-val"
    for sub in ("JPEGImages/480p/car-shadow", "Annotations/480p/car-shadow"):
        shutil.copytree(REPO / data / sub, tmp_path / data / sub)
    script = f'vos() {{ "{sys.executable}" -m vos.cli "$@"; }}\nset -e\nD={data}\n{block}'
    run = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    assert "random, untrained weights" in run.stderr  # said on loading, not only by the command that made them
    frames = len(list((tmp_path / data / "JPEGImages/480p/car-shadow").glob("*.jpg")))
    assert frames == 40 and (tmp_path / random_weights_name("edgetam")).is_file()
    assert len(list((tmp_path / "out").glob("*.png"))) == frames
    lines = (tmp_path / "out" / "masks.jsonl").read_text().splitlines()
    messages = [MaskMessage.model_validate_json(line) for line in lines]
    assert [m.frame_index for m in messages] == list(range(frames))
    assert all([o.id for o in m.objects] == [1] and m.objects[0].area > 0 for m in messages)  # kept present
    with av.open(str(tmp_path / "out" / "overlay.mp4")) as video:
        assert sum(1 for _ in video.decode(video=0)) == frames
