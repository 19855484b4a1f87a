"""``python -m experiments.demo``: a local web app to sample a checkpoint interactively (see ``__main__``)."""
