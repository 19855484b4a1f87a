"""Training and sampling plumbing shared by the conditional diffusion LightningModules (SDM, PIDM).

A subclass builds its network, passes it here, and says how a batch becomes the clean image plus network keyword
arguments (:meth:`DiffusionLitModule.training_inputs`), how a batch is sampled (:meth:`generate_batch`) and which
columns an image grid shows (:meth:`image_log_columns`). The diffusion math itself lives in
``lightning_modules.diffusion``.

The test loop (``python -m experiments.test``) samples the test split with ``test_*`` sampling options, scores it
with an :class:`~lightning_modules.metrics.EvaluationMetrics` built from the ``evaluation`` block and writes PNGs
plus ``metrics.json`` under ``<log_dir>/test/`` (:mod:`lightning_modules.evaluation_io`); a subclass says how one
batch is sampled, scored and saved (:meth:`evaluate_test_batch`).

EMA is not handled here: the ``callbacks.ema.DelayedEMA`` callback (Lightning's ``EMAWeightAveraging``, in the
configs) swaps the averaged weights in for validation, stores them as the checkpoint's ``state_dict`` (raw weights
under ``current_model_state``) and copies them into the model when training ends, so test and predict runs loading
a checkpoint sample with EMA weights (with the raw weights before the averaging starts).
"""

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging
from torch import Tensor, nn
from torchmetrics import MeanMetric, SumMetric

from lightning_modules.diffusion import (
    SAMPLERS,
    VARIANCES,
    DiffusionSchedule,
    Guidance,
    LossSecondMomentSampler,
    SamplerStep,
    TimestepSampler,
    UniformTimestepSampler,
    guided_denoiser,
    training_losses,
)
from lightning_modules.evaluation_mixin import EvaluationMixin
from lightning_modules.metrics import EvaluationConfig

NUM_QUARTILES = 4
TimestepSamplerName = Literal["uniform", "loss-second-moment"]
StepCallback = Callable[[SamplerStep], Tensor | None]
# Init arguments of the test command only: kept out of the checkpoint's hyperparameters, so LightningCLI's
# `--ckpt_path` (which re-applies those over the config) never replaces the test config or command line.
TEST_OPTIONS = ("evaluation", "test_sampler", "test_steps", "test_guidance_scale", "test_seed")


@dataclass
class SamplingOptions:
    """How validation grids, ``predict`` and :meth:`DiffusionLitModule.generate_batch` sample by default.

    Attributes:
        sampler: A name in ``lightning_modules.diffusion.SAMPLERS`` (``ddpm``, ``ddim``, ``dpmpp_2m``).
        steps: Number of denoising steps (the training schedule is respaced to it).
        guidance_scale: Guidance strength; 1 means no guidance.
        eta: DDIM stochasticity (``ddim`` only).
        seed: Seed of the per-batch noise generators used by ``predict_step``.
    """

    sampler: str = "ddim"
    steps: int = 50
    guidance_scale: float = 1.0
    eta: float = 0.0
    seed: int = 0


def respacing_spec(sampler: str, steps: int, num_timesteps: int) -> str | None:
    """Respacing spec for ``steps`` steps: the official fixed-stride ``ddimN`` for DDIM, even sections otherwise."""
    if steps == num_timesteps:
        return None
    return f"ddim{steps}" if sampler == "ddim" else str(steps)


def warmup_factor(step: int, warmup_steps: int) -> float:
    """Linear learning-rate warm-up factor for LambdaLR: (step + 1) / warmup_steps, capped at 1."""
    return min(1.0, (step + 1) / warmup_steps)


