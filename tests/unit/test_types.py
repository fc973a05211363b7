"""The library's and install.py's type annotations hold (mypy; the action files are not checked
yet: their VM paths' disk number is optional where the signature makes it certain)."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("target", [["-p", "linstor_un"], ["install.py"]])
def test_the_library_and_the_installer_type_check(target):
    done = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", *target], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
