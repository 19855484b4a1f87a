import socket

import pytest
import torch

from lightning_modules.metrics import weights as weights_module
from lightning_modules.metrics.weights import (
    WEIGHTS,
    MissingWeightsError,
    is_offline,
    resolve_weights,
    resolve_weights_dir,
)


@pytest.fixture
def clean_env(monkeypatch, tmp_path):
    for name in ("CONDIFF_WEIGHTS", "CONDIFF_OFFLINE", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    return monkeypatch


def test_weights_dir_precedence(clean_env, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_weights_dir() == tmp_path / "home" / ".cache" / "condiff" / "weights"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert resolve_weights_dir() == tmp_path / "xdg" / "condiff" / "weights"
    monkeypatch.setenv("CONDIFF_WEIGHTS", str(tmp_path / "env"))
    assert resolve_weights_dir() == tmp_path / "env"
    assert resolve_weights_dir(tmp_path / "explicit") == tmp_path / "explicit"


def test_offline_flag_and_env(clean_env):
    assert not is_offline()
    assert is_offline(True)
    clean_env.setenv("CONDIFF_OFFLINE", "1")
    assert is_offline()


def test_weights_dir_wins_over_torch_hub_cache(clean_env, tmp_path):
    name = WEIGHTS["lpips_alex"].name
    hub_file = weights_module.torch_hub_checkpoint(name)
    hub_file.parent.mkdir(parents=True)
    hub_file.write_bytes(b"hub")
    assert resolve_weights("lpips_alex", tmp_path / "empty", offline=True) == hub_file
    (tmp_path / name).write_bytes(b"local")
    assert resolve_weights("lpips_alex", tmp_path, offline=True) == tmp_path / name


@pytest.mark.parametrize("key", sorted(WEIGHTS))
def test_offline_missing_file_names_file_url_and_place(clean_env, tmp_path, key):
    with pytest.raises(MissingWeightsError) as info:
        resolve_weights(key, tmp_path, offline=True)
    message = str(info.value)
    assert WEIGHTS[key].name in message
    assert WEIGHTS[key].url in message
    assert str(tmp_path / WEIGHTS[key].name) in message
    assert "offline" in message


def test_env_offline_never_downloads(clean_env, tmp_path):
    clean_env.setenv("CONDIFF_OFFLINE", "1")
    with pytest.raises(MissingWeightsError, match="offline"):
        resolve_weights("fid_inception", tmp_path)


def test_failed_download_becomes_missing_weights_error(clean_env, tmp_path, monkeypatch):
    seen_timeouts = []

    def failing_download(url, dst, hash_prefix=None, progress=True):
        seen_timeouts.append(socket.getdefaulttimeout())
        raise OSError("Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", failing_download)
    before = socket.getdefaulttimeout()
    with pytest.raises(MissingWeightsError) as info:
        resolve_weights("gfla_inception", tmp_path)
    assert "Name or service not known" in str(info.value)
    assert WEIGHTS["gfla_inception"].url in str(info.value)
    assert seen_timeouts == [weights_module.DOWNLOAD_TIMEOUT_S]
    assert socket.getdefaulttimeout() == before


def test_download_goes_to_weights_dir_with_hash_check(clean_env, tmp_path, monkeypatch):
    calls = []

    def fake_download(url, dst, hash_prefix=None, progress=True):
        calls.append((url, hash_prefix))
        with open(dst, "wb") as handle:
            handle.write(b"weights")

    monkeypatch.setattr(torch.hub, "download_url_to_file", fake_download)
    path = resolve_weights("lpips_vgg", tmp_path / "new")
    assert path == tmp_path / "new" / WEIGHTS["lpips_vgg"].name
    assert path.read_bytes() == b"weights"
    assert calls == [(WEIGHTS["lpips_vgg"].url, "397923af")]


def test_unknown_key():
    with pytest.raises(KeyError, match="Unknown weights key"):
        resolve_weights("resnet")
