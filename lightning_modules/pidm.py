"""PIDM: pose-guided person image synthesis with texture diffusion (Bhunia et al. 2023) as a LightningModule."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, get_args

import torch
from torch import Tensor, nn

from datamodules.person_base import pair_name
from lightning_modules.base import TEST_OPTIONS, DiffusionLitModule, SamplerSettings, settings
from lightning_modules.diffusion import Guidance, StepCallback, disentangled, nested, style_only
from lightning_modules.evaluation_io import TestOutputDir, named_noise
from lightning_modules.metrics import EvaluationMetrics
from lightning_modules.metrics.image_conversion import png_rounded
from lightning_modules.nets.pidm_unet import PIDMUNet, PIDMUNetConfig

DropoutMode = Literal["independent", "joint", "style_only"]
GuidanceForm = Literal["disentangled", "style_only", "nested"]
OFFICIAL_POSE_CHANNELS = 20  # RGB skeleton + 17 limb distance maps; anything else is drawn as a max-projection
# The weights each guidance form takes; one left unset is DEFAULT_GUIDANCE_WEIGHT (the paper's and the code's 2).
GUIDANCE_WEIGHTS: dict[str, tuple[str, ...]] = {
    "disentangled": ("w_pose", "w_style"),
    "style_only": ("scale",),
    "nested": ("w_pose", "w_style"),
}
DEFAULT_GUIDANCE_WEIGHT = 2.0


@dataclass(frozen=True)
class PoseStyleGuidance:
    """PIDM's classifier-free guidance over the target pose p and the source's style s; each form takes only its
    own weights, so that a setting never goes silently unused.

    - ``disentangled`` (paper): ε(∅,∅) + w_pose·(ε(p,∅) − ε(∅,∅)) + w_style·(ε(∅,s) − ε(∅,∅));
    - ``style_only`` (official code): ε(p,∅) + scale·(ε(p,s) − ε(p,∅));
    - ``nested`` (DreamPose): ε(∅,∅) + w_style·(ε(∅,s) − ε(∅,∅)) + w_pose·(ε(p,s) − ε(∅,s)).

    Args:
        form: ``disentangled``, ``style_only`` or ``nested``.
        w_pose: Pose weight of ``disentangled`` and ``nested`` (null: 2); must stay null for ``style_only``.
        w_style: Style weight of ``disentangled`` and ``nested`` (null: 2); must stay null for ``style_only``.
        scale: Style scale of ``style_only`` (null: 2; 1: unguided); must stay null for the other forms.
    """

    form: GuidanceForm = "disentangled"
    w_pose: float | None = None
    w_style: float | None = None
    scale: float | None = None

    def __post_init__(self) -> None:
        if self.form not in GUIDANCE_WEIGHTS:
            raise ValueError(f"unknown guidance form {self.form!r}; choose one of {get_args(GuidanceForm)}")
        given = {"w_pose": self.w_pose, "w_style": self.w_style, "scale": self.scale}
        unused = [f"{name}={value}" for name, value in given.items()
                  if value is not None and name not in GUIDANCE_WEIGHTS[self.form]]
        if unused:
            raise ValueError(f"guidance {self.form!r} is weighted by {' and '.join(GUIDANCE_WEIGHTS[self.form])}; "
                             f"{', '.join(unused)} does not apply to it (set it to null, or choose the form it "
                             f"belongs to)")

    def weights(self) -> dict[str, float]:
        """The form's weights, unset ones at :data:`DEFAULT_GUIDANCE_WEIGHT`."""
        return {name: DEFAULT_GUIDANCE_WEIGHT if getattr(self, name) is None else getattr(self, name)
                for name in GUIDANCE_WEIGHTS[self.form]}

    def rule(self) -> Guidance:
        """The combination of the condition variants' outputs."""
        weights = self.weights()
        if self.form == "disentangled":
            return disentangled(weights["w_pose"], weights["w_style"])
        if self.form == "style_only":
            return style_only(weights["scale"])
        return nested(weights["w_style"], weights["w_pose"])

    def override(
        self, form: str | None = None, w_pose: float | None = None, w_style: float | None = None,
        scale: float | None = None,
    ) -> PoseStyleGuidance:
        """These settings with the given ones replacing them; the weights carry over only while the form stays."""
        new_form = self.form if form is None else form
        given = {"w_pose": w_pose, "w_style": w_style, "scale": scale}
        kept = {name: getattr(self, name) for name in given} if new_form == self.form else {}
        return PoseStyleGuidance(new_form, **{name: given[name] if given[name] is not None else kept.get(name)
                                              for name in given})


