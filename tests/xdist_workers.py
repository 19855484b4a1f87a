"""How many pytest-xdist workers ``-n auto`` (setup.cfg) starts for this suite."""

MAX_WORKERS = 4  # each worker holds its own torch and models; more buy little on small machines


def auto_workers(args: list[str], cores: int) -> int:
    """One worker per core, at most MAX_WORKERS and no more than the test files named; 0 runs in this process.

    ``--dist loadfile`` keeps a file on one worker, so for a single named file (``pytest tests/test_x.py::test_y``)
    extra workers would only cost their start-up.
    """
    workers = max(1, min(MAX_WORKERS, cores))
    named = {arg.split("::")[0] for arg in args}
    if named and all(name.endswith(".py") for name in named):
        workers = min(workers, len(named))
    return 0 if workers == 1 else workers
