"""install.py reads oned.conf as OpenNebula does: driver options in every form GetoptLong takes
(one_tm.rb, one_datastore.rb, one_vmm_exec.rb), the first linstor_un block of a name (the one oned
uses, Nebula::get_conf_attribute), and uninstall takes out exactly what it added, from exactly
where it added it."""
from __future__ import annotations

import re

import pytest

import install

from .test_install import conf, flag_list, front_end, ours, run, section_args, snapshot

BASH_BLOCKS = '''
TM_MAD_CONF = [
    NAME = "linstor_un",
    LN_TARGET = "NONE",
    CLONE_TARGET = "SYSTEM",
    SHARED = "YES",
    DS_MIGRATE = "YES",
    ALLOW_ORPHANS = "YES"
]

DS_MAD_CONF = [
    NAME = "linstor_un",
    PERSISTENT_ONLY = "NO",
    MARKETPLACE_ACTIONS = "export"
]
'''


@pytest.mark.parametrize("version", ["5.6.0", "6.10.0", "7.4.0"])
def test_uninstall_takes_its_attributes_out_of_the_block_it_added_them_to(tmp_path, version):
    """The bash driver's blocks come after the stock ones (whose text has the same
    `REQUIRED_ATTRS = ""` and `DRIVER = "raw"` lines install.py adds): only ours are touched."""
    one = front_end(tmp_path, version)
    with open(conf(one), "a") as f:
        f.write(BASH_BLOCKS)
    before = snapshot(one)
    assert run(one) == 0
    assert ours(one, "DS_MAD_CONF")[0].get("REQUIRED_ATTRS") == ""
    assert run(one, "--uninstall") == 0
    assert snapshot(one)["etc/oned.conf"] == before["etc/oned.conf"]


def test_an_attribute_the_admin_changed_since_stays(tmp_path):
    one = front_end(tmp_path, "7.4.0")
    with open(conf(one), "a") as f:
        f.write(BASH_BLOCKS)
    assert run(one) == 0
    text = conf(one).read_text()
    at = text.index('DS_LIVE_MIGRATE = "YES"', text.index('NAME = "linstor_un"'))
    conf(one).write_text(text[:at] + 'DS_LIVE_MIGRATE = "NO"' + text[at + len('DS_LIVE_MIGRATE = "YES"'):])
    assert run(one, "--uninstall") == 0
    block = ours(one, "TM_MAD_CONF")[0]
    assert block.get("DS_LIVE_MIGRATE") == "NO" and block.get("DS_MIGRATE_SNAP") is None


def test_the_first_of_two_linstor_un_blocks_is_the_one_extended(tmp_path):
    one = front_end(tmp_path, "7.4.0")
    with open(conf(one), "a") as f:
        f.write(BASH_BLOCKS + BASH_BLOCKS.replace('SHARED = "YES"', 'SHARED = "NO"'))
    before = conf(one).read_text()
    assert run(one) == 0
    first, second = ours(one, "TM_MAD_CONF")
    assert first.get("DS_LIVE_MIGRATE") == "YES" and second.get("DS_LIVE_MIGRATE") is None
    assert run(one, "--uninstall") == 0
    assert conf(one).read_text() == before


@pytest.mark.parametrize("old,new", [
    ('"-t 15 -d dummy,lvm,shared,fs_lvm,qcow2,ssh,ceph,dev,vcenter,iscsi_libvirt"',
     '"-t 15 --tm-types=dummy,lvm,shared,ssh"'),
    ('"-t 15 -d dummy,lvm,shared,fs_lvm,qcow2,ssh,ceph,dev,vcenter,iscsi_libvirt"',
     '"-t 15 --tm-types dummy,lvm,shared,ssh"'),
    ('"-t 15 -d dummy,lvm,shared,fs_lvm,qcow2,ssh,ceph,dev,vcenter,iscsi_libvirt"',
     '"-t 15 -ddummy,lvm,shared,ssh"'),
    ('"-t 15 -d dummy,lvm,shared,fs_lvm,qcow2,ssh,ceph,dev,vcenter,iscsi_libvirt"',
     '"-t 15 --tm dummy,ssh -d dummy,lvm,shared,ssh"'),            # a prefix; the last one counts
])
def test_tm_types_in_every_form(tmp_path, old, new):
    one = front_end(tmp_path, "6.0.0")
    text = conf(one).read_text()
    assert old in text
    conf(one).write_text(text.replace(old, new, 1))
    before = conf(one).read_text()
    assert run(one) == 0
    tm = section_args(one, "TM_MAD")[0]
    assert install.option_items(tm, install.TM_OPTIONS, install.TM_TYPES)[-1] == "linstor_un"
    assert tm.count("linstor_un") == 1
    assert run(one, "--uninstall") == 0
    assert conf(one).read_text() == before


