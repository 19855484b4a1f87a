"""Import (and export) weights of the official PIDM code (``ankanbhunia/PIDM``, ``BeatGANsAutoencModel``).

Key mapping, official -> ours (``k`` = official input-block index, ``j`` = output-block index)::

    time_embed.time_embed.{0,2}.*       -> time_embed.{0,2}.*
    input_blocks.0.0.*                  -> input_conv.*
    input_blocks.k.0.* / .k.1.*         -> encoder.{k-1}.res.* / encoder.{k-1}.cross_attn.*
    middle_block.0 / .1 / .2            -> middle.res / middle.cross_attn / middle.tail
    output_blocks.j.0.*                 -> decoder.j.res.*
    output_blocks.j.1.*                 -> decoder.j.cross_attn.* (TDB) or decoder.j.tail.* (up-sampling ResBlock)
    out.{0,2}.*                         -> out.{0,2}.*
    encoder.input_blocks.0.0.*          -> texture_encoder.input_conv.*
    encoder.input_blocks.k.0.*          -> texture_encoder.blocks.{k-1}.*
  inside a ResBlock:  in_layers.0 -> in_norm, in_layers.2 -> in_conv, emb_layers.1 -> emb_proj,
                      out_layers.0 -> out_norm, out_layers.3 -> out_conv, skip_connection -> skip
  inside a TDB:       norm -> norm, to_q -> to_q, to_kv -> to_kv, proj_out2 -> proj_out

Dropped keys (the official parameters that never receive a gradient; each must be present, and is discarded):
every ResBlock's ``cond_emb_layers.1.*`` (when ``resnet_two_cond``; the second condition is never fed), every TDB's
``qkv.*`` and ``proj_out1.*`` (its self-attention branch is commented out), the texture encoder's
``encoder.time_embed.*`` and its ResBlocks' ``emb_layers.1.*`` (it is called without a timestep). Any other missing
or unexpected key, or a shape that differs from the one the config implies, is an error naming the key.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import torch
from torch import Tensor

from lightning_modules.nets.blocks import ResBlock
from lightning_modules.nets.cross_attention import TextureCrossAttention
from lightning_modules.nets.pidm_unet import PIDMUNet, PIDMUNetConfig
from lightning_modules.official.flags import RESBLOCK_KEYS, flag_bool, official_variance

# The texture encoder always sees a 3-channel source image in the official model (its in_channels is reset to 3).
IMAGE_CHANNELS = 3
_TDB_LEAVES = {"norm": "norm", "to_q": "to_q", "to_kv": "to_kv", "proj_out": "proj_out2"}
_PLAIN_MODULES = {
    "time_embed": "time_embed.time_embed",
    "input_conv": "input_blocks.0.0",
    "out": "out",
    "texture_encoder.input_conv": "encoder.input_blocks.0.0",
}
_STAGE_SLOTS = {"res": 0, "cross_attn": 1}
_MIDDLE_SLOTS = {"res": 0, "cross_attn": 1, "tail": 2}
# Official fields that must keep these values (other values build layouts or layers PIDMUNet does not have).
_FIXED_FIELDS = {
    "dims": 2,
    "resblock_updown": True,
    "num_classes": None,
    "num_heads_upsample": -1,
}


def _field(config: Mapping[str, Any], name: str, default: Any = ...) -> Any:
    if name in config:
        return config[name]
    if default is ...:
        raise ValueError(f"official PIDM config is missing the field {name!r}")
    return default


def _check_heads(config: Mapping[str, Any], tdb_widths: set[int]) -> int:
    """The TDB head count, which must be the same for every TDB.

    The official TDB concatenates [q | k | v] (3C channels) and hands it to the attention. The default legacy
    order splits that into heads first and each head's chunk into q, k, v afterwards, so with h > 1 heads head 0's
    "q", "k" and "v" are all slices of q: no attention from q to the texture. Only one head is well defined there.
    ``use_new_attention_order`` splits q, k, v first and then contiguous heads, exactly like ``TextureCrossAttention``.
    """
    num_heads, head_channels = _field(config, "num_heads", 1), _field(config, "num_head_channels", -1)
    heads = {num_heads if head_channels == -1 else c // head_channels for c in tdb_widths}
    if len(heads) != 1:
        raise ValueError(f"num_head_channels={head_channels} gives different head counts {sorted(heads)} per TDB")
    (count,) = heads
    if count != 1 and not _field(config, "use_new_attention_order", False):
        raise ValueError(
            f"official PIDM config gives {count} attention heads with the legacy attention order, which splits "
            "the concatenated [q|k|v] into heads before q/k/v, so no head attends q to the texture keys; only 1 "
            "head is well defined"
        )
    return count


def pidm_hparams_from_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """``PIDMUNet`` keyword arguments (``pose_channels``, the ``config`` and ``learn_sigma``) for an official PIDM
    model config (official field names).

    ``attention_resolutions`` entries that match no level are dropped, as the official code ignores them. The
    ``enc_*`` fields, checkpointing flags, ``conv_resample`` and ``resnet_use_zero_module`` do not change the
    trained network and are ignored.

    Args:
        config: The official ``BeatGANsAutoencConfig`` fields, e.g. ``fixtures/pidm_official/config.json``.
    """
    for name, value in _FIXED_FIELDS.items():
        if _field(config, name, value) != value:
            raise ValueError(f"official PIDM config field {name!r}={config[name]!r} is not supported (need {value!r})")
    model_channels = int(_field(config, "model_channels"))
    channel_mult = list(_field(config, "channel_mult"))
    num_res_blocks = int(_field(config, "num_res_blocks"))
    for name, same_as in (
        ("num_input_res_blocks", num_res_blocks),
        ("input_channel_mult", channel_mult),
        ("time_embed_channels", model_channels),
    ):
        value = _field(config, name, None)
        if value is not None and (list(value) if isinstance(value, list | tuple) else value) != same_as:
            raise ValueError(f"official PIDM config field {name!r}={value!r} is not supported (need None or {same_as})")
    in_channels, out_channels = int(_field(config, "in_channels")), int(_field(config, "out_channels"))
    if in_channels <= IMAGE_CHANNELS:
        raise ValueError(f"official PIDM config in_channels={in_channels} leaves no pose channels (image has 3)")
    if out_channels not in (IMAGE_CHANNELS, 2 * IMAGE_CHANNELS):
        raise ValueError(f"official PIDM config out_channels={out_channels}; expected 3 or 6")
    image_size = int(_field(config, "image_size"))
    resolutions = [image_size // 2**level for level in range(len(channel_mult))]
    attention_resolutions = [r for r in _field(config, "attention_resolutions") if r in resolutions]
    widths = [int(m * model_channels) for m in channel_mult]
    tdb_widths = {widths[-1]} | {w for w, r in zip(widths, resolutions) if r in attention_resolutions}
    network = PIDMUNetConfig(
        image_channels=IMAGE_CHANNELS,
        model_channels=model_channels,
        channel_mult=tuple(channel_mult),
        num_res_blocks=num_res_blocks,
        attention_resolutions=tuple(attention_resolutions),
        image_size=image_size,
        embed_channels=int(_field(config, "embed_channels")),
        dropout=float(_field(config, "dropout")),
        num_heads=_check_heads(config, tdb_widths),
    )
    return {"pose_channels": in_channels - IMAGE_CHANNELS, "config": network,
            "learn_sigma": out_channels == 2 * IMAGE_CHANNELS}


def pidm_module_hparams(config: Mapping[str, Any]) -> dict[str, Any]:
    """:class:`~lightning_modules.pidm.PIDMLitModule` arguments (plain values) equivalent to an official PIDM
    config, sampling as the official code (``utils/gen.py``): DDIM over 100 steps, style-only guidance with scale 2,
    x̂0 not clipped; the official linear 1000-step schedule, and guided-diffusion's fixed variance without
    ``learn_sigma``."""
    net = pidm_hparams_from_config(config)
    return {
        "pose_channels": net["pose_channels"],
        "network": asdict(net["config"]),
        "variance": official_variance(net["learn_sigma"]),
        "condition_dropout": "style_only",
        "sampling": {"sampler": "ddim", "steps": 100},
        "guidance": {"form": "style_only", "scale": 2.0},
        "clip_x0": False,
    }


def _official_prefix(model: PIDMUNet, name: str) -> str:
    """Official module path of our module ``name`` (a ResBlock, a TDB or one of ``_PLAIN_MODULES``)."""
    if name in _PLAIN_MODULES:
        return _PLAIN_MODULES[name]
    parts = name.split(".")
    if parts[0] == "texture_encoder":
        return f"encoder.input_blocks.{int(parts[2]) + 1}.0"
    if parts[0] == "encoder":
        return f"input_blocks.{int(parts[1]) + 1}.{_STAGE_SLOTS[parts[2]]}"
    if parts[0] == "middle":
        return f"middle_block.{_MIDDLE_SLOTS[parts[1]]}"
    j = int(parts[1])
    slot = 1 + (model.decoder[j].cross_attn is not None) if parts[2] == "tail" else _STAGE_SLOTS[parts[2]]
    return f"output_blocks.{j}.{slot}"


def official_key_map(model: PIDMUNet) -> dict[str, str]:
    """Map every key of ``model.state_dict()`` to its official PIDM key."""
    mapping = {}
    for name, module in model.named_modules():
        if isinstance(module, ResBlock):
            leaves = RESBLOCK_KEYS
        elif isinstance(module, TextureCrossAttention):
            leaves = _TDB_LEAVES
        elif name in _PLAIN_MODULES:
            leaves = None
        else:
            continue
        prefix = _official_prefix(model, name)
        for key in module.state_dict():
            leaf, _, rest = key.partition(".")
            official = f"{prefix}.{key}" if leaves is None else f"{prefix}.{leaves[leaf]}.{rest}"
            mapping[f"{name}.{key}"] = official
    return mapping


def official_unused_shapes(model: PIDMUNet, resnet_two_cond: bool = True) -> dict[str, tuple[int, ...]]:
    """Official keys (with their shapes) of the parameters PIDM builds but never uses; see the module docstring."""
    embed_channels = model.time_embed[0].out_features
    shapes: dict[str, tuple[int, ...]] = {
        "encoder.time_embed.0.weight": (embed_channels, model.model_channels),
        "encoder.time_embed.0.bias": (embed_channels,),
        "encoder.time_embed.2.weight": (embed_channels, embed_channels),
        "encoder.time_embed.2.bias": (embed_channels,),
    }
    for name, module in model.named_modules():
        prefix = _official_prefix(model, name) if isinstance(module, ResBlock | TextureCrossAttention) else None
        if isinstance(module, ResBlock):
            c = module.out_conv.out_channels
            if resnet_two_cond:
                shapes |= {f"{prefix}.cond_emb_layers.1.weight": (c, c), f"{prefix}.cond_emb_layers.1.bias": (c,)}
            if name.startswith("texture_encoder."):
                shapes |= {
                    f"{prefix}.emb_layers.1.weight": (2 * c, embed_channels),
                    f"{prefix}.emb_layers.1.bias": (2 * c,),
                }
        elif isinstance(module, TextureCrossAttention):
            c = module.channels
            shapes |= {
                f"{prefix}.qkv.weight": (3 * c, c, 1),
                f"{prefix}.qkv.bias": (3 * c,),
                f"{prefix}.proj_out1.weight": (c, c, 1),
                f"{prefix}.proj_out1.bias": (c,),
            }
    return shapes


def _describe(keys: set[str]) -> str:
    listed = sorted(keys)
    return ", ".join(listed[:8]) + (f" and {len(listed) - 8} more" if len(listed) > 8 else "")


def load_official_pidm(state_dict: Mapping[str, Tensor], config: Mapping[str, Any]) -> PIDMUNet:
    """Build a ``PIDMUNet`` from an official PIDM config and load an official state dict into it (strictly).

    Args:
        state_dict: An official ``BeatGANsAutoencModel`` state dict (a checkpoint's ``model`` or ``ema`` entry).
        config: The official model config fields (see ``pidm_hparams_from_config``).

    Returns:
        The network in eval mode.
    """
    model = PIDMUNet(**pidm_hparams_from_config(config))
    ours = model.state_dict()
    mapping = official_key_map(model)
    unused = official_unused_shapes(model, flag_bool(config, "resnet_two_cond", False))
    missing = (set(mapping.values()) | set(unused)) - set(state_dict)
    if missing:
        raise ValueError(f"official PIDM state dict is missing keys: {_describe(missing)}")
    unexpected = set(state_dict) - set(mapping.values()) - set(unused)
    if unexpected:
        raise ValueError(f"official PIDM state dict has unexpected keys: {_describe(unexpected)}")
    converted = {}
    for key, official in mapping.items():
        tensor = state_dict[official]
        if tensor.shape != ours[key].shape:
            raise ValueError(
                f"official PIDM key {official!r} has shape {tuple(tensor.shape)}, the config implies "
                f"{tuple(ours[key].shape)}"
            )
        converted[key] = tensor
    model.load_state_dict(converted, strict=True)
    return model.eval()


def export_official_pidm(model: PIDMUNet, resnet_two_cond: bool = True) -> dict[str, Tensor]:
    """The official-layout state dict of ``model``; the official-only unused parameters are zero-filled.

    Args:
        model: The network to export.
        resnet_two_cond: Whether the target official config builds the unused ``cond_emb_layers``.
    """
    ours = model.state_dict()
    exported = {official: ours[key].detach().clone() for key, official in official_key_map(model).items()}
    device = next(model.parameters()).device
    for key, shape in official_unused_shapes(model, resnet_two_cond).items():
        exported[key] = torch.zeros(shape, device=device)
    return exported
