"""The suite's own parallelism: how many xdist workers ``-n auto`` starts (tests/xdist_workers.py)."""

from xdist_workers import MAX_WORKERS, auto_workers


def test_whole_suite_gets_one_worker_per_core_up_to_the_cap():
    assert auto_workers(["tests"], cores=2) == 2
    assert auto_workers(["tests"], cores=64) == MAX_WORKERS
    assert auto_workers(["tests/diffusion", "tests/test_resume.py"], cores=64) == MAX_WORKERS


def test_one_named_file_runs_in_this_process():
    assert auto_workers(["tests/test_resume.py"], cores=8) == 0
    assert auto_workers(["tests/test_resume.py::test_a", "tests/test_resume.py::test_b"], cores=8) == 0


def test_named_files_get_at_most_one_worker_each():
    assert auto_workers(["tests/test_a.py", "tests/test_b.py::test_c"], cores=8) == 2


def test_one_core_runs_in_this_process():
    assert auto_workers(["tests"], cores=1) == 0
