"""Every command that README.md and docs/*.md show runs as written, on tiny data, so docs and code cannot drift.

The commands are read from the Markdown itself (:func:`documented_commands`): the lines of fenced shell blocks and of
indented blocks, the ``$`` lines of ``text`` blocks (the lines after one are the output it must print), and inline
code spans that hold a whole command. Each ``python -m experiments.*`` command runs in-process, in document order, in
one workspace holding what the docs assume a reader has: the shipped configs, the input files a command names (label
maps, photos, pose files, official weights), dataset trees in their real layouts under the data roots, random
stand-ins for the metric weights, and the runs that a command's checkpoint path names (trained on tiny data by the
config that names the run, when no earlier command made it). How a command is adapted, all in :func:`adapt`:

- the tiny overlay of its family (configs/debug/tiny_*.yaml) is appended to fit, test and benchmark commands, with
  a few samples of the built-in datasets and a few benchmark iterations, so that each takes seconds; a longer
  ``--trainer.max_steps`` (a run the docs time in full) runs the overlay's 4 steps;
- placeholders become one concrete case: ``D`` and ``<dataset>`` are cityscapes, ``ROOT`` and ``/data/X`` the
  workspace's data tree, ``<ckpt>`` and ``<run>`` the runs the text refers to; optional ``[--option value]`` groups
  are left out;
- a checkpoint named by its step (``epoch=7-step=2000.ckpt``), which a tiny run does not write, becomes that run's
  ``last.ckpt``;
- commands that ask for CUDA (``--device cuda``) run only where it is available.

Commands that are not ours are what CI runs (venv, pip, pytest) or a third-party viewer (tensorboard); the launch
scripts (torchrun.sh, sbatch) are checked to exist with the config they are given; file set-up steps (mkdir, cp) run
as written. Inline spans holding synopsis
placeholders (``A.yaml``, ``X.ckpt``, ``...``) are usage patterns, not commands.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from offline_weights import write_all_weights
from test_configs import config_stack

from datamodules.image_files import write_png
from datamodules.keypoints import save_keypoints_txt, to_txt_frame
from experiments import errors
from experiments.errors import run_main
from lightning_modules.nets.sdm_unet import SDMUNet, SDMUNetConfig
from lightning_modules.official.sdm import export_official_sdm

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "datamodules"))
import person_trees  # noqa: E402
import trees  # noqa: E402

DOCUMENTS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
DATASET = "cityscapes"  # what D and <dataset> stand for
SHELL_LANGUAGES = {"bash", "sh", "shell", "console"}
PLACEHOLDERS = {
    "<dataset>": DATASET,
    "<ckpt>": f"runs/sdm_{DATASET}_cfg/version_0/checkpoints/last.ckpt",  # the fine-tuned run the text tests
    "<run>": "runs/sdm_shapes/version_0",
    "<segmenter run>": "runs/segmenter_shapes/version_0",
    "<best>": "last",
    "<sampler>": "ddim",
    "<steps>": "4",
    "<eta>": "0",
}
SYNOPSIS = re.compile(r"\b[A-Z]\.(yaml|ckpt)\b|\.\.\.|<[\w ]+>")
NOT_OURS = {
    "python3": "creates the virtualenv; CI's install step (.ci/run) runs it as written",
    "pip": "the install; CI (.ci/run) runs it as written",
    "pytest": "the test suite itself; CI (.ci/run) runs it as written",
    "tensorboard": "a third-party viewer of the runs",
}
LAUNCHERS = {"experiments/launch/torchrun.sh", "sbatch"}
FILE_UTILITIES = {"mkdir", "cp"}  # the docs' setup steps, run as written by bash in the workspace
# Checked in this order against the configs' folders and the model's class path (a refiner config sits in pidm/).
TINY_OVERLAYS = {"refiner": "configs/debug/tiny_refiner.yaml", "sdm": "configs/debug/tiny_sdm.yaml",
                 "pidm": "configs/debug/tiny_pidm.yaml", "segmenter": "configs/debug/tiny_segmenter.yaml"}
BUILTIN_DATA_SIZES = {
    "datamodules.shapes.ShapesDataModule": ["--data.init_args.num_train=4", "--data.init_args.num_val=2",
                                            "--data.init_args.num_test=2", "--data.init_args.image_size=16"],
    "datamodules.persons.PersonsDataModule": ["--data.init_args.num_identities=4"],
    "datamodules.refinement.RefinementDataModule": ["--data.init_args.data.init_args.num_identities=4"],
    # persons_video keeps the test people docs/animation.md names (id_00180-id_00184) as its whole test split
    "datamodules.persons_video.PersonsVideoDataModule": ["--data.init_args.num_identities=185",
                                                         "--data.init_args.test_fraction=0.027"],
}
DATA_TREES = {
    "datamodules.ade20k.ADE20KDataModule": trees.build_ade20k_tree,
    "datamodules.cityscapes.CityscapesDataModule": trees.build_cityscapes_tree,
    "datamodules.celebamask_hq.CelebAMaskHQDataModule": trees.build_celebamask_hq_tree,
    "datamodules.coco_stuff.COCOStuffDataModule": trees.build_coco_stuff_tree,
    "datamodules.deepfashion.DeepFashionDataModule": person_trees.write_gfla_tree,
    "datamodules.market1501.Market1501DataModule": person_trees.write_market_tree,
}
TINY_STEPS = 4  # the overlays' max_steps
BENCHMARK_SIZE = ["--model_size", "small", "--batch_size", "1", "--parts", "[sample]", "--precisions", "[fp32]",
                  "--sample_steps", "ddim:2", "--probe_steps", "2"]
RUN_PATH = re.compile(r"^runs/(?P<name>[^/]+)/version_\d+/(?:checkpoints/(?P<file>[^/]+\.ckpt)|config\.yaml)$")


@dataclass(frozen=True)
class Command:
    """A command as a document shows it.

    Args:
        source: ``document:line``.
        text: the command, continuation lines joined.
        output: what it prints, for a ``$`` line of a text block (None: not shown).
        inline: whether it is an inline code span.
    """

    source: str
    text: str
    output: tuple[str, ...] | None = None
    inline: bool = False


def documented_commands(path: Path) -> list[Command]:
    """The commands of the Markdown file ``path``, in document order."""
    name = path.relative_to(REPO).as_posix()
    text = path.read_text()
    found: list[Command] = []
    language: str | None = None
    continued: tuple[int, str] | None = None
    prompt: tuple[int, str, list[str]] | None = None
    for number, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            if prompt:
                found.append(Command(f"{name}:{prompt[0]}", prompt[1], tuple(prompt[2])))
                prompt = None
            language = line[3:].strip() if language is None else None
            continue
        if language == "text":
            if line.startswith("$ "):
                if prompt:
                    found.append(Command(f"{name}:{prompt[0]}", prompt[1], tuple(prompt[2])))
                prompt = (number, line[2:], [])
            elif prompt:
                prompt[2].append(line)
            continue
        if language not in SHELL_LANGUAGES and not (language is None and (continued or line.startswith("    "))):
            continue
        start, whole = (continued[0], f"{continued[1]} {line.strip()}") if continued else (number, line.strip())
        continued = (start, whole[:-1].rstrip()) if whole.endswith("\\") else None
        if continued is None and whole and not whole.startswith("#"):
            if language is not None or whole.startswith("python -m "):
                found.append(Command(f"{name}:{start}", whole))
    outside_fences = re.sub(r"^```.*?^```", lambda fence: re.sub(r"[^\n]", " ", fence.group()), text,
                            flags=re.M | re.S)
    for span in re.finditer(r"`(python -m experiments\.[^`]+)`", outside_fences):
        number = outside_fences.count("\n", 0, span.start()) + 1
        found.append(Command(f"{name}:{number}", " ".join(span.group(1).split()), inline=True))
    return sorted(found, key=lambda command: int(command.source.rsplit(":", 1)[1]))


COMMANDS = [command for document in DOCUMENTS for command in documented_commands(document)]


def test_the_docs_show_commands_of_every_entry_point():
    modules = {shlex.split(command.text)[2] for command in COMMANDS if command.text.startswith("python -m ")}
    assert {"experiments.fit", "experiments.test", "experiments.predict", "experiments.import_official",
            "experiments.benchmark", "experiments.animate"} <= modules
    assert len(COMMANDS) > 40


def config_yaml(path: str | Path) -> dict:
    return yaml.safe_load(Path(path).read_text()) or {}


def run_configs() -> dict[str, Path]:
    """Each shipped config by the run name its logger writes (``sdm_ade20k_cfg`` → ade20k_cfg_finetune.yaml)."""
    configs = {}
    for path in sorted((REPO / "configs").glob("*/*.yaml")):
        logger = (config_yaml(path).get("trainer") or {}).get("logger") or {}
        if isinstance(logger, dict) and (name := (logger.get("init_args") or {}).get("name")):
            configs[name] = path.relative_to(REPO)
    return configs


class Workspace:
    """The folder the documented commands run in, and what it provides on demand (runs, data trees)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def provide_data(self, data_class: str, root: str) -> None:
        folder = self.root / root
        if data_class in DATA_TREES and not folder.exists():
            DATA_TREES[data_class](folder)

    def provide_run(self, name: str) -> None:
        """Train run ``name`` (its config + the tiny overlay) unless ``runs/<name>/version_0`` exists."""
        if (self.root / "runs" / name / "version_0" / "checkpoints" / "last.ckpt").is_file():
            return
        configs = run_configs()
        assert name in configs, f"no shipped config writes the run {name!r}"
        stack = [path.relative_to(REPO) for path in config_stack(REPO / configs[name])]
        arguments = [argument for path in stack for argument in ("--config", str(path))]
        init_from = (config_yaml(stack[-1]).get("model", {}).get("init_args") or {}).get("init_from", "__none__")
        if init_from != "__none__":  # a fine-tune starts from its base run
            base = config_yaml(stack[0])["trainer"]["logger"]["init_args"]["name"]
            self.provide_run(base)
            arguments += ["--model.init_args.init_from", f"runs/{base}/version_0/checkpoints/last.ckpt"]
        run_command("experiments.fit", adapt_arguments("experiments.fit", arguments, self))


