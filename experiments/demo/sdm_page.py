"""The SDM page: paint a label map with the dataset's palette, sample it, regenerate a painted region of a result."""

from __future__ import annotations

import tempfile
from pathlib import Path

import cv2
import gradio as gr
import numpy as np

from datamodules.semantic_files import read_index_map
from experiments.demo.jobs import DemoInputError
from experiments.demo.label_maps import enlarged
from experiments.demo.page_parts import (
    ONE_AT_A_TIME,
    Painting,
    SamplerControls,
    editor_value,
    painted_mask,
    progress_report,
    run_buttons,
    shown_in_page,
    stop_on_click,
)
from experiments.demo.sdm_backend import SDMDemo

def build_sdm_page(demo: SDMDemo) -> None:
    """The SDM page's widgets and events, inside the caller's ``gr.Blocks``."""
    codec = demo.codec
    first = demo.examples[0]
    scale = codec.scale
    canvas_size = (codec.size[1] * scale, codec.size[0] * scale)
    state = gr.State({"classes": first.classes, "instance": first.instance})
    results = gr.State([])
    gr.Markdown(f"**Layouts**: {demo.examples_note}. Paint with the class colours (brush menu), or upload a label "
                f"PNG of raw dataset ids as `predict` reads them.")
    with gr.Row():
        with gr.Column():
            example = gr.Dropdown([e.name for e in demo.examples], value=first.name, label="start from",
                                  elem_id="example")
            canvas = gr.ImageEditor(
                value=editor_value(codec.colourise(first.classes)),
                type="numpy", image_mode="RGB", format="png", label="label map", elem_id="label_canvas",
                canvas_size=canvas_size, fixed_canvas=True, sources=(), transforms=(), layers=False,
                brush=gr.Brush(colors=codec.hex_colours(), color_mode="fixed", default_color=codec.hex_colours()[0],
                               default_size=max(2, scale * 2)),
            )  # fmt: skip
            with gr.Accordion("classes", open=False):
                gr.Markdown(codec.legend())
            with gr.Row():
                upload = gr.File(label="upload label PNG (raw ids)", file_types=[".png"], elem_id="label_upload")
                instance_upload = gr.File(label="instance map PNG (optional)", file_types=[".png"],
                                          elem_id="instance_upload")
            save = gr.Button("Save the label map as PNG")
            saved = gr.File(label="label map (raw ids)", interactive=False)
        with gr.Column():
            controls = SamplerControls.create(demo.model.sampling)
            with gr.Row():
                scale_box = gr.Number(demo.model.guidance.scale, minimum=1.0, label="guidance scale (1: none)",
                                      elem_id="guidance_scale")
                count = gr.Number(1, precision=0, minimum=1, maximum=16, label="samples", elem_id="num_samples")
            generate, generate_stop = run_buttons("Generate", "generate")
            gallery = gr.Gallery(label="samples", columns=4, height=320, object_fit="contain", elem_id="gallery",
                                 format="png")
            status = gr.Markdown(elem_id="status")
            with gr.Accordion("Regenerate a region of a sample", open=False):
                gr.Markdown("Pick a sample in the gallery, paint the region to regenerate, and press the button: "
                            "the rest of the sample is kept (under the current label map).")
                region = gr.ImageEditor(type="numpy", image_mode="RGBA", format="png", label="region",
                                        canvas_size=canvas_size, fixed_canvas=True, sources=(), transforms=(),
                                        brush=gr.Brush(colors=["#ffffff"], color_mode="fixed",
                                                       default_size=max(2, scale * 2)), elem_id="region")
                regenerate, regenerate_stop = run_buttons("Regenerate region", "regenerate")
    selected = gr.State(0)

    def load_example(name: str):
        chosen = next(e for e in demo.examples if e.name == name)
        return (editor_value(codec.colourise(chosen.classes)),
                {"classes": chosen.classes, "instance": chosen.instance})

    @shown_in_page
    def load_upload(file: str | None, current: dict):
        if file is None:
            return gr.update(), current, None
        classes = codec.to_classes(read_index_map(Path(file)), Path(file).name)
        return (editor_value(codec.colourise(classes)),
                {"classes": classes, "instance": None}, None)  # the upload box empties, ready for the next file

    @shown_in_page
    def load_instance(file: str | None, current: dict):
        if file is None:
            return {**current, "instance": None}
        ids = read_index_map(Path(file))
        if ids.shape != codec.size:
            raise DemoInputError(f"{Path(file).name} is {ids.shape[0]}x{ids.shape[1]}; this model takes "
                                 f"{codec.size[0]}x{codec.size[1]} maps")
        return {**current, "instance": ids}

    def painted_classes(value: Painting | None) -> np.ndarray:
        picture = None if value is None else next(
            (value[key] for key in ("composite", "background") if value.get(key) is not None), None)
        if picture is None:
            raise DemoInputError("the label map is empty: pick an example or upload a label PNG")
        return codec.from_painting(picture)

    @shown_in_page
    def save_png(value: Painting | None) -> str:
        path = Path(tempfile.mkdtemp(prefix="condiff_demo_")) / "label_map.png"
        cv2.imwrite(str(path), codec.to_raw(painted_classes(value)))
        return str(path)

    def instance_for(classes: np.ndarray, current: dict) -> tuple[np.ndarray | None, str]:
        if not demo.model.instance_edges:
            return None, ""
        if current["instance"] is not None and np.array_equal(classes, current["classes"]):
            return current["instance"], "instance edges from the instance map"
        if current["instance"] is not None:
            return None, "the layout was painted over, so instance edges follow the class boundaries"
        return None, "no instance map: instance edges follow the class boundaries"

    @shown_in_page
    def run(value, current, sampler, steps, seed, guidance_scale, num_samples, progress=gr.Progress()):
        classes = painted_classes(value)
        instance, note = instance_for(classes, current)
        images = demo.generate(classes, instance, sampler=sampler, steps=steps, seed=seed,
                               guidance_scale=guidance_scale, num_samples=int(num_samples),
                               report=progress_report(progress))
        summary = f"{len(images)} sample(s), {sampler} {int(steps)} steps, guidance {guidance_scale}, seed {int(seed)}"
        first_result = editor_value(enlarged(images[0], scale))
        return images, images, f"{summary}{'; ' + note if note else ''}", first_result, 0

    def pick(images: list, event: gr.SelectData):
        if not images:
            return gr.update(), 0
        return editor_value(enlarged(images[event.index], scale)), event.index

    @shown_in_page
    def run_region(value, region_value, images, index, current, sampler, steps, seed, guidance_scale,
                   progress=gr.Progress()):
        if not images:
            raise DemoInputError("generate samples first, then paint the region to regenerate on one of them")
        classes = painted_classes(value)
        instance, _ = instance_for(classes, current)
        mask = painted_mask(region_value, codec.size)
        image = demo.generate(classes, instance, sampler=sampler, steps=steps, seed=seed,
                              guidance_scale=guidance_scale, reference=np.asarray(images[index])[..., :3],
                              mask=mask, report=progress_report(progress))[0]
        images = [*images[:index], image, *images[index + 1:]]
        return (images, images, f"regenerated {int(mask.sum())} pixels of sample {index + 1}",
                editor_value(enlarged(image, scale)))

    example.change(load_example, example, [canvas, state])
    upload.upload(load_upload, [upload, state], [canvas, state, upload])
    instance_upload.change(load_instance, [instance_upload, state], state)
    save.click(save_png, canvas, saved)
    sampler_inputs = [controls.sampler, controls.steps, controls.seed, scale_box]
    generated = generate.click(run, [canvas, state, *sampler_inputs, count],
                               [gallery, results, status, region, selected], **ONE_AT_A_TIME)
    stop_on_click(generate_stop, demo.jobs, generated, status)
    gallery.select(pick, results, [region, selected])
    regenerated = regenerate.click(run_region, [canvas, region, results, selected, state, *sampler_inputs],
                                   [gallery, results, status, region], **ONE_AT_A_TIME)
    stop_on_click(regenerate_stop, demo.jobs, regenerated, status)

