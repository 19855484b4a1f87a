"""What a DataModule does with a sample whose files cannot be read: stop naming it, or skip it with a warning."""

import warnings
from abc import ABC, abstractmethod
from typing import Any, Literal

from torch.utils.data import Dataset

from datamodules.samplers import SampleKey

BadSamplePolicy = Literal["stop", "skip"]

#: What reading a broken file raises (the readers name the file); anything else is a bug and always propagates.
BAD_SAMPLE_ERRORS = (OSError, ValueError)


class BadSampleError(ValueError):
    """A sample's files could not be read or are invalid (the message names the file)."""


class BadSampleWarning(UserWarning):
    """A bad sample was skipped and replaced (``on_bad_sample="skip"``)."""


class GuardedDataset(Dataset, ABC):
    """Dataset base that applies the bad-sample policy around :meth:`load` and resolves sample keys.

    A key is a :class:`SampleKey` (training: augmentations drawn from its seed) or a plain index (seed ``None``:
    augmentations drawn from torch's global generator, reproducible under ``seed_everything(workers=True)``).
    With ``"stop"`` an unreadable or invalid sample raises :class:`BadSampleError` naming it. With ``"skip"`` it
    is warned about (:class:`BadSampleWarning`, naming the file), counted in ``skipped_samples`` (per process: each
    dataloader worker counts its own) and replaced by the next readable sample in index order, with the same seed,
    so the replacement is deterministic and batches keep their size.

    Args:
        on_bad_sample: ``"stop"`` or ``"skip"``.
    """

    def __init__(self, on_bad_sample: BadSamplePolicy = "stop") -> None:
        if on_bad_sample not in ("stop", "skip"):
            raise ValueError(f"on_bad_sample must be 'stop' or 'skip', got {on_bad_sample!r}")
        self.on_bad_sample = on_bad_sample
        self.skipped_samples = 0

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def load(self, index: int, seed: int | None) -> dict[str, Any]:
        """Read sample ``index``, drawing every random augmentation parameter from ``seed`` (``None``: from torch's
        global generator)."""

    @abstractmethod
    def describe(self, index: int) -> str:
        """The file(s) of sample ``index``, for error messages."""

    def __getitem__(self, key: int | SampleKey) -> dict[str, Any]:
        if isinstance(key, SampleKey):
            index, seed = key
        else:
            index, seed = int(key), None
        for offset in range(len(self)):
            candidate = (index + offset) % len(self)
            try:
                return self.load(candidate, seed)
            except BAD_SAMPLE_ERRORS as error:
                message = f"bad sample {candidate} ({self.describe(candidate)}): {error}"
                if self.on_bad_sample == "stop":
                    raise BadSampleError(f"{message}; set on_bad_sample='skip' to train without it") from error
                self.skipped_samples += 1
                warnings.warn(
                    f"{message}; skipped ({self.skipped_samples} skipped in this process so far)",
                    BadSampleWarning,
                    stacklevel=2,
                )
        raise BadSampleError(f"no readable sample left: all {len(self)} samples failed to load")
