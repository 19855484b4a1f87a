"""experiments.animate: a PIDM checkpoint, a photo and a pose sequence become frames, a GIF and an MP4; shared noise
makes the frames differ only where the poses do."""

import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from datamodules.image_files import read_rgb
from datamodules.keypoints import save_keypoints_txt, to_txt_frame
from datamodules.video_files import write_gif, write_mp4
from experiments.animate import main as animate
from experiments.animate import nearest_source, pose_windows
from experiments.predict import main as predict
from experiments.errors import CommandError
from experiments.fit import main as fit
from lightning_modules.diffusion.samplers import SAMPLERS
from lightning_modules.diffusion.schedule import DiffusionSchedule
from lightning_modules.metrics.temporal import mean_frame_difference

sys.path.insert(0, str(Path(__file__).parent / "datamodules"))
from person_trees import skeleton, skeleton_photo, write_image  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Path:
    """A 1-step tiny persons checkpoint, a photo and a 5-frame OpenPose JSON sequence whose frames 1 and 3 repeat
    frame 0's pose."""
    root = tmp_path_factory.mktemp("animate")
    fit(["--config", str(REPO / "configs/pidm/persons.yaml"), "--config", str(REPO / "configs/debug/tiny_pidm.yaml"),
         f"--data.init_args.root={root / 'persons'}", "--data.init_args.num_identities=4",
         f"--trainer.logger.init_args.save_dir={root / 'runs'}", "--trainer.max_steps=1"])
    write_image(root / "person.jpg", np.random.default_rng(0).integers(0, 256, (16, 16, 3), dtype=np.uint8))
    for frame, variant in enumerate([0, 0, 1, 0, 2]):
        points = skeleton((256, 176), variant) + [10 * variant, 0]
        flat = [value for x, y in points for value in (float(x), float(y), 0.0 if x < 0 else 0.9)]
        (root / "sequence").mkdir(exist_ok=True)
        (root / "sequence" / f"frame_{frame}.json").write_text(json.dumps(
            {"people": [{"pose_keypoints_2d": flat}], "canvas_height": 256, "canvas_width": 176}))
    return root


def animate_args(root: Path, out: str, *extra: str) -> list[str]:
    return ["--ckpt_path", str(root / "runs/pidm_persons/version_0/checkpoints/last.ckpt"), "--source",
            str(root / "person.jpg"), "--poses", str(root / "sequence"), "--out", str(root / out),
            "--accelerator", "cpu", *extra]


def frames(folder: Path) -> list[np.ndarray]:
    return [read_rgb(path).astype(int) for path in sorted(folder.glob("frame_*.png"))]


def test_shared_noise_repeats_a_frame_for_a_repeated_pose_across_batches(workspace):
    written = animate(animate_args(workspace, "shared", "--batch_size", "2", "--sampler", "ddpm", "--steps", "3"))
    shared = frames(workspace / "shared")
    assert len(shared) == 5 and len(written) == 7
    assert np.array_equal(shared[0], shared[1]) and np.array_equal(shared[0], shared[3])  # batches 0, 0 and 1
    assert not np.array_equal(shared[0], shared[2])

    animate(animate_args(workspace, "independent", "--batch_size", "2", "--sampler", "ddpm", "--steps", "3",
                         "--noise", "independent"))
    independent = frames(workspace / "independent")
    assert not np.array_equal(independent[0], independent[1]) and not np.array_equal(independent[0], independent[3])
    as_video = lambda images: torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).to(torch.uint8)  # noqa: E731
    assert mean_frame_difference(as_video(shared)) < mean_frame_difference(as_video(independent))


def test_writes_frames_a_looping_gif_and_an_mp4_and_never_overwrites(workspace, capsys):
    animate(animate_args(workspace, "video", "--steps", "2", "--fps", "5"))
    pngs = frames(workspace / "video")
    with Image.open(workspace / "video/animation.gif") as gif:
        durations = [frame.info["duration"] for frame in ImageSequence.Iterator(gif)]
        # Pillow merges identical consecutive frames (frames 0 and 1: same pose, shared noise) into a longer one
        assert sum(durations) == 5 * 200 and gif.info["loop"] == 0 and gif.size == (16, 16)
    capture = cv2.VideoCapture(str(workspace / "video/animation.mp4"))
    count = 0
    while capture.read()[0]:
        count += 1
    assert count == 5 and capture.get(cv2.CAP_PROP_FPS) == pytest.approx(5)
    assert "wrote 7 files to" in capsys.readouterr().out

    before = (workspace / "video/frame_0000.png").read_bytes()
    with pytest.raises(CommandError, match="7 outputs exist already"):
        animate(animate_args(workspace, "video", "--steps", "2", "--seed", "7"))
    assert (workspace / "video/frame_0000.png").read_bytes() == before
    animate(animate_args(workspace, "video", "--steps", "2", "--seed", "7", "--overwrite", "true"))
    assert len(frames(workspace / "video")) == len(pngs)


