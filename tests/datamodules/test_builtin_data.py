import json
from pathlib import Path

import pytest

from datamodules.builtin_data import MANIFEST_NAME, check_generated, generate_once

MANIFEST = {"version": 1, "seed": 0, "size": (4, 6)}


def _write_two_files(folder: Path) -> None:
    (folder / "sub").mkdir()
    (folder / "sub" / "a.txt").write_text("a")
    (folder / "b.txt").write_text("b")


def _entries(root: Path) -> set[str]:
    return {path.relative_to(root).as_posix() for path in root.rglob("*")}


def test_a_tree_is_generated_once_with_its_manifest(tmp_path: Path):
    root = tmp_path / "data" / "toy"
    assert generate_once(root, MANIFEST, _write_two_files, "toy")
    assert _entries(root) == {"sub", "sub/a.txt", "b.txt", MANIFEST_NAME}
    assert json.loads((root / MANIFEST_NAME).read_text()) == {"version": 1, "seed": 0, "size": [4, 6]}
    assert check_generated(root, MANIFEST, "toy")

    def must_not_run(folder: Path) -> None:
        raise AssertionError("the tree was regenerated")

    assert not generate_once(root, MANIFEST, must_not_run, "toy")
    assert _entries(tmp_path / "data") == {"toy", "toy/sub", "toy/sub/a.txt", "toy/b.txt", f"toy/{MANIFEST_NAME}"}


def test_an_empty_root_folder_is_filled(tmp_path: Path):
    assert not check_generated(tmp_path / "missing", MANIFEST, "toy")
    (tmp_path / "empty").mkdir()
    assert not check_generated(tmp_path / "empty", MANIFEST, "toy")
    assert generate_once(tmp_path / "empty", MANIFEST, _write_two_files, "toy")
    assert (tmp_path / "empty" / "b.txt").is_file()


def test_other_arguments_are_refused_naming_each_difference(tmp_path: Path):
    generate_once(tmp_path, MANIFEST, _write_two_files, "toy")
    other = {"version": 1, "seed": 3, "size": (4, 6), "extra": True}
    with pytest.raises(ValueError, match=r"manifest\.json was generated with other arguments \(seed: stored 0 != "
                                         r"requested 3, extra: stored None != requested True\); pick another root"):
        generate_once(tmp_path, other, _write_two_files, "toy")


def test_a_foreign_folder_is_refused(tmp_path: Path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ValueError, match=r"is not empty and not a toy dataset \(no manifest\.json\)"):
        generate_once(tmp_path, MANIFEST, _write_two_files, "toy")
    assert _entries(tmp_path) == {"notes.txt"}


def test_an_interrupted_generation_leaves_nothing_behind(tmp_path: Path):
    def fail_halfway(folder: Path) -> None:
        (folder / "first.txt").write_text("1")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        generate_once(tmp_path / "toy", MANIFEST, fail_halfway, "toy")
    assert _entries(tmp_path) == set()


def test_a_tree_another_process_finished_first_is_kept(tmp_path: Path):
    root = tmp_path / "toy"

    def other_process_wins(folder: Path) -> None:
        _write_two_files(folder)
        generate_once(root, MANIFEST, _write_two_files, "toy")

    assert not generate_once(root, MANIFEST, other_process_wins, "toy")
    assert check_generated(root, MANIFEST, "toy")
    assert _entries(tmp_path) == {"toy", "toy/sub", "toy/sub/a.txt", "toy/b.txt", f"toy/{MANIFEST_NAME}"}
