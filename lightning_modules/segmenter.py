"""Semantic segmenter (segmentation-models-pytorch) trained on the semantic DataModules, used to score the mIoU
of generated images.

Train it with the standard fit command on a ``configs/segmenter/*.yaml`` config; load it for evaluation with
:func:`load_segmenter`.
"""

from __future__ import annotations

import inspect
import os
import socket
from typing import Any

import pytorch_lightning as pl
import segmentation_models_pytorch as smp
import torch
from huggingface_hub import hf_hub_download, try_to_load_from_cache
from safetensors.torch import load_file
from torch import Tensor, nn
from torchmetrics.classification import MulticlassJaccardIndex

from lightning_modules.metrics.weights import (
    DOWNLOAD_TIMEOUT_S,
    MissingWeightsError,
    is_offline,
    resolve_weights_dir,
)

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
ENCODER_WEIGHTS_FILE = "model.safetensors"


def encoder_weights_file(encoder_name: str, encoder_weights: str) -> str:
    """File name of pretrained smp encoder weights in the condiff weights directory."""
    return f"smp-{encoder_name}.{encoder_weights}.safetensors"


def resolve_encoder_weights(encoder_name: str, encoder_weights: str, weights_dir: str | os.PathLike | None = None,
                            offline: bool = False) -> str:
    """Path of pretrained smp encoder weights: weights directory, then HF cache, then an HF download.

    Args:
        encoder_name: A native smp encoder, e.g. ``"resnet50"``.
        encoder_weights: Its pretrained variant, e.g. ``"imagenet"``.
        weights_dir: The condiff weights folder.
        offline: Never download.

    Raises:
        ValueError: the encoder has no such pretrained variant in smp.
        MissingWeightsError: absent and offline, or the download failed.
    """
    settings = smp.encoders.encoders.get(encoder_name, {}).get("pretrained_settings", {})
    if encoder_weights not in settings:
        raise ValueError(f"smp encoder {encoder_name!r} has no pretrained weights {encoder_weights!r} "
                         f"(available: {sorted(settings)}; `tu-` timm encoders are not supported here)")
    local = resolve_weights_dir(weights_dir) / encoder_weights_file(encoder_name, encoder_weights)
    if local.is_file():
        return str(local)
    repo_id, revision = settings[encoder_weights]["repo_id"], settings[encoder_weights]["revision"]
    cached = try_to_load_from_cache(repo_id, ENCODER_WEIGHTS_FILE, revision=revision)
    if isinstance(cached, str):
        return cached
    hint = (f"Fetch https://huggingface.co/{repo_id}/resolve/{revision}/{ENCODER_WEIGHTS_FILE} on a machine with "
            f"internet access and save it as {local} (or fill the Hugging Face cache there).")
    if is_offline(offline):
        raise MissingWeightsError(f"Missing smp encoder weights {repo_id} ({ENCODER_WEIGHTS_FILE}) and offline mode "
                                  f"is on. {hint}")
    previous_timeout = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        return hf_hub_download(repo_id, ENCODER_WEIGHTS_FILE, revision=revision)
    except OSError as err:
        raise MissingWeightsError(f"Downloading smp encoder weights {repo_id} failed: {err}. {hint}") from err
    finally:
        socket.setdefaulttimeout(previous_timeout)


