"""The refining stage (PCDMs): coarse images of a first stage, the refiner's DataModule checks, training, the test
with coarse and refined scores side by side, chaining in test and predict, and the degraded-target bootstrap."""

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from offline_weights import write_lpips_alexnet
from PIL import Image

from datamodules.persons import PersonsDataModule
from datamodules.refinement import CoarseImageSet, Degradation, RefinementDataModule
from experiments.coarse import main as coarse
from experiments.errors import CommandError
from experiments.fit import main as fit
from experiments.predict import main as predict
from experiments.test import main as run_test
from lightning_modules.base import SamplerSettings
from lightning_modules.pidm import PoseStyleGuidance
from lightning_modules.refiner import RefinerLitModule

REPO = Path(__file__).parents[1]
TEST_PAIRS = 6  # one test identity with 6 poses
TRAIN_PAIRS = 18  # three training identities


def _no_network(*args, **kwargs):
    raise AssertionError("tests must never touch the network")


@pytest.fixture(scope="module")
def chain(tmp_path_factory):
    """A 1-step tiny persons first stage, its coarse train/test images (deterministic DDIM), a 2-step refiner
    trained on them (EMA and validation grids on) and random LPIPS weights; yields the workspace folder."""
    root = tmp_path_factory.mktemp("refiner")
    torch.manual_seed(0)
    weights = write_lpips_alexnet(root / "weights").parent
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("CONDIFF_WEIGHTS", str(weights))
        patch.delenv("CONDIFF_OFFLINE", raising=False)
        patch.setattr(torch.hub, "download_url_to_file", _no_network)
        fit(first_stage_args(root, "--trainer.max_steps=1"))
        for split in ("train", "test"):
            coarse(coarse_args(root, split))
        fit(refiner_args(root, "--trainer.max_steps=2"))
        yield root


def first_stage_args(root: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs/pidm/persons.yaml"), "--config", str(REPO / "configs/debug/tiny_pidm.yaml"),
            f"--data.init_args.root={root / 'persons'}", "--data.init_args.num_identities=4",
            f"--trainer.logger.init_args.save_dir={root / 'runs'}", *extra]


def first_stage_ckpt(root: Path) -> Path:
    return root / "runs/pidm_persons/version_0/checkpoints/last.ckpt"


def coarse_args(root: Path, split: str, *extra: str) -> list[str]:
    return ["--ckpt_path", str(first_stage_ckpt(root)), "--split", split, "--out", str(root / "coarse" / split),
            "--sampling.sampler", "ddim", "--sampling.eta", "0", "--accelerator", "cpu", "--batch_size", "4", *extra]


def refiner_args(root: Path, *extra: str) -> list[str]:
    return ["--config", str(REPO / "configs/pidm/persons_refiner.yaml"),
            "--config", str(REPO / "configs/debug/tiny_refiner.yaml"),
            f"--data.init_args.data.init_args.root={root / 'persons'}",
            "--data.init_args.data.init_args.num_identities=4",
            f"--data.init_args.first_stage={first_stage_ckpt(root)}",
            f"--data.init_args.train_coarse={root / 'coarse/train'}",
            f"--data.init_args.test_coarse={root / 'coarse/test'}",
            f"--trainer.logger.init_args.save_dir={root / 'runs'}", *extra]


def refiner_ckpt(root: Path) -> Path:
    return root / "runs/pidm_persons_refiner/version_0/checkpoints/last.ckpt"


def evaluation(stats: Path) -> list[str]:
    return ["--trainer.limit_test_batches=1.0", f"--model.init_args.evaluation.fid.stats_dir={stats}",
            "--model.init_args.test_sampling.sampler=ddim", "--model.init_args.test_sampling.eta=0"]


def pixels(folder: Path) -> dict[str, np.ndarray]:
    return {path.name: np.array(Image.open(path)) for path in sorted(folder.glob("*.png"))}


def test_coarse_folder_records_its_first_stage_sampler_and_pairs(chain):
    manifest = CoarseImageSet.read(chain / "coarse/train")
    assert manifest.complete and manifest.split == "train" and manifest.image_size == [16, 16]
    assert manifest.checkpoint == str(first_stage_ckpt(chain))
    assert manifest.sampling == {"sampler": "ddim", "steps": 4, "eta": 0.0, "seed": 0}
    assert manifest.guidance == {"form": "style_only", "w_pose": None, "w_style": None, "scale": 3.0}
    assert len(manifest.pairs) == TRAIN_PAIRS and len(set(map(tuple, manifest.pairs))) == TRAIN_PAIRS
    written = pixels(chain / "coarse/train")
    assert len(written) == TRAIN_PAIRS and all(image.shape == (16, 16, 3) for image in written.values())
    assert len(pixels(chain / "coarse/test")) == TEST_PAIRS


