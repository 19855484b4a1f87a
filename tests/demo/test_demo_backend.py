"""The demo's work without a browser: label maps as painted, sampling and editing on tiny checkpoints, stopping and
one-at-a-time jobs, messages for bad input."""

import json
import shutil
import threading

import gradio as gr
import numpy as np
import pytest
import torch
from PIL import Image, ImageSequence

from datamodules.keypoints import KEYPOINT_NAMES, MISSING
from datamodules.palettes import bit_interleaved_palette
from datamodules.shapes import ShapesDataModule
from experiments.demo.__main__ import DemoOptions, build
from experiments.demo.jobs import DemoInputError, SamplingCancelled, SamplingJobs
from experiments.demo.label_maps import LabelCodec
from experiments.demo.page_parts import shown_in_page
from experiments.demo.pidm_backend import PIDMDemo
from experiments.demo.pose_editing import picture_scale, place_joint, remove_joint, skeleton_picture
from experiments.demo.run_config import load_run_datamodule
from experiments.demo.sdm_backend import SDMDemo
from experiments.errors import CommandError
from lightning_modules.checkpoint_loading import load_diffusion_module

CPU = torch.device("cpu")


def shapes_codec(size=(4, 4)) -> LabelCodec:
    datamodule = ShapesDataModule(root="unused")
    return LabelCodec(7, size, datamodule.palette.numpy(), datamodule.class_names,
                      datamodule.raw_label_lut().numpy().astype(np.int64))


def test_label_maps_go_from_raw_ids_to_classes_and_back():
    codec = shapes_codec()
    raw = np.array([[1, 2, 3, 4], [5, 6, 0, 1], [1, 1, 1, 1], [2, 2, 2, 2]])
    classes = codec.to_classes(raw, "map.png")
    assert classes[0].tolist() == [0, 1, 2, 3] and classes[1, 2] == 6  # ADE convention: id - 1, 0 -> "other"
    assert np.array_equal(codec.to_raw(classes), raw)
    assert codec.to_raw(classes).dtype == np.uint8


def test_label_maps_with_wrong_ids_or_size_are_refused_with_the_valid_ids():
    codec = shapes_codec()
    with pytest.raises(DemoInputError, match=r"map.png holds ids \[8, 200\].*valid ids are \[1, 2, 3, 4, 5, 6, 0\]"):
        codec.to_classes(np.array([[1, 8], [200, 1]]).repeat(2, 0).repeat(2, 1), "map.png")
    with pytest.raises(DemoInputError, match="big.png is 8x8; this model takes 4x4 label maps"):
        codec.to_classes(np.ones((8, 8), dtype=int), "big.png")