class SegmenterLitModule(pl.LightningModule):
    """An smp segmentation network with cross-entropy, AdamW and synced val/test mIoU.

    Takes DataModule batches ``{"image": (B, 3, H, W) in [-1, 1], "label": (B, H, W) int64}``; images are
    ImageNet-normalised inside :meth:`forward`.

    Args:
        num_classes: Number of label classes predicted.
        arch: smp architecture name (``Unet``, ``DeepLabV3Plus``, ...).
        encoder_name: smp encoder name (``resnet50``, ...).
        encoder_weights: Pretrained encoder variant (``imagenet``) or None for random init (no download).
        ignore_index: Label value excluded from the loss and the mIoU (null: none).
        lr: AdamW learning rate.
        weight_decay: AdamW weight decay.
        weights_dir: Folder searched first for pretrained encoder weights.
        offline: Never download encoder weights.
        model_kwargs: Extra smp architecture arguments (e.g. ``encoder_depth``, ``decoder_channels``).
    """

    def __init__(
        self,
        num_classes: int,
        arch: str = "DeepLabV3Plus",
        encoder_name: str = "resnet50",
        encoder_weights: str | None = None,
        ignore_index: int | None = 255,
        lr: float = 1e-4,
        weight_decay: float = 1e-4,
        weights_dir: str | None = None,
        offline: bool = False,
        model_kwargs: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        # LightningCLI also records data-to-model links this module does not take (`instance_edges` from a
        # semantic DataModule); keeping them would break `SegmenterLitModule.load_from_checkpoint`.
        for key in set(self.hparams) - set(inspect.signature(SegmenterLitModule).parameters):
            del self.hparams[key]
        self.model = smp.create_model(arch, encoder_name, encoder_weights=None, classes=num_classes,
                                      **(model_kwargs or {}))
        if encoder_weights is not None:
            path = resolve_encoder_weights(encoder_name, encoder_weights, weights_dir, offline)
            self.model.encoder.load_state_dict(load_file(path, device="cpu"))
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)
        self.criterion = nn.CrossEntropyLoss(ignore_index=-100 if ignore_index is None else ignore_index)
        self.val_miou, self.test_miou = (
            MulticlassJaccardIndex(num_classes, ignore_index=ignore_index, average="macro", validate_args=False)
            for _ in range(2)
        )

    def forward(self, images: Tensor) -> Tensor:
        """Logits ``(B, num_classes, H, W)`` for images in [-1, 1]."""
        return self.model(((images + 1.0) / 2.0 - self.mean) / self.std)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        loss = self.criterion(self(batch["image"]), batch["label"])
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["label"]))
        return loss

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_miou, "val")

    def test_step(self, batch: dict[str, Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_miou, "test")

    def _evaluate(self, batch: dict[str, Tensor], miou: MulticlassJaccardIndex, stage: str) -> None:
        logits = self(batch["image"])
        batch_size = len(batch["label"])
        self.log(f"{stage}/loss", self.criterion(logits, batch["label"]), sync_dist=True, batch_size=batch_size)
        miou.update(logits.argmax(dim=1), batch["label"])
        self.log(f"{stage}/miou", miou, prog_bar=True, batch_size=batch_size)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.parameters(), lr=self.hparams.lr, weight_decay=self.hparams.weight_decay)


def load_segmenter(ckpt_path: str | os.PathLike, map_location: str | torch.device = "cpu") -> SegmenterLitModule:
    """A trained segmenter from a Lightning checkpoint, in eval mode with frozen weights.

    The checkpoint is read with ``weights_only=True``; the encoder is rebuilt without pretrained weights (the
    checkpoint holds them), so loading never downloads.
    """
    checkpoint = torch.load(ckpt_path, map_location=map_location, weights_only=True)
    if "state_dict" not in checkpoint or "hyper_parameters" not in checkpoint:
        raise ValueError(f"{ckpt_path} is not a SegmenterLitModule checkpoint (no state_dict / hyper_parameters)")
    # LightningCLI stores more than the constructor arguments (`_class_path`, `_instantiator`, values of
    # data-to-model links this module does not take), so keep only what the constructor accepts.
    accepted = inspect.signature(SegmenterLitModule).parameters
    hparams = {k: v for k, v in checkpoint["hyper_parameters"].items() if k in accepted}
    hparams["encoder_weights"] = None
    segmenter = SegmenterLitModule(**hparams)
    segmenter.load_state_dict(checkpoint["state_dict"])
    return segmenter.eval().requires_grad_(False)
