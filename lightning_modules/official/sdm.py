"""Import (and export) checkpoints of the official SDM code (``WeilunWang/semantic-diffusion-model``).

The official ``UNetModel`` state dict maps one to one onto :class:`~lightning_modules.nets.sdm_unet.SDMUNet`.
``i``/``j`` are the indices of our ``encoder``/``decoder`` lists; official ``input_blocks`` are shifted by one
because entry 0 is the stem conv. ``{U}`` is ``1`` when the decoder entry has no attention and ``2`` when it has.

=====================================  ==========================================================
ours                                   official
=====================================  ==========================================================
``time_embed.{0,2}``                   ``time_embed.{0,2}``
``input_conv``                         ``input_blocks.0.0``
``encoder.i.res``                      ``input_blocks.{i+1}.0``  (ResBlock or ``Downsample``)
``encoder.i.attn``                     ``input_blocks.{i+1}.1``
``middle.res_in / attn / res_out``     ``middle_block.0 / 1 / 2``
``decoder.j.res``                      ``output_blocks.j.0``
``decoder.j.attn``                     ``output_blocks.j.1``
``decoder.j.upsample``                 ``output_blocks.j.{U}``  (SPADE up block or ``Upsample``)
``out.{0,2}``                          ``out.{0,2}``
-------------------------------------  ----------------------------------------------------------
inside an encoder ``ResBlock``         ``in_norm`` → ``in_layers.0``, ``in_conv`` → ``in_layers.2``,
                                       ``emb_proj`` → ``emb_layers.1``, ``out_norm`` → ``out_layers.0``,
                                       ``out_conv`` → ``out_layers.3``, ``skip`` → ``skip_connection``
inside a ``SPADEResBlock``             ``in_conv`` → ``in_layers.1``, ``emb_proj`` → ``emb_layers.1``,
                                       ``out_conv`` → ``out_layers.2``, ``skip`` → ``skip_connection``,
                                       ``{in,out}_norm.label_conv`` → ``{in,out}_norm.mlp_shared.0``,
                                       ``{in,out}_norm.gamma_conv`` → ``{in,out}_norm.mlp_gamma``,
                                       ``{in,out}_norm.beta_conv`` → ``{in,out}_norm.mlp_beta``
inside ``Downsample``                  ``conv`` → ``op``
attention, ``Upsample``                unchanged (``norm``, ``qkv``, ``proj_out``; ``conv``)
=====================================  ==========================================================

Attention ``qkv`` weights: the official legacy order (``use_new_attention_order=False``, the SDM default) groups
the 3C output channels per head as ``[q_h | k_h | v_h]``; ours is ``[q | k | v]`` with heads inside each block
(which is exactly the official "new" order). The importer reorders the rows.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import asdict
from typing import Any, NamedTuple

from torch import Tensor, nn

from lightning_modules.nets.attention import SelfAttention2d
from lightning_modules.nets.blocks import ResBlock
from lightning_modules.conditioning import condition_channels
from lightning_modules.nets.sdm_unet import Downsample, SDMUNet, SDMUNetConfig
from lightning_modules.official.flags import RESBLOCK_KEYS, flag_bool, number_list, official_variance
from lightning_modules.nets.spade import SPADEResBlock

# Automatic channel_mult of the official script_util for an empty ``channel_mult`` flag.
AUTO_CHANNEL_MULT: dict[int, tuple[float, ...]] = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}

# Flags that may be absent, with the official defaults (guided-diffusion ``model_and_diffusion_defaults``).
FLAG_DEFAULTS: dict[str, Any] = {
    "channel_mult": "",
    "attention_resolutions": "16,8",
    "num_heads": 4,
    "num_head_channels": -1,
    "num_heads_upsample": -1,
    "dropout": 0.0,
    "learn_sigma": False,
    "resblock_updown": False,
    "use_scale_shift_norm": True,
    "use_new_attention_order": False,
    "no_instance": False,
}
REQUIRED_FLAGS = ("image_size", "num_channels", "num_res_blocks", "num_classes")
NESTED_STATE_DICT_KEYS = ("state_dict", "model", "ema")

_SPADE_RESBLOCK_NAMES = {
    "in_conv": "in_layers.1",
    "emb_proj": "emb_layers.1",
    "out_conv": "out_layers.2",
    "skip": "skip_connection",
    **{
        f"{norm}.{ours}": f"{norm}.{official}"
        for norm in ("in_norm", "out_norm")
        for ours, official in (("label_conv", "mlp_shared.0"), ("gamma_conv", "mlp_gamma"), ("beta_conv", "mlp_beta"))
    },
}
_SUBMODULE_NAMES: dict[type, dict[str, str]] = {
    ResBlock: RESBLOCK_KEYS,
    SPADEResBlock: _SPADE_RESBLOCK_NAMES,
    Downsample: {"conv": "op"},
}


class ParameterName(NamedTuple):
    """One state-dict entry: our key, the official key, and the head count if it is an attention ``qkv`` tensor."""

    ours: str
    official: str
    qkv_heads: int | None


def sdm_hparams_from_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """Translate official SDM script flags into :class:`SDMUNet` keyword arguments (``label_channels``, the
    ``config`` and ``learn_sigma``).

    Args:
        flags: Official flag names and values (e.g. ``image_size``, ``num_channels``, ``channel_mult`` ("" for the
            automatic choice), ``attention_resolutions`` ("32,16,8"), ``num_classes``, ``no_instance``, ...). Extra
            keys (diffusion flags, ``use_fp16``, ``use_checkpoint``) are ignored; absent optional flags take the
            official defaults.

    Raises:
        KeyError: A required flag is missing.
        NotImplementedError: ``use_scale_shift_norm`` is False (unused by SDM; not implemented here).
        ValueError: A flag value is invalid (e.g. ``class_cond`` False, an image size without automatic channel_mult).
    """
    missing = [name for name in REQUIRED_FLAGS if name not in flags]
    if missing:
        raise KeyError(f"official SDM flags are missing {missing}")
    flags = {**FLAG_DEFAULTS, **flags}
    if not flag_bool(flags, "use_scale_shift_norm"):
        raise NotImplementedError("use_scale_shift_norm=False is not supported; SDM models use True")
    if "class_cond" in flags and not flag_bool(flags, "class_cond"):
        raise ValueError("class_cond=False builds no label input, which SDM's SPADE blocks require")
    image_size = int(flags["image_size"])
    channel_mult = number_list(flags, "channel_mult")
    if not channel_mult:
        if image_size not in AUTO_CHANNEL_MULT:
            raise ValueError(
                f"no automatic channel_mult for image_size {image_size}; set the channel_mult flag "
                f"(automatic sizes: {sorted(AUTO_CHANNEL_MULT)})"
            )
        channel_mult = AUTO_CHANNEL_MULT[image_size]
    config = SDMUNetConfig(
        image_channels=3,
        model_channels=int(flags["num_channels"]),
        channel_mult=channel_mult,
        num_res_blocks=int(flags["num_res_blocks"]),
        attention_resolutions=tuple(int(r) for r in number_list(flags, "attention_resolutions")),
        image_size=image_size,
        num_heads=int(flags["num_heads"]),
        num_head_channels=int(flags["num_head_channels"]),
        num_heads_upsample=int(flags["num_heads_upsample"]),
        dropout=float(flags["dropout"]),
        resblock_updown=flag_bool(flags, "resblock_updown"),
    )
    label_channels = condition_channels(int(flags["num_classes"]), not flag_bool(flags, "no_instance"))
    return {"label_channels": label_channels, "config": config, "learn_sigma": flag_bool(flags, "learn_sigma")}


def sdm_module_hparams(flags: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`~lightning_modules.sdm.SDMLitModule` arguments (plain values) equivalent to official SDM flags,
    sampling as the official scripts: ancestral DDPM over every step, guidance scale 1.5, x̂0 clipped."""
    net = sdm_hparams_from_flags(flags)
    flags = {**FLAG_DEFAULTS, **flags}
    steps = int(flags.get("diffusion_steps", 1000))
    return {
        "num_classes": int(flags["num_classes"]),
        "instance_edges": not flag_bool(flags, "no_instance"),
        "network": asdict(net["config"]),
        "noise_schedule": str(flags.get("noise_schedule", "linear")),
        "num_timesteps": steps,
        "variance": official_variance(net["learn_sigma"], flag_bool(flags, "sigma_small", False)),
        "sampling": {"sampler": "ddpm", "steps": steps},
        "guidance": {"scale": 1.5},
        "clip_x0": True,
    }