def test_a_painting_is_read_back_by_nearest_colour_and_block_majority():
    codec = shapes_codec()
    classes = np.arange(16).reshape(4, 4) % 6
    painting = codec.colourise(classes).astype(np.int16)
    scale = codec.scale
    assert painting.shape == (4 * scale, 4 * scale, 3) and scale * 4 >= 320
    # An anti-aliased brush edge: a few off-palette pixels, and a minority of another class in a block.
    painting[: scale // 3, : scale // 3] = codec.palette[5]
    painting[scale - 1, :] = (painting[scale - 1, :] + 9).clip(0, 255)
    assert np.array_equal(codec.from_painting(painting.astype(np.uint8)), classes)
    rgba = np.concatenate([codec.colourise(classes), np.full((4 * scale, 4 * scale, 1), 255, np.uint8)], axis=2)
    assert np.array_equal(codec.from_painting(rgba), classes)


def test_the_sdm_demo_reads_the_runs_test_maps_and_samples_them(sdm_run):
    demo = SDMDemo(load_diffusion_module(sdm_run), load_run_datamodule(sdm_run)[0], CPU)
    assert [e.name for e in demo.examples] == [f"shapes_test_{i:06d}.png" for i in range(4)]
    assert demo.codec.class_names[:3] == ("sky", "ground", "water") and demo.codec.size == (16, 16)
    assert np.array_equal(demo.codec.palette, bit_interleaved_palette(7).numpy())
    example = demo.examples[1]
    assert example.instance is not None and example.instance.max() > 1000  # raw shapes instance ids
    images = demo.generate(example.classes, example.instance, sampler="ddim", steps=3, num_samples=2, seed=5)
    assert len(images) == 2 and images[0].shape == (16, 16, 3) and images[0].dtype == np.uint8
    again = demo.generate(example.classes, example.instance, sampler="ddim", steps=3, num_samples=2, seed=5)
    assert np.array_equal(images[0], again[0])
    # Without an instance map, the class map gives the instance edges.
    assert torch.equal(demo.condition(example.classes, None, 2)["instance"][1], torch.as_tensor(example.classes))
    assert torch.equal(demo.condition(example.classes, example.instance, 1)["instance"][0],
                       torch.as_tensor(example.instance))
    with pytest.raises(DemoInputError, match="this model takes 16x16"):
        demo.generate(np.zeros((8, 8), dtype=np.int64))
    with pytest.raises(DemoInputError, match="sampler settings"):
        demo.generate(example.classes, steps=0)


def test_a_painted_region_is_regenerated_and_the_rest_of_the_sample_kept(sdm_run):
    demo = SDMDemo(load_diffusion_module(sdm_run), load_run_datamodule(sdm_run)[0], CPU)
    classes = demo.examples[0].classes
    sample = demo.generate(classes, sampler="ddim", steps=3, seed=1)[0]
    mask = np.zeros((16, 16), dtype=bool)
    mask[4:12, 4:12] = True
    edited = demo.generate(classes, sampler="ddim", steps=3, seed=2, reference=sample, mask=mask)[0]
    assert np.abs(edited[~mask].astype(int) - sample[~mask]).max() <= 1
    assert np.abs(edited[mask].astype(int) - sample[mask]).mean() > 5
    with pytest.raises(DemoInputError, match="paint the region"):
        demo.generate(classes, reference=sample, mask=np.zeros((16, 16), dtype=bool))


def test_without_the_dataset_on_disk_the_page_starts_from_a_builtin_layout(sdm_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(sdm_run.parent.parent, run)
    config = (run / "config.yaml").read_text()
    (run / "config.yaml").write_text(config.replace(str(sdm_run.parents[4] / "data"), str(tmp_path / "missing")))
    ckpt = run / "checkpoints" / "last.ckpt"
    demo = SDMDemo(load_diffusion_module(ckpt), load_run_datamodule(ckpt)[0], CPU)
    assert [e.name for e in demo.examples] == ["built-in example"]
    assert "not readable here" in demo.examples_note
    assert len(np.unique(demo.examples[0].classes)) >= 3  # a generated shapes layout, not a blank map
    (run / "config.yaml").unlink()
    assert "no run config" in load_run_datamodule(ckpt)[1]
    bare = SDMDemo(load_diffusion_module(ckpt), None, CPU)
    assert bare.codec.class_names[0] == "class 0" and bare.examples[0].classes.shape == (16, 16)


def test_stop_ends_sampling_at_the_next_step_and_a_second_job_waits_its_turn():
    jobs = SamplingJobs()
    started, release = threading.Event(), threading.Event()
    seen = []

    def work(callback):
        for step in range(10):
            callback(step)
            seen.append(step)
            if step == 2:
                started.set()
                release.wait(5)
        return "done"

    errors = []
    thread = threading.Thread(target=lambda: errors.append(pytest.raises(SamplingCancelled, jobs.run, 10, work)))
    thread.start()
    assert started.wait(5) and jobs.busy
    with pytest.raises(DemoInputError, match="in progress"):
        jobs.run(1, lambda callback: None)
    assert jobs.cancel()
    release.set()
    thread.join(5)
    assert "stopped after 4 of 10 denoising steps" in str(errors[0].value)
    assert seen == [0, 1, 2] and not jobs.busy and not jobs.cancel()
    reports = []
    assert jobs.run(3, lambda callback: [callback(k) for k in range(3)] and "ok", lambda d, t: reports.append(d)) \
        == "ok"
    assert reports == [1, 2, 3]


def test_failures_become_messages_in_the_page():
    def fails(error):
        raise error

    for error, title in ((DemoInputError("bad ids"), "Cannot do that"), (SamplingCancelled("stopped"), "Stopped"),
                         (RuntimeError("boom"), "Failed")):
        with pytest.raises(gr.Error) as caught:
            shown_in_page(fails)(error)
        assert caught.value.title == title and str(error) in caught.value.message


def test_joints_move_where_the_enlarged_picture_was_clicked():
    size = (32, 32)
    scale = picture_scale(size)
    points = np.full((18, 2), MISSING)
    moved = place_joint(points, 4, (10 * scale + scale / 2, 20 * scale + scale / 2), size)
    assert moved[4].tolist() == [10.0, 20.0] and (points == MISSING).all()
    assert place_joint(points, 4, (10_000, -5), size)[4].tolist() == [31.0, 0.0]
    assert (remove_joint(moved, 4) == MISSING).all()
    picture = skeleton_picture(moved, size, selected=4)
    assert picture.shape == (32 * scale, 32 * scale, 3) and picture[20 * scale + scale // 2, 10 * scale].max() > 200
    assert len(KEYPOINT_NAMES) == 18


def test_the_pidm_demo_transfers_restyles_interpolates_and_animates(pidm_run, tmp_path):
    demo = PIDMDemo(load_diffusion_module(pidm_run), load_run_datamodule(pidm_run)[0], CPU, num_examples=3)
    assert len(demo.examples) == 3 and "test pairs" in demo.examples_note
    person = demo.examples[0]
    assert person.image.shape == (*demo.size, 3) and (person.keypoints != MISSING).any()
    photo = np.asarray(Image.fromarray(person.image).resize((50, 70)))  # any upload size is stretched
    images = demo.transfer(photo, demo.examples[1].keypoints, sampler="ddim", steps=2, num_samples=2)
    assert len(images) == 2 and images[0].shape == (*demo.size, 3)
    with pytest.raises(DemoInputError, match="no joints"):
        demo.transfer(photo, np.full((18, 2), MISSING), steps=2)
    guidance = demo.guidance("disentangled", 9.0, 1.5, 2.5)
    assert (guidance.form, guidance.w_pose, guidance.w_style, guidance.scale) == ("disentangled", 1.5, 2.5, None)
    mask = np.zeros(demo.size, dtype=bool)
    mask[: demo.size[0] // 2] = True
    restyled = demo.appearance(photo, person.image, person.keypoints, mask, sampler="ddim", steps=2)
    assert np.array_equal(restyled[~mask], person.image[~mask])
    with pytest.raises(DemoInputError, match="paint the region"):
        demo.appearance(photo, person.image, person.keypoints, ~np.ones(demo.size, dtype=bool), steps=2)
    mixes = demo.interpolate(photo, demo.examples[2].image, person.keypoints, 3, steps=2)
    assert len(mixes) == 3
    files = []
    for frame, example in enumerate(demo.examples):
        present = (example.keypoints != MISSING).all(axis=1)
        points = np.where(present[:, None], example.keypoints * 4, 0)  # a video 4 times the model's size
        flat = [v for (x, y), seen in zip(points, present) for v in (float(x), float(y), 0.9 if seen else 0.0)]
        files.append(tmp_path / f"frame_{frame}.json")
        files[-1].write_text(json.dumps({"people": [{"pose_keypoints_2d": flat}]}))
    with pytest.raises(DemoInputError, match="frame size"):
        demo.animate(photo, files, steps=2)
    gif = demo.animate(photo, files, tmp_path / "out.gif", frame_size=(demo.size[0] * 4, demo.size[1] * 4),
                       sampler="ddim", steps=2, batch_size=2)
    with Image.open(gif) as animation:
        assert sum(1 for _ in ImageSequence.Iterator(animation)) == 3
    with pytest.raises(DemoInputError, match="pose sequence"):
        demo.animate(photo, [], steps=2)


def test_the_command_refuses_what_it_cannot_serve(sdm_run, pidm_run, tmp_path):
    with pytest.raises(CommandError, match="no such checkpoint file"):
        build(DemoOptions(ckpt_path=tmp_path / "missing.ckpt"))
    for run in (sdm_run, pidm_run):
        assert isinstance(build(DemoOptions(ckpt_path=run, accelerator="cpu", num_examples=2)), gr.Blocks)
    other = tmp_path / "run" / "checkpoints" / "segmenter.ckpt"
    other.parent.mkdir(parents=True)
    torch.save({"hyper_parameters": {"_class_path": "lightning_modules.segmenter.SegmenterLitModule"},
                "state_dict": {}}, other)
    with pytest.raises((CommandError, ValueError), match="SegmenterLitModule"):
        build(DemoOptions(ckpt_path=other))