def test_coarse_command_continues_an_interrupted_folder_and_refuses_other_options(chain, tmp_path):
    out = tmp_path / "coarse"
    shutil.copytree(chain / "coarse/test", out)
    before = pixels(out)
    missing = sorted(out.glob("*.png"))[2]
    missing.unlink()
    manifest = CoarseImageSet.read(out)
    manifest.complete = False
    manifest.write(out)
    coarse(["--ckpt_path", str(first_stage_ckpt(chain)), "--split", "test", "--out", str(out),
            "--sampling.sampler", "ddim", "--sampling.eta", "0", "--accelerator", "cpu", "--batch_size", "4"])
    assert CoarseImageSet.read(out).complete
    np.testing.assert_array_equal(pixels(out)[missing.name], before[missing.name])  # seeded by the pair's name

    with pytest.raises(CommandError, match="other sampling"):
        coarse(["--ckpt_path", str(first_stage_ckpt(chain)), "--split", "test", "--out", str(out),
                "--sampling.steps", "2", "--accelerator", "cpu"])
    assert pixels(out).keys() == before.keys()  # nothing was removed
    with pytest.raises(CommandError, match="coarse images come from a PIDM first stage"):
        coarse(["--ckpt_path", str(refiner_ckpt(chain)), "--split", "test", "--out", str(tmp_path / "other")])


def refinement_data(root: Path, **options) -> RefinementDataModule:
    persons = PersonsDataModule(str(root / "persons"), image_size=16, num_identities=4, batch_size=2, num_workers=0,
                                pin_memory=False)
    defaults = {"first_stage": str(first_stage_ckpt(root)), "train_coarse": str(root / "coarse/train"),
                "test_coarse": str(root / "coarse/test")}
    return RefinementDataModule(persons, **{**defaults, **options})


def test_refinement_data_serves_coarse_images_and_refuses_folders_of_other_runs(chain, tmp_path):
    data = refinement_data(chain)
    data.setup("fit")
    item = data.datasets["test"][0]
    assert item["coarse"].shape == item["target"].shape == (3, 16, 16)
    assert {"target_parts", "target_identity"} <= item.keys()  # the persons evaluation keys stay
    assert len(data.datasets["train"]) == TRAIN_PAIRS and len(data.datasets["test"]) == TEST_PAIRS

    other = tmp_path / "other.ckpt"
    other.write_bytes(first_stage_ckpt(chain).read_bytes() + b"\0")
    with pytest.raises(ValueError, match="not by first_stage"):
        refinement_data(chain, first_stage=str(other)).setup("fit")
    with pytest.raises(ValueError, match="need first_stage"):
        refinement_data(chain, first_stage=None)

    partial = tmp_path / "partial"
    coarse(coarse_args(chain, "test", "--out", str(partial), "--max_pairs", "2"))
    with pytest.raises(ValueError, match="covers 2 of the 6 'test' pairs"):
        refinement_data(chain, test_coarse=str(partial)).setup("test")
    with pytest.raises(ValueError, match="coarse images of the 'test' split, expected 'train'"):
        refinement_data(chain, train_coarse=str(partial)).setup("fit")

    foreign = tmp_path / "foreign"
    shutil.copytree(chain / "coarse/test", foreign)
    manifest = CoarseImageSet.read(foreign)
    manifest.pairs[0] = ["img/id_00000/00.png", "img/id_00000/01.png"]
    manifest.write(foreign)
    with pytest.raises(ValueError, match="no pairs of the 'test' split"):
        refinement_data(chain, test_coarse=str(foreign)).setup("test")
    manifest.pairs = CoarseImageSet.read(chain / "coarse/test").pairs
    manifest.complete = False
    manifest.write(foreign)
    with pytest.raises(ValueError, match="incomplete"):
        refinement_data(chain, test_coarse=str(foreign)).setup("test")
    with pytest.raises(FileNotFoundError, match="no manifest.json"):
        refinement_data(chain, test_coarse=str(tmp_path)).setup("test")


