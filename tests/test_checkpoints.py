"""Checkpoint reading, strict matching with helpful errors, and downloads from a loopback server."""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import vos
from tests.certificates import make_certificates
from tests.conftest import build_meta, save_meta_checkpoint
from tests.http_server import FileServer
from vos.checkpoints import download_checkpoint, matching_configs, read_state_dict, recorded_sha256, verify_checkpoint
from vos.config import load_config


@pytest.fixture(scope="module")
def sam2_v1_tiny(tmp_path_factory):
    return save_meta_checkpoint(build_meta("sam2_hiera_t"), tmp_path_factory.mktemp("v1") / "sam2_hiera_tiny.pt")


def test_meta_format_and_bare_state_dict_both_load(tiny_checkpoint, tmp_path):
    sd = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["model"]
    bare = tmp_path / "bare.pt"
    torch.save(sd, bare)
    a = vos.load_model("sam2.1_hiera_t", checkpoint=tiny_checkpoint, image_size=512)
    b = vos.load_model("sam2.1_hiera_t", checkpoint=bare, image_size=512)
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k
    assert torch.equal(a.state_dict()["no_mem_embed"], sd["no_mem_embed"])


def test_checkpoint_of_another_config_names_the_right_one(sam2_v1_tiny, tiny_checkpoint):
    with pytest.raises(vos.CheckpointError) as err:
        vos.load_model("sam2.1_hiera_t", checkpoint=sam2_v1_tiny)
    msg = str(err.value)
    assert "missing keys" in msg and "no_obj_embed_spatial" in msg and "obj_ptr_tpos_proj" in msg
    assert "this looks like sam2_hiera_t, not sam2.1_hiera_t" in msg
    with pytest.raises(vos.CheckpointError, match="this looks like sam2.1_hiera_t, not sam2.1_hiera_s"):
        vos.load_model("sam2.1_hiera_s", checkpoint=tiny_checkpoint)
    assert matching_configs(read_state_dict(sam2_v1_tiny)) == ["sam2_hiera_t"]


def test_shape_mismatch_and_unknown_keys_are_listed(tiny_checkpoint, tmp_path):
    sd = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["model"]
    sd["no_mem_embed"] = torch.zeros(1, 1, 128)
    sd["extra.weight"] = torch.zeros(3)
    path = tmp_path / "odd.pt"
    torch.save({"model": sd}, path)
    with pytest.raises(vos.CheckpointError) as err:
        vos.load_model("sam2.1_hiera_t", checkpoint=path)
    msg = str(err.value)
    assert "1 unexpected keys: extra.weight" in msg
    assert "no_mem_embed (1, 1, 128) != (1, 1, 256)" in msg
    assert "fits none of the shipped configs" in msg


def test_unreadable_files_are_refused_without_unpickling(tmp_path):
    missing = tmp_path / "nope.pt"
    with pytest.raises(vos.CheckpointError, match="not found"):
        read_state_dict(missing)
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(vos.CheckpointError, match="cannot read checkpoint"):
        read_state_dict(truncated)

    class Payload:
        def __reduce__(self):
            return (os.system, ("touch " + str(tmp_path / "pwned"),))

    hostile = tmp_path / "hostile.pt"
    torch.save({"model": Payload()}, hostile, pickle_module=pickle)
    with pytest.raises(vos.CheckpointError, match="holds Python objects other than tensors") as refused:
        read_state_dict(hostile)
    assert not (tmp_path / "pwned").exists()
    text = tmp_path / "notes.pt"
    text.write_text("hello\n")
    with pytest.raises(vos.CheckpointError, match="it is not a PyTorch checkpoint") as not_torch:
        read_state_dict(text)
    for e in (refused, not_torch):  # no advice to disable the safe loader, no raw torch internals
        assert "weights_only" not in str(e.value) and "KeyError" not in str(e.value)
    not_a_sd = tmp_path / "list.pt"
    torch.save([torch.zeros(1)], not_a_sd)
    with pytest.raises(vos.CheckpointError, match="holds no state dict"):
        read_state_dict(not_a_sd)