def test_options_are_checked_before_the_checkpoint_and_an_sdm_checkpoint_is_named(workspace, tmp_path):
    with pytest.raises(CommandError, match="--batch_size must be at least 1"):
        animate(animate_args(workspace, "x", "--batch_size", "0"))
    with pytest.raises(CommandError, match="2 --source photos need as many --source_poses"):
        animate([*animate_args(workspace, "x"), "--source", str(workspace / "person.jpg")])
    sdm = tmp_path / "sdm.ckpt"
    fit(["--config", str(REPO / "configs/sdm/shapes.yaml"), "--config", str(REPO / "configs/debug/tiny_sdm.yaml"),
         f"--data.init_args.root={tmp_path / 'shapes'}", "--data.init_args.num_train=4", "--data.init_args.num_val=2",
         "--data.init_args.num_test=2", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
         "--trainer.max_steps=1"])
    with pytest.raises(CommandError, match="animate needs a PIDM .* not an SDM"):
        animate([*animate_args(workspace, "x")[:1], str(next((tmp_path / "runs").rglob("last.ckpt"))),
                 *animate_args(workspace, "x")[2:]])
    assert not (workspace / "x").exists() and not sdm.exists()


def test_each_frame_takes_the_source_whose_pose_is_nearest():
    front, side = skeleton((64, 44), 0), skeleton((64, 44), 0) + [20, 0]
    frame = skeleton((64, 44), 0) + [18, 1]
    assert nearest_source(frame, [front, side]) == 1
    assert nearest_source(front, [front, side]) == 0
    hidden = np.full_like(front, -1.0)
    assert nearest_source(frame, [hidden, side]) == 1 and nearest_source(hidden, [front, side]) == 0


@pytest.mark.parametrize("sampler", ["ddpm", "ddim"])
def test_shared_sampler_noise_does_not_depend_on_the_batch(sampler):
    schedule = DiffusionSchedule(torch.linspace(1e-4, 0.2, 10, dtype=torch.float64))

    def denoise(x, t):  # an ε-and-variance stand-in that depends on x
        return torch.cat([0.1 * x, torch.zeros_like(x)], dim=1)

    def run(batch: int, shared: bool) -> torch.Tensor:
        generator = torch.Generator().manual_seed(0)
        x_T = torch.randn((1, 3, 4, 4), generator=generator).expand(batch, -1, -1, -1)
        return SAMPLERS[sampler](denoise, x_T, schedule, eta=1.0 if sampler == "ddim" else 0.0,
                                 generator=generator, shared_noise=shared)

    three, one = run(3, True), run(1, True)
    assert torch.equal(three[0], three[2]) and torch.allclose(three[:1], one)
    independent = run(3, False)
    assert not torch.allclose(independent[0], independent[2])


def test_video_writers_reject_frames_of_different_sizes(tmp_path):
    frames_ = [np.zeros((8, 8, 3), np.uint8), np.zeros((8, 10, 3), np.uint8)]
    for writer in (write_gif, write_mp4):
        with pytest.raises(ValueError, match="one size"):
            writer(tmp_path / "v", frames_, 10)


def test_pose_windows_are_centred_on_each_frame_and_repeat_the_ends():
    poses = torch.arange(4.0).view(4, 1, 1, 1)  # pose t is the constant t
    windows = pose_windows(poses, 3)
    assert windows.shape == (4, 3, 1, 1)
    assert windows.flatten(1).tolist() == [[0, 0, 1], [0, 1, 2], [1, 2, 3], [2, 3, 3]]
    assert torch.equal(pose_windows(poses, 1), poses)


def test_a_pose_window_model_trains_predicts_and_animates(workspace, tmp_path):
    fit(["--config", str(REPO / "configs/pidm/persons.yaml"), "--config", str(REPO / "configs/debug/tiny_pidm.yaml"),
         f"--data.init_args.root={workspace / 'persons'}", "--data.init_args.num_identities=4",
         "--data.init_args.pose_window=3", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
         "--trainer.max_steps=1"])
    checkpoint = tmp_path / "runs/pidm_persons/version_0/checkpoints/last.ckpt"
    hparams = torch.load(checkpoint, map_location="cpu", weights_only=False)["hyper_parameters"]
    assert (hparams["pose_channels"], hparams["pose_window"]) == (60, 3)
    animate([str(checkpoint) if arg.endswith("last.ckpt") else arg for arg in animate_args(workspace, "window")]
            + ["--steps", "2"])
    assert len(frames(workspace / "window")) == 5
    pose_file = next((workspace / "persons" / "pose").rglob("*.txt"))
    predict(["--ckpt_path", str(checkpoint), "--source", str(workspace / "person.jpg"), "--poses", str(pose_file),
             "--out", str(tmp_path / "predicted"), "--steps", "2", "--accelerator", "cpu"])
    assert len(list((tmp_path / "predicted").glob("*.png"))) == 1


