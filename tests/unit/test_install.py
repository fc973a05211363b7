"""install.py against the real oned.conf and vmm_execrc of every supported release, and against
what operators' front-ends add to them (no lab, no root needed except where a test says so)."""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

import install

DATA = Path(__file__).resolve().parents[1] / "data" / "opennebula"
VERSIONS = sorted(p.name for p in DATA.iterdir())
REPO = Path(__file__).resolve().parents[2]


def front_end(tmp_path: Path, version: str, one_version: str | None = None) -> Path:
    one = tmp_path / "one"
    (one / "etc" / "vmm_exec").mkdir(parents=True)
    (one / "var" / "remotes" / "vmm" / "kvm").mkdir(parents=True)
    shutil.copy(DATA / version / "oned.conf", one / "etc" / "oned.conf")
    shutil.copy(DATA / version / "vmm_execrc", one / "etc" / "vmm_exec" / "vmm_execrc")
    (one / "var" / "remotes" / "VERSION").write_text((one_version or version) + "\n")
    return one


def run(one: Path, *extra: str) -> int:
    return install.main(["--one-location", str(one), "--python", sys.executable, *extra])


def conf(one: Path) -> Path:
    return one / "etc" / "oned.conf"


def execrc(one: Path) -> Path:
    return one / "etc" / "vmm_exec" / "vmm_execrc"


def parsed(one: Path) -> install.OnedConf:
    return install.OnedConf(install.TextFile.read(conf(one)))


def section_args(one: Path, name: str, vm_mad: str | None = None) -> list[str]:
    return [s.get("ARGUMENTS") for s in parsed(one).of(name)
            if s.get("ARGUMENTS") is not None and (vm_mad is None or s.named(vm_mad))]


def flag_list(args: str, flag: str) -> list[str]:
    """The effective list of an option as the MAD reads it (the table by the option)."""
    table = install.VMM_OPTIONS if flag == "-l" else install.DS_OPTIONS
    spec = next(o for o in table if o.short == flag)
    return install.option_items(args, table, spec)


def ours(one: Path, section: str) -> list[install.Section]:
    return [s for s in parsed(one).of(section) if s.named("linstor_un")]


def live_snapshots(one: Path) -> list[str]:
    return install.live_snapshots_value(execrc(one).read_text()).value.split()