def merged_data(configs: list[str]) -> dict:
    data: dict = {}
    for path in configs:
        section = config_yaml(path).get("data") or {}
        data = {**data, **{key: value for key, value in section.items() if key != "init_args"},
                "init_args": {**data.get("init_args", {}), **(section.get("init_args") or {})}}
    return data


def config_arguments(arguments: list[str]) -> list[str]:
    """The files given with ``--config``, in order."""
    return [arguments[index + 1] for index in range(len(arguments) - 1) if arguments[index] == "--config"]


def option_value(arguments: list[str], option: str) -> str | None:
    for index, argument in enumerate(arguments):
        if argument == option and index + 1 < len(arguments):
            return arguments[index + 1]
        if argument.startswith(option + "="):
            return argument.split("=", 1)[1]
    return None


def adapt_arguments(module: str, arguments: list[str], workspace: Workspace) -> list[str]:
    """``arguments`` of ``python -m module`` made to run in ``workspace`` on tiny data (module docstring)."""
    configs = config_arguments(arguments)
    data = merged_data(configs)
    data_class = data.get("class_path", "")
    adapted = []
    for index, argument in enumerate(arguments):
        option, equals, value = argument.partition("=") if argument.startswith("--") else ("", "", argument)
        if index and arguments[index - 1] == "--data.init_args.root" and value == "ROOT":
            value = data["init_args"]["root"]
        value = re.sub(r"^/data/", "data/", value)
        if index and arguments[index - 1] == "--trainer.max_steps" and int(value) > TINY_STEPS:
            value = str(TINY_STEPS)  # a run the docs time in full
        if match := RUN_PATH.match(value):
            workspace.provide_run(match["name"])
            if not (workspace.root / value).exists() and match["file"]:
                value = value.replace(match["file"], "last.ckpt")  # a step checkpoint a tiny run does not write
        adapted.append(option + equals + value)
    if module in ("experiments.fit", "experiments.test", "experiments.benchmark") and configs:
        root = option_value(adapted, "--data.init_args.root") or data["init_args"].get("root")
        if root is not None:  # a refinement DataModule wraps a built-in one, which writes its own data
            workspace.provide_data(data_class, root)
        model_class = str(config_yaml(configs[0]).get("model", {}).get("class_path", ""))
        family = next(folder for folder in TINY_OVERLAYS if folder in model_class.rpartition(".")[0]
                      or f"configs/{folder}/" in " ".join(configs))
        if TINY_OVERLAYS[family] not in configs:
            # after the shipped configs, before a config of the user's own (an imported checkpoint's model section)
            shipped = [index for index in range(len(adapted) - 1)
                       if adapted[index] == "--config" and adapted[index + 1].startswith("configs/")]
            position = shipped[-1] + 2 if shipped else len(adapted)
            adapted[position:position] = ["--config", TINY_OVERLAYS[family]]
        adapted += BUILTIN_DATA_SIZES.get(data_class, [])
    if module == "experiments.test" and configs:
        provide_segmenter(configs, adapted, workspace)
    if module == "experiments.benchmark":
        adapted += BENCHMARK_SIZE + ([] if "--device" in adapted else ["--device", "cpu"])
    return adapted


