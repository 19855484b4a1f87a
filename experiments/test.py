"""Evaluate a checkpoint: ``python -m experiments.test --config <run>/config.yaml --ckpt_path <ckpt>``.

The model is rebuilt from the checkpoint's hyperparameters; the data section comes from the config.
"""

from experiments.cli import run_cli


def main(args: list[str] | None = None) -> None:
    """Entry point; ``args`` are command-line style arguments (default: ``sys.argv[1:]``)."""
    run_cli("test", args)


if __name__ == "__main__":
    main()
