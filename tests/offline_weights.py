"""Random stand-ins for the pretrained files the evaluation metrics load, written under their real names.

They go through the real loading code (strict loads, torchmetrics' ``feature_extractor_weights_path``); only their
values are random, so no test needs the network.
"""

from pathlib import Path
from unittest import mock

import torch
import torchvision

from lightning_modules.metrics import WEIGHTS
from lightning_modules.segmenter import SegmenterLitModule


def _write_torchvision(model: torch.nn.Module, path: Path, unused_prefix: str | None = None) -> Path:
    # Tensors the metric never uses are stored as stride-0 views: one element on disk, still strict-loadable.
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {name: torch.zeros(1).expand(value.shape) if unused_prefix and name.startswith(unused_prefix) else value
             for name, value in model.state_dict().items()}
    torch.save(state, path)
    return path


def write_lpips_alexnet(weights_dir: Path) -> Path:
    """A random AlexNet as ``alexnet-owt-7be5be79.pth`` (the LPIPS backbone; its classifier is never used)."""
    return _write_torchvision(torchvision.models.alexnet(weights=None), weights_dir / WEIGHTS["lpips_alex"].name,
                              "classifier")


def write_fid_inception(weights_dir: Path) -> Path:
    """torch-fidelity's Inception-v3 with random weights, under the TF-Inception file name FID loads."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe

    # Build it without its download and strict load.
    with mock.patch.object(fe, "load_state_dict_from_url", lambda *a, **k: None), \
            mock.patch.object(fe.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None):
        net = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"])
    for module in net.modules():  # default init collapses the features to ~0 and makes every FID ~1e-15
        if isinstance(module, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
    path = weights_dir / WEIGHTS["fid_inception"].name
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), path)
    return path


def write_gfla_inception(weights_dir: Path) -> Path:
    """A random torchvision Inception-v3 as the GFLA FID network's file (its classifier is never used)."""
    gfla = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    return _write_torchvision(gfla, weights_dir / WEIGHTS["gfla_inception"].name, "fc")


def write_all_weights(weights_dir: Path) -> Path:
    """Every file the metrics load (FID Inception, LPIPS AlexNet, GFLA Inception) into ``weights_dir``."""
    torch.manual_seed(0)
    write_fid_inception(weights_dir)
    write_lpips_alexnet(weights_dir)
    write_gfla_inception(weights_dir)
    return weights_dir


def write_shapes_segmenter(path: Path) -> Path:
    """A random small U-Net checkpoint for the 7 shapes classes, as ``evaluation.miou.segmenter`` reads it."""
    segmenter = SegmenterLitModule(num_classes=7, arch="Unet", encoder_name="resnet18", ignore_index=6,
                                   model_kwargs={"encoder_depth": 3, "decoder_channels": [16, 8, 4]})
    torch.save({"state_dict": segmenter.state_dict(), "hyper_parameters": dict(segmenter.hparams)}, path)
    return path
