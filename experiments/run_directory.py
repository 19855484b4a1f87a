"""No run directory left behind by a run that failed before it wrote anything worth keeping.

The logger creates ``<save_dir>/<name>/version_<N>/`` as the trainer sets up, before the data and the model are
checked, so a run that then fails (a wrong data root, a missing weights file) would leave a directory holding only
its config, ``hparams.yaml`` and an empty event file. :func:`remove_if_failed_early` removes such a directory,
and the folders above it that the run created, only when all of this holds:

- the run failed (an exception left the command);
- the directory did not exist when the command started (a resumed run's or another run's directory never qualifies);
- every file in it is one that every run writes when it starts (:func:`is_start_of_run_file`): ``config*.yaml``,
  ``hparams.yaml``, or an event file whose events all belong to step 0 (its header, the hyperparameters, the
  learning rate of the first step). A checkpoint, an image, anything logged after the first optimizer step or a
  test output keeps the whole directory.

Files are deleted one by one and folders with ``rmdir``, which refuses a folder that is not empty, so nothing
outside that list is ever deleted.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pytorch_lightning import Trainer

_START_OF_RUN_NAMES = re.compile(r"config(-\d+)?\.yaml|hparams\.yaml")
_EVENT_FILE_PREFIX = "events.out.tfevents."


@contextmanager
def remove_if_failed_early(trainer: Trainer) -> Iterator[None]:
    """Around a run of ``trainer``: on an exception, remove the run directory its logger created when nothing
    worth keeping was written there (module docstring); then re-raise."""
    root = getattr(trainer.logger, "root_dir", None)
    root = Path(root).absolute() if root is not None else None
    existing = _entries(root) if root is not None else set()
    created_above = _missing_folders(root) if root is not None else []
    try:
        yield
    except BaseException:
        # The logger may have been replaced before the run (experiments.resume) and may never have made a folder.
        log_dir = getattr(trainer.logger, "log_dir", None)
        if root is not None and log_dir is not None and trainer.is_global_zero:
            run = _run_folder(root, Path(log_dir).absolute())
            if run is not None and run.name not in existing:
                _remove_start_of_run(run, created_above)
        raise


def _entries(folder: Path) -> set[str]:
    return {entry.name for entry in folder.iterdir()} if folder.is_dir() else set()


def _missing_folders(folder: Path) -> list[Path]:
    """``folder`` and its ancestors that do not exist yet, deepest first."""
    missing = []
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    return missing


def _run_folder(root: Path, log_dir: Path) -> Path | None:
    """The folder directly under ``root`` that holds ``log_dir`` (``version_N``), None when outside ``root``."""
    try:
        parts = log_dir.relative_to(root).parts
    except ValueError:
        return None
    return root / parts[0] if parts else None


def _remove_start_of_run(run: Path, created_above: list[Path]) -> None:
    if not run.is_dir() or run.is_symlink():
        return
    files, folders = [], []
    for folder, subfolders, names in os.walk(run):
        files.extend(Path(folder) / name for name in names)
        folders.extend(Path(folder) / name for name in subfolders)
    if not all(is_start_of_run_file(path) for path in files):
        return
    for path in files:
        path.unlink()
    for folder in sorted(folders, key=lambda path: len(path.parts), reverse=True):
        folder.rmdir()
    for folder in [run, *created_above]:
        try:
            folder.rmdir()
        except OSError:  # not empty: another run is there now
            return


def is_start_of_run_file(path: Path) -> bool:
    """Whether ``path`` is a file that every run writes at its start, holding nothing of the run's progress."""
    if path.is_symlink():
        return False
    if _START_OF_RUN_NAMES.fullmatch(path.name):
        return True
    return path.name.startswith(_EVENT_FILE_PREFIX) and last_event_step(path) == 0


def last_event_step(path: Path) -> int | None:
    """The highest step of the events in a TensorBoard event file; None when it cannot be read to its end."""
    # Imported here: only a failed run reads event files.
    from tensorboard.backend.event_processing.event_file_loader import RawEventFileLoader
    from tensorboard.compat.proto.event_pb2 import Event

    try:
        return max((Event.FromString(record).step for record in RawEventFileLoader(str(path)).Load()), default=0)
    except Exception:  # a damaged file is kept, whatever the reason
        return None