@pytest.mark.parametrize("local", ["--local poll=poll_ganglia", "-lpoll=poll_ganglia", "--local=poll=poll_ganglia",
                                   "-l migrate=x -l poll=poll_ganglia"])
def test_vm_mad_local_in_every_form(tmp_path, local):
    one = front_end(tmp_path, "6.10.0")
    text = conf(one).read_text().replace('"-t 15 -r 0 kvm -p"', f'"-t 15 -r 0 kvm -p {local}"', 1)
    conf(one).write_text(text)
    assert run(one) == 0
    kvm = section_args(one, "VM_MAD", "kvm")[0]
    assert flag_list(kvm, "-l") == ["poll=poll_ganglia", *install.OVERRIDES]
    assert run(one, "--uninstall") == 0
    assert conf(one).read_text() == text


def test_a_conflicting_save_in_another_form_is_refused(tmp_path, capsys):
    one = front_end(tmp_path, "6.10.0")
    text = conf(one).read_text().replace('"-t 15 -r 0 kvm -p"', '"-t 15 -r 0 kvm -p --local SAVE=mine"', 1)
    conf(one).write_text(text)
    before = snapshot(one)
    assert run(one) == 1
    assert "already overrides SAVE=mine" in capsys.readouterr().err
    assert snapshot(one) == before


def test_an_option_oned_would_not_start_with_is_named(tmp_path, capsys):
    one = front_end(tmp_path, "7.4.0")
    text = conf(one).read_text()
    args = section_args(one, "TM_MAD")[0]
    conf(one).write_text(text.replace(f'"{args}"', f'"{args} --bogus"', 1))
    before = snapshot(one)
    assert run(one) == 1
    err = capsys.readouterr().err
    assert "'--bogus' is not an option" in err and "TM_MAD ARGUMENTS" in err and err.count("\n") == 1
    assert snapshot(one) == before


def test_the_option_parser_is_getoptlong():
    parsed_args = install.parse_mad_args("-t 15 -r 0 kvm -p -lsave=a -- -x", install.VMM_OPTIONS)
    assert [p.text for p in parsed_args.positional] == ["kvm", "-x"]
    assert parsed_args.last(install.LOCAL).value.text == "save=a"
    # an optional argument takes the next word only when it is not an option
    tm = install.parse_mad_args("-d -t 15", install.TM_OPTIONS)
    assert tm.last(install.TM_TYPES).value is None


def sourced(path) -> list[str]:
    """LIVE_DISK_SNAPSHOTS as bash has it after sourcing the file (as the VMM driver does)."""
    import subprocess
    out = subprocess.run(["bash", "-c", 'source "$1" >/dev/null 2>&1; printf %s "$LIVE_DISK_SNAPSHOTS"', "x",
                          str(path)], capture_output=True, text=True, check=True)
    return out.stdout.split()


@pytest.mark.parametrize("written", [
    r"LIVE_DISK_SNAPSHOTS=kvm-qcow2\ kvm-ceph",
    "LIVE_DISK_SNAPSHOTS='kvm-qcow2 kvm-ceph'",
    "LIVE_DISK_SNAPSHOTS=kvm-qcow2",
    """export LIVE_DISK_SNAPSHOTS="kvm-qcow2 "'kvm-ceph'  # the admin's""",
    'LIVE_DISK_SNAPSHOTS="kvm-qcow2 \\\nkvm-ceph"',
])
def test_vmm_execrc_written_the_ways_bash_reads(tmp_path, written):
    one = front_end(tmp_path, "6.10.0")
    rc = one / "etc" / "vmm_exec" / "vmm_execrc"
    text = re.sub(r"^LIVE_DISK_SNAPSHOTS=.*$", lambda m: written, rc.read_text(), count=1, flags=re.M)
    rc.write_text(text)
    had = sourced(rc)
    assert run(one) == 0
    assert sourced(rc) == had + ["kvm-linstor_un", "qemu-linstor_un"]
    assert run(one, "--uninstall") == 0
    assert rc.read_text() == text