def test_subject_fine_tuning_starts_from_the_checkpoint_and_animate_uses_the_result(workspace, tmp_path):
    subject = tmp_path / "subject"
    for variant, name in enumerate(["front", "side"]):
        points = skeleton((64, 44), variant)
        write_image(subject / f"{name}.jpg", skeleton_photo(points, (64, 44)))
        save_keypoints_txt(subject / f"{name}.txt", to_txt_frame(points, (64, 44)))
    trained = workspace / "runs/pidm_persons/version_0/checkpoints/last.ckpt"
    fit(["--config", str(REPO / "configs/pidm/persons.yaml"),
         "--config", str(REPO / "configs/pidm/finetune_subject.yaml"),
         "--config", str(REPO / "configs/debug/tiny_pidm.yaml"), f"--data.init_args.root={subject}",
         f"--model.init_args.init_from={trained}", f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
         "--trainer.max_steps=2"])
    run = tmp_path / "runs/pidm_subject/version_0"
    assert len(list((run / "images" / "val").glob("*.png"))) == 1  # a grid of the subject's pairs at step 2
    tuned = torch.load(run / "checkpoints/last.ckpt", map_location="cpu", weights_only=False)
    assert tuned["global_step"] == 2 and tuned["hyper_parameters"]["lr"] == pytest.approx(2e-5)
    start = torch.load(trained, map_location="cpu", weights_only=False)["state_dict"]
    network = [name for name in start if name.startswith("net.")]
    assert all((tuned["state_dict"][name] - start[name]).abs().max() < 1e-3 for name in network)
    animate([str(run / "checkpoints/last.ckpt") if arg.endswith("last.ckpt") else arg
             for arg in animate_args(workspace, "subject_animation")] + ["--source", str(subject / "side.jpg"),
             "--source_poses", str(subject / "front.txt"), "--source_poses", str(subject / "side.txt"), "--steps", "2"])
    assert len(frames(workspace / "subject_animation")) == 5


def test_frames_are_scored_against_the_real_frames(workspace, tmp_path):
    real = tmp_path / "real"
    for index in range(5):  # a steady real video: the same photo in every frame
        write_image(real / f"{index:05d}.png", read_rgb(workspace / "person.jpg"))
    animate(animate_args(workspace, "scored", "--steps", "2", "--real", str(real)))
    report = json.loads((workspace / "scored" / "metrics.json").read_text())
    scores = report["scores"]
    assert report["frames"] == 5 and report["noise"] == "shared"
    assert scores["real_mean_frame_difference"] == 0
    assert scores["flicker"] == pytest.approx(scores["mean_frame_difference"])
    assert -1 <= scores["ssim"] <= 1 and scores["pixel_flicker"] >= scores["flicker"]
    (real / "00004.png").unlink()
    with pytest.raises(CommandError, match="holds 4 frames, the pose sequence has 5"):
        animate(animate_args(workspace, "scored_again", "--steps", "2", "--real", str(real)))


def test_the_test_command_scores_the_flicker_of_each_test_video(tmp_path, monkeypatch):
    from offline_weights import write_lpips_alexnet

    from experiments.test import main as run_test

    monkeypatch.setenv("CONDIFF_WEIGHTS", str(write_lpips_alexnet(tmp_path / "weights").parent))
    args = ["--config", str(REPO / "configs/pidm/persons_video.yaml"),
            "--config", str(REPO / "configs/debug/tiny_pidm.yaml"), f"--data.init_args.root={tmp_path / 'videos'}",
            "--data.init_args.num_identities=3", "--data.init_args.frames_per_video=5",
            f"--trainer.logger.init_args.save_dir={tmp_path / 'runs'}",
            f"--model.init_args.evaluation.fid.stats_dir={tmp_path / 'stats'}"]
    fit([*args, "--trainer.max_steps=2"])  # validation at step 2: grid and animation
    run = tmp_path / "runs/pidm_persons_video/version_0"
    with Image.open(run / "images/val/animation_gs-000002.gif") as gif:
        # the first validation batch: 2 frames (the overlay's batch size) at 8 fps, 125 ms stored as 12 cs
        assert sum(frame.info["duration"] for frame in ImageSequence.Iterator(gif)) == 2 * 120
    events = EventAccumulator(str(run), size_guidance={"images": 0})
    events.Reload()
    assert "val/animation" in events.Tags()["images"]  # moviepy is not installed: the real/generated strip
    run_test([*args, "--trainer.limit_test_batches=1.0", "--trainer.logger.init_args.version=test",
              f"--ckpt_path={tmp_path / 'runs/pidm_persons_video/version_0/checkpoints/last.ckpt'}"])
    report = json.loads(next((tmp_path / "runs").rglob("metrics.json")).read_text())
    assert report["metrics"]["videos"] == 1  # one test video: 4 frames generated from its first
    assert np.isfinite(report["metrics"]["flicker"]) and report["metrics"]["pixel_flicker"] > 0
    assert report["evaluation"]["temporal"] == {"min_frames": 2}
    assert 0 <= report["metrics"]["identity_accuracy"] <= 1 and report["metrics"]["part_colour_error"] > 0
