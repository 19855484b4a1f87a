"""Evaluate a checkpoint: ``python -m experiments.test --config <run>/config.yaml --ckpt_path <ckpt>``.

The model is rebuilt from the checkpoint's hyperparameters; the data section and the test-only model options
(``evaluation`` and ``test_*`` sampling, which checkpoints never store) come from the config and command line,
e.g. ``--model.init_args.test_sampler=ddim --model.init_args.test_steps=50``. Each run writes
``<log_dir>/test/`` (PNGs and ``metrics.json``; see docs/evaluation.md) into its own logger version.

Every test sample is scored exactly once on any number of processes: Lightning's padding
``DistributedSampler`` is switched off (``use_distributed_sampler: false``) and the DataModules shard the test
split with ``datamodules.sampling.evaluation_sampler``.
"""

from experiments.cli import run_cli


def main(args: list[str] | None = None) -> None:
    """Entry point; ``args`` are command-line style arguments (default: ``sys.argv[1:]``)."""
    run_cli("test", args, trainer_defaults={"use_distributed_sampler": False})


if __name__ == "__main__":
    main()
