"""The PIDM page: a source person and a target pose (picked, uploaded or edited joint by joint), guidance, and the
model's edits: pose transfer, appearance control, style interpolation, animation of a pose sequence."""

from __future__ import annotations

from pathlib import Path

import gradio as gr
import numpy as np

from datamodules.keypoints import KEYPOINT_NAMES
from experiments.demo.jobs import DemoInputError
from experiments.demo.label_maps import enlarged
from experiments.demo.page_parts import (
    ONE_AT_A_TIME,
    SamplerControls,
    editor_value,
    painted_mask,
    progress_report,
    run_buttons,
    shown_in_page,
    stop_on_click,
)
from experiments.demo.pidm_backend import GUIDANCE_FORMS, PIDMDemo
from experiments.demo.pose_editing import picture_scale, place_joint, remove_joint, skeleton_picture


def build_pidm_page(demo: PIDMDemo) -> None:
    """The PIDM page's widgets and events, inside the caller's ``gr.Blocks``."""
    first = demo.examples[0]
    zoom = picture_scale(demo.size)  # screen pixels per image pixel
    names = [e.name for e in demo.examples]
    by_name = {e.name: e for e in demo.examples}
    guidance = demo.model.guidance
    weights = guidance.weights()
    gr.Markdown(f"**Persons**: {demo.examples_note}. Upload any photo as the source (it is stretched to "
                f"{demo.size[0]}x{demo.size[1]}).")
    keypoints = gr.State(first.keypoints)
    with gr.Row():
        with gr.Column():
            source_pick = gr.Dropdown(names, value=first.name, label="source person", elem_id="source_pick")
            source = gr.Image(enlarged(first.image, zoom), type="numpy", image_mode="RGB", label="source",
                              elem_id="source", sources=["upload", "clipboard"], height=260)
        with gr.Column():
            pose_pick = gr.Dropdown(names, value=first.name, label="target pose", elem_id="pose_pick")
            skeleton = gr.Image(skeleton_picture(first.keypoints, demo.size), type="numpy", interactive=False,
                                label="target pose: pick a joint, then click where it goes", elem_id="skeleton",
                                height=260)
            with gr.Row():
                joint = gr.Dropdown(list(KEYPOINT_NAMES), value=KEYPOINT_NAMES[4], label="joint", type="index",
                                    elem_id="joint")
                hide = gr.Button("Remove joint")
            pose_upload = gr.File(label="or upload a pose .txt (GFLA/NTED 256-frame)", file_types=[".txt"])
        with gr.Column():
            controls = SamplerControls.create(demo.model.sampling)
            form = gr.Dropdown(list(GUIDANCE_FORMS), value=guidance.form, label="guidance rule", elem_id="form")
            with gr.Row():
                scale = gr.Number(weights.get("scale", 2.0), label="style scale (style_only)")
                w_pose = gr.Number(weights.get("w_pose", 2.0), label="w_pose")
                w_style = gr.Number(weights.get("w_style", 2.0), label="w_style")
    status = gr.Markdown(elem_id="status")
    sampler_inputs = [controls.sampler, controls.steps, controls.seed, form, scale, w_pose, w_style]

    def rule(form_value, scale_value, w_pose_value, w_style_value):
        return demo.guidance(form_value, scale_value, w_pose_value, w_style_value)

    with gr.Tabs():
        with gr.Tab("Pose transfer"):
            count = gr.Number(1, precision=0, minimum=1, maximum=16, label="samples")
            transfer, transfer_stop = run_buttons("Generate", "generate")
            gallery = gr.Gallery(label="samples", columns=4, height=320, object_fit="contain", elem_id="gallery",
                                 format="png")
        with gr.Tab("Appearance control"):
            gr.Markdown("Paint the region of the reference person to take from the source (e.g. the shirt); the "
                        "reference's pose is the target pose above, so pick the reference there too.")
            reference = gr.ImageEditor(
                value=editor_value(enlarged(first.image, zoom)),
                type="numpy", image_mode="RGBA", format="png", label="reference", sources=("upload",), transforms=(),
                brush=gr.Brush(colors=["#ffffff"], color_mode="fixed"), elem_id="reference",
            )  # fmt: skip
            restyle, restyle_stop = run_buttons("Restyle region", "restyle")
            restyled = gr.Image(label="result", format="png", interactive=False)
        with gr.Tab("Style interpolation"):
            source2 = gr.Image(enlarged(demo.examples[-1].image, zoom), type="numpy", image_mode="RGB",
                               label="second source", sources=["upload", "clipboard"], height=200)
            mixes = gr.Number(5, precision=0, minimum=2, maximum=12, label="images from source to second source")
            interpolate, interpolate_stop = run_buttons("Interpolate (deterministic DDIM)", "interpolate")
            mixed = gr.Gallery(label="interpolation", columns=6, height=240, object_fit="contain", format="png")
        with gr.Tab("Animation"):
            gr.Markdown("Upload a pose sequence, one OpenPose JSON or GFLA txt file per frame (name order); every "
                        "frame shares one noise, as `python -m experiments.animate --noise shared` does.")
            sequence = gr.File(file_count="multiple", file_types=[".json", ".txt"], label="pose sequence")
            with gr.Row():
                fps = gr.Number(8, minimum=1, maximum=30, label="frames per second")
                frame_size = gr.Textbox(label="video frame size H,W (OpenPose JSON without canvas size)",
                                        placeholder="e.g. 1080,1920")
            animate, animate_stop = run_buttons("Animate", "animate")
            animation = gr.Image(label="animation (GIF)", type="filepath", interactive=False)

    def show_pose(points: np.ndarray, joint_index: int | None):
        return skeleton_picture(points, demo.size, joint_index)

    def pick_source(name: str):
        return enlarged(by_name[name].image, zoom)

    def pick_pose(name: str, joint_index: int):
        chosen = by_name[name]
        return chosen.keypoints, show_pose(chosen.keypoints, joint_index), editor_value(enlarged(chosen.image, zoom))

    @shown_in_page
    def upload_pose(file: str | None, points: np.ndarray, joint_index: int):
        if file is None:
            return points, gr.update()
        loaded = demo.keypoints_from_file(Path(file))
        return loaded, show_pose(loaded, joint_index)

    def click_joint(points: np.ndarray, joint_index: int, event: gr.SelectData):
        moved = place_joint(points, joint_index, tuple(event.index), demo.size)
        return moved, show_pose(moved, joint_index)

    def drop_joint(points: np.ndarray, joint_index: int):
        removed = remove_joint(points, joint_index)
        return removed, show_pose(removed, joint_index)

    @shown_in_page
    def run_transfer(image, points, sampler, steps, seed, form_value, s, wp, ws, num, progress=gr.Progress()):
        if image is None:
            raise DemoInputError("upload or pick a source person first")
        images = demo.transfer(image, points, guidance=rule(form_value, s, wp, ws), sampler=sampler, steps=steps,
                               seed=seed, num_samples=int(num), report=progress_report(progress))
        return images, f"{len(images)} sample(s), {sampler} {int(steps)} steps, {form_value} guidance"

    @shown_in_page
    def run_restyle(image, reference_value, points, sampler, steps, seed, form_value, s, wp, ws,
                    progress=gr.Progress()):
        if image is None or reference_value is None or reference_value.get("background") is None:
            raise DemoInputError("a source and a reference person are needed")
        reference_image = np.asarray(reference_value["background"])[..., :3]
        mask = painted_mask(reference_value, demo.size)
        return demo.appearance(image, reference_image, points, mask, guidance=rule(form_value, s, wp, ws),
                               sampler=sampler, steps=steps, seed=seed, report=progress_report(progress)), \
            f"restyled {int(mask.sum())} pixels"

    @shown_in_page
    def run_interpolate(image, image2, points, _sampler, steps, seed, form_value, s, wp, ws, num,
                        progress=gr.Progress()):
        if image is None or image2 is None:
            raise DemoInputError("two source persons are needed")
        images = demo.interpolate(image, image2, points, int(num), guidance=rule(form_value, s, wp, ws),
                                  steps=steps, seed=seed, report=progress_report(progress))
        return images, f"{len(images)} images, deterministic DDIM {int(steps)} steps"

    @shown_in_page
    def run_animate(image, files, rate, size_text, sampler, steps, seed, form_value, s, wp, ws,
                    progress=gr.Progress()):
        if image is None:
            raise DemoInputError("upload or pick a source person first")
        try:
            video_size = tuple(int(v) for v in size_text.split(",")) if size_text.strip() else None
        except ValueError:
            video_size = ()
        if video_size is not None and len(video_size) != 2:
            raise DemoInputError(f"video frame size {size_text!r}: give height and width, e.g. 1080,1920")
        paths = sorted((Path(f) for f in files or []), key=lambda p: p.name)
        gif = demo.animate(image, paths, fps=float(rate), frame_size=video_size,
                           guidance=rule(form_value, s, wp, ws), sampler=sampler, steps=steps, seed=seed,
                           report=progress_report(progress))
        return str(gif), f"{len(paths)} frames"

    source_pick.change(pick_source, source_pick, source)
    pose_pick.change(pick_pose, [pose_pick, joint], [keypoints, skeleton, reference])
    pose_upload.upload(upload_pose, [pose_upload, keypoints, joint], [keypoints, skeleton])
    joint.change(show_pose, [keypoints, joint], skeleton)
    skeleton.select(click_joint, [keypoints, joint], [keypoints, skeleton])
    hide.click(drop_joint, [keypoints, joint], [keypoints, skeleton])
    events = [
        (transfer_stop, transfer.click(run_transfer, [source, keypoints, *sampler_inputs, count], [gallery, status],
                                       **ONE_AT_A_TIME)),
        (restyle_stop, restyle.click(run_restyle, [source, reference, keypoints, *sampler_inputs],
                                     [restyled, status], **ONE_AT_A_TIME)),
        (interpolate_stop, interpolate.click(run_interpolate, [source, source2, keypoints, *sampler_inputs, mixes],
                                             [mixed, status], **ONE_AT_A_TIME)),
        (animate_stop, animate.click(run_animate, [source, sequence, fps, frame_size, *sampler_inputs],
                                     [animation, status], **ONE_AT_A_TIME)),
    ]
    for stop, event in events:
        stop_on_click(stop, demo.jobs, event, status)