# --- downloads --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def https(tmp_path_factory) -> tuple[Path, Path, Path]:
    """(CA, server certificate, key) for an https FileServer; tests trust the CA through SSL_CERT_FILE."""
    return make_certificates(tmp_path_factory.mktemp("tls"))


def test_download_resumes_and_moves_into_cache_after_strict_check(tiny_checkpoint, tmp_path, https, monkeypatch):
    monkeypatch.setenv("SSL_CERT_FILE", str(https[0]))
    size = tiny_checkpoint.stat().st_size
    with FileServer({"/sam2.1_hiera_tiny.pt": tiny_checkpoint}, tls=https[1:]) as server:
        server.cut_after = size // 3
        url = server.url + "/sam2.1_hiera_tiny.pt"
        with pytest.raises(vos.DownloadError, match="Run the command again to resume") as err:
            download_checkpoint("sam2.1_hiera_t", url=url, dest_dir=tmp_path, progress=False)
        assert str(tmp_path / "sam2.1_hiera_tiny.pt") in str(err.value)
        part = tmp_path / "sam2.1_hiera_tiny.pt.part"
        assert part.stat().st_size == size // 3
        assert not (tmp_path / "sam2.1_hiera_tiny.pt").exists()

        path = download_checkpoint("sam2.1_hiera_t", url=url, dest_dir=tmp_path, progress=False)
        assert server.requests[-1] == ("/sam2.1_hiera_tiny.pt", f"bytes={size // 3}-")
    assert path == tmp_path / "sam2.1_hiera_tiny.pt" and not part.exists()
    assert path.read_bytes() == tiny_checkpoint.read_bytes()
    assert recorded_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest() == verify_checkpoint(load_config("sam2.1_hiera_t"), path)


def test_plain_http_is_refused_unless_allowed(tiny_checkpoint, tmp_path, monkeypatch):
    with FileServer({"/t.pt": tiny_checkpoint}) as server:
        with pytest.raises(vos.DownloadError, match="only https://"):
            download_checkpoint("sam2.1_hiera_t", url=server.url + "/t.pt", dest_dir=tmp_path, progress=False)
        monkeypatch.setenv("VOS_CHECKPOINT_MIRROR", server.url)
        with pytest.raises(vos.DownloadError, match="only https://"):
            download_checkpoint("sam2.1_hiera_t", dest_dir=tmp_path, progress=False)
        assert server.requests == []
        path = download_checkpoint("sam2.1_hiera_t", url=server.url + "/t.pt", dest_dir=tmp_path, progress=False, allow_http=True)
    assert path.read_bytes() == tiny_checkpoint.read_bytes()


