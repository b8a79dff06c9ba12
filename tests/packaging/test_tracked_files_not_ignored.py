"""No tracked file is also matched by .gitignore (issue 12 B11: `policies/data.json` was reported both
tracked and ignored, which makes a user's edit to it invisible to `git status`-driven tools)."""

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.skipif(not (REPO / ".git").exists(), reason="needs a git checkout (not an unpacked sdist)")
def test_no_tracked_file_is_listed_in_gitignore():
    done = subprocess.run(
        ["git", "ls-files", "--cached", "--ignored", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    )
    assert done.stdout.split() == []
    assert "policies/data.json" in subprocess.run(
        ["git", "ls-files", "policies"], cwd=REPO, capture_output=True, text=True, check=True
    ).stdout.split()