def provide_segmenter(configs: list[str], arguments: list[str], workspace: Workspace) -> None:
    """The segmenter checkpoint that the configs' mIoU names (a reader trains it first, as the README says)."""
    if option_value(arguments, "--model.init_args.evaluation.miou.segmenter"):
        return
    miou = None
    for path in configs:
        evaluation = (config_yaml(path).get("model", {}).get("init_args") or {}).get("evaluation") or {}
        miou = evaluation.get("miou", miou)
    if not miou or (workspace.root / miou["segmenter"]).exists():
        return
    dataset = Path(configs[0]).stem
    workspace.provide_run(f"segmenter_{dataset}")
    target = workspace.root / miou["segmenter"]
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(workspace.root / f"runs/segmenter_{dataset}/version_0/checkpoints/last.ckpt", target)


@contextlib.contextmanager
def own_process_state():
    """Leave no process group or DDP environment behind (a DDP config run in-process sets MASTER_PORT and keeps its
    store listening there, which a later test's DDP launch would collide with)."""
    environment = dict(os.environ)
    try:
        yield
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
        os.environ.clear()
        os.environ.update(environment)


def run_command(module: str, arguments: list[str]) -> None:
    """``python -m module arguments`` in-process; a non-zero exit fails the test with what it printed."""
    main = importlib.import_module(module).main
    try:
        with own_process_state():
            run_main(main, arguments)
    except SystemExit as exit_info:
        if exit_info.code not in (None, 0):
            pytest.fail(f"python -m {module} {shlex.join(arguments)} exited with {exit_info.code}")


