"""Importers for checkpoints of the official SDM and PIDM implementations."""

from .pidm import export_official_pidm, load_official_pidm, pidm_hparams_from_config, pidm_module_hparams
from .sdm import export_official_sdm, load_official_sdm, sdm_hparams_from_flags, sdm_module_hparams

__all__ = [
    "export_official_pidm",
    "export_official_sdm",
    "load_official_pidm",
    "load_official_sdm",
    "pidm_hparams_from_config",
    "pidm_module_hparams",
    "sdm_hparams_from_flags",
    "sdm_module_hparams",
]
