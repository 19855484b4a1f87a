"""A CheckpointIO plugin whose saves are atomic on shared cluster filesystems and whose loads never unpickle code."""

import os
import pickle
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins import TorchCheckpointIO
from lightning_fabric.utilities.types import _PATH
from pytorch_lightning.utilities.rank_zero import rank_zero_warn

_WEIGHTS_ONLY_REFUSAL = "Weights only load failed"


class CorruptCheckpointError(RuntimeError):
    """A checkpoint file exists but cannot be read (truncated or damaged)."""


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes checkpoints with write-to-temp + fsync + ``os.replace`` in the target directory; loads weights-only.

    Why not Lightning's default: ``TorchCheckpointIO`` saves through an fsspec transaction whose temporary file comes
    from ``tempfile.mkstemp()`` (``$TMPDIR``, usually node-local ``/tmp``) and is committed with ``shutil.move``
    (fsspec ``LocalFileOpener.commit``). When the checkpoint directory is on another filesystem -- the usual case on
    clusters (NFS/Lustre/GPFS run directories) -- the rename fails with ``EXDEV`` and ``shutil.move`` falls back to
    copying into the final path, so a job killed mid-copy leaves a truncated ``last.ckpt``; nothing is fsynced either.
    Here the temporary file lives next to the target, is flushed and fsynced, and replaces it with one atomic
    ``os.replace``; the directory is fsynced so the rename survives a node crash. A reader therefore sees either the
    previous complete checkpoint or the new complete one. Remote (``s3://`` etc.) paths use Lightning's default.

    Loading uses ``torch.load(weights_only=True)``: plain tensors and containers only, no arbitrary code. A file
    that needs pickled objects is refused with an error naming it unless ``allow_pickle=True`` (only for
    checkpoints you trust) or the caller passes ``weights_only=False`` explicitly. A truncated or corrupt file
    raises :class:`CorruptCheckpointError` naming the file.

    Args:
        allow_pickle: Fall back to full unpickling (with a warning) when a weights-only load refuses a file.
    """

    def __init__(self, allow_pickle: bool = False) -> None:
        super().__init__()
        self.allow_pickle = allow_pickle

    def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
        if "://" in str(path) and not str(path).startswith("file://"):
            return super().save_checkpoint(checkpoint, path, storage_options)
        if storage_options is not None:
            raise TypeError(f"{type(self).__name__} does not take storage_options, got {storage_options!r}")
        target = Path(str(path).removeprefix("file://"))
        target.parent.mkdir(parents=True, exist_ok=True)
        descriptor, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(descriptor, "wb") as file:
                torch.save(checkpoint, file)
                file.flush()
                os.fsync(file.fileno())
            os.replace(temp_name, target)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise
        _fsync_directory(target.parent)

    def load_checkpoint(
        self,
        path: _PATH,
        map_location: Callable | None = lambda storage, loc: storage,
        weights_only: bool | None = None,
    ) -> dict[str, Any]:
        if not os.path.exists(path) and "://" not in str(path):
            raise FileNotFoundError(f"Checkpoint file not found: {path}")
        try:
            return super().load_checkpoint(path, map_location, weights_only=weights_only is not False)
        except pickle.UnpicklingError as error:
            if _WEIGHTS_ONLY_REFUSAL not in str(error):
                raise CorruptCheckpointError(f"checkpoint {path} is corrupt or truncated: {error}") from error
            if not self.allow_pickle:
                raise pickle.UnpicklingError(
                    f"checkpoint {path} holds objects other than tensors and plain containers, so a weights-only "
                    "load refused it. Load it with allow_pickle=True on AtomicCheckpointIO only if you trust the "
                    f"file.\n{error}"
                ) from error
        except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError) as error:
            raise CorruptCheckpointError(f"checkpoint {path} is corrupt or truncated: {error}") from error
        rank_zero_warn(f"loading {path} with full unpickling (allow_pickle=True); it can run arbitrary code")
        return super().load_checkpoint(path, map_location, weights_only=False)


def _fsync_directory(directory: Path) -> None:
    """Persist a rename in ``directory`` (POSIX; a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
