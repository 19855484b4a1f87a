"""Importers for checkpoints of the official SDM and PIDM implementations."""

from .pidm import export_official_pidm, load_official_pidm, pidm_hparams_from_config
from .sdm import export_official_sdm, load_official_sdm, sdm_hparams_from_flags

__all__ = [
    "export_official_pidm",
    "export_official_sdm",
    "load_official_pidm",
    "load_official_sdm",
    "pidm_hparams_from_config",
    "sdm_hparams_from_flags",
]