def test_a_checkpoint_that_changed_in_the_cache_fails_verification(tiny_checkpoint, tmp_path):
    env = {**os.environ, "VOS_CACHE_DIR": str(tmp_path)}
    with FileServer({"/t.pt": tiny_checkpoint}) as server:
        download_checkpoint("sam2.1_hiera_t", url=server.url + "/t.pt", dest_dir=tmp_path, progress=False, allow_http=True)
    verify = [sys.executable, "-m", "vos.cli", "checkpoints", "verify"]
    ok = subprocess.run(verify, capture_output=True, text=True, env=env, timeout=120)
    assert ok.returncode == 0 and "sam2.1_hiera_t" in ok.stdout and " ok " in ok.stdout, ok.stderr
    with open(tmp_path / "sam2.1_hiera_tiny.pt", "r+b") as f:
        f.seek(1000)
        f.write(b"\x00" * 8)
    bad = subprocess.run(verify + ["sam2.1_hiera_t"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == vos.CheckpointError.exit_code and "differs from the cache record" in bad.stderr


def test_a_download_that_does_not_match_the_known_digest_is_removed(tiny_checkpoint, tmp_path):
    cfg = load_config("sam2.1_hiera_t")
    cfg = cfg.model_copy(update={"checkpoint": cfg.checkpoint.model_copy(update={"sha256": "0" * 64})})
    with FileServer({"/t.pt": tiny_checkpoint}) as server:
        with pytest.raises(vos.DownloadError, match="expected 0000"):
            download_checkpoint(cfg, url=server.url + "/t.pt", dest_dir=tmp_path, progress=False, allow_http=True)
    assert list(tmp_path.iterdir()) == []


def test_download_of_a_wrong_file_leaves_nothing_in_the_cache(sam2_v1_tiny, tmp_path):
    with FileServer({"/sam2.1_hiera_tiny.pt": sam2_v1_tiny}) as server:
        with pytest.raises(vos.DownloadError, match="(?s)not a valid sam2.1_hiera_t checkpoint.*looks like sam2_hiera_t"):
            download_checkpoint("sam2.1_hiera_t", url=server.url + "/sam2.1_hiera_tiny.pt", dest_dir=tmp_path, progress=False, allow_http=True)
    assert list(tmp_path.iterdir()) == []


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_server_says_where_to_put_the_file(tmp_path):
    url = f"https://127.0.0.1:{_closed_port()}/sam2.1_hiera_tiny.pt"
    with pytest.raises(vos.DownloadError) as err:
        download_checkpoint("sam2.1_hiera_t", url=url, dest_dir=tmp_path, progress=False)
    msg = str(err.value)
    assert url in msg and f"put it at {tmp_path / 'sam2.1_hiera_tiny.pt'}" in msg


def test_load_model_downloads_on_first_use(tiny_checkpoint, tmp_path, monkeypatch, https):
    monkeypatch.setenv("SSL_CERT_FILE", str(https[0]))
    with FileServer({"/mirror/sam2.1_hiera_tiny.pt": tiny_checkpoint}, tls=https[1:]) as server:
        monkeypatch.setenv("VOS_CACHE_DIR", str(tmp_path / "cache"))
        monkeypatch.setenv("VOS_CHECKPOINT_MIRROR", server.url + "/mirror/")
        model = vos.load_model("sam2.1_hiera_t", image_size=512)
        assert (tmp_path / "cache" / "sam2.1_hiera_tiny.pt").is_file()
        n = len(server.requests)
        vos.load_model("sam2.1_hiera_t", image_size=512)  # second use: from the cache
        assert len(server.requests) == n
    ref = torch.load(tiny_checkpoint, map_location="cpu", weights_only=True)["model"]
    assert torch.equal(model.state_dict()["no_obj_ptr"], ref["no_obj_ptr"])
    with pytest.raises(vos.CheckpointError, match="vos checkpoints download sam2.1_hiera_s"):
        vos.load_model("sam2.1_hiera_s", download=False)


def test_cli_download_and_failure_exit_codes(tiny_checkpoint, tmp_path):
    env = {**os.environ, "VOS_CACHE_DIR": str(tmp_path)}
    with FileServer({"/t.pt": tiny_checkpoint}) as server:
        ok = subprocess.run(
            [sys.executable, "-m", "vos.cli", "checkpoints", "download", "sam2.1_hiera_t", "--url", server.url + "/t.pt", "--quiet", "--allow-http"],
            capture_output=True, text=True, env=env, timeout=120,
        )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.strip() == str(tmp_path / "sam2.1_hiera_tiny.pt")
    bad = subprocess.run(
        [sys.executable, "-m", "vos.cli", "checkpoints", "download", "sam2.1_hiera_s",
         "--url", f"https://127.0.0.1:{_closed_port()}/s.pt", "--quiet"],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert bad.returncode == vos.DownloadError.exit_code
    assert "vos: error: could not download sam2.1_hiera_s" in bad.stderr
    listing = subprocess.run([sys.executable, "-m", "vos.cli", "checkpoints", "list"], capture_output=True, text=True, env=env)
    assert "sam2.1_hiera_t" in listing.stdout and "cached" in listing.stdout
