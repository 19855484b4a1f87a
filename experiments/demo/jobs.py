"""One sampling job at a time per model, with progress and cancellation between denoising steps."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import torch

from lightning_modules.diffusion.samplers import StepCallback

Result = TypeVar("Result")
ProgressReport = Callable[[int, int], None]


class DemoInputError(ValueError):
    """A problem with what the user gave the page; its message is shown there."""


class SamplingCancelled(RuntimeError):
    """The user pressed Stop; raised from the sampler callback at the next denoising step."""


class SamplingJobs:
    """Runs one sampling job at a time for a model; :meth:`cancel` stops the running one at its next step."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cancel = threading.Event()

    @property
    def busy(self) -> bool:
        """Whether a job is running."""
        return self._lock.locked()

    def run(self, total_steps: int, work: Callable[[StepCallback], Result],
            report: ProgressReport | None = None) -> Result:
        """Run ``work(callback)``, where ``callback`` is the sampler callback of all its ``total_steps`` steps.

        Raises :class:`DemoInputError` when another job runs, :class:`SamplingCancelled` after :meth:`cancel`.
        """
        if not self._lock.acquire(blocking=False):
            raise DemoInputError("another sampling run of this model is in progress: wait for it or press Stop")
        self._cancel.clear()
        done = 0

        def step(_: Any) -> None:
            nonlocal done
            done += 1
            if self._cancel.is_set():
                raise SamplingCancelled(f"stopped after {done} of {total_steps} denoising steps")
            if report is not None:
                report(done, total_steps)

        try:
            with torch.inference_mode():
                return work(step)
        finally:
            self._lock.release()

    def cancel(self) -> bool:
        """Ask the running job to stop; returns whether one was running."""
        running = self.busy
        if running:
            self._cancel.set()
        return running
