"""One weights directory for every pretrained file the metrics need, with clear errors when a file is missing.

Lookup order for a file: ``<weights dir>/<file>``, then the torch-hub cache (``$TORCH_HOME/hub/checkpoints``),
then a download into the weights directory unless downloads are disabled. The weights directory is, in order,
an explicit argument (config key ``weights_dir``), ``$CONDIFF_WEIGHTS``, or ``$XDG_CACHE_HOME/condiff/weights``
(default ``~/.cache/condiff/weights``). Offline mode (config ``offline: true`` or ``CONDIFF_OFFLINE=1``) never
downloads and raises :class:`MissingWeightsError` instead.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from pathlib import Path

import torch

WEIGHTS_DIR_ENV = "CONDIFF_WEIGHTS"
OFFLINE_ENV = "CONDIFF_OFFLINE"
DOWNLOAD_TIMEOUT_S = 60.0


@dataclass(frozen=True)
class WeightsFile:
    """A pretrained file known by name, download address and purpose.

    Args:
        name: File name, identical to the torch-hub cache name.
        url: Official download address.
        purpose: What the file is for, used in error messages.
        metric: The ``evaluation`` setting that needs it (the error says how to skip that metric).
        sha256_prefix: Hash prefix checked after a download (never on a file already present).
    """

    name: str
    url: str
    purpose: str
    metric: str
    sha256_prefix: str | None = None


WEIGHTS: dict[str, WeightsFile] = {
    "fid_inception": WeightsFile(
        "weights-inception-2015-12-05-6726825d.pth",
        "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth",
        "FID Inception-v3 (TF 2015-12-05 weights, torch-fidelity / torchmetrics)",
        "fid",
    ),
    "lpips_alex": WeightsFile(
        "alexnet-owt-7be5be79.pth",
        "https://download.pytorch.org/models/alexnet-owt-7be5be79.pth",
        "LPIPS AlexNet backbone (torchvision ImageNet weights)",
        "lpips",
        "7be5be79",
    ),
    "lpips_vgg": WeightsFile(
        "vgg16-397923af.pth",
        "https://download.pytorch.org/models/vgg16-397923af.pth",
        "LPIPS VGG16 backbone (torchvision ImageNet weights)",
        "lpips",
        "397923af",
    ),
    "gfla_inception": WeightsFile(
        "inception_v3_google-0cc3c7bd.pth",
        "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth",
        "PIDM/GFLA FID Inception-v3 (torchvision ImageNet weights)",
        "fid",
        "0cc3c7bd",
    ),
}


class MissingWeightsError(FileNotFoundError):
    """A pretrained file is absent and could not (or may not) be downloaded."""


def resolve_weights_dir(weights_dir: str | os.PathLike | None = None) -> Path:
    """The one folder searched first for pretrained files (and where downloads go).

    Args:
        weights_dir: Explicit folder (config key ``weights_dir``); overrides ``$CONDIFF_WEIGHTS`` and the default.
    """
    if weights_dir is not None:
        return Path(weights_dir).expanduser()
    if os.environ.get(WEIGHTS_DIR_ENV):
        return Path(os.environ[WEIGHTS_DIR_ENV]).expanduser()
    cache_home = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache_home).expanduser() / "condiff" / "weights"


def is_offline(offline: bool = False) -> bool:
    """Whether downloads are disabled, by the config flag or by ``CONDIFF_OFFLINE=1``."""
    return offline or os.environ.get(OFFLINE_ENV, "").strip().lower() in {"1", "true", "yes"}


def torch_hub_checkpoint(name: str) -> Path:
    """Where torch.hub caches a downloaded file of this name."""
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def resolve_weights(key: str, weights_dir: str | os.PathLike | None = None, offline: bool = False) -> Path:
    """Path of the pretrained file ``key`` (one of :data:`WEIGHTS`), downloading it if needed and allowed.

    Args:
        key: Which file, e.g. ``"fid_inception"`` or ``"lpips_alex"``.
        weights_dir: Explicit weights folder (see :func:`resolve_weights_dir`).
        offline: Never download; a missing file raises :class:`MissingWeightsError`.

    Raises:
        KeyError: ``key`` is not a known file.
        MissingWeightsError: the file is absent and offline mode is on or the download failed.
    """
    if key not in WEIGHTS:
        raise KeyError(f"Unknown weights key {key!r}; known: {sorted(WEIGHTS)}")
    spec = WEIGHTS[key]
    folder = resolve_weights_dir(weights_dir)
    local, cached = folder / spec.name, torch_hub_checkpoint(spec.name)
    for candidate in (local, cached):
        if candidate.is_file():
            return candidate
    if is_offline(offline):
        raise MissingWeightsError(_missing_message(spec, folder, cached, f"offline mode is on ({OFFLINE_ENV}=1 or "
                                                   "config `offline: true`), so nothing was downloaded"))
    return _download(spec, folder, cached)


def _download(spec: WeightsFile, folder: Path, cached: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / spec.name
    previous_timeout = socket.getdefaulttimeout()
    # torch.hub opens the URL without a timeout; on a firewalled cluster that hangs forever.
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        torch.hub.download_url_to_file(spec.url, str(target), hash_prefix=spec.sha256_prefix)
    except (OSError, RuntimeError) as err:
        raise MissingWeightsError(_missing_message(spec, folder, cached, f"the download failed: {err}")) from err
    finally:
        socket.setdefaulttimeout(previous_timeout)
    return target


def _missing_message(spec: WeightsFile, folder: Path, cached: Path, reason: str) -> str:
    return (
        f"Missing weights file {spec.name!r} ({spec.purpose}): not found at {folder / spec.name} nor at {cached}, "
        f"and {reason}.\nFetch it on a machine with internet access, e.g. `curl -L -o {spec.name} {spec.url}`, "
        f"and put it at {folder / spec.name} (or point the `weights_dir` config key or ${WEIGHTS_DIR_ENV} to the "
        f"folder that holds it), or test without {spec.metric}: "
        f"--model.init_args.evaluation='{{\"{spec.metric}\": null}}'."
    )


def file_sha256(path: str | os.PathLike, chunk_bytes: int = 1 << 22) -> str:
    """Hex sha256 of a file, logged next to scores so that a number names the exact weights behind it."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk_bytes):
            digest.update(block)
    return digest.hexdigest()