def test_a_computed_vmm_execrc_value_is_refused(tmp_path, capsys):
    one = front_end(tmp_path, "6.10.0")
    rc = one / "etc" / "vmm_exec" / "vmm_execrc"
    rc.write_text(re.sub(r"^LIVE_DISK_SNAPSHOTS=.*$", 'LIVE_DISK_SNAPSHOTS="$MINE kvm-ceph"', rc.read_text(),
                         count=1, flags=re.M))
    before = snapshot(one)
    assert run(one) == 1
    assert "LIVE_DISK_SNAPSHOTS is computed" in capsys.readouterr().err
    assert snapshot(one) == before


def test_a_file_where_a_directory_should_be_is_one_line(tmp_path, capsys):
    one = front_end(tmp_path, "7.4.0")
    (one / "var" / "remotes" / "tm").write_text("not a directory\n")
    before = snapshot(one)
    assert run(one) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is a file, where" in err and "needs a directory" in err
    assert snapshot(one) == before


def test_a_read_only_file_system_is_said_as_such(tmp_path, capsys, monkeypatch):
    import os as _os
    one = front_end(tmp_path, "7.4.0")
    real = _os.statvfs

    def read_only(path):
        st = real(path)
        return _os.statvfs_result((*st[:8], st.f_flag | _os.ST_RDONLY, *st[9:]))
    monkeypatch.setattr(install.os, "statvfs", read_only)
    assert run(one) == 1
    err = capsys.readouterr().err
    assert "read-only file system" in err and "run as root" not in err


def test_an_os_error_while_writing_is_one_line_and_undone(tmp_path, capsys, monkeypatch):
    import errno
    one = front_end(tmp_path, "7.4.0")
    before = snapshot(one)
    writes = []
    real = install.put_file

    def full(path, *a, **kw):
        writes.append(path)
        if len(writes) == 5:
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real(path, *a, **kw)
    monkeypatch.setattr(install, "put_file", full)
    assert run(one) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no space left on the device of" in err and "undone" in err
    assert {k: v for k, v in snapshot(one).items() if not k.startswith("var/linstor_un")} == before


def test_what_the_first_install_py_left_in_the_remotes_goes_out_of_them(tmp_path):
    """The first install.py (history: 2241f06) kept its backups inside the remotes, which
    `onehost sync` copies to every host: taken out, the bash driver's copy kept for --restore-bash."""
    import sys
    from .test_install import bash_driver, previous_install_py, without_state
    previous = previous_install_py(tmp_path)
    one = front_end(tmp_path, "6.10.0")
    remotes = one / "var" / "remotes"
    bash_driver(one)
    text = conf(one).read_text()                          # (its README adds the datastore lists too)
    conf(one).write_text(re.sub(r'(-s shared,ssh,ceph,fs_lvm,fs_lvm_ssh,qcow2,vcenter)"', r'\1,linstor_un"',
                                re.sub(r'(-d dummy,fs,lvm,ceph,dev,iscsi_libvirt,vcenter,restic,rsync)',
                                       r'\1,linstor_un', text, count=1), count=1))
    assert conf(one).read_text().count("linstor_un") == text.count("linstor_un") + 2
    rc = one / "etc" / "vmm_exec" / "vmm_execrc"             # and kvm-linstor_un to the live snapshots
    rc.write_text(rc.read_text().replace('qemu-ssh"', 'qemu-ssh kvm-linstor_un"', 1))
    assert "kvm-linstor_un" in rc.read_text()
    before = snapshot(one)
    assert previous.main(["--one-location", str(one), "--python", sys.executable]) == 0
    assert list(remotes.rglob("*.bak"))                   # (what the first install.py left there)
    assert run(one) == 0
    assert not list(remotes.rglob("*.bak")) and not list(remotes.rglob("*.bak/*"))
    assert run(one, "--uninstall", "--restore-bash") == 0
    after = without_state(snapshot(one))
    # the release's files and the bash driver as they were (but the first install.py's own
    # backups of oned.conf and vmm_execrc beside them in etc/, which it wrote outside the remotes)
    assert {k: v for k, v in after.items() if not k.endswith(".bak")} == before
