"""Reading the official SDM and PIDM arguments, shared by their importers.

The official scripts pass booleans as strings ("True"/"false"), lists as comma-separated strings ("32,16,8") and
choose the variance from ``learn_sigma``/``sigma_small``; both codebases name a ResBlock's layers the same way.
"""

from collections.abc import Mapping
from typing import Any

# Our ResBlock's submodules and the official (guided-diffusion) names of the same layers.
RESBLOCK_KEYS = {
    "in_norm": "in_layers.0",
    "in_conv": "in_layers.2",
    "emb_proj": "emb_layers.1",
    "out_norm": "out_layers.0",
    "out_conv": "out_layers.3",
    "skip": "skip_connection",
}


def flag_bool(flags: Mapping[str, Any], name: str, default: bool | None = None) -> bool:
    """A boolean flag written as a bool or as the string "true"/"false" (any case); absent: ``default``.

    Raises:
        KeyError: The flag is absent and has no default.
        ValueError: The value is a string other than true/false.
    """
    if name not in flags:
        if default is None:
            raise KeyError(f"official flag {name!r} is missing")
        return default
    value = flags[name]
    if isinstance(value, str):
        if value.lower() not in ("true", "false"):
            raise ValueError(f"flag {name!r} must be a boolean, got {value!r}")
        return value.lower() == "true"
    return bool(value)


def number_list(flags: Mapping[str, Any], name: str) -> tuple[float, ...]:
    """A list flag given as a sequence or as a comma-separated string ("" is the empty list)."""
    value = flags[name]
    if isinstance(value, str):
        try:
            return tuple(float(v) if "." in v else int(v) for v in value.split(",") if v.strip())
        except ValueError as error:
            raise ValueError(f"flag {name!r} must be a comma-separated list of numbers, got {value!r}") from error
    return tuple(value)


def official_variance(learn_sigma: bool, sigma_small: bool = False) -> str:
    """The ``variance`` of our modules for guided-diffusion's ``learn_sigma`` and ``sigma_small`` flags."""
    if learn_sigma:
        return "learned_range"
    return "fixed_small" if sigma_small else "fixed_large"
