"""Every shipped SDM and segmenter config instantiates and runs a fast_dev_run at tiny size (PIDM configs:
tests/test_pidm_configs.py).

To cover a new config family, add its glob to CONFIG_GROUPS with a builder of a tiny tree in the dataset's real
layout (None for built-in data) and the overrides that make it usable. A config without ``model.class_path`` is an
overlay: it is layered on the config it fine-tunes (``ade20k_cfg_finetune.yaml`` on ``ade20k.yaml``).
"""

import importlib.util
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from experiments.fit import main as fit

REPO = Path(__file__).parents[1]
TINY_SDM = REPO / "configs" / "debug" / "tiny_sdm.yaml"
TINY_SEGMENTER = REPO / "configs" / "debug" / "tiny_segmenter.yaml"
SHAPES_DATA = ["--data.init_args.num_train=4", "--data.init_args.num_val=2", "--data.init_args.num_test=2"]


def _load_tree_builders():
    # tests/ is not a package and torch-fidelity installs a top-level ``tests``: load the helper module by path.
    spec = importlib.util.spec_from_file_location("semantic_trees", REPO / "tests" / "datamodules" / "trees.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


TREES = _load_tree_builders()
TreeBuilder = Callable[[Path], Path] | None
CONFIG_GROUPS: dict[str, tuple[TreeBuilder, list[str]]] = {
    "configs/sdm/shapes*.yaml": (None, SHAPES_DATA),
    "configs/sdm/ade20k*.yaml": (TREES.build_ade20k_tree, []),
    "configs/sdm/cityscapes*.yaml": (TREES.build_cityscapes_tree, []),
    "configs/sdm/celebamask_hq*.yaml": (TREES.build_celebamask_hq_tree, []),
    "configs/sdm/coco_stuff*.yaml": (TREES.build_coco_stuff_tree, []),
    "configs/segmenter/shapes.yaml": (None, SHAPES_DATA),
    "configs/segmenter/ade20k.yaml": (TREES.build_ade20k_tree, []),
    "configs/segmenter/cityscapes.yaml": (TREES.build_cityscapes_tree, []),
    "configs/segmenter/celebamask_hq.yaml": (TREES.build_celebamask_hq_tree, []),
    "configs/segmenter/coco_stuff.yaml": (TREES.build_coco_stuff_tree, []),
}
CASES = [(path, group) for pattern, group in CONFIG_GROUPS.items() for path in sorted(REPO.glob(pattern))]


# Overlays that go on any experiment of their family, tested on this one.
OVERLAY_BASES = {"finetune_subject.yaml": "persons.yaml"}


def config_stack(path: Path) -> list[Path]:
    """The config files that make ``path`` runnable, base first."""
    config = yaml.safe_load(path.read_text())
    if "class_path" in config.get("model", {}):
        return [path]
    base = path.with_name(OVERLAY_BASES.get(path.name, path.stem.removesuffix("_cfg_finetune") + path.suffix))
    if base == path or not base.is_file():
        raise ValueError(f"{path} is an overlay (no model.class_path) but its base {base} does not exist")
    return [*config_stack(base), path]


def tiny_args(stack: list[Path], tmp_path: Path, extra: list[str]) -> list[str]:
    tiny = TINY_SEGMENTER if stack[0].parent.name == "segmenter" else TINY_SDM
    args = [arg for path in [*stack, tiny] for arg in ("--config", str(path))]
    return [*args, f"--data.init_args.root={tmp_path / 'data'}", f"--trainer.logger.init_args.save_dir={tmp_path}",
            f"--trainer.default_root_dir={tmp_path}", *extra]


def test_config_families_are_found():
    shipped = {path for folder in ("sdm", "segmenter") for path in (REPO / "configs" / folder).glob("*.yaml")}
    assert {path for path, _ in CASES} == shipped


@pytest.mark.slow
@pytest.mark.parametrize("path, group", CASES, ids=[f"{path.parent.name}/{path.name}" for path, _ in CASES])
def test_config_runs_fast_dev_run_at_tiny_size(path, group, tmp_path):
    build_tree, extra = group
    if build_tree is not None:
        build_tree(tmp_path / "data")
    stack = config_stack(path)
    options = list(extra)
    if any("init_from" in yaml.safe_load(p.read_text()).get("model", {}).get("init_args", {}) for p in stack):
        # Fine-tuning configs start from a checkpoint: make one with their base config.
        fit([*tiny_args(stack[:1], tmp_path / "pretrain", extra), "--trainer.max_steps=1"])
        pretrained = next((tmp_path / "pretrain").glob("*/version_0/checkpoints/last.ckpt"))
        options.append(f"--model.init_args.init_from={pretrained}")
    fit([*tiny_args(stack, tmp_path, options), "--trainer.fast_dev_run=2"])
