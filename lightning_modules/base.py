"""Training and sampling plumbing shared by the conditional diffusion LightningModules (SDM, PIDM).

A subclass says how its network is built, how a batch becomes the clean image plus network keyword arguments
(:meth:`DiffusionLitModule.training_inputs`), which condition variants its guidance evaluates for a batch
(:meth:`guided_conditions`), and which columns an image grid shows (:meth:`image_log_columns`). Sampling is split in
two: the sampler (:class:`SamplerSettings`: name, steps, eta, seed) is the same for every family, the guidance rule
belongs to the family (SDM: classifier-free scale; PIDM: style-only, disentangled or nested weights); every caller
(grids, predict, test, benchmark) samples through :meth:`generate_batch` with both. The diffusion math itself lives
in ``lightning_modules.diffusion``.

The test loop (``python -m experiments.test``) samples the test split with ``test_sampling``, scores it
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
from dataclasses import asdict, dataclass, is_dataclass, replace
from functools import partial
from typing import Any, Literal, TypeVar

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import WeightAveraging
from torch import Tensor, nn
from torchmetrics import MeanMetric, SumMetric

from datamodules.seeds import derived_seed
from lightning_modules.diffusion import (
    SAMPLERS,
    VARIANCES,
    DiffusionSchedule,
    Guidance,
    LossSecondMomentSampler,
    StepCallback,
    TimestepSampler,
    UniformTimestepSampler,
    guided_denoiser,
    training_losses,
)
from lightning_modules.evaluation_mixin import EvaluationMixin
from lightning_modules.metrics import EvaluationConfig

NUM_QUARTILES = 4
TimestepSamplerName = Literal["uniform", "loss-second-moment"]
SamplerName = Literal["ddpm", "ddim", "dpmpp_2m"]
SettingsT = TypeVar("SettingsT")
# Init arguments of the test command only: kept out of the checkpoint's hyperparameters, so a checkpoint never
# carries (or replaces) the test protocol.
TEST_OPTIONS = ("evaluation", "test_sampling")


@dataclass(frozen=True)
class SamplerSettings:
    """How the reverse process is walked (the guidance rule is the model family's own).

    Args:
        sampler: ``ddpm`` (ancestral, with the model's variance), ``ddim`` or ``dpmpp_2m`` (DPM-Solver++(2M);
            with ``eta`` 1 its SDE variant).
        steps: Denoising steps; the training schedule is respaced to them.
        eta: Stochasticity of ``ddim`` and ``dpmpp_2m`` (0: deterministic; 1: fresh noise of the posterior's
            variance at every step).
        seed: Seed of the noise (``predict``: per batch; the test command: per sample, from its file name).
    """

    sampler: SamplerName = "ddim"
    steps: int = 50
    eta: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {self.sampler!r}")
        if self.steps < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        if self.eta < 0 or (self.eta != 0 and self.sampler == "ddpm"):
            raise ValueError(f"eta={self.eta}: a non-negative eta applies to the ddim and dpmpp_2m samplers only "
                             f"(with sampler {self.sampler!r} set eta to 0)")

    def overridden(
        self, sampler: str | None = None, steps: int | None = None, eta: float | None = None, seed: int | None = None
    ) -> "SamplerSettings":
        """These settings with the given ones replacing them (None keeps a setting). Another sampler given without
        ``eta`` samples with eta 0 (e.g. ``--sampler dpmpp_2m`` on a checkpoint that samples with stochastic DDIM
        is the deterministic solver, ``--sampler ddpm`` would refuse the eta)."""
        if sampler is not None and sampler != self.sampler and eta is None:
            eta = 0.0
        given = {"sampler": sampler, "steps": steps, "eta": eta, "seed": seed}
        return replace(self, **{name: value for name, value in given.items() if value is not None})


def settings(cls: type[SettingsT], value: SettingsT | Mapping[str, Any]) -> SettingsT:
    """A settings dataclass given as itself or as a plain mapping (a YAML block, a checkpoint's hyperparameters)."""
    return value if isinstance(value, cls) else cls(**value)


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
        build_net: Builds the denoising network (called as ``net(x_t, t, **kwargs)``) given whether it predicts the
            variance too (``variance="learned_range"``); the subclass passes it.
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
        sampling: How ``predict`` (and anything without its own settings) samples.
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
        test_sampling: How the test command samples (default: ``sampling``); each test sample's initial noise is
            drawn from its seed and the sample's file name, so the images do not depend on batch size or the number
            of processes.
        channels_last: Keep the network's weights in channels-last memory format (faster convolutions with
            bf16/fp16 tensor cores).
        compile_network: ``torch.compile`` the network in place when a run starts (checkpoint keys are unchanged;
            Lightning wraps DDP around the compiled network, so it is DDP-safe).
    """

    def __init__(
        self,
        build_net: Callable[[bool], nn.Module],
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
        sampling: SamplerSettings = SamplerSettings(),
        init_from: str | None = None,
        init_weights: Literal["ema", "raw"] = "ema",
        init_training_state: bool = False,
        evaluation: EvaluationConfig | None = None,
        test_sampling: SamplerSettings | None = None,
        channels_last: bool = False,
        compile_network: bool = False,
    ) -> None:
        super().__init__()
        if variance not in VARIANCES:
            raise ValueError(f"variance must be one of {VARIANCES}, got {variance!r}")
        if warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {warmup_steps}")
        self.net = build_net(variance == "learned_range")
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
        self.sampling = settings(SamplerSettings, sampling)
        self.test_sampling = self.sampling if test_sampling is None else settings(SamplerSettings, test_sampling)
        if isinstance(evaluation, Mapping):
            evaluation = EvaluationConfig.from_dict(dict(evaluation))
        self.evaluation = evaluation
        self.test_num_samples = SumMetric()
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
    def guided_conditions(
        self, batch: Mapping[str, Any], guidance: Any = None, net: nn.Module | None = None
    ) -> tuple[dict[str, dict[str, Any]], Guidance, tuple[int, ...]]:
        """What sampling a batch needs: the network keyword arguments of every condition variant the guidance rule
        evaluates (built once per batch, e.g. PIDM's texture features), the rule itself, and the image shape.

        Args:
            batch: The conditions of the images to generate (the DataModule's batch keys), on one device.
            guidance: The family's guidance settings; None: the module's own.
            net: The network that will denoise (default: ``self.net``; e.g. a compiled copy in the benchmark).
        """

    @abstractmethod
    def image_log_columns(
        self, batch: Mapping[str, Any], generated: Tensor, palette: Tensor | None = None
    ) -> list[Tensor]:
        """The columns of an image grid, each (B, 3, H, W) in [-1, 1] (e.g. condition | generated | real).

        ``palette`` is the DataModule's ``(classes, 3)`` uint8 colours of label maps, where it has one.
        """

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
        if hparams is not None:
            # Plain values only (settings dataclasses as dicts), so that weights-only loading reads the file.
            checkpoint["hyper_parameters"] = {key: asdict(value) if is_dataclass(value) else value
                                              for key, value in hparams.items()}
        if hparams is not None and hparams.get("init_from") is not None:
            # The weights now live in this checkpoint; rebuilding it must not need the original file.
            checkpoint["hyper_parameters"].update(init_from=None, init_training_state=False)

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if isinstance(self.timestep_sampler, LossSecondMomentSampler) and "timestep_sampler" in checkpoint:
            self.timestep_sampler.load_state_dict(checkpoint["timestep_sampler"])

    # --- sampling -----------------------------------------------------------------------------------------------

    def sampling_schedule(self, sampling: SamplerSettings) -> DiffusionSchedule:
        """The training schedule respaced to ``sampling.steps`` for its sampler (what :meth:`sample` walks)."""
        spec = respacing_spec(sampling.sampler, sampling.steps, self.schedule.num_steps)
        return self.schedule if spec is None else self.schedule.respace(spec)

    @torch.no_grad()
    def sample(
        self,
        variants: Mapping[str, Mapping[str, Any]],
        guidance: Guidance,
        shape: tuple[int, ...],
        *,
        sampling: SamplerSettings,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        x_T: Tensor | None = None,
        shared_noise: bool = False,
        first_steps: int | None = None,
    ) -> Tensor:
        """Run ``sampling.sampler`` over the respaced schedule with all guidance variants in one network call.

        Args:
            variants: Network keyword arguments per condition variant (see ``diffusion.guided_denoiser``).
            guidance: How the variants' outputs combine.
            shape: Shape of the image batch (B, C, H, W).
            sampling: Sampler, steps and eta (its seed is the caller's business: see ``generator``).
            generator: Random generator on this module's device (initial noise and sampler noise).
            callback: Called after every denoising step.
            x_T: Initial noise of ``shape`` (default: drawn from ``generator``), e.g. interpolated noises.
            shared_noise: The same per-step sampler noise for every image (see ``diffusion.samplers``).
            first_steps: Walk only the first (least noisy) steps of the respaced schedule, from ``x_T`` as the state
                at step ``first_steps - 1`` (e.g. a noised image: SDEdit); None walks all of them from noise.
        """
        schedule = self.sampling_schedule(sampling)
        if first_steps is not None:
            schedule = schedule.truncated(first_steps)
        if x_T is None:
            x_T = torch.randn(shape, generator=generator, device=self.device)
        elif tuple(x_T.shape) != tuple(shape):
            raise ValueError(f"x_T has shape {tuple(x_T.shape)}, expected {tuple(shape)}")
        return SAMPLERS[sampling.sampler](
            guided_denoiser(self.net, variants, guidance),
            x_T,
            schedule,
            clip_x0=self.clip_x0,
            variance=self.variance,
            eta=sampling.eta,
            callback=callback,
            generator=generator,
            shared_noise=shared_noise,
        )

    @torch.no_grad()
    def generate_batch(
        self,
        batch: Mapping[str, Any],
        *,
        sampling: SamplerSettings | None = None,
        guidance: Any = None,
        generator: torch.Generator | None = None,
        callback: StepCallback | None = None,
        x_T: Tensor | None = None,
        shared_noise: bool = False,
        first_steps: int | None = None,
    ) -> Tensor:
        """One image (B, C, H, W) in [-1, 1] per example of ``batch``.

        Args:
            batch: The conditions (see :meth:`guided_conditions`), on any device.
            sampling: Sampler settings (default: ``self.sampling``).
            guidance: The family's guidance settings (default: the module's own).
            generator: Random generator on this module's device (initial noise and sampler noise).
            callback: Called after every denoising step (may return a replacement state).
            x_T: Initial noise (default: drawn from ``generator``).
            shared_noise: The same per-step sampler noise for every image of the batch.
            first_steps: Walk only the first steps of the schedule, from ``x_T`` (see :meth:`sample`).
        """
        on_device = {key: value.to(self.device) if isinstance(value, Tensor) else value for key, value in batch.items()}
        variants, rule, shape = self.guided_conditions(on_device, guidance)
        return self.sample(variants, rule, shape, sampling=self.sampling if sampling is None else sampling,
                           generator=generator, callback=callback, x_T=x_T, shared_noise=shared_noise,
                           first_steps=first_steps).clamp(-1, 1)

    def predict_step(self, batch: Mapping[str, Any], batch_idx: int, dataloader_idx: int = 0) -> Tensor:
        generator = torch.Generator(device=self.device).manual_seed(derived_seed(self.sampling.seed, batch_idx))
        return self.generate_batch(batch, generator=generator)