@pytest.mark.slow
def test_refiner_test_scores_refined_and_coarse_images_side_by_side(chain):
    grids = sorted((chain / "runs/pidm_persons_refiner/version_0/images/val").glob("*.png"))
    assert grids, "validation grids of the refiner run"
    run_test(refiner_args(chain, f"--ckpt_path={refiner_ckpt(chain)}", *evaluation(chain / "stats")))
    out = chain / "runs/pidm_persons_refiner/version_1/test"
    report = json.loads((out / "metrics.json").read_text())
    expected = {"fid", "lpips", "ssim", "part_colour_error", "identity_accuracy"}
    assert set(report["metrics"]) == set(report["coarse"]["metrics"]) == expected
    assert report["coarse"]["counts"] == report["counts"] == {"fid_real": 6, "fid_generated": 6, "lpips": 6,
                                                              "ssim": 6}
    assert all(math.isfinite(v) for v in [*report["metrics"].values(), *report["coarse"]["metrics"].values()])
    saved, made = pixels(out / "coarse"), pixels(chain / "coarse/test")
    assert saved.keys() == made.keys() and all(np.array_equal(saved[name], made[name]) for name in saved)
    assert pixels(out / "generated").keys() == pixels(out / "coarse").keys()

    # Chained in one command: coarse = the first stage's test images (the same sampler and noise as the folder's),
    # refined = the refiner test's.
    run_test(first_stage_args(chain, f"--ckpt_path={first_stage_ckpt(chain)}", *evaluation(chain / "stats"),
                              f"--refiner={refiner_ckpt(chain)}", "--refiner_sampling.sampler=ddim"))
    chained_out = chain / "runs/pidm_persons/version_1/test"
    chained = json.loads((chained_out / "metrics.json").read_text())
    assert chained["refiner"]["checkpoint"] == str(refiner_ckpt(chain))
    assert chained["refiner"]["sampling"]["sampler"] == "ddim" and chained["refiner"]["strength"] == 0.15
    for name, value in report["metrics"].items():
        assert chained["metrics"][name] == pytest.approx(value, rel=1e-4, abs=1e-6), name
        assert chained["coarse"]["metrics"][name] == pytest.approx(report["coarse"]["metrics"][name], rel=1e-4,
                                                                  abs=1e-6), name
    for name, image in pixels(chained_out / "coarse").items():  # batched differently: within one level
        assert np.abs(image.astype(int) - made[name].astype(int)).max() <= 1, name
    for name, image in pixels(chained_out / "generated").items():
        assert np.abs(image.astype(int) - pixels(out / "generated")[name].astype(int)).max() <= 1, name


def test_test_and_predict_refuse_a_refiner_that_is_none(chain, tmp_path):
    with pytest.raises(CommandError, match="not a refiner"):
        run_test(first_stage_args(chain, f"--ckpt_path={first_stage_ckpt(chain)}",
                                  f"--refiner={first_stage_ckpt(chain)}"))
    with pytest.raises(CommandError, match="give --refiner too"):
        run_test(first_stage_args(chain, f"--ckpt_path={first_stage_ckpt(chain)}", "--refiner_sampling.steps=2"))
    with pytest.raises(CommandError, match="--refiner_strength must lie in"):
        run_test(first_stage_args(chain, f"--ckpt_path={first_stage_ckpt(chain)}", f"--refiner={refiner_ckpt(chain)}",
                                  "--refiner_strength=0"))
    source = next((chain / "persons/img/id_00003").glob("*.png"))
    pose = next((chain / "persons/pose/id_00003").glob("*.txt"))
    with pytest.raises(CommandError, match="does not apply to --edit interpolate"):
        predict(["--ckpt_path", str(first_stage_ckpt(chain)), "--edit", "interpolate", "--source", str(source),
                 "--source2", str(source), "--pose", str(pose), "--refiner", str(refiner_ckpt(chain)),
                 "--out", str(tmp_path)])


def test_predict_refines_pose_transfer_and_keeps_the_coarse_images(chain, tmp_path):
    source = next((chain / "persons/img/id_00003").glob("*.png"))
    poses = sorted((chain / "persons/pose/id_00003").glob("*.txt"))[:2]
    for pose in poses:
        shutil.copy(pose, tmp_path / pose.name)
    written = predict(["--ckpt_path", str(first_stage_ckpt(chain)), "--source", str(source),
                       "--poses", str(tmp_path), "--refiner", str(refiner_ckpt(chain)),
                       "--refiner_sampling.steps", "2", "--out", str(tmp_path / "out"), "--accelerator", "cpu"])
    names = {f"{source.stem}_to_{pose.stem}.png" for pose in poses}
    assert {p.name for p in (tmp_path / "out").glob("*.png")} == names
    assert {p.name for p in (tmp_path / "out/coarse").glob("*.png")} == names
    assert len(written) == 4
    refined, rough = pixels(tmp_path / "out"), pixels(tmp_path / "out/coarse")
    assert any(not np.array_equal(refined[name], rough[name]) for name in names)