def expand(text: str) -> str:
    """The command with its placeholders made concrete and optional groups left out (module docstring)."""
    text = re.sub(r"(?<=[/_])D(?=[._/])", DATASET, text)
    for placeholder, value in PLACEHOLDERS.items():
        text = text.replace(placeholder, value)
    return re.sub(r"\s\[--[^\]]*\]", "", text)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory) -> Workspace:
    """The shared workspace (module docstring), with the files the docs' commands name."""
    root = tmp_path_factory.mktemp("documented")
    (root / "configs").symlink_to(REPO / "configs")
    weights = write_all_weights(root / "weights")
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, (2, 16, 16)).astype(np.uint8)
    (root / "my_labels").mkdir()
    for index, label in enumerate(labels):
        write_png(root / "my_labels" / f"map_{index}.png", label)
    write_png(root / "edited_label.png", labels[0])
    instances = (labels.astype(np.uint16) * 1000 + 1)  # one instance per class
    (root / "my_instances").mkdir()
    for index, instance in enumerate(instances):
        write_png(root / "my_instances" / f"map_{index}.png", instance)
    (root / "edited_instances").mkdir()
    write_png(root / "edited_instances" / "edited_label.png", instances[0])
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    for name in ("region.png", "upper.png"):
        write_png(root / name, mask)
    for name in ("photo.png", "person.jpg", "style.jpg", "ref.jpg", "a.jpg", "b.jpg"):
        person_trees.write_image(root / name, rng.integers(0, 256, (16, 16, 3), dtype=np.uint8))
    size = (256, 176)
    for path, variant in ((root / "poses" / "front.txt", 0), (root / "poses" / "side.txt", 1),
                          (root / "ref.txt", 2), (root / "pose.txt", 3)):
        path.parent.mkdir(exist_ok=True)
        save_keypoints_txt(path, to_txt_frame(person_trees.skeleton(size, variant), size))
    for variant, name in enumerate(("front", "side")):  # my_subject/: photos with their txt poses
        points = person_trees.skeleton(size, variant)
        person_trees.write_image(root / "my_subject" / f"{name}.jpg", person_trees.skeleton_photo(points, size))
        save_keypoints_txt(root / "my_subject" / f"{name}.txt", to_txt_frame(points, size))
    for frame in range(3):  # dance/: an OpenPose JSON sequence
        points = person_trees.skeleton(size, frame)
        flat = [value for x, y in points for value in (float(x), float(y), 0.0 if x < 0 else 0.9)]
        (root / "dance").mkdir(exist_ok=True)
        (root / "dance" / f"frame_{frame}.json").write_text(json.dumps(
            {"people": [{"pose_keypoints_2d": flat}], "canvas_height": size[0], "canvas_width": size[1]}))
    # Official-format SDM weights for ADE20K's 151 classes (tiny, random), and the official PIDM fixture.
    flags = {"image_size": 16, "num_channels": 32, "num_res_blocks": 1, "channel_mult": "1,2",
             "attention_resolutions": "8", "num_head_channels": 32, "num_classes": 151, "no_instance": True,
             "learn_sigma": True, "resblock_updown": True, "diffusion_steps": 10, "noise_schedule": "cosine"}
    network = SDMUNet(151, SDMUNetConfig(model_channels=32, channel_mult=(1, 2), num_res_blocks=1,
                                         attention_resolutions=(8,), image_size=16, num_head_channels=32))
    torch.save(export_official_sdm(network), root / "ema_0.9999_best.pt")
    (root / "sdm_ade20k_flags.yaml").write_text(yaml.safe_dump(flags))
    official = REPO / "tests" / "fixtures" / "official"
    shutil.copy(official / "pidm_official" / "state_dict.pt", root / "last.pt")
    shutil.copy(official / "pidm_official" / "config.json", root / "pidm_config.yaml")
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(root)
        patch.setenv("CONDIFF_WEIGHTS", str(weights))
        patch.setenv("TORCH_HOME", str(root / "torch_home"))
        patch.delenv("CONDIFF_OFFLINE", raising=False)
        patch.setattr(torch.hub, "download_url_to_file", _no_network)
        space = Workspace(root)
        space.provide_run("pidm_persons")  # `--ckpt_path last.ckpt` of the PIDM examples: a persons checkpoint
        shutil.copy(root / "runs/pidm_persons/version_0/checkpoints/last.ckpt", root / "last.ckpt")
        yield space


