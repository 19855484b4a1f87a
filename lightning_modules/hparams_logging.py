"""A run's settings and scores in TensorBoard's HParams view, written so that training and test runs coexist.

TensorBoard takes the columns of its HParams view from *one* experiment summary of the log directory, picked
arbitrarily, so a training run's summary (its hyperparameters) and a test run's (its settings and scores) would hide
each other's columns. :func:`log_to_hparams_view` therefore writes no experiment summary: only the run's settings
(a session start) and its scores as plain scalars. TensorBoard then builds the view from all runs: every setting of
every run as a column and every logged scalar (``val/loss``, ``hp/fid``, ...) as a metric, with its latest value.
"""

from collections.abc import Mapping
from dataclasses import asdict, is_dataclass
from typing import Any

from pytorch_lightning.loggers import Logger, TensorBoardLogger
from pytorch_lightning.utilities.rank_zero import rank_zero_only
from torch.utils.tensorboard.summary import hparams


@rank_zero_only
def log_to_hparams_view(
    logger: Logger, params: Mapping[str, Any], metrics: Mapping[str, float], step: int | None = None
) -> None:
    """Log a run's settings (``params``, nested ones flattened) with its scores (``metrics``, logged as scalars at
    ``step``); TensorBoard shows them together in its HParams view, other loggers as hyperparameters and metrics."""
    logger.log_hyperparams(dict(params))
    if isinstance(logger, TensorBoardLogger):
        _, session_start, _ = hparams(flat_hparams(params), {})
        logger.experiment.file_writer.add_summary(session_start, step)
    if metrics:
        logger.log_metrics(dict(metrics), step)


def flat_hparams(values: Mapping[str, Any], prefix: str = "") -> dict[str, int | float | str | bool]:
    """``values`` with nested mappings and dataclasses flattened to ``/``-joined names (Lightning's convention) and
    every value TensorBoard cannot show (None, lists, objects) as its text; names starting with ``_``
    (LightningCLI's bookkeeping) are left out."""
    flat: dict[str, int | float | str | bool] = {}
    for name, value in values.items():
        if str(name).startswith("_"):
            continue
        if is_dataclass(value) and not isinstance(value, type):
            value = asdict(value)
        if isinstance(value, Mapping):
            flat.update(flat_hparams(value, f"{prefix}{name}/"))
        else:
            flat[f"{prefix}{name}"] = value if isinstance(value, (int, float, str, bool)) else str(value)
    return flat
