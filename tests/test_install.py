"""install.py building a real virtual environment (offline, from the wheels lab/run keeps in
.venv/wheelhouse) and an action of the installed driver run the way oned runs it. The fast tests
of install.py's edits are in tests/unit/test_install.py."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import install

DATA = Path(__file__).resolve().parent / "data" / "opennebula"
REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    """Wheels of the driver's dependencies, as an operator without network would bring them."""
    kept = REPO / ".venv" / "wheelhouse"
    if kept.is_dir() and any(kept.glob("python_linstor-*.whl")):
        return kept
    built = tmp_path_factory.mktemp("wheelhouse")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(built), str(REPO), "setuptools"],
                   check=True)
    return built


def test_installed_driver_runs_from_its_virtual_environment(tmp_path, wheelhouse, capsys):
    """A venv of its own (Debian's python, offline wheels, nothing from the machine's site-packages)
    and a TM action run by the oned runner from the installed location, without the repository on
    the path; a rerun finds the library up to date; uninstall takes the venv away."""
    from lab.lab import Lab, LabConfig, IMAGE_DS
    from lab.oned import Disk
    from lab.runner import OnedRunner, mad_environment
    from tests.tm.conftest import PATTERN, Env, disk_path

    with Lab(LabConfig(hosts=2, install_driver=False, version="7.0.0")) as lab:
        one = lab.one_location
        shutil.copy(DATA / "7.0.0" / "oned.conf", one / "etc" / "oned.conf")
        shutil.copy(DATA / "7.0.0" / "vmm_execrc", one / "etc" / "vmm_exec" / "vmm_execrc")
        # where OpenNebula's owner (oneadmin, if this machine has one) can run it: pytest's own
        # temporary directories are closed to other users
        top = Path(tempfile.mkdtemp(prefix="linstor_un-venv-"))
        top.chmod(0o755)
        venv = top / "venv"
        argv = ["--one-location", str(one), "--venv", str(venv), "--wheels", str(wheelhouse)]
        assert install.main(argv) == 0
        out = capsys.readouterr().out
        assert "creating the virtual environment" in out and "installing the library" in out
        assert os.path.realpath(venv / "bin" / "python3").startswith("/usr/bin/")
        env = Env(lab)
        env.r = OnedRunner(one, "7.0.0", mad_environment(lab.home, one, ssh_dirs=lab.ssh_dirs))  # no PYTHONPATH
        img = env.image(3, data=PATTERN)
        env.vm(4, [Disk(0, IMAGE_DS, image_id=3, source=img.source, size=32)])
        result = env.clone(img, 4, 0)
        assert result.ok, str(result)
        assert env.read("node1", disk_path(4, 0)) == PATTERN
        assert (one / "var" / "remotes" / "tm" / "linstor_un" / "clone").read_text().startswith(
            f"#!{venv}/bin/python3")

        started = time.monotonic()
        assert install.main(argv) == 0
        out = capsys.readouterr().out
        assert "library: up to date" in out and "nothing to change" in out
        assert time.monotonic() - started < 5                  # no dependency is installed again

        assert install.main([*argv, "--uninstall"]) == 0
        assert not venv.exists() and not (one / "var" / "remotes" / "tm" / "linstor_un").exists()
        shutil.rmtree(top, ignore_errors=True)


@pytest.mark.skipif(os.geteuid() != 0, reason="installs for another user")
def test_an_interpreter_the_owner_cannot_run_is_refused_and_nothing_stays(tmp_path, wheelhouse, capsys):
    """root's own Python (pyenv under a 0700 home): the venv would link there and every action
    would fail for oneadmin with 'Permission denied'. install.py must say so and leave nothing."""
    private = tmp_path / "root-home" / "bin"
    private.mkdir(parents=True)
    shutil.copy(os.path.realpath("/usr/bin/python3"), private / "python3")
    (tmp_path / "root-home").chmod(0o700)
    top = Path(tempfile.mkdtemp(prefix="linstor_un-owner-"))
    try:
        top.chmod(0o755)
        one = top / "one"
        (one / "etc" / "vmm_exec").mkdir(parents=True)
        (one / "var" / "remotes").mkdir(parents=True)
        shutil.copy(DATA / "7.0.0" / "oned.conf", one / "etc" / "oned.conf")
        shutil.copy(DATA / "7.0.0" / "vmm_execrc", one / "etc" / "vmm_exec" / "vmm_execrc")
        (one / "var" / "remotes" / "VERSION").write_text("7.0.2\n")
        before = sorted(str(p) for p in top.rglob("*"))
        code = install.main(["--one-location", str(one), "--venv", str(top / "venv"), "--wheels", str(wheelhouse),
                             "--base-python", str(private / "python3"), "--owner", "nobody"])
        err = capsys.readouterr().err
        assert code == 1
        assert "as nobody failed" in err and "Permission denied" in err and "--base-python" in err
        closed = re.search(r"nobody cannot enter (\S+), mode 700\)", err)      # the first closed one on the way
        assert closed and (tmp_path / "root-home").is_relative_to(closed.group(1)), err
        assert sorted(str(p) for p in top.rglob("*")) == before          # no venv, no files, no record
    finally:
        shutil.rmtree(top, ignore_errors=True)