def test_degraded_targets_bootstrap_a_refiner_without_a_first_stage(tmp_path):
    fit(refiner_args(tmp_path, "--trainer.max_steps=2", "--data.init_args.first_stage=null",
                     "--data.init_args.train_coarse=null", "--data.init_args.test_coarse=null",
                     "--data.init_args.degradation={}"))
    checkpoint = torch.load(refiner_ckpt(tmp_path), map_location="cpu", weights_only=True)
    assert checkpoint["hyper_parameters"]["_class_path"] == "lightning_modules.refiner.RefinerLitModule"
    with pytest.raises(ValueError, match="testing a refiner needs test_coarse"):
        run_test(refiner_args(tmp_path, f"--ckpt_path={refiner_ckpt(tmp_path)}", "--data.init_args.first_stage=null",
                              "--data.init_args.train_coarse=null", "--data.init_args.test_coarse=null",
                              "--data.init_args.degradation={}"))


def test_degradation_is_seeded_bounded_and_changes_the_image():
    image = torch.rand(3, 16, 16) * 2 - 1
    degrade = Degradation(blur_sigma=1.0, noise_std=0.1, colour_shift=0.1)
    first = degrade(image, torch.Generator().manual_seed(0))
    assert torch.equal(first, degrade(image, torch.Generator().manual_seed(0)))
    assert not torch.allclose(first, image, atol=0.02) and first.abs().max() <= 1
    with pytest.raises(ValueError, match="blur_sigma"):
        Degradation(blur_sigma=0.1)


NETWORK = {"image_size": 16, "model_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 1,
           "attention_resolutions": [8], "embed_channels": 32, "norm_channels_per_group": 4}


@pytest.mark.parametrize("condition_on_pose, channels", [(True, 3 + 20), (False, 3)])
def test_refiner_reads_the_coarse_image_and_pose_on_channels(condition_on_pose, channels):
    model = RefinerLitModule(pose_channels=20, condition_on_pose=condition_on_pose, network=NETWORK,
                             guidance=PoseStyleGuidance("disentangled"))
    assert model.net.in_channels == 3 + channels
    batch = {"source": torch.rand(2, 3, 16, 16), "target": torch.rand(2, 3, 16, 16),
             "target_pose": torch.rand(2, 20, 16, 16), "coarse": torch.rand(2, 3, 16, 16)}
    variants, _, shape = model.guided_conditions(batch)
    assert shape == (2, 3, 16, 16)
    assert torch.equal(variants["pose"]["pose"][:, :3], batch["coarse"])  # "pose" = the coarse image (+ pose)
    assert not variants["none"]["pose"].any()
    model.train()
    model.condition_drop_prob = 1.0
    _, inputs = model.training_inputs(batch)
    assert not inputs["pose"].any() and not inputs["source"].any()  # both conditions dropped
    model.condition_drop_prob = 0.0
    _, inputs = model.training_inputs(batch)
    assert torch.equal(inputs["pose"][:, :3], batch["coarse"])
    with pytest.raises(KeyError, match="'coarse' images"):
        model.guided_conditions({key: value for key, value in batch.items() if key != "coarse"})


def test_a_sampler_override_without_eta_samples_with_eta_zero():
    stochastic = SamplerSettings("ddim", 25, eta=1.0)
    assert stochastic.overridden("ddpm") == SamplerSettings("ddpm", 25, eta=0.0)
    assert stochastic.overridden("dpmpp_2m") == SamplerSettings("dpmpp_2m", 25, eta=0.0)
    assert stochastic.overridden("dpmpp_2m", eta=1.0) == SamplerSettings("dpmpp_2m", 25, eta=1.0)
    assert stochastic.overridden(steps=50) == SamplerSettings("ddim", 50, eta=1.0)
    assert stochastic.overridden("ddim") == stochastic
    assert stochastic.overridden("ddim", eta=0.0).eta == 0.0
    with pytest.raises(ValueError, match="eta"):
        stochastic.overridden("ddpm", eta=0.5)


def test_strength_starts_from_the_coarse_image_noised_part_way():
    model = RefinerLitModule(pose_channels=20, network=NETWORK, strength=0.2).eval()
    batch = {"source": torch.rand(2, 3, 16, 16), "target_pose": torch.rand(2, 20, 16, 16),
             "coarse": torch.rand(2, 3, 16, 16) * 2 - 1}
    steps = []
    out = model.generate_batch(batch, sampling=SamplerSettings("ddim", 10), x_T=torch.zeros(2, 3, 16, 16),
                               callback=lambda step: steps.append(step.t))
    assert steps == [1, 0]  # round(0.2 * 10) of the 10 respaced steps, the least noisy ones
    # With zero noise and an untrained (zero-output) head, the deterministic walk returns the coarse image.
    torch.testing.assert_close(out, batch["coarse"], atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="strength"):
        RefinerLitModule(pose_channels=20, network=NETWORK, strength=0.0)
