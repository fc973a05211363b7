"""install.py against the real oned.conf and vmm_execrc of every supported release."""
from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

import install

DATA = Path(__file__).resolve().parent / "data" / "opennebula"
VERSIONS = sorted(p.name for p in DATA.iterdir())
REPO = Path(__file__).resolve().parents[1]


def front_end(tmp_path: Path, version: str) -> Path:
    one = tmp_path / "one"
    (one / "etc" / "vmm_exec").mkdir(parents=True)
    (one / "var" / "remotes" / "vmm" / "kvm").mkdir(parents=True)
    shutil.copy(DATA / version / "oned.conf", one / "etc" / "oned.conf")
    shutil.copy(DATA / version / "vmm_execrc", one / "etc" / "vmm_exec" / "vmm_execrc")
    (one / "var" / "remotes" / "VERSION").write_text(version + "\n")
    return one


def run(one: Path, *extra: str) -> int:
    return install.main(["--one-location", str(one), "--python", sys.executable, *extra])


def section_args(text: str, name: str, kvm: bool = False) -> list[str]:
    out = []
    for start, end in install._blocks(text, name):
        block = text[start:end]
        if kvm and not install._is_kvm(block):
            continue
        m = re.search(r'ARGUMENTS\s*=\s*"([^"]*)"', block)
        if m:
            out.append(m.group(1))
    return out


def flag_list(args: str, flag: str) -> list[str]:
    m = re.search(rf"(^|\s){flag}\s+(\S+)", args)
    return m.group(2).split(",") if m else []


def named(text: str, section: str) -> list[str]:
    return [text[s:e] for s, e in install._blocks(text, section) if '"linstor_un"' in text[s:e]]


@pytest.mark.parametrize("version", VERSIONS)
def test_install_reinstall_dry_run_uninstall(tmp_path, version, capsys):
    one = front_end(tmp_path, version)
    conf, execrc = one / "etc" / "oned.conf", one / "etc" / "vmm_exec" / "vmm_execrc"
    original, original_rc = conf.read_bytes(), execrc.read_bytes()

    assert run(one, "--dry-run") == 0
    assert conf.read_bytes() == original and execrc.read_bytes() == original_rc
    assert not (one / "var" / "remotes" / "tm" / "linstor_un").exists()
    assert "+    NAME = \"linstor_un\"" in capsys.readouterr().out

    assert run(one) == 0
    text = conf.read_text()
    tm = section_args(text, "TM_MAD")[0]
    ds = section_args(text, "DATASTORE_MAD")[0]
    assert flag_list(tm, "-d").count("linstor_un") == 1
    assert flag_list(ds, "-d").count("linstor_un") == 1 and flag_list(ds, "-s").count("linstor_un") == 1
    kvm = section_args(text, "VM_MAD", kvm=True)[0]
    assert "save=save_linstor_un" in flag_list(kvm, "-l") and "restore=restore_linstor_un" in flag_list(kvm, "-l")
    before_kvm = section_args(original.decode(), "VM_MAD", kvm=True)[0]
    assert kvm == before_kvm + " -l save=save_linstor_un,restore=restore_linstor_un"
    tm_conf = named(text, "TM_MAD_CONF")
    assert len(tm_conf) == 1 and 'CLONE_TARGET = "SYSTEM"' in tm_conf[0] and 'SHARED = "YES"' in tm_conf[0]
    assert len(named(text, "DS_MAD_CONF")) == 1
    # everything else is byte-for-byte the original
    assert unpatched_equals(text, original.decode(), version)
    live = re.search(r'LIVE_DISK_SNAPSHOTS="([^"]*)"', execrc.read_text()).group(1).split()
    assert "kvm-linstor_un" in live
    assert ("qemu-linstor_un" in live) == (install.version_tuple(version) >= (6, 8, 0))
    for rel in ("tm/linstor_un/clone", "datastore/linstor_un/cp", "vmm/kvm/save_linstor_un"):
        f = one / "var" / "remotes" / rel
        assert f.stat().st_mode & 0o111 and f.read_text().startswith(f"#!{sys.executable}\n")
    assert (one / "var" / "remotes" / "etc" / "datastore" / "linstor_un" / "linstor_un.conf").exists()

    after = conf.read_bytes()
    capsys.readouterr()
    assert run(one) == 0                                    # a second run changes nothing
    assert "nothing to change" in capsys.readouterr().out
    assert conf.read_bytes() == after

    assert run(one, "--uninstall") == 0
    assert conf.read_bytes() == original and execrc.read_bytes() == original_rc
    assert not (one / "var" / "remotes" / "tm" / "linstor_un").exists()
    assert not (one / "var" / "remotes" / "vmm" / "kvm" / "save_linstor_un").exists()
    assert list((one / "etc").glob("oned.conf.linstor_un-*.bak"))    # backups were made


def unpatched_equals(patched: str, original: str, version: str) -> bool:
    return install.unpatch_oned(patched, install.version_tuple(version)) == original


def test_user_edits_are_kept(tmp_path):
    one = front_end(tmp_path, "7.0.0")
    conf_dir = one / "var" / "remotes" / "etc" / "datastore" / "linstor_un"
    conf_dir.mkdir(parents=True)
    (conf_dir / "linstor_un.conf").write_text("STAGING_DIR=/srv/staging\n")
    assert run(one) == 0
    assert (conf_dir / "linstor_un.conf").read_text() == "STAGING_DIR=/srv/staging\n"
    assert run(one, "--uninstall") == 0
    assert (conf_dir / "linstor_un.conf").read_text() == "STAGING_DIR=/srv/staging\n"


