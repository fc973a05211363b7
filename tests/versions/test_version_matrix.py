"""The versions the driver claims, run: the oldest python-linstor it allows (pyproject.toml) and the
newest, against the emulator playing the oldest (1.20) and the newest (1.33) controller it
supports. The main suite is newest client x newest controller; here the other three corners run
the TM lifecycle, the DS actions, the clone modes and the backups (a few minutes in all).

Each corner is a pytest run of those files in a subprocess, with the driver's executables on an
interpreter that has exactly that python-linstor (a venv in .venv-matrix, made once) and the
emulator's default controller version set (LAB_DRIVER_PYTHON, LAB_LINSTOR_VERSION: lab/lab.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
OLDEST_CLIENT = re.search(r'"python-linstor>=([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
OLDEST_CONTROLLER, NEWEST_CONTROLLER = "1.20.0", "1.33.2"
SUBSET = ["tests/tm/test_lifecycle.py", "tests/datastore/test_ds_actions.py", "tests/tm/test_clone.py",
          "tests/backup/test_backups.py"]


def client_python(version: str) -> str:
    """An interpreter with python-linstor `version` (and lxml), made once in .venv-matrix."""
    if version == "newest":
        return sys.executable
    venv = REPO / ".venv-matrix" / f"python-linstor-{version}"
    python = venv / "bin" / "python"
    probe = [str(python), "-c", f"import linstor, lxml, importlib.metadata as m; "
             f"assert m.version('python-linstor') == '{version}'"]
    if not python.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run(["/usr/bin/python3", "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        f"python-linstor=={version}", "lxml"], check=True)
    return str(python)


@pytest.mark.parametrize("client,controller", [
    (OLDEST_CLIENT, OLDEST_CONTROLLER),
    (OLDEST_CLIENT, NEWEST_CONTROLLER),
    ("newest", OLDEST_CONTROLLER),
], ids=lambda v: str(v))
def test_a_corner_of_the_version_matrix(client, controller):
    env = {**os.environ, "LAB_DRIVER_PYTHON": client_python(client), "LAB_LINSTOR_VERSION": controller}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *SUBSET], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=1200)
    tail = "\n".join(done.stdout.strip().splitlines()[-25:])
    assert done.returncode == 0, f"python-linstor {client} x controller {controller}:\n{tail}"
    assert " passed" in tail and "skipped" not in tail.splitlines()[-1], tail
