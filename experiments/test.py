"""Evaluate a checkpoint: ``python -m experiments.test --config <run>/config.yaml --ckpt_path <ckpt>``.

The model is built from the config and the command line alone (give the run's own ``config.yaml``, or the
``<out>.yaml`` that ``experiments.import_official`` writes); the checkpoint's stored hyperparameters never override
them, and its weights load strictly, so a config of another architecture fails naming the mismatched keys. The data
section and the test-only model options (``evaluation`` and ``test_sampling``, which checkpoints never store) come
from there too, e.g. ``--model.init_args.test_sampling.sampler=ddim --model.init_args.test_sampling.steps=50``.
Each run writes ``<log_dir>/test/`` (PNGs and ``metrics.json``; see docs/evaluation.md) into its own logger
version.

Every test sample is scored exactly once on any number of processes: Lightning's padding
``DistributedSampler`` is switched off (``use_distributed_sampler: false``) and the DataModules shard the test
split with ``datamodules.samplers.evaluation_sampler``.
"""

from experiments.cli import run_cli
from experiments.errors import run_main


def main(args: list[str] | None = None) -> None:
    """Entry point; ``args`` are command-line style arguments (default: ``sys.argv[1:]``)."""
    run_cli("test", args, trainer_defaults={"use_distributed_sampler": False})


if __name__ == "__main__":
    run_main(main)
