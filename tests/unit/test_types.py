"""The type annotations hold (mypy): the library, install.py and every action file."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
ACTIONS = sorted(p for d in ("tm/linstor_un", "datastore/linstor_un", "vmm/kvm") for p in (REPO / d).iterdir()
                 if p.is_file())


def mypy(*target: str, cwd: Path = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--config-file",
                           str(REPO / "pyproject.toml"), *target], cwd=cwd, capture_output=True, text=True,
                          timeout=600, env={"MYPYPATH": str(REPO / "lib"), "PATH": "/usr/bin:/bin"})


@pytest.mark.parametrize("target", [["-p", "linstor_un"], ["install.py"]])
def test_the_library_and_the_installer_type_check(target):
    done = mypy(*target)
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_action_files_type_check(tmp_path):
    """Each action file as a module of its own name (checked as scripts, `datastore/.../stat`
    would stand for the standard library's `stat`)."""
    assert len(ACTIONS) > 30
    for path in ACTIONS:
        shutil.copy(path, tmp_path / f"action_{path.parent.parent.name}_{path.name}.py")
    done = mypy(str(tmp_path), cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
