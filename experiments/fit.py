"""Train a model: ``python -m experiments.fit --config configs/sdm/shapes.yaml [--config more.yaml] [--a.b=c]``.

Resume with ``--ckpt_path last`` (the newest run of the experiment goes on in its own directory) or start a new run
from any checkpoint with ``--ckpt_path <ckpt>``; print the merged config with ``--print_config``. A mistake is
reported as one line and a hint; ``CONDIFF_DEBUG=1`` shows the traceback (experiments/errors.py).
"""

from callbacks.hparams_view import HParamsView
from experiments.cli import run_cli
from experiments.errors import run_main


def main(args: list[str] | None = None) -> None:
    """Entry point; ``args`` are command-line style arguments (default: ``sys.argv[1:]``). Besides the configured
    callbacks, every training run shows its hyperparameters in TensorBoard's HParams view (:class:`HParamsView`)."""
    run_cli("fit", args, trainer_defaults={"callbacks": [HParamsView()]})


if __name__ == "__main__":
    run_main(main)
