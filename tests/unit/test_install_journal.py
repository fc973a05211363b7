"""install.py killed at any step: the next run (install or --uninstall) undoes what the killed run
did, from its journal; SIGTERM/SIGHUP are undone at once; two runs never interleave; an old Python
is told what it needs."""
from __future__ import annotations

import ast
import fcntl
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import pytest

import install

from .test_install import REPO, front_end

INSTALL = [sys.executable, str(REPO / "install.py")]


def tree(one: Path) -> dict[str, bytes | None]:
    """Every path under the front-end: a file's bytes, None for a directory."""
    return {str(p.relative_to(one)): (None if p.is_dir() else p.read_bytes()) for p in sorted(one.rglob("*"))}


def run(one: Path, *extra: str, stop: str = "") -> subprocess.CompletedProcess:
    env = {**os.environ, "LINSTOR_UN_INSTALL_TEST_STOP": stop}
    return subprocess.run(INSTALL + ["--one-location", str(one), "--python", sys.executable, *extra],
                          capture_output=True, text=True, env=env, timeout=120)


def test_killed_at_every_step_the_next_run_undoes_it(tmp_path):
    from concurrent.futures import ThreadPoolExecutor
    base = front_end(tmp_path / "base", "7.4.0")
    (base / "var" / "remotes" / "tm").mkdir()              # as a release install has it
    before = tree(base)

    def killed_after(n: int) -> bool:
        """Kill a run after step n, then check the next run; False once n is past the last step."""
        one = tmp_path / f"run{n}"
        subprocess.run(["cp", "-a", str(base), str(one)], check=True)
        killed = run(one, stop=f"{n}:SIGKILL")
        if killed.returncode == 0:
            return False
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        if n % 3 == 0:                  # the next run is an install: it completes, an uninstall gives all back
            again = run(one)
            assert again.returncode == 0, again.stderr
            assert "undoing an interrupted run" in again.stderr
            assert run(one, "--uninstall").returncode == 0
            # (but the backups of what the completed install replaced, kept for the admin)
            assert {k: v for k, v in tree(one).items() if not k.startswith("var/linstor_un/backups")} == \
                {**before, "var/linstor_un": None}, f"killed after step {n}"
        else:                           # the next run is an uninstall: the killed run is undone
            undone = run(one, "--uninstall")
            assert undone.returncode == 0, undone.stderr
            assert "undoing an interrupted run" in undone.stderr
            assert tree(one) == before, f"killed after step {n}"
        return True

    # every kill point is its own front-end: they run side by side, in batches until one completes
    steps, n, batch = 0, 1, max(2, os.cpu_count() or 2)
    with ThreadPoolExecutor(batch) as pool:
        while n < 80:
            results = list(pool.map(killed_after, range(n, min(n + batch, 80))))
            steps += sum(results)
            if not all(results):
                break
            n += batch
    assert steps >= 10                  # (the run has that many journaled steps)


@pytest.mark.parametrize("sig", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_a_stopped_run_undoes_itself(tmp_path, sig):
    one = front_end(tmp_path, "7.0.0")
    before = tree(one)
    stopped = run(one, stop=f"8:{sig}")
    assert stopped.returncode == 1, stopped.stderr
    assert f"stopped ({sig})" in stopped.stderr and "undone" in stopped.stderr
    assert "Traceback" not in stopped.stderr
    assert tree(one) == before


def test_two_runs_never_interleave(tmp_path):
    one = front_end(tmp_path, "7.0.0")
    before = tree(one)
    fd = os.open(one / "var" / "remotes", os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        busy = run(one)
    finally:
        os.close(fd)
    assert busy.returncode == 1 and "another install.py is running" in busy.stderr
    assert tree(one) == before


def test_an_old_python_is_told_what_it_needs():
    source = (REPO / "install.py").read_text()
    ast.parse(source, feature_version=(3, 6))           # no SyntaxError before the check can speak
    head = source[:source.index("import argparse")]
    fake = types.SimpleNamespace(version_info=(3, 8, 10), executable="/usr/bin/python3.8", exit=sys.exit)
    with pytest.raises(SystemExit) as stop:
        exec(compile(head.replace("import sys\n", "sys = fake\n", 1), "install.py", "exec"), {"fake": fake})
    assert "Python 3.9 or newer is needed; this is Python 3.8" in str(stop.value)


def test_the_journal_steps_undo_in_reverse(tmp_path):
    f = tmp_path / "f"
    f.write_text("new")
    saved = tmp_path / "saved"
    saved.write_text("old")
    d = tmp_path / "d"
    d.mkdir()
    assert install.undo_steps([{"op": "rmdir", "path": str(d)}, {"op": "restore", "path": str(f),
                                                                 "saved": str(saved)}])
    assert f.read_text() == "old" and not d.exists()


def test_an_uninstall_killed_at_any_step_is_finished_by_the_next(tmp_path):
    base = front_end(tmp_path / "base", "6.10.0")
    before = tree(base)
    for n in range(1, 6):
        one = tmp_path / f"run{n}"
        subprocess.run(["cp", "-a", str(base), str(one)], check=True)
        assert run(one).returncode == 0             # (installed where it is: the record names its paths)
        killed = run(one, "--uninstall", stop=f"{n}:SIGKILL")
        if killed.returncode == 0:
            break
        assert killed.returncode == -signal.SIGKILL, killed.stderr
        done = run(one, "--uninstall")
        assert done.returncode == 0, done.stderr
        assert {k: v for k, v in tree(one).items() if not k.startswith("var/linstor_un/backups")} == \
            {**before, "var/linstor_un": None}, f"killed after step {n}"
