"""A user's clone has no ../shared folder: every test that reads it skips instead of failing."""

from __future__ import annotations

import os
import subprocess
import sys

from conftest import REPO

# the tests that read ../shared (the paper's text, the real Cityscapes frame)
READERS = [
    "tests/test_claims.py::test_every_number_of_section_4_is_in_a_claim",
    "tests/test_data.py::test_real_cityscapes_sample_train_ids_equal_shipped_ones",
    "tests/test_reproduce.py::test_paper_only_tables_equal_the_paper_cell_for_cell",
]


def test_tests_reading_the_shared_folder_skip_without_it(tmp_path):
    env = {**os.environ, "IFBF_SHARED": str(tmp_path / "no-shared")}
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *READERS],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-2000:]
    assert f"{len(READERS)} skipped" in out.stdout and "passed" not in out.stdout, out.stdout[-2000:]
