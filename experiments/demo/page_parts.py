"""Widgets and wiring both pages share: sampler controls, Generate/Stop with progress, messages in the page."""

from __future__ import annotations

import functools
import logging
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import gradio as gr
import numpy as np

from experiments.demo.jobs import DemoInputError, SamplingCancelled, SamplingJobs
from experiments.errors import CommandError
from lightning_modules.base import SamplerSettings

log = logging.getLogger("condiff.demo")
Painting = dict[str, Any]  # an ImageEditor's value: background, layers, composite
SAMPLERS = ["ddpm", "ddim", "dpmpp_2m"]
# Every sampling event shares one queue slot: one request at a time per model, the others wait in the queue.
ONE_AT_A_TIME = {"concurrency_id": "model", "concurrency_limit": 1}


def editor_value(background: np.ndarray) -> Painting:
    """An ImageEditor value showing ``background`` with nothing painted on it."""
    return {"background": background, "layers": [], "composite": None}


def painted_mask(value: Painting | None, size: tuple[int, int]) -> np.ndarray:
    """Where an editor was painted on, as bool (H, W) at the model's size (a model pixel counts when most of its
    enlarged block is painted)."""
    layers = [] if value is None else [np.asarray(layer) for layer in value.get("layers") or [] if layer is not None]
    if not layers:
        return np.zeros(size, dtype=bool)
    alpha = np.max([layer[..., 3] if layer.ndim == 3 and layer.shape[2] == 4 else layer.max(-1) for layer in layers],
                   axis=0)
    return cv2.resize((alpha > 0).astype(np.float32), (size[1], size[0]), interpolation=cv2.INTER_AREA) >= 0.5


def shown_in_page(handler: Callable[..., Any]) -> Callable[..., Any]:
    """``handler`` with its failures shown as a message in the page (the server keeps running): the user's
    mistakes and a Stop as they are, anything unexpected with its type (the traceback goes to the server log)."""

    @functools.wraps(handler)
    def wrapped(*args: Any, **kwargs: Any) -> Any:
        try:
            return handler(*args, **kwargs)
        except gr.Error:
            raise
        except SamplingCancelled as stop:
            raise gr.Error(str(stop), title="Stopped") from None
        except (DemoInputError, CommandError) as error:
            raise gr.Error(str(error), title="Cannot do that") from None
        except Exception as error:  # a page must outlive any failure of one request
            log.error("request failed:\n%s", traceback.format_exc())
            raise gr.Error(f"{type(error).__name__}: {error}", title="Failed") from None

    return wrapped


def progress_report(progress: gr.Progress) -> Callable[[int, int], None]:
    """A :class:`SamplingJobs` progress report that moves the page's progress bar."""
    return lambda done, total: progress((done, total), desc="denoising steps", unit="steps")


@dataclass
class SamplerControls:
    """The sampler widgets, preset to the checkpoint's settings."""

    sampler: gr.Dropdown
    steps: gr.Number
    seed: gr.Number

    @classmethod
    def create(cls, settings: SamplerSettings) -> SamplerControls:
        with gr.Row():
            sampler = gr.Dropdown(SAMPLERS, value=settings.sampler, label="sampler", elem_id="sampler")
            steps = gr.Number(settings.steps, precision=0, minimum=1, label="steps", elem_id="steps")
            seed = gr.Number(settings.seed, precision=0, minimum=0, label="seed", elem_id="seed")
        return cls(sampler, steps, seed)


def run_buttons(label: str, elem_id: str) -> tuple[gr.Button, gr.Button]:
    """A Generate-like button and its Stop button (wired by :func:`stop_on_click` once the run event exists)."""
    with gr.Row():
        run = gr.Button(label, variant="primary", elem_id=elem_id)
        stop = gr.Button("Stop", variant="stop", elem_id=f"{elem_id}_stop")
    return run, stop


def stop_on_click(stop: gr.Button, jobs: SamplingJobs, run_event: Any, status: gr.Markdown) -> None:
    """Stop ends the running job at its next denoising step (or takes a waiting request out of the queue) and says
    so in ``status``."""

    def cancel() -> str:
        if jobs.cancel():
            return "Stopped: the run ends at its next denoising step."
        return "Stopped: nothing was sampling."

    stop.click(cancel, outputs=status, queue=False, cancels=[run_event])