def condition_keep_masks(
    batch_size: int, drop_prob: float, mode: DropoutMode, device: torch.device, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Per-sample float masks (keep_pose, keep_style), each (B,), for condition-dropout training.

    With η = ``drop_prob`` the (pose, style) combinations are trained at these rates:

    ============ ========== ========== ========== =========
    mode         (p, s)     (p, ∅)     (∅, s)     (∅, ∅)
    ============ ========== ========== ========== =========
    independent  (1 − η)²   η(1 − η)   η(1 − η)   η²
    joint        1 − η      0          0          η
    style_only   1 − η      η          0          0
    ============ ========== ========== ========== =========

    ``independent`` trains every variant of the disentangled guidance; ``style_only`` is the official PIDM code
    (only the official style-only guidance is then trained), ``joint`` is plain classifier-free dropout.
    """
    if not 0.0 <= drop_prob <= 1.0:
        raise ValueError(f"condition drop probability must lie in [0, 1], got {drop_prob}")
    if mode not in get_args(DropoutMode):
        raise ValueError(f"unknown condition dropout mode {mode!r}; choose one of {get_args(DropoutMode)}")
    draws = torch.rand(batch_size, 2, generator=generator, device=device)
    keep = draws >= drop_prob
    if mode == "joint":
        keep = keep[:, :1].expand(-1, 2)
    elif mode == "style_only":
        keep = torch.stack([torch.ones_like(keep[:, 0]), keep[:, 1]], dim=1)
    keep = keep.float()
    return keep[:, 0], keep[:, 1]


def _per_sample(mask: Tensor, like: Tensor) -> Tensor:
    return mask.to(like.dtype).view(-1, *([1] * (like.ndim - 1)))


def pose_preview(pose: Tensor) -> Tensor:
    """A (B, 3, H, W) picture in [-1, 1] of poses (B, P, H, W) in [0, 1].

    The official 20-channel encoding starts with the RGB skeleton, which is shown as is; other encodings (Gaussian
    heatmaps) are shown as the maximum over their channels, in grey.
    """
    if pose.shape[1] == OFFICIAL_POSE_CHANNELS:
        picture = pose[:, :3]
    else:
        picture = pose.amax(dim=1, keepdim=True).expand(-1, 3, -1, -1)
    return picture * 2 - 1


def test_pair_names(batch: Mapping[str, Any]) -> list[str]:
    """``<source>_to_<target>`` of every pair of a test batch (file names and noise seeds)."""
    return [pair_name(source, target) for source, target in zip(batch["source_path"], batch["target_path"],
                                                                strict=True)]


def check_person_metrics(metrics: EvaluationMetrics, batch: Mapping[str, Any]) -> None:
    """Stop, before any sampling, when the metrics do not fit person images or the batch lacks what they need."""
    if metrics.miou is not None or (metrics.lpips is not None and metrics.config.lpips.mode != "reconstruction"):
        raise ValueError("PIDM evaluation takes evaluation.fid, evaluation.lpips with mode: reconstruction, "
                         "evaluation.ssim and evaluation.appearance; set evaluation.miou to null and lpips.mode "
                         "to reconstruction")
    if metrics.appearance is not None and "target_parts" not in batch:
        raise ValueError("evaluation.appearance needs body-part labels of the targets, which only the built-in "
                         "persons data (datamodules.persons.PersonsDataModule) provides; set it to null for "
                         "other datasets")


def score_person_images(metrics: EvaluationMetrics, images: Tensor, batch: Mapping[str, Any]) -> None:
    """Score generated person images (B, 3, H, W) in [-1, 1] against the batch's targets: FID (the real statistics
    are complete before sampling), reconstruction LPIPS, SSIM and, on the persons data, appearance transfer."""
    check_person_metrics(metrics, batch)
    target = batch["target"]
    if metrics.fid is not None:
        metrics.update_fid(images)
    if metrics.lpips is not None:
        metrics.update_lpips(images, target)
    if metrics.ssim is not None:
        metrics.update_ssim(images, target)
    if metrics.appearance is not None:
        metrics.update_appearance(images, target, batch["target_parts"], batch["target_identity"])


def save_person_images(
    outputs: TestOutputDir, names: Sequence[str], batch: Mapping[str, Any], generated: Tensor,
    coarse: Tensor | None = None,
) -> None:
    """PNGs of a test batch: ``generated/``, ``real/`` (target), ``source/``, ``pose/`` (target pose preview) and,
    for a refiner, ``coarse/`` (its input)."""
    outputs.save_images("generated", names, generated)
    if coarse is not None:
        outputs.save_images("coarse", names, coarse)
    outputs.save_images("real", names, batch["target"])
    outputs.save_images("source", names, batch["source"])
    outputs.save_images("pose", names, pose_preview(batch["target_pose"]))


def refinement_noise(names: Sequence[str], shape: Sequence[int], seed: int, device: torch.device | str) -> Tensor:
    """A refiner's initial noise for the named pairs, independent of the first stage's noise for the same names."""
    return named_noise([f"{name}/refined" for name in names], shape, seed, device=device)


@dataclass(frozen=True)
class ChainedRefiner:
    """A second stage that refines a first stage's images (PCDMs' progressive refinement) at test time.

    Args:
        module: The refiner (a :class:`lightning_modules.refiner.RefinerLitModule`).
        checkpoint: Where it was loaded from (recorded with the metrics).
        sampling: Its sampler settings.
        guidance: Its guidance: ``w_pose`` weighs the coarse image (with the pose), ``w_style``/``scale`` the source.
    """

    module: Any
    checkpoint: str
    sampling: SamplerSettings
    guidance: PoseStyleGuidance

    def refine(self, batch: Mapping[str, Any], coarse: Tensor, names: Sequence[str]) -> Tensor:
        """Refined images of ``coarse`` (B, 3, H, W); each pair's noise is seeded by its name. The refiner sees
        the coarse images rounded to 8 bits, as it was trained on them (``experiments.coarse`` writes PNGs), so
        chaining gives the images a refiner test on the saved coarse images gives."""
        x_T = refinement_noise(names, tuple(coarse.shape[1:]), self.sampling.seed, coarse.device)
        return self.module.generate_batch({**batch, "coarse": png_rounded(coarse)},
                                          sampling=self.sampling, guidance=self.guidance, x_T=x_T)

    def description(self) -> dict[str, Any]:
        """What identifies the refinement in ``metrics.json``."""
        return {"checkpoint": self.checkpoint, "sampling": asdict(self.sampling), "guidance": asdict(self.guidance),
                "strength": getattr(self.module, "strength", 1.0)}


class PIDMLitModule(DiffusionLitModule):
    """PIDM's noise predictor and texture encoder trained with the hybrid loss and pose/style condition dropout.

    The noisy target is concatenated with the target pose; the source image goes through the texture encoder. The
    null pose is the all-zero pose tensor, the null style the texture features of the all-zero image (official
    H_E(0)). ``pose_channels`` normally comes from the DataModule through the CLI link (``experiments/cli.py``).

    Sampling guidance is a :class:`PoseStyleGuidance`; each form runs all its variants in one batched network call
    per step, and the texture features of the batch and of the null image are computed once per batch.

    Args:
        pose_channels: Channels of the pose tensor (20 official, 18 heatmaps; times ``pose_window``).
        pose_window: Poses per target concatenated on channels (odd; linked from the DataModule like
            ``pose_channels``): predict and animate render that many poses around each target.
        network: The noise predictor's and texture encoder's architecture.
        guidance: Guidance of grids, ``predict`` and the test command.
        condition_drop_prob: η, the condition-dropout probability (see :func:`condition_keep_masks`).
        condition_dropout: ``independent`` (pose and style each dropped with η), ``joint`` (both together) or
            ``style_only`` (official: the style only).
        **kwargs: Diffusion, optimizer, sampling and initialisation options of
            :class:`~lightning_modules.base.DiffusionLitModule`.
    """

    def __init__(
        self,
        pose_channels: int = 20,
        pose_window: int = 1,
        network: PIDMUNetConfig = PIDMUNetConfig(),
        guidance: PoseStyleGuidance = PoseStyleGuidance(),
        condition_drop_prob: float = 0.1,
        condition_dropout: DropoutMode = "independent",
        **kwargs: Any,
    ) -> None:
        if pose_channels is None or pose_channels < 1:
            raise ValueError(
                f"PIDMLitModule needs pose_channels >= 1, got {pose_channels}; it is linked from the DataModule's "
                "pose_channels (or set model.init_args.pose_channels)"
            )
        if pose_window < 1 or pose_window % 2 == 0 or pose_channels % pose_window:
            raise ValueError(f"pose_window must be odd, at least 1 and divide pose_channels ({pose_channels}), got "
                             f"{pose_window}")
        if condition_dropout not in get_args(DropoutMode):
            raise ValueError(
                f"unknown condition_dropout {condition_dropout!r}; choose one of {get_args(DropoutMode)}"
            )
        network = settings(PIDMUNetConfig, network)
        super().__init__(lambda learn_sigma: PIDMUNet(pose_channels, network, learn_sigma), **kwargs)
        self.save_hyperparameters(ignore=list(TEST_OPTIONS))
        self.image_channels = network.image_channels
        self.pose_channels = pose_channels
        self.pose_window = pose_window
        self.condition_drop_prob = condition_drop_prob
        self.condition_dropout = condition_dropout
        self.guidance = settings(PoseStyleGuidance, guidance)
        self.attach_refiner(None)

    # --- training -----------------------------------------------------------------------------------------------

    def training_inputs(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        target, pose, source = batch["target"], batch["target_pose"], batch["source"]
        if self.training and self.condition_drop_prob > 0:
            keep_pose, keep_style = condition_keep_masks(
                target.shape[0], self.condition_drop_prob, self.condition_dropout, target.device
            )
            pose = pose * _per_sample(keep_pose, pose)
            source = source * _per_sample(keep_style, source)  # the encoder then sees the null (all-zero) image
        return target, {"pose": pose, "source": source}

    # --- sampling -----------------------------------------------------------------------------------------------

    def null_texture(self, batch_size: int, like: Tensor, net: nn.Module | None = None) -> list[Tensor]:
        """Texture features of the all-zero image (the null style), encoded once and expanded to ``batch_size``."""
        features = (self.net if net is None else net).encode(torch.zeros_like(like[:1]))
        return [f.expand(batch_size, *f.shape[1:]) for f in features]

    def guidance_variants(
        self, guidance: Guidance, pose: Tensor, texture: Sequence[Tensor], null_texture: Sequence[Tensor] | None
    ) -> dict[str, dict[str, Any]]:
        """Network keyword arguments of every variant ``guidance`` evaluates (``null_texture`` may be None if none
        of them needs the null style)."""
        null_pose = torch.zeros_like(pose)
        conditions = {
            "full": (pose, texture),
            "pose": (pose, null_texture),
            "style": (null_pose, texture),
            "image": (null_pose, texture),
            "none": (null_pose, null_texture),
        }
        variants = {}
        for name in guidance.active_variants:
            variant_pose, variant_texture = conditions[name]
            if variant_texture is None:
                raise ValueError(f"guidance variant {name!r} needs the null texture")
            variants[name] = {"pose": variant_pose, "texture": list(variant_texture)}
        return variants

    @staticmethod
    def needs_null_style(guidance: Guidance) -> bool:
        """Whether any evaluated variant of ``guidance`` uses the null style."""
        return any(name in ("pose", "none") for name in guidance.active_variants)

    def conditioned_denoiser_inputs(
        self, source: Tensor, pose: Tensor, guidance: Guidance, net: nn.Module | None = None
    ) -> dict[str, dict[str, Any]]:
        """The guidance variants for sources (B, C, H, W) and poses (B, P, H, W); each image is encoded once (by
        ``net``, default ``self.net``)."""
        net = self.net if net is None else net
        null = self.null_texture(pose.shape[0], source, net) if self.needs_null_style(guidance) else None
        return self.guidance_variants(guidance, pose, net.encode(source), null)

    @torch.no_grad()
    def generate(
        self,
        source: Tensor,
        pose: Tensor,
        *,
        sampling: SamplerSettings | None = None,
        guidance: PoseStyleGuidance | None = None,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        x_T: Tensor | None = None,
        shared_noise: bool = False,
    ) -> Tensor:
        """Images (B, C, H, W) in [-1, 1] of the sources' (B, C, H, W) persons in the poses (B, P, H, W) (see
        :meth:`generate_batch`)."""
        return self.generate_batch({"source": source, "target_pose": pose}, sampling=sampling, guidance=guidance,
                                   generator=generator, callback=callback, x_T=x_T, shared_noise=shared_noise)

    def guided_conditions(
        self, batch: Mapping[str, Any], guidance: PoseStyleGuidance | None = None, net: nn.Module | None = None
    ) -> tuple[dict[str, dict[str, Any]], Guidance, tuple[int, ...]]:
        """The pose/style variants of ``batch["source"]`` in ``batch["target_pose"]``; each image is encoded once."""
        source, pose = batch["source"], batch["target_pose"]
        rule = (self.guidance if guidance is None else guidance).rule()
        variants = self.conditioned_denoiser_inputs(source, pose, rule, self.net if net is None else net)
        return variants, rule, (source.shape[0], self.image_channels, *pose.shape[2:])

    def attach_refiner(self, refiner: ChainedRefiner | None) -> None:
        """Refine this model's test images with a second stage (``experiments.test --refiner``); the test then
        scores the refined images and, under ``coarse``, this model's own. None detaches it."""
        object.__setattr__(self, "chained_refiner", refiner)  # a plain attribute: never in this model's checkpoint

    @property
    def scores_coarse_images(self) -> bool:
        """Whether the test scores a second, coarse image set beside the generated one."""
        return self.chained_refiner is not None

    def test_run_description(self) -> dict[str, Any]:
        refiner = self.chained_refiner
        return {} if refiner is None else {"refiner": refiner.description()}

    def on_test_start(self) -> None:
        """Build the metrics; FID's real statistics are every distinct image of ``evaluation.fid.split`` (the paper:
        the training images), computed here before sampling unless cached."""
        super().on_test_start()
        refiner = self.chained_refiner
        if refiner is not None:
            refiner.module.to(self.device).eval()
        extra_sets = ("coarse",) if self.scores_coarse_images else ()
        fid = None if self.evaluation is None else self.evaluation.fid
        if fid is None:
            self.start_test_evaluation(None, extra_sets)
            return
        if fid.split not in ("train", "test"):
            raise ValueError(f"evaluation.fid.split must be 'train' (the paper's reference) or 'test' for person "
                             f"datasets, got {fid.split!r}")
        datamodule = self.fid_datamodule("fid_reference_fingerprint", "fid_reference_dataloader")
        self.start_test_evaluation(datamodule.fid_reference_fingerprint(fid.split), extra_sets)
        if self.test_metrics.fid_needs_real:
            self.compute_fid_reference(datamodule.fid_reference_dataloader(fid.split), f"{fid.split} images")

    def evaluate_test_batch(self, batch: Mapping[str, Any], metrics: EvaluationMetrics, outputs: TestOutputDir) -> None:
        """FID, reconstruction LPIPS, SSIM and (persons) appearance transfer against the targets; PNGs
        ``generated/``, ``real/`` (target), ``source/`` and ``pose/`` (target pose preview), named
        ``<source>_to_<target>``. With a chained refiner ``generated/`` holds the refined images, scored in
        ``metrics``, and ``coarse/`` this model's, scored in the ``coarse`` set."""
        check_person_metrics(metrics, batch)
        names = test_pair_names(batch)
        x_T = named_noise(names, (self.image_channels, *batch["target"].shape[-2:]), self.test_sampling.seed,
                          device=self.device)
        fake = self.generate_batch(batch, sampling=self.test_sampling, x_T=x_T)
        refiner = self.chained_refiner
        if refiner is None:
            score_person_images(metrics, fake, batch)
            save_person_images(outputs, names, batch, fake)
            return
        refined = refiner.refine(batch, fake, names)
        score_person_images(metrics, refined, batch)
        score_person_images(self.test_metric_sets["coarse"], fake, batch)
        save_person_images(outputs, names, batch, refined, coarse=fake)

    def image_log_columns(
        self, batch: Mapping[str, Any], generated: Tensor, palette: Tensor | None = None
    ) -> list[Tensor]:
        """Source | target pose (RGB skeleton or heatmap maximum) | generated | target (when the batch has one)."""
        device = generated.device
        columns = [batch["source"].to(device), pose_preview(batch["target_pose"].to(device)), generated]
        if "target" in batch:
            columns.append(batch["target"].to(device))
        return columns