def test_existing_l_option_is_merged(tmp_path):
    one = front_end(tmp_path, "6.10.0")
    conf = one / "etc" / "oned.conf"
    text = conf.read_text().replace('ARGUMENTS      = "-t 15 -r 0 kvm -p"', 'ARGUMENTS      = "-t 15 -r 0 kvm -p -l poll=poll_ganglia"', 1)
    assert "poll_ganglia" in text
    conf.write_text(text)
    assert run(one) == 0
    kvm = section_args(conf.read_text(), "VM_MAD", kvm=True)[0]
    assert flag_list(kvm, "-l") == ["poll=poll_ganglia", "save=save_linstor_un", "restore=restore_linstor_un"]
    assert kvm.count(" -l ") == 1
    assert run(one, "--uninstall") == 0
    assert conf.read_text() == text


def test_upgrade_from_the_bash_driver(tmp_path):
    one = front_end(tmp_path, "6.0.0")
    remotes = one / "var" / "remotes"
    for sub in ("datastore", "tm"):
        (remotes / sub / "linstor_un").mkdir(parents=True)
    (remotes / "datastore" / "linstor_un" / "linstor_utils.sh").write_text("# bash driver\n")
    (remotes / "datastore" / "linstor_un" / "cp").write_text("#!/bin/bash\n")
    (remotes / "tm" / "linstor_un" / "clone").write_text("#!/bin/bash\n")
    conf_dir = remotes / "etc" / "datastore" / "linstor_un"
    conf_dir.mkdir(parents=True)
    (conf_dir / "linstor_un.conf").write_text("DD_BLOCK_SIZE=1M\n")
    conf = one / "etc" / "oned.conf"
    bash_entries = conf.read_text().replace("-d dummy,lvm,shared", "-d dummy,lvm,linstor_un,shared", 1) + \
        '\nTM_MAD_CONF = [\n    NAME = "linstor_un", LN_TARGET = "NONE", CLONE_TARGET = "SYSTEM", SHARED = "yes",\n' \
        '    DS_MIGRATE = "YES", ALLOW_ORPHANS = "yes"\n]\n'
    conf.write_text(bash_entries)
    assert run(one) == 0
    text = conf.read_text()
    assert flag_list(section_args(text, "TM_MAD")[0], "-d").count("linstor_un") == 1
    assert len(named(text, "TM_MAD_CONF")) == 1                     # the bash entry is kept, not doubled
    assert len(named(text, "DS_MAD_CONF")) == 1                     # what was missing is added
    assert (conf_dir / "linstor_un.conf").read_text() == "DD_BLOCK_SIZE=1M\n"
    assert not (remotes / "datastore" / "linstor_un" / "linstor_utils.sh").exists()
    assert (remotes / "tm" / "linstor_un" / "clone").read_text().startswith(f"#!{sys.executable}")
    backups = list((remotes / "datastore").glob("linstor_un.bash-*.bak"))
    assert backups and (backups[0] / "linstor_utils.sh").exists()


def test_clear_errors(tmp_path, capsys):
    one = front_end(tmp_path, "7.0.0")
    (one / "etc" / "oned.conf").unlink()
    assert run(one) == 1
    assert "oned.conf not found" in capsys.readouterr().err
    one2 = front_end(tmp_path / "b", "7.0.0")
    (one2 / "var" / "remotes" / "VERSION").write_text("4.14.2\n")
    assert run(one2) == 1
    assert "not supported" in capsys.readouterr().err
    one3 = front_end(tmp_path / "c", "7.0.0")
    (one3 / "etc" / "oned.conf").write_text("# not oned.conf\n")
    assert run(one3) == 1
    assert "no TM_MAD or DATASTORE_MAD" in capsys.readouterr().err
    one4 = front_end(tmp_path / "d", "7.0.0")
    empty = tmp_path / "wheels"
    empty.mkdir()
    code = install.main(["--one-location", str(one4), "--venv", str(tmp_path / "venv"), "--wheels", str(empty)])
    assert code == 1
    assert "offline" in capsys.readouterr().err
    assert (one4 / "etc" / "oned.conf").read_text() == (DATA / "7.0.0" / "oned.conf").read_text()


def test_installed_driver_runs_from_its_virtual_environment(tmp_path):
    """A real venv (seeing the machine's packages for the dependencies) and a TM action run by the
    oned runner from the installed location, without the repository on the path."""
    from lab.lab import Lab, LabConfig, FRONTEND, IMAGE_DS
    from lab.oned import Disk
    from lab.runner import OnedRunner, mad_environment
    from tests.tm.conftest import PATTERN, Env, disk_path

    with Lab(LabConfig(hosts=2, install_driver=False, version="7.0.0")) as lab:
        one = lab.one_location
        shutil.copy(DATA / "7.0.0" / "oned.conf", one / "etc" / "oned.conf")
        shutil.copy(DATA / "7.0.0" / "vmm_execrc", one / "etc" / "vmm_exec" / "vmm_execrc")
        venv = tmp_path / "venv"
        code = install.main(["--one-location", str(one), "--venv", str(venv), "--system-site-packages",
                             "--no-deps"])
        assert code == 0
        env = Env(lab)
        env.r = OnedRunner(one, "7.0.0", mad_environment(lab.home, one))       # no PYTHONPATH
        img = env.image(3, data=PATTERN)
        env.vm(4, [Disk(0, IMAGE_DS, image_id=3, source=img.source, size=32)])
        result = env.clone(img, 4, 0)
        assert result.ok, str(result)
        assert env.read("node1", disk_path(4, 0)) == PATTERN
        assert (one / "var" / "remotes" / "tm" / "linstor_un" / "clone").read_text().startswith(
            f"#!{venv}/bin/python3")
