"""Random stand-ins for the pretrained files the evaluation metrics load, written under their real names.

They go through the real loading code (strict loads); only their values are random, so no test needs the network.
"""

from pathlib import Path

import torch
import torchvision

from lightning_modules.metrics import WEIGHTS
from lightning_modules.segmenter import SegmenterLitModule


def write_lpips_alexnet(weights_dir: Path) -> Path:
    """A random AlexNet as ``alexnet-owt-7be5be79.pth`` (the LPIPS backbone); returns the file."""
    weights_dir.mkdir(parents=True, exist_ok=True)
    alexnet = torchvision.models.alexnet(weights=None).state_dict()
    path = weights_dir / WEIGHTS["lpips_alex"].name
    # The classifier is never used by LPIPS: one stored element expanded to its shape keeps the file small.
    torch.save({name: torch.zeros(1).expand(value.shape) if name.startswith("classifier") else value
                for name, value in alexnet.items()}, path)
    return path


def write_shapes_segmenter(path: Path) -> Path:
    """A random small U-Net checkpoint for the 7 shapes classes, as ``evaluation.miou.segmenter`` reads it."""
    segmenter = SegmenterLitModule(num_classes=7, arch="Unet", encoder_name="resnet18", ignore_index=6,
                                   model_kwargs={"encoder_depth": 3, "decoder_channels": [16, 8, 4]})
    torch.save({"state_dict": segmenter.state_dict(), "hyper_parameters": dict(segmenter.hparams)}, path)
    return path
