"""Train a model: ``python -m experiments.fit --config configs/sdm/shapes.yaml [--config more.yaml] [--a.b=c]``.

Resume with ``--ckpt_path <run>/checkpoints/last.ckpt``; print the merged config with ``--print_config``.
"""

from experiments.cli import run_cli


def main(args: list[str] | None = None) -> None:
    """Entry point; ``args`` are command-line style arguments (default: ``sys.argv[1:]``)."""
    run_cli("fit", args)


if __name__ == "__main__":
    main()
