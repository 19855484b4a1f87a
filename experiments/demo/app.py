"""The demo's web app: a header naming the checkpoint and the page of its model family."""

from __future__ import annotations

from pathlib import Path

import gradio as gr

from experiments.demo.pidm_backend import PIDMDemo
from experiments.demo.pidm_page import build_pidm_page
from experiments.demo.sdm_backend import SDMDemo
from experiments.demo.sdm_page import build_sdm_page

# Model-sized images (32 px) are shown enlarged: as pixels, not blurred.
PIXELATED = "#gallery img, #skeleton img, #source img, img {image-rendering: pixelated;}"


def build_app(demo: SDMDemo | PIDMDemo, ckpt_path: Path, data_note: str) -> gr.Blocks:
    """The Blocks app of ``demo`` (not launched)."""
    family = "SDM: semantic layout to image" if isinstance(demo, SDMDemo) else "PIDM: pose-guided person image"
    with gr.Blocks(title=f"condiff demo: {ckpt_path.name}") as app:
        gr.Markdown(f"## condiff demo: {family}\n`{ckpt_path}` on {demo.device.type}; {data_note}. "
                    "Sampling runs one request at a time; Stop ends it at the next denoising step.")
        if isinstance(demo, SDMDemo):
            build_sdm_page(demo)
        else:
            build_pidm_page(demo)
    return app


def launch(app: gr.Blocks, host: str, port: int, block: bool = True) -> None:
    """Serve ``app`` at ``host:port`` with one queue slot per model; returns at once with ``block=False``."""
    app.queue(default_concurrency_limit=1).launch(server_name=host, server_port=port, show_error=True,
                                                  footer_links=[], css=PIXELATED, quiet=not block,
                                                  prevent_thread_lock=not block)