class DiffusionLitModule(EvaluationMixin, pl.LightningModule, ABC):
    """Hybrid-loss training, timestep sampling, AdamW with warm-up and respaced guided sampling for a denoiser.

    Args:
        net: The denoising network, called as ``net(x_t, t, **kwargs)`` (built by the subclass).
        noise_schedule: Beta schedule name (``"linear"`` or ``"cosine"``).
        num_timesteps: Training diffusion steps T.
        variance: ``"learned_range"`` (network predicts ε and v) or a fixed variance.
        vlb_weight: Weight of the variational term in the hybrid loss (1 = official SDM/PIDM).
        min_snr_gamma: Min-SNR-γ weighting of the ε loss (weight min(SNR, γ)/SNR; 5 in its paper); None keeps the
            official unweighted L_simple.
        timestep_sampler: ``"uniform"`` (official) or ``"loss-second-moment"`` importance sampling (its loss history
            is all-gathered every step, which costs one host synchronisation per step).
        lr: AdamW learning rate.
        betas: AdamW betas.
        weight_decay: AdamW weight decay.
        eps: AdamW epsilon.
        warmup_steps: Linear learning-rate warm-up length in optimizer steps (0: none).
        clip_x0: Clamp predicted x0 to [-1, 1] while sampling.
        sampler: Default sampler for validation grids and prediction.
        sampling_steps: Default number of sampling steps.
        guidance_scale: Default guidance scale (1: unguided).
        eta: Default DDIM eta.
        init_from: Checkpoint whose weights initialise the network (e.g. a pre-trained run for CFG fine-tuning);
            loaded with ``weights_only=True``. Only the weights are taken unless ``init_training_state``: optimizer,
            step and EMA start afresh.
        init_weights: Which weights of ``init_from`` to load: ``"ema"`` (the checkpoint's ``state_dict``, i.e. the
            EMA weights when it was trained with the EMA callback) or ``"raw"`` (its ``current_model_state``).
            The EMA callback of the new run starts its average from whichever is loaded.
        init_training_state: With ``init_weights: raw``, also take ``init_from``'s optimizer state (AdamW moments;
            learning rate, betas and weight decay stay this run's) and continue its EMA average, as the official SDM
            fine-tune does when it starts from a ``modelNNNNNN.pt`` (it loads ``optNNNNNN.pt`` and the EMA file too).
            The step counter and the learning-rate schedule start afresh.
        evaluation: The test command's metrics protocol (``fid``, ``lpips``, ``ssim``, ``miou``, ``weights_dir``,
            ``offline``; a plain mapping is accepted too; see docs/evaluation.md). None: the test command only
            reports the fixed-noise losses.
        test_sampler: Sampler of the test command (default: ``sampler``).
        test_steps: Sampling steps of the test command (default: ``sampling_steps``).
        test_guidance_scale: Guidance scale of the test command (default: ``guidance_scale``).
        test_seed: Seed of the test samples' initial noise, drawn per sample from its file name, so the images do
            not depend on batch size or the number of processes.
        channels_last: Keep the network's weights in channels-last memory format (faster convolutions with
            bf16/fp16 tensor cores).
        compile_network: ``torch.compile`` the network in place when a run starts (checkpoint keys are unchanged;
            Lightning wraps DDP around the compiled network, so it is DDP-safe).
    """

    def __init__(
        self,
        net: nn.Module,
        noise_schedule: str = "linear",
        num_timesteps: int = 1000,
        variance: str = "learned_range",
        vlb_weight: float = 1.0,
        min_snr_gamma: float | None = None,
        timestep_sampler: TimestepSamplerName = "uniform",
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.999),
        weight_decay: float = 0.0,
        eps: float = 1e-8,
        warmup_steps: int = 0,
        clip_x0: bool = True,
        sampler: str = "ddim",
        sampling_steps: int = 50,
        guidance_scale: float = 1.0,
        eta: float = 0.0,
        init_from: str | None = None,
        init_weights: Literal["ema", "raw"] = "ema",
        init_training_state: bool = False,
        evaluation: EvaluationConfig | None = None,
        test_sampler: str | None = None,
        test_steps: int | None = None,
        test_guidance_scale: float | None = None,
        test_seed: int = 0,
        channels_last: bool = False,
        compile_network: bool = False,
    ) -> None:
        super().__init__()
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
        for name, value in (("sampler", sampler), ("test_sampler", test_sampler or sampler)):
            if value not in SAMPLERS:
                raise ValueError(f"{name} must be one of {sorted(SAMPLERS)}, got {value!r}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.net = net
        self.schedule = DiffusionSchedule.create(noise_schedule, num_timesteps)
        self.variance = variance
        self.vlb_weight = vlb_weight
        if min_snr_gamma is not None and min_snr_gamma <= 0:
            raise ValueError(f"min_snr_gamma must be positive or null, got {min_snr_gamma}")
        self.min_snr_gamma = min_snr_gamma
        self.timestep_sampler = self._build_timestep_sampler(timestep_sampler, num_timesteps)
        self.optimizer_options = {"lr": lr, "betas": tuple(betas), "weight_decay": weight_decay, "eps": eps}
        self.warmup_steps = warmup_steps
        self.clip_x0 = clip_x0
        self.sampling = SamplingOptions(sampler, sampling_steps, guidance_scale, eta)
        self.test_sampling = SamplingOptions(
            test_sampler or sampler,
            sampling_steps if test_steps is None else test_steps,
            guidance_scale if test_guidance_scale is None else test_guidance_scale,
            eta,
            test_seed,
        )
        if isinstance(evaluation, Mapping):
            evaluation = EvaluationConfig.from_dict(dict(evaluation))
        self.evaluation = evaluation
        self.test_num_samples = SumMetric()
        # Set by callbacks/predict: called after every denoising step of predict_step (e.g. a progress bar).
        self.sampling_callback: StepCallback | None = None
        self.quartile_losses = nn.ModuleList(MeanMetric() for _ in range(NUM_QUARTILES))
        self.channels_last = channels_last
        self.compile_network = compile_network
        # The optimizer state and EMA average of init_from, applied when the optimizer and EMA exist (on_fit_start).
        self._initial_training_state: dict[str, Any] | None = None
        if init_training_state and (init_from is None or init_weights != "raw"):
            raise ValueError("init_training_state continues the optimizer and EMA of init_from's raw weights: it "
                             "needs init_from and init_weights: raw")
        if init_from is not None:
            self._load_initial_weights(init_from, init_weights, init_training_state)

    def setup(self, stage: str) -> None:
        # After the callbacks' setup: the EMA callback has already copied the uncompiled module.
        if self.channels_last:
            self.net.to(memory_format=torch.channels_last)
        if self.compile_network:
            self.net.compile()

    @staticmethod
    def _build_timestep_sampler(name: str, num_timesteps: int) -> TimestepSampler:
        if name == "uniform":
            return UniformTimestepSampler(num_timesteps)
        if name == "loss-second-moment":
            return LossSecondMomentSampler(num_timesteps)
        raise ValueError(f"timestep_sampler must be 'uniform' or 'loss-second-moment', got {name!r}")

    def _load_initial_weights(self, path: str, which: str, training_state: bool) -> None:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True)
        key = {"ema": "state_dict", "raw": "current_model_state"}.get(which)
        if key is None:
            raise ValueError(f"init_weights must be 'ema' or 'raw', got {which!r}")
        if key not in checkpoint:
            raise KeyError(f"init_from checkpoint {path} has no {key!r} (needed for init_weights={which!r})")
        missing, unexpected = self.load_state_dict(checkpoint[key], strict=False)
        if missing or unexpected:
            raise RuntimeError(
                f"init_from checkpoint {path} does not match this model: missing {missing[:5]}, "
                f"unexpected {unexpected[:5]}"
            )
        if training_state:
            needed = ("optimizer_states", "averaging_state", "state_dict", "current_model_state")
            absent = [name for name in needed if name not in checkpoint]
            if absent:
                raise KeyError(f"init_from checkpoint {path} has no {absent} (init_training_state needs a checkpoint "
                               "written by experiments.fit with the EMA callback)")
            self._initial_training_state = {name: checkpoint[name] for name in needed}

    def on_fit_start(self) -> None:
        if self._initial_training_state is not None:
            self._apply_initial_training_state(self._initial_training_state)
            self._initial_training_state = None

    def _apply_initial_training_state(self, state: dict[str, Any]) -> None:
        """Load ``init_from``'s optimizer moments (keeping this run's hyperparameters) and hand its EMA average to
        the weight-averaging callbacks through their own checkpoint hook."""
        optimizer = self.trainer.optimizers[0]
        hyperparameters = [{key: value for key, value in group.items() if key != "params"}
                           for group in optimizer.param_groups]
        try:
            optimizer.load_state_dict(state["optimizer_states"][0])
        except ValueError as error:
            raise ValueError(f"init_training_state: the optimizer state of init_from does not fit this model's "
                             f"optimizer ({error})") from error
        for group, kept in zip(optimizer.param_groups, hyperparameters, strict=True):
            group.update(kept)
        for callback in self.trainer.callbacks:
            if isinstance(callback, WeightAveraging):
                callback.on_load_checkpoint(self.trainer, self, dict(state))

    # --- subclass interface -------------------------------------------------------------------------------------

    @abstractmethod
    def training_inputs(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, Any]]:
        """The clean target image (B, C, H, W) and the network's condition keyword arguments for a batch.

        Training-time condition dropout (CFG) is applied here when ``self.training``.
        """

    @abstractmethod
    def generate_batch(
        self,
        batch: Mapping[str, Any],
        *,
        options: SamplingOptions,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
    ) -> Tensor:
        """Sample one image per example of ``batch`` (values in [-1, 1])."""

    @abstractmethod
    def image_log_columns(self, batch: Mapping[str, Any], generated: Tensor) -> list[Tensor]:
        """The columns of an image grid, each (B, 3, H, W) in [-1, 1] (e.g. condition | generated | real)."""

    # --- training -----------------------------------------------------------------------------------------------

    def _losses(
        self, x0: Tensor, net_kwargs: Mapping[str, Any], t: Tensor, noise: Tensor | None = None
    ) -> dict[str, Tensor]:
        return training_losses(
            self.schedule,
            lambda x_t, timesteps: self.net(x_t, timesteps, **net_kwargs),
            x0,
            t.to(x0.device),
            noise,
            variance=self.variance,
            vlb_weight=self.vlb_weight,
            min_snr_gamma=self.min_snr_gamma,
        )

    def training_step(self, batch: Mapping[str, Any], batch_idx: int) -> Tensor:
        x0, net_kwargs = self.training_inputs(batch)
        batch_size = x0.shape[0]
        t, weights = self.timestep_sampler.sample(batch_size, x0.device)
        losses = self._losses(x0, net_kwargs, t)
        if isinstance(self.timestep_sampler, LossSecondMomentSampler):
            gathered_t = self.all_gather(t).reshape(-1)
            gathered_losses = self.all_gather(losses["loss"].detach()).reshape(-1)
            self.timestep_sampler.update(gathered_t, gathered_losses)
        loss = (losses["loss"] * weights).mean()
        for name, values in losses.items():
            self.log(f"train/{name}", values.mean(), prog_bar=name == "loss", batch_size=batch_size)
        self._log_quartile_losses(t, losses["loss"].detach(), batch_size)
        return loss

    def _log_quartile_losses(self, t: Tensor, losses: Tensor, batch_size: int) -> None:
        quartile = (t * NUM_QUARTILES) // self.schedule.num_steps
        for index, metric in enumerate(self.quartile_losses):
            # A masked mean accumulated over the epoch: empty quartiles in a batch simply add no weight.
            metric.update(losses, (quartile == index).to(losses.dtype))
            self.log(f"train/loss_q{index}", metric, on_step=False, on_epoch=True, batch_size=batch_size)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        grads = [p.grad for p in self.parameters() if p.grad is not None]
        if grads:
            self.log("train/grad_norm", torch.nn.utils.get_total_norm(grads), on_step=True, on_epoch=False)

    def _fixed_noise_losses(self, batch: Mapping[str, Any], batch_idx: int) -> dict[str, Tensor]:
        # Same t and noise for the same batch every evaluation, so the curve only moves with the weights.
        x0, net_kwargs = self.training_inputs(batch)
        generator = torch.Generator(device=x0.device).manual_seed(batch_idx)
        t = torch.randint(0, self.schedule.num_steps, (x0.shape[0],), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        return self._losses(x0, net_kwargs, t, noise)

    def validation_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        for name, values in self._fixed_noise_losses(batch, batch_idx).items():
            self.log(f"val/{name}", values.mean(), sync_dist=True, batch_size=values.shape[0], prog_bar=name == "loss")

    def test_step(self, batch: Mapping[str, Any], batch_idx: int) -> None:
        losses = self._fixed_noise_losses(batch, batch_idx)
        for name, values in losses.items():
            self.log(f"test/{name}", values.mean(), sync_dist=True, batch_size=values.shape[0])
        self.test_num_samples.update(float(losses["loss"].shape[0]))
        if self.evaluation is not None:
            self.evaluate_test_batch(batch, self.test_metrics, self.test_outputs)

    def configure_optimizers(self) -> Any:
        optimizer = torch.optim.AdamW(self.parameters(), **self.optimizer_options)
        if self.warmup_steps == 0:
            return optimizer
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, partial(warmup_factor, warmup_steps=self.warmup_steps))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if isinstance(self.timestep_sampler, LossSecondMomentSampler):
            checkpoint["timestep_sampler"] = self.timestep_sampler.state_dict()
        hparams = checkpoint.get("hyper_parameters")
        if hparams is not None and hparams.get("init_from") is not None:
            # The weights now live in this checkpoint; rebuilding it must not need the original file.
            checkpoint["hyper_parameters"] = {**hparams, "init_from": None, "init_training_state": False}

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if isinstance(self.timestep_sampler, LossSecondMomentSampler) and "timestep_sampler" in checkpoint:
            self.timestep_sampler.load_state_dict(checkpoint["timestep_sampler"])

    # --- sampling -----------------------------------------------------------------------------------------------

    def sampling_schedule(self, options: SamplingOptions) -> DiffusionSchedule:
        """The training schedule respaced to ``options.steps`` for ``options.sampler`` (what :meth:`sample` walks)."""
        spec = respacing_spec(options.sampler, options.steps, self.schedule.num_steps)
        return self.schedule if spec is None else self.schedule.respace(spec)

    @torch.no_grad()
    def sample(
        self,
        variants: Mapping[str, Mapping[str, Any]],
        guidance: Guidance,
        shape: tuple[int, ...],
        *,
        options: SamplingOptions,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        x_T: Tensor | None = None,
    ) -> Tensor:
        """Run ``options.sampler`` over the respaced schedule with all guidance variants in one network call.

        Args:
            variants: Network keyword arguments per condition variant (see ``diffusion.guided_denoiser``).
            guidance: How the variants' outputs combine.
            shape: Shape of the image batch (B, C, H, W).
            options: Sampler, steps and eta (``guidance_scale`` is already part of ``guidance``).
            generator: Random generator on this module's device (initial noise and sampler noise).
            callback: Called after every denoising step.
            x_T: Initial noise of ``shape`` (default: drawn from ``generator``), e.g. interpolated noises.
        """
        if options.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {options.sampler!r}; choose one of {sorted(SAMPLERS)}")
        schedule = self.sampling_schedule(options)
        if x_T is None:
            x_T = torch.randn(shape, generator=generator, device=self.device)
        elif tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {tuple(shape)}")
        return SAMPLERS[options.sampler](
            guided_denoiser(self.net, variants, guidance),
            x_T,
            schedule,
            clip_x0=self.clip_x0,
            variance=self.variance,
            eta=options.eta,
            callback=callback,
            generator=generator,
        )

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        generator = torch.Generator(device=self.device).manual_seed(self.sampling.seed * 1_000_003 + batch_idx)
        return self.generate_batch(batch, options=self.sampling, generator=generator, callback=self.sampling_callback)