def _official_modules(net: SDMUNet) -> Iterator[tuple[str, nn.Module, str]]:
    """Yield (our prefix, module, official prefix) for every top-level block of ``net``."""
    yield "time_embed.", net.time_embed, "time_embed."
    yield "input_conv.", net.input_conv, "input_blocks.0.0."
    for i, block in enumerate(net.encoder):
        yield f"encoder.{i}.res.", block.res, f"input_blocks.{i + 1}.0."
        if block.attn is not None:
            yield f"encoder.{i}.attn.", block.attn, f"input_blocks.{i + 1}.1."
    yield "middle.res_in.", net.middle.res_in, "middle_block.0."
    yield "middle.attn.", net.middle.attn, "middle_block.1."
    yield "middle.res_out.", net.middle.res_out, "middle_block.2."
    for j, block in enumerate(net.decoder):
        yield f"decoder.{j}.res.", block.res, f"output_blocks.{j}.0."
        if block.attn is not None:
            yield f"decoder.{j}.attn.", block.attn, f"output_blocks.{j}.1."
        if block.upsample is not None:
            yield f"decoder.{j}.upsample.", block.upsample, f"output_blocks.{j}.{2 if block.attn is not None else 1}."
    yield "out.", net.out, "out."


def official_parameter_names(net: SDMUNet) -> list[ParameterName]:
    """List every state-dict entry of ``net`` with its official SDM key (see the module docstring)."""
    names = []
    for our_prefix, module, official_prefix in _official_modules(net):
        renames = _SUBMODULE_NAMES.get(type(module), {})
        heads = module.num_heads if isinstance(module, SelfAttention2d) else None
        for name in module.state_dict():
            path, _, leaf = name.rpartition(".")
            official_path = renames.get(path, path)
            official = f"{official_prefix}{official_path}.{leaf}" if official_path else f"{official_prefix}{leaf}"
            names.append(ParameterName(our_prefix + name, official, heads if path == "qkv" else None))
    if len(names) != len(net.state_dict()):
        raise RuntimeError("SDMUNet has state-dict entries outside the official layout")  # guards future edits
    return names