def _no_network(*args, **kwargs):
    raise AssertionError("tests must never touch the network")


_done: dict[str, str] = {}


@pytest.mark.slow
@pytest.mark.parametrize("command", COMMANDS, ids=[f"{command.source} {command.text[:60]}" for command in COMMANDS])
def test_documented_command_runs_as_written(command, workspace, capsys, monkeypatch):
    text = expand(command.text)
    if command.inline and (SYNOPSIS.search(text) or "--" not in text):
        pytest.skip("a usage pattern or the name of a command, not a command to run")
    words = shlex.split(text, comments=True)
    while words and words[0] == "/usr/bin/time":  # timed as written: the command is what follows
        words = words[words.index("python"):]
    words = [word for word in words if not re.fullmatch(r"[A-Z_]+=.*", word)]  # environment assignments
    if words[0] in LAUNCHERS:
        script = REPO / words[0] if words[0] != "sbatch" else REPO / words[-1]
        assert script.is_file(), f"{command.source}: {script} does not exist"
        config = words[1] if words[0] != "sbatch" else re.search(r"CONFIG=(\S+)", command.text)[1]
        assert (REPO / config).is_file(), f"{command.source}: {config} does not exist"
        return
    if words[0] in FILE_UTILITIES:
        subprocess.run(["bash", "-c", text], cwd=workspace.root, check=True)
        return
    if words[0] in NOT_OURS:
        assert words[0] != "pytest" or words == ["pytest"]
        pytest.skip(NOT_OURS[words[0]])
    assert words[:2] == ["python", "-m"] and words[2].startswith("experiments."), command.text
    module, arguments = words[2], words[3:]
    if "--device" in arguments and option_value(arguments, "--device") == "cuda" and not torch.cuda.is_available():
        pytest.skip("asks for CUDA, which this machine does not have (experiments/gpu_selfcheck.sh runs it)")
    adapted = adapt_arguments(module, arguments, workspace)
    key = shlex.join([module, *adapted])
    if key in _done:
        return  # the same command ran at _done[key]
    if module == "experiments.demo":  # serves until stopped: build the app it would serve (tests/demo/ browse it)
        from experiments.demo.__main__ import build, parse_options

        build(parse_options(adapted))
        _done[key] = command.source
        return
    if command.output is not None:
        monkeypatch.setattr(errors, "command_name", lambda: f"python -m {module}")
        with pytest.raises(SystemExit):
            run_main(importlib.import_module(module).main, adapted)
        captured = capsys.readouterr()
        assert (captured.out + captured.err).strip().splitlines() == list(command.output)
    else:
        run_command(module, adapted)
    _done[key] = command.source
