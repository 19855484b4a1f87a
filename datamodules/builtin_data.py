"""Built-in datasets generated on first use: each tree is written once, with a manifest of its generation arguments.

A generated tree is a pure function of its manifest (a JSON object: generator version, seed, sizes, ...), stored as
``manifest.json`` in the tree's root. A later run asking for the same root reuses the tree when the manifests agree
and refuses it, naming the differing arguments, when they do not. Generating says so, naming the root, so that a
mistyped root shows up as a new dataset being generated in an unexpected place.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pytorch_lightning.utilities.rank_zero import rank_zero_info

MANIFEST_NAME = "manifest.json"


def check_generated(root: str | os.PathLike, manifest: Mapping[str, Any], dataset: str) -> bool:
    """Whether ``root`` holds the tree generated from ``manifest``; False when ``root`` is missing or empty.

    Args:
        root: the tree's folder.
        manifest: the generation arguments (JSON-serialisable).
        dataset: the dataset's name, for messages.

    Raises:
        ValueError: ``root`` holds a tree generated with other arguments (the message lists them), or it is not an
            empty folder and has no manifest.
    """
    root = Path(root)
    path = root / MANIFEST_NAME
    if not path.is_file():
        if root.exists() and (not root.is_dir() or any(root.iterdir())):
            raise ValueError(f"{root} is not empty and not a {dataset} dataset (no {MANIFEST_NAME}); "
                             "pick another root")
        return False
    stored = json.loads(path.read_text())
    requested = json.loads(json.dumps(manifest))  # tuples as lists, as they were stored
    differing = [key for key in {**stored, **requested} if stored.get(key) != requested.get(key)]
    if differing:
        details = ", ".join(f"{key}: stored {stored.get(key)!r} != requested {requested.get(key)!r}"
                            for key in differing)
        raise ValueError(f"{path} was generated with other arguments ({details}); pick another root or delete "
                         f"{root} to regenerate")
    return True


def generate_once(
    root: str | os.PathLike, manifest: Mapping[str, Any], write_tree: Callable[[Path], None], dataset: str
) -> bool:
    """Generate the ``dataset`` tree of ``manifest`` into ``root`` unless it is already there.

    ``write_tree(folder)`` writes the files into an empty temporary folder next to ``root``; the manifest is added
    and the folder renamed into place, so an interrupted run never leaves a half-written tree. A one-line message
    naming ``root`` is logged first.

    Returns:
        Whether the tree was generated (False: it was already there).

    Raises:
        ValueError: as :func:`check_generated`.
    """
    root = Path(root)
    if check_generated(root, manifest, dataset):
        return False
    rank_zero_info(f"Generating the built-in {dataset} dataset into {root.absolute()} (first use of this root; later "
                   "runs reuse it)")
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        write_tree(staging)
        (staging / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")
        try:
            if root.is_dir():
                root.rmdir()  # empty, checked above
            os.replace(staging, root)
        except OSError:
            # Another process (one per node on a shared disk) may have put the same tree there first.
            if not check_generated(root, manifest, dataset):
                raise
            return False
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return True