def _reorder_qkv(tensor: Tensor, heads: int, *, to_legacy: bool) -> Tensor:
    """Convert qkv rows between the legacy per-head ``[q_h|k_h|v_h]`` order and the blocked ``[q|k|v]`` order."""
    rows, rest = tensor.shape[0], tensor.shape[1:]
    head_dim = rows // (3 * heads)
    grouped = (3, heads, head_dim) if to_legacy else (heads, 3, head_dim)
    return tensor.reshape(*grouped, *rest).transpose(0, 1).reshape(rows, *rest)


def _unwrap_state_dict(state_dict: Mapping[str, Any]) -> Mapping[str, Tensor]:
    """Return the tensors of a possibly wrapped state dict.

    Accepts a plain state dict, one nested under exactly one of ``state_dict``/``model``/``ema``, and keys that all
    carry a ``module.`` prefix (DDP).
    """
    if not all(isinstance(v, Tensor) for v in state_dict.values()):
        nested = [k for k in NESTED_STATE_DICT_KEYS if isinstance(state_dict.get(k), Mapping)]
        if len(nested) != 1:
            raise ValueError(
                f"expected a state dict of tensors or one nested under exactly one of {NESTED_STATE_DICT_KEYS}; "
                f"found top-level keys {sorted(state_dict)[:10]}"
            )
        return _unwrap_state_dict(state_dict[nested[0]])
    if state_dict and all(k.startswith("module.") for k in state_dict):
        return {k.removeprefix("module."): v for k, v in state_dict.items()}
    return state_dict


def _describe(keys: list[str]) -> str:
    return ", ".join(keys[:8]) + (f", ... ({len(keys)} in total)" if len(keys) > 8 else "")


def load_official_sdm(state_dict: Mapping[str, Any], flags: Mapping[str, Any]) -> SDMUNet:
    """Build an :class:`SDMUNet` from official SDM flags and load an official SDM state dict into it.

    Args:
        state_dict: Official ``UNetModel`` state dict (``model*.pt`` / ``ema_*.pt``), optionally with a ``module.``
            prefix or nested under one of ``state_dict``/``model``/``ema``.
        flags: Official script flags (see :func:`sdm_hparams_from_flags`); ``use_new_attention_order`` selects the
            qkv layout of the checkpoint.

    Returns:
        The network with the official weights, in eval mode.

    Raises:
        KeyError: An official key is missing or unexpected for these flags (the message names the keys).
        ValueError: A tensor's shape does not match the flags (the message names the key).
    """
    state_dict = _unwrap_state_dict(state_dict)
    net = SDMUNet(**sdm_hparams_from_flags(flags))
    legacy_qkv = not flag_bool({**FLAG_DEFAULTS, **flags}, "use_new_attention_order")
    names = official_parameter_names(net)
    expected = {name.official for name in names}
    missing = [name.official for name in names if name.official not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    if missing or unexpected:
        problems = []
        if missing:
            problems.append(f"missing official keys: {_describe(missing)}")
        if unexpected:
            problems.append(f"unexpected official keys: {_describe(unexpected)}")
        raise KeyError("official SDM state dict does not match the flags; " + "; ".join(problems))
    ours = net.state_dict()
    converted = {}
    for name in names:
        tensor = state_dict[name.official]
        if tensor.shape != ours[name.ours].shape:
            raise ValueError(
                f"official key {name.official!r} has shape {tuple(tensor.shape)}, "
                f"the flags imply {tuple(ours[name.ours].shape)}"
            )
        if name.qkv_heads is not None and legacy_qkv:
            tensor = _reorder_qkv(tensor, name.qkv_heads, to_legacy=False)
        converted[name.ours] = tensor
    net.load_state_dict(converted, strict=True)
    return net.eval()


def export_official_sdm(net: SDMUNet, *, legacy_attention_order: bool = True) -> dict[str, Tensor]:
    """Write ``net``'s weights as an official SDM state dict (the inverse of :func:`load_official_sdm`).

    Args:
        net: The network to export.
        legacy_attention_order: Lay out qkv rows per head (official default ``use_new_attention_order=False``).
    """
    ours = net.state_dict()
    exported = {}
    for name in official_parameter_names(net):
        tensor = ours[name.ours].detach().clone()
        if name.qkv_heads is not None and legacy_attention_order:
            tensor = _reorder_qkv(tensor, name.qkv_heads, to_legacy=True)
        exported[name.official] = tensor
    return exported
