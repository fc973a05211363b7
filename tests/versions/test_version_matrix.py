"""The versions the driver claims, run: the oldest python-linstor it allows (pyproject.toml) and the
newest, against the emulator playing the LINSTOR releases where what the driver depends on changed.
The main suite runs the newest client against the newest controller (lab/lab.py's default); here
each corner runs the test families that exercise the rules of its release, every one with the lab's
RESOURCE_GROUP datastore:

- 1.20.0, the oldest: no multi-snapshot, a spawn that cannot carry the definition's properties, no
  clone marks, rollback only to the newest snapshot, snapshots refused with a disk offline;
- 1.26.2: the last release whose spawn refuses the properties;
- 1.31.0 / 1.31.1: rollback by delete and restore without the diskless resources made again;
- 1.31.2: rollback making them again; 1.33.2: the newest release with its source at hand;
- the newest (1.34.0) with the oldest client.
The node-offline scenarios (delete, make again, revert, clone) run in the main suite on 1.20.0
and 1.33.2 (tests/tm/test_linstor_releases.py), and every rule on the releases either side of its
change in tests/lab/test_linstor_versions.py.

Each corner is a pytest run of those files in a subprocess, with the driver's executables on an
interpreter that has exactly that python-linstor (a venv in .venv-matrix, made once) and the
emulator's controller version set (LAB_DRIVER_PYTHON, LAB_LINSTOR_VERSION: lab/lab.py)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from lab.lab import NEWEST_LINSTOR

REPO = Path(__file__).resolve().parents[2]
OLDEST_CLIENT = re.search(r'"python-linstor>=([\d.]+)"', (REPO / "pyproject.toml").read_text()).group(1)
OLDEST_CONTROLLER = "1.20.0"
LIFECYCLE, DS, CLONE, BACKUPS = ("tests/tm/test_lifecycle.py", "tests/datastore/test_ds_actions.py",
                                 "tests/tm/test_clone.py", "tests/backup/test_backups.py")
ALL = [LIFECYCLE, DS, CLONE, BACKUPS]
CORNERS = [
    (OLDEST_CLIENT, OLDEST_CONTROLLER, ALL),
    (OLDEST_CLIENT, NEWEST_LINSTOR, ALL),
    ("newest", OLDEST_CONTROLLER, ALL),
    ("newest", "1.26.2", [LIFECYCLE, DS, CLONE]),
    ("newest", "1.31.0", [LIFECYCLE, BACKUPS]),
    ("newest", "1.31.1", [LIFECYCLE]),
    ("newest", "1.31.2", [LIFECYCLE]),
    ("newest", "1.33.2", [LIFECYCLE, CLONE]),
]


def client_python(version: str, python: str = "/usr/bin/python3") -> str:
    """An interpreter with python-linstor `version` (and lxml), made once in .venv-matrix."""
    if version == "newest":
        return sys.executable
    tag = "" if python == "/usr/bin/python3" else "-" + Path(python).parent.parent.name
    venv = REPO / ".venv-matrix" / f"python-linstor-{version}{tag}"
    venv_python = venv / "bin" / "python"
    probe = [str(venv_python), "-c", f"import linstor, lxml, importlib.metadata as m; "
             f"assert m.version('python-linstor') == '{version}'"]
    if not venv_python.exists() or subprocess.run(probe, capture_output=True).returncode != 0:
        subprocess.run([python, "-m", "venv", "--clear", str(venv)], check=True)
        subprocess.run([str(venv_python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                        f"python-linstor=={version}", "lxml"], check=True)
    return str(venv_python)


@pytest.mark.parametrize("client,controller,files", CORNERS, ids=lambda v: v if isinstance(v, str) else "")
def test_a_corner_of_the_version_matrix(client, controller, files):
    env = {**os.environ, "LAB_DRIVER_PYTHON": client_python(client), "LAB_LINSTOR_VERSION": controller}
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *files], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=1200)
    tail = "\n".join(done.stdout.strip().splitlines()[-25:])
    assert done.returncode == 0, f"python-linstor {client} x controller {controller}:\n{tail}"
    assert " passed" in tail and "skipped" not in tail.splitlines()[-1], tail


def pythons() -> list[str]:
    """The oldest and newest Pythons a front-end may have (3.9, 3.13), where this machine has them."""
    found = []
    for want in ("3.9", "3.13"):
        candidates = sorted(Path("/root/.pyenv/versions").glob(f"{want}.*")) + [Path(f"/usr/bin/python{want}")]
        found += [str(c / "bin" / "python") if c.is_dir() else str(c) for c in candidates
                  if (c / "bin" / "python").exists() or c.is_file()][:1]
    return found


@pytest.mark.parametrize("python", pythons() or ["none"])
def test_the_oldest_python_linstor_imports_with_the_driver(python):
    """python-linstor 1.27 imports distutils, which Python 3.12 removed: the floor must import on
    every Python the front-ends run, with the driver's library."""
    if python == "none":
        pytest.skip("neither Python 3.9 nor 3.13 on this machine")
    interpreter = client_python(OLDEST_CLIENT, python)
    done = subprocess.run([interpreter, "-c", "import sys; sys.path.insert(0, 'lib'); import linstor; "
                           "from linstor_un import action, linstor_api, placement, snapshots, backups"],
                          cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
