"""Validation sample grids for TensorBoard, with PNG copies in the run directory."""

import importlib.util
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from pytorch_lightning.loggers import TensorBoardLogger
from torch import Tensor
from torchvision.utils import make_grid

from datamodules.image_files import write_png
from datamodules.video_files import write_gif
from lightning_modules.base import SamplerName, SamplerSettings
from lightning_modules.metrics.image_conversion import to_uint8


ANIMATION_FPS = 8


def _take(batch: Mapping[str, Any], count: int) -> dict[str, Any]:
    return {key: value[:count] for key, value in batch.items()}


class SampleGridLogger(Callback):
    """Samples the first validation batch and logs one grid row per example, rank zero only.

    The columns come from ``pl_module.image_log_columns(batch, generated, palette)`` (SDM: label map in the
    DataModule's ``palette`` | instance edges | generated | real). Sampling uses the model's own guidance. The grid
    is logged to every TensorBoard logger under ``val/samples_<sampler><steps>`` and saved as
    ``<log_dir>/images/val/<tag>_gs-<step>.png``.

    It runs in ``on_validation_batch_end`` of batch 0: every callback's ``on_validation_epoch_start`` (where
    ``EMAWeightAveraging`` swaps the EMA weights in) has run by then and ``on_validation_epoch_end`` (where it swaps
    them back) has not, so the samples always show the EMA weights, whatever the callback order. The first batch
    of the (unshuffled) validation loader and a fixed seed make the grid comparable across steps. Sampling uses
    ``pl_module.net`` directly (no DDP wrapper) and no collective, so other ranks simply move on; the PNG folder is
    resolved in ``setup`` on every rank, because ``trainer.log_dir`` is a broadcast that rank zero alone would
    wait in forever.

    Args:
        num_examples: Rows of the grid (taken from the first validation batch).
        sampler: Sampler name (``ddpm``, ``ddim``, ``dpmpp_2m``).
        steps: Sampling steps.
        eta: Stochasticity of ``ddim`` and ``dpmpp_2m`` (0: deterministic).
        seed: Seed of the sampling noise.
        every_n_validations: Log at every n-th validation run (sanity checks excluded).
        save_png: Also write the grid as PNG under the run directory.
        animation: Video data (PIDM): sample the rows with one shared initial and per-step noise, as
            ``experiments.animate --noise shared`` does, and also log them as an animation of consecutive frames
            (the test split's first batch: the first video's frames in order): a TensorBoard video when moviepy is
            installed, else an image strip of the real frames over the generated ones (``val/animation``), and a GIF
            beside the PNG grids.
    """

    def __init__(
        self,
        num_examples: int = 8,
        sampler: SamplerName = "ddim",
        steps: int = 50,
        eta: float = 0.0,
        seed: int = 0,
        every_n_validations: int = 1,
        save_png: bool = True,
        animation: bool = False,
    ) -> None:
        if num_examples < 1 or every_n_validations < 1:
            raise ValueError("num_examples and every_n_validations must be >= 1")
        self.num_examples = num_examples
        self.sampling = SamplerSettings(sampler, steps, eta, seed)
        self.every_n_validations = every_n_validations
        self.save_png = save_png
        self.animation = animation
        self._validations = 0
        self._png_dir: Path | None = None

    @property
    def tag(self) -> str:
        """TensorBoard tag; it encodes the sampler so that sweeps do not collide."""
        return f"val/samples_{self.sampling.sampler}{self.sampling.steps}"

    def setup(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule", stage: str) -> None:
        if self.animation and not hasattr(pl_module, "pose_window"):  # on every rank, before any training
            raise ValueError(f"sample_grid.animation animates pose-guided video frames; {type(pl_module).__name__} "
                             "has no poses")
        self._png_dir = Path(trainer.log_dir or trainer.default_root_dir) / "images" / "val"

    def on_validation_epoch_start(self, trainer: "pl.Trainer", pl_module: "pl.LightningModule") -> None:
        if not trainer.sanity_checking:
            self._validations += 1

    def on_validation_batch_end(
        self,
        trainer: "pl.Trainer",
        pl_module: "pl.LightningModule",
        outputs: Any,
        batch: Any,
        batch_idx: int,
        dataloader_idx: int = 0,
    ) -> None:
        due = (self._validations - 1) % self.every_n_validations == 0
        if trainer.sanity_checking or batch_idx != 0 or dataloader_idx != 0 or not due or not trainer.is_global_zero:
            return
        examples, generated = self.sample(pl_module, batch)
        self._write(trainer, self.grid(pl_module, examples, generated, getattr(trainer.datamodule, "palette", None)))
        if self.animation:
            self._write_animation(trainer, examples["target"], generated)

    def sample(self, pl_module: "pl.LightningModule", batch: Mapping[str, Any]) -> tuple[dict[str, Any], Tensor]:
        """The first ``num_examples`` examples of ``batch`` and their samples (B, C, H, W) in [-1, 1]."""
        examples = _take(batch, self.num_examples)
        generator = torch.Generator(device=pl_module.device).manual_seed(self.sampling.seed)
        x_T = None
        if self.animation:
            shape = (1, *examples["target"].shape[1:])
            x_T = torch.randn(shape, generator=generator, device=pl_module.device).expand_as(examples["target"])
        generated = pl_module.generate_batch(examples, sampling=self.sampling, generator=generator, x_T=x_T,
                                             shared_noise=self.animation)
        return examples, generated

    def grid(self, pl_module: "pl.LightningModule", examples: Mapping[str, Any], generated: Tensor,
             palette: Tensor | None = None) -> Tensor:
        """The (3, H', W') grid in [0, 1]: one row of ``pl_module.image_log_columns`` per example."""
        columns = pl_module.image_log_columns(examples, generated, palette)
        rows = torch.stack(columns, dim=1).flatten(0, 1)  # (B * columns, 3, H, W), one row per example
        return make_grid(rows.float().cpu(), nrow=len(columns), normalize=True, value_range=(-1, 1), pad_value=1.0)

    def sample_grid(
        self, pl_module: "pl.LightningModule", batch: Mapping[str, Any], palette: Tensor | None = None
    ) -> Tensor:
        """The (3, H', W') grid in [0, 1] for the first ``num_examples`` examples of ``batch``."""
        examples, generated = self.sample(pl_module, batch)
        return self.grid(pl_module, examples, generated, palette)

    def _write_animation(self, trainer: "pl.Trainer", real: Tensor, generated: Tensor) -> None:
        frames = to_uint8(generated.cpu())  # (T, 3, H, W)
        step = trainer.global_step
        for logger in trainer.loggers:
            if not isinstance(logger, TensorBoardLogger):
                continue
            if importlib.util.find_spec("moviepy") is not None:
                logger.experiment.add_video("val/animation", frames[None], step, fps=ANIMATION_FPS)
            else:
                strip = torch.cat([to_uint8(real.cpu()), frames])  # real frames over generated ones
                logger.experiment.add_image("val/animation", make_grid(strip, nrow=len(frames), pad_value=255),
                                            step)
        if self.save_png:
            write_gif(self._png_dir / f"animation_gs-{step:06d}.gif", list(frames.permute(0, 2, 3, 1).numpy()),
                      ANIMATION_FPS)

    def _write(self, trainer: "pl.Trainer", grid: Tensor) -> None:
        step = trainer.global_step
        for logger in trainer.loggers:
            if isinstance(logger, TensorBoardLogger):
                logger.experiment.add_image(self.tag, grid, step)
        if self.save_png:
            # The grid is in [0, 1]; to_uint8 takes [-1, 1] and rounds as every other saved image.
            write_png(self._png_dir / f"{self.tag.split('/', 1)[1]}_gs-{step:06d}.png", to_uint8(grid * 2 - 1))