def snapshot(one: Path) -> dict[str, bytes]:
    return {str(p.relative_to(one)): p.read_bytes() for p in sorted(one.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("version", VERSIONS)
def test_install_reinstall_dry_run_uninstall(tmp_path, version, capsys):
    one = front_end(tmp_path, version)
    original, original_rc = conf(one).read_bytes(), execrc(one).read_bytes()
    v = install.version_tuple(version)

    assert run(one, "--dry-run") == 0
    out = capsys.readouterr().out
    assert conf(one).read_bytes() == original and execrc(one).read_bytes() == original_rc
    assert not (one / "var" / "remotes" / "tm" / "linstor_un").exists()
    assert '+    NAME = "linstor_un"' in out
    assert "#!/" not in out                           # file bodies only with --show-files

    assert run(one) == 0
    tm, ds = section_args(one, "TM_MAD")[0], section_args(one, "DATASTORE_MAD")[0]
    assert flag_list(tm, "-d").count("linstor_un") == 1
    assert flag_list(ds, "-d").count("linstor_un") == 1 and flag_list(ds, "-s").count("linstor_un") == 1
    kvm_mads = [s.get("NAME") for s in install.kvm_vm_mads(parsed(one))]
    assert ("qemu" in kvm_mads) == (v >= (6, 0, 0))          # the qemu VM_MAD ships from 6.0 on
    for name in kvm_mads:
        args = section_args(one, "VM_MAD", name)[0]
        assert flag_list(args, "-l")[-5:] == install.OVERRIDES
    tm_conf = ours(one, "TM_MAD_CONF")
    assert len(tm_conf) == 1 and tm_conf[0].get("CLONE_TARGET") == "SYSTEM" and tm_conf[0].get("SHARED") == "YES"
    assert (tm_conf[0].get("DISK_TYPE") == "BLOCK") == (v >= (6, 8, 0))
    assert (tm_conf[0].get("DS_LIVE_MIGRATE") == "YES") == (v >= (7, 2, 0))
    assert (tm_conf[0].get("DS_MIGRATE_SNAP") == "YES") == (v >= (7, 2, 0))
    assert len(ours(one, "DS_MAD_CONF")) == 1
    assert set(live_snapshots(one)) >= {f"{n}-linstor_un" for n in kvm_mads}
    for rel in ("tm/linstor_un/clone", "datastore/linstor_un/cp", "vmm/kvm/save_linstor_un"):
        f = one / "var" / "remotes" / rel
        assert f.stat().st_mode & 0o111 and f.read_text().startswith(f"#!{sys.executable}\n")
    assert (one / "var" / "remotes" / "etc" / "datastore" / "linstor_un" / "linstor_un.conf").exists()

    after = snapshot(one)
    capsys.readouterr()
    assert run(one) == 0                                    # a second run changes nothing
    assert "nothing to change" in capsys.readouterr().out
    assert snapshot(one) == after

    assert run(one, "--uninstall") == 0
    assert conf(one).read_bytes() == original and execrc(one).read_bytes() == original_rc
    assert not (one / "var" / "remotes" / "tm" / "linstor_un").exists()
    assert not (one / "var" / "remotes" / "datastore" / "linstor_un").exists()
    assert not (one / "var" / "remotes" / "vmm" / "kvm" / "save_linstor_un").exists()
    assert not list((one / "var" / "remotes").rglob("*.bak"))    # no backups inside the remotes
    assert list((one / "var" / "linstor_un" / "backups").rglob("oned.conf"))


def test_commented_arguments_are_left_alone(tmp_path, capsys):
    one = front_end(tmp_path, "7.0.0")
    text = conf(one).read_text()
    live = re.search(r'^TM_MAD = \[\n(.*?)\n\]', text, re.M | re.S)
    assert live
    edited = text.replace(live.group(0), live.group(0).replace(
        '    EXECUTABLE = "one_tm",', '    EXECUTABLE = "one_tm",\n#   ARGUMENTS = "-t 15 -d dummy,ssh",'), 1)
    conf(one).write_text(edited)
    assert run(one) == 0
    after = conf(one).read_text()
    assert '#   ARGUMENTS = "-t 15 -d dummy,ssh",' in after          # the comment is as it was
    assert flag_list(section_args(one, "TM_MAD")[0], "-d")[-1] == "linstor_un"
    capsys.readouterr()
    assert run(one) == 0 and "nothing to change" in capsys.readouterr().out
    assert run(one, "--uninstall") == 0
    assert conf(one).read_text() == edited


@pytest.mark.parametrize("form", ["single", "export", "unquoted", "absent", "twice", "empty", "multiline"])
def test_live_disk_snapshots_is_edited_where_the_admin_wrote_it(tmp_path, form):
    one = front_end(tmp_path, "6.10.0")
    base = execrc(one).read_text()
    m = re.search(r'^LIVE_DISK_SNAPSHOTS="([^"]*)"\n', base, re.M)
    admin = m.group(1).split()
    line = {"single": f"LIVE_DISK_SNAPSHOTS='{' '.join(admin)}'\n",
            "export": f'export LIVE_DISK_SNAPSHOTS="{" ".join(admin)}"\n',
            "unquoted": "LIVE_DISK_SNAPSHOTS=kvm-qcow2\n",
            "absent": "",
            "twice": f'LIVE_DISK_SNAPSHOTS="kvm-ssh"\n  LIVE_DISK_SNAPSHOTS="{" ".join(admin)}"\n',
            "empty": 'LIVE_DISK_SNAPSHOTS=""\n',
            "multiline": 'LIVE_DISK_SNAPSHOTS="kvm-qcow2\n    kvm-ceph"\n'}[form]
    text = base.replace(m.group(0), "# LIVE_DISK_SNAPSHOTS=\"kvm-commented\"\n" + line, 1)
    execrc(one).write_text(text)
    assert run(one) == 0
    words = shell_value(execrc(one))
    expected_admin = {"unquoted": ["kvm-qcow2"], "absent": [], "empty": [], "multiline": ["kvm-qcow2", "kvm-ceph"]}
    assert words == expected_admin.get(form, admin) + ["kvm-linstor_un", "qemu-linstor_un"]
    assert execrc(one).read_text().count("LIVE_DISK_SNAPSHOTS=") == text.count("LIVE_DISK_SNAPSHOTS=") + \
        (1 if form == "absent" else 0)
    assert run(one, "--uninstall") == 0
    assert execrc(one).read_text() == text


def shell_value(path: Path) -> list[str]:
    """What a shell sourcing vmm_execrc ends up with."""
    out = subprocess.run(["bash", "-c", f'source "{path}"; printf "%s" "$LIVE_DISK_SNAPSHOTS"'],
                         capture_output=True, text=True, check=True).stdout
    return out.split()


def test_a_conflicting_save_override_is_an_error_and_nothing_is_written(tmp_path, capsys):
    one = front_end(tmp_path, "7.0.0")
    text = conf(one).read_text().replace('"-t 15 -r 0 kvm -p"', '"-t 15 -r 0 kvm -p -l save=save_custom"', 1)
    conf(one).write_text(text)
    before = snapshot(one)
    assert install.main(["--one-location", str(one), "--venv", str(tmp_path / "venv")]) == 1
    err = capsys.readouterr().err
    assert 'VM_MAD "kvm" already overrides save=save_custom' in err and err.count("\n") == 1
    assert snapshot(one) == before and not (tmp_path / "venv").exists()


def test_relative_paths_give_absolute_shebangs(tmp_path, monkeypatch):
    one = front_end(tmp_path, "7.0.0")
    monkeypatch.chdir(tmp_path)
    python = os.path.relpath(sys.executable, tmp_path)
    assert install.main(["--one-location", "one", "--python", python]) == 0
    first = (one / "var" / "remotes" / "tm" / "linstor_un" / "clone").read_text().split("\n", 1)[0]
    assert first == f"#!{os.path.abspath(sys.executable)}"     # absolute, links not resolved (a venv's python)


@pytest.mark.parametrize("broken", ["no TM_MAD", "unclosed section"])
def test_a_bad_oned_conf_stops_before_anything_is_written(tmp_path, broken, capsys):
    one = front_end(tmp_path, "7.0.0")
    text = conf(one).read_text()
    if broken == "no TM_MAD":
        text = re.sub(r"^TM_MAD = \[.*?\n\]", "", text, count=1, flags=re.M | re.S)
    else:
        text += '\nTM_MAD_CONF = [ NAME = "x"\n'
    conf(one).write_text(text)
    before = snapshot(one)
    assert install.main(["--one-location", str(one), "--venv", str(tmp_path / "venv")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("install.py: ") and err.count("\n") == 1
    assert snapshot(one) == before and not (tmp_path / "venv").exists()
    assert not (one / "var" / "linstor_un").exists()


def test_bytes_and_line_endings_are_kept(tmp_path, capsys):
    one = front_end(tmp_path, "6.10.0")
    raw = conf(one).read_bytes().replace(b"\n", b"\r\n") + b"# Open\xe9Nebula \xff\r\n"
    conf(one).write_bytes(raw)
    rc_raw = execrc(one).read_bytes().replace(b"\n", b"\r\n")
    execrc(one).write_bytes(rc_raw)
    assert run(one, "--dry-run") == 0
    assert "+    NAME = \"linstor_un\"" in capsys.readouterr().out
    assert run(one) == 0
    patched = conf(one).read_bytes()
    assert b"\xe9Nebula \xff" in patched and b"\n" not in patched.replace(b"\r\n", b"")
    assert b'NAME = "linstor_un",\r\n' in patched
    assert run(one, "--uninstall", "--dry-run") == 0
    assert run(one, "--uninstall") == 0
    assert conf(one).read_bytes() == raw and execrc(one).read_bytes() == rc_raw


def test_files_behind_links_are_written_where_they_are(tmp_path):
    one = front_end(tmp_path, "7.0.0")
    real = tmp_path / "config" / "oned.conf"
    real.parent.mkdir()
    shutil.move(conf(one), real)
    conf(one).symlink_to(real)
    original = real.read_bytes()
    assert run(one) == 0
    assert conf(one).is_symlink() and b"linstor_un" in real.read_bytes()
    assert run(one, "--uninstall") == 0
    assert conf(one).is_symlink() and real.read_bytes() == original


def test_an_opennebula_upgrade_updates_the_block_and_uninstall_still_removes_it(tmp_path, capsys):
    one = front_end(tmp_path, "6.8.0", one_version="6.6.3")
    original = conf(one).read_bytes()
    assert run(one) == 0
    assert ours(one, "TM_MAD_CONF")[0].get("DISK_TYPE") is None
    (one / "var" / "remotes" / "VERSION").write_text("6.8.1\n")
    capsys.readouterr()
    assert run(one) == 0
    assert "TM_MAD_CONF linstor_un updated for OpenNebula 6.8.1" in capsys.readouterr().out
    assert len(ours(one, "TM_MAD_CONF")) == 1 and ours(one, "TM_MAD_CONF")[0].get("DISK_TYPE") == "BLOCK"
    (one / "var" / "remotes" / "VERSION").write_text("7.2.0\n")
    assert run(one) == 0
    assert ours(one, "TM_MAD_CONF")[0].get("DS_LIVE_MIGRATE") == "YES"
    assert run(one, "--uninstall") == 0
    assert conf(one).read_bytes() == original


def bash_driver(one: Path) -> bytes:
    """The bash driver as its README installs it: files, oned.conf entries, its own TM_MAD_CONF."""
    remotes = one / "var" / "remotes"
    for sub in ("datastore", "tm"):
        (remotes / sub / "linstor_un").mkdir(parents=True)
    (remotes / "datastore" / "linstor_un" / "linstor_utils.sh").write_text("# bash driver\n")
    (remotes / "datastore" / "linstor_un" / "cp").write_text("#!/bin/bash\n")
    (remotes / "tm" / "linstor_un" / "clone").write_text("#!/bin/bash\n")
    (remotes / "vmm" / "kvm" / "save_linstor_un").write_text("#!/bin/bash\n# bash save\n")
    conf_dir = remotes / "etc" / "datastore" / "linstor_un"
    conf_dir.mkdir(parents=True)
    (conf_dir / "linstor_un.conf").write_text("DD_BLOCK_SIZE=1M\n")
    text = conf(one).read_text()
    text = re.sub(r'(ARGUMENTS = "-t 15 -d [^"]*?)"', r'\1,linstor_un"', text, count=1)
    text = text.replace('"-t 15 -r 0 kvm -p"', '"-t 15 -r 0 kvm -p -l save=save_linstor_un,restore=restore_linstor_un"', 1)
    text += ('\nTM_MAD_CONF = [\n    NAME = "linstor_un", LN_TARGET = "NONE", CLONE_TARGET = "SYSTEM", SHARED = "yes",\n'
             '    DS_MIGRATE = "YES", ALLOW_ORPHANS = "yes"\n]\n')
    conf(one).write_text(text)
    return text.encode()


def test_upgrade_from_the_bash_driver_and_back(tmp_path, capsys):
    one = front_end(tmp_path, "6.10.0")
    remotes = one / "var" / "remotes"
    bash_conf = bash_driver(one)
    before = snapshot(one)
    assert run(one) == 0
    assert flag_list(section_args(one, "TM_MAD")[0], "-d").count("linstor_un") == 1
    tm_conf = ours(one, "TM_MAD_CONF")
    assert len(tm_conf) == 1 and tm_conf[0].get("SHARED") == "yes"      # the bash entry is kept, not doubled
    assert tm_conf[0].get("DISK_TYPE") == "BLOCK"                        # what 6.8+ needs is added to it
    assert len(ours(one, "DS_MAD_CONF")) == 1                            # what was missing is added
    kvm = section_args(one, "VM_MAD", "kvm")[0]
    assert kvm.count("save=save_linstor_un") == 1
    assert (remotes / "etc" / "datastore" / "linstor_un" / "linstor_un.conf").read_text() == "DD_BLOCK_SIZE=1M\n"
    assert not (remotes / "datastore" / "linstor_un" / "linstor_utils.sh").exists()
    assert (remotes / "tm" / "linstor_un" / "clone").read_text().startswith(f"#!{sys.executable}")
    assert not [p for p in remotes.rglob("*") if "bak" in p.name]          # backups are outside the remotes

    capsys.readouterr()
    installed = snapshot(one)
    # a plain uninstall would leave the bash driver's oned.conf entries naming scripts that are
    # gone: refused, with the command that puts the bash driver back
    assert run(one, "--uninstall") == 1
    assert "install.py --uninstall --restore-bash" in capsys.readouterr().err
    assert snapshot(one) == installed
    assert run(one, "--uninstall", "--restore-bash") == 0
    assert conf(one).read_bytes() == bash_conf                            # exactly what install.py added goes
    assert without_state(snapshot(one)) == before
    assert run(one) == 0 and run(one, "--uninstall", "--restore-bash") == 0      # or at once
    assert without_state(snapshot(one)) == before


def without_state(files: dict[str, bytes]) -> dict[str, bytes]:
    return {k: v for k, v in files.items() if not k.startswith("var/linstor_un/")}


def test_uninstall_keeps_what_the_admin_had_in_the_lists(tmp_path):
    one = front_end(tmp_path, "7.4.0")
    text = conf(one).read_text()
    text = re.sub(r'(ARGUMENTS = "-t 15 -d )', r'\1linstor_un,', text, count=1)        # the admin's, first
    conf(one).write_text(text)
    assert run(one) == 0
    assert flag_list(section_args(one, "TM_MAD")[0], "-d").count("linstor_un") == 1
    assert run(one, "--uninstall") == 0
    assert conf(one).read_text() == text


def test_each_run_keeps_its_own_backups(tmp_path):
    one = front_end(tmp_path, "7.0.0")
    assert run(one) == 0
    text = conf(one).read_text()
    assert run(one, "--uninstall") == 0
    assert run(one) == 0                       # the same second, most likely
    backups = sorted((one / "var" / "linstor_un" / "backups").iterdir())
    assert len(backups) == 3
    contents = {(b / str(conf(one)).lstrip("/")).read_bytes() for b in backups}
    assert len(contents) == 2 and text.encode() in contents


def test_dry_run_puts_the_config_first_and_file_bodies_on_request(tmp_path, capsys):
    one = front_end(tmp_path, "7.0.0")
    assert run(one, "--dry-run") == 0
    out = capsys.readouterr().out
    assert len(out.splitlines()) < 200
    assert out.index("would change") < out.index("TM_MAD -d +linstor_un") < out.index("--- ")
    assert run(one, "--dry-run", "--show-files") == 0
    assert "from linstor_un" in capsys.readouterr().out


def test_version_options(tmp_path, capsys):
    with pytest.raises(SystemExit):
        install.main(["--version"])
    assert capsys.readouterr().out.strip() == "linstor_un 0.1.0"
    one = front_end(tmp_path, "7.0.0")
    (one / "var" / "remotes" / "VERSION").unlink()
    assert run(one) == 1 and "--one-version" in capsys.readouterr().err
    assert run(one, "--one-version", "6.4.0") == 0
    assert ours(one, "TM_MAD_CONF")[0].get("DISK_TYPE") is None


def test_clear_errors(tmp_path, capsys):
    one = front_end(tmp_path, "7.0.0")
    conf(one).unlink()
    assert run(one) == 1
    assert "oned.conf not found" in capsys.readouterr().err
    one2 = front_end(tmp_path / "b", "7.0.0")
    (one2 / "var" / "remotes" / "VERSION").write_text("4.14.2\n")
    assert run(one2) == 1
    assert "not supported" in capsys.readouterr().err
    one3 = front_end(tmp_path / "c", "7.0.0")
    conf(one3).write_text("# not oned.conf\n")
    assert run(one3) == 1
    assert "no TM_MAD or DATASTORE_MAD" in capsys.readouterr().err
    one4 = front_end(tmp_path / "d", "7.0.0")
    assert install.main(["--one-location", str(one4), "--python", str(tmp_path / "nothing")]) == 1
    assert "is not an executable" in capsys.readouterr().err


@pytest.fixture
def request_cleanup():
    dirs: list[Path] = []
    yield dirs
    for d in dirs:
        shutil.rmtree(d, ignore_errors=True)


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="runs install.py as another user")


@needs_root
def test_a_directory_it_cannot_write_stops_it_before_any_write(request_cleanup):
    """As a non-root admin who owns the tree except /etc/one: nothing at all is written."""
    top = Path(tempfile.mkdtemp(prefix="linstor_un-install-"))        # pytest's tmp_path is root's only
    top.chmod(0o755)
    request_cleanup.append(top)
    one = front_end(top, "7.0.0")
    for p in [top, *top.rglob("*")]:
        os.chown(p, 65534, 65534)
    os.chown(one / "etc", 0, 0)
    os.chown(conf(one), 0, 0)
    before = snapshot(one)
    done = subprocess.run([sys.executable, str(REPO / "install.py"), "--one-location", str(one), "--python",
                           sys.executable], capture_output=True, text=True, user=65534, group=65534,
                          extra_groups=[], cwd="/")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "no permission" in done.stderr and str(one / "etc") in done.stderr
    assert snapshot(one) == before and not (one / "var" / "linstor_un").exists()
    assert not (one / "var" / "remotes" / "tm").exists()


@needs_root
def test_new_directories_belong_to_the_owner(tmp_path):
    one = front_end(tmp_path, "7.0.0")
    assert run(one, "--owner", "nobody") == 0
    for d in ("var/remotes/tm/linstor_un", "var/remotes/datastore/linstor_un", "var/remotes/etc/datastore/linstor_un",
              "var/remotes/tm/linstor_un/clone", "var/remotes/vmm/kvm/save_linstor_un"):
        assert (one / d).stat().st_uid == 65534, d
    assert conf(one).stat().st_uid == os.geteuid()            # replaced files keep their owner


def test_an_existing_l_option_is_merged(tmp_path):
    one = front_end(tmp_path, "6.10.0")
    text = conf(one).read_text().replace('"-t 15 -r 0 kvm -p"', '"-t 15 -r 0 kvm -p -l poll=poll_ganglia"', 1)
    assert "poll_ganglia" in text
    conf(one).write_text(text)
    assert run(one) == 0
    kvm = section_args(one, "VM_MAD", "kvm")[0]
    assert flag_list(kvm, "-l") == ["poll=poll_ganglia", *install.OVERRIDES]
    assert kvm.count(" -l ") == 1
    assert run(one, "--uninstall") == 0
    assert conf(one).read_text() == text


def previous_install_py(tmp_path: Path, commit: str = "2241f06"):
    """The install.py of history `commit` (2241f06: it recorded only the venv, the conf and the
    version, inside the remotes, and kept .bak copies there), loaded as a module."""
    import importlib.util
    old = subprocess.run(["git", "-C", str(REPO), "show", f"{commit}:install.py"], capture_output=True, text=True)
    if old.returncode != 0:
        pytest.skip("the repository's history is not here")
    path = tmp_path / "old_install.py"
    path.write_text(old.stdout.replace("REPO = Path(__file__).resolve().parent", f"REPO = Path({str(REPO)!r})"))
    spec = importlib.util.spec_from_file_location("old_install", path)
    previous = importlib.util.module_from_spec(spec)
    sys.modules["old_install"] = previous            # dataclasses look their module up
    try:
        spec.loader.exec_module(previous)
    finally:
        sys.modules.pop("old_install", None)
    return previous


@pytest.mark.parametrize("version", ["6.0.0", "6.10.0", "7.0.0"])
def test_uninstall_of_what_the_previous_install_py_installed(tmp_path, version):
    """A front-end installed by the install.py before this one (it recorded only the venv, the conf
    and the version, inside the remotes): --uninstall still gives back the release files."""
    previous = previous_install_py(tmp_path)
    one = front_end(tmp_path, version)
    original, original_rc = conf(one).read_bytes(), execrc(one).read_bytes()
    assert previous.main(["--one-location", str(one), "--python", sys.executable]) == 0
    assert (one / "var" / "remotes" / "etc" / "datastore" / "linstor_un" / "install-state.json").exists()
    assert run(one) == 0                              # this install.py takes the old one's record over
    assert run(one, "--uninstall") == 0
    assert conf(one).read_bytes() == original and execrc(one).read_bytes() == original_rc
    assert not (one / "var" / "remotes" / "tm" / "linstor_un").exists()
    assert not (one / "var" / "remotes" / "etc" / "datastore" / "linstor_un" / "install-state.json").exists()


def test_a_rerun_after_the_install_py_before_vm_snapshots_adds_their_overrides(tmp_path):
    """A front-end installed before the VM snapshot overrides (save/restore only, 90e54b8): the next
    run adds snapshot_create/revert/delete to each kvm VM_MAD and their files; --uninstall takes
    everything back."""
    previous = previous_install_py(tmp_path, "90e54b8")
    one = front_end(tmp_path, "7.0.0")
    original, original_rc = conf(one).read_bytes(), execrc(one).read_bytes()
    assert previous.main(["--one-location", str(one), "--python", sys.executable]) == 0
    assert flag_list(section_args(one, "VM_MAD", "kvm")[0], "-l") == ["save=save_linstor_un",
                                                                      "restore=restore_linstor_un"]
    assert run(one) == 0
    for name in ("kvm", "qemu"):
        assert flag_list(section_args(one, "VM_MAD", name)[0], "-l") == install.OVERRIDES
    assert (one / "var" / "remotes" / "vmm" / "kvm" / "snapshot_revert_linstor_un").exists()
    assert run(one, "--uninstall") == 0
    assert conf(one).read_bytes() == original and execrc(one).read_bytes() == original_rc
    assert not (one / "var" / "remotes" / "vmm" / "kvm" / "snapshot_revert_linstor_un").exists()
