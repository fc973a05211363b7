"""Live backups (TM prebackup_live) of a running QEMU domain in the lab: the guest is frozen only
around the one snapshot request and always thawed; without a guest agent the backup is
crash-consistent and the VM log says so; the domain keeps running."""
from __future__ import annotations

import os

import pytest

from lab.backup_ds import BackupDatastore
from lab.lab import SYSTEM_DS, Lab, LabConfig
from lab.oned import Disk

from tests.tm.conftest import Env, disk_path
from tests.vmm.test_save_restore import boot, state

MiB = 1 << 20

# a guest agent stand-in: virsh answers domfsfreeze/domfsthaw, and says when
AGENT_VIRSH = """#!/bin/sh
case "$*" in
  *domfsfreeze*|*domfsthaw*) echo "$(date +%s.%N) $*" >> /var/lib/one/datastores/virsh.log; exit 0;;
esac
exec /usr/bin/virsh "$@"
"""


@pytest.fixture(scope="module")
def lenv():
    with Lab(LabConfig(hosts=2, libvirt=True)) as lab:
        env = Env(lab)
        env.bds = BackupDatastore(lab)
        yield env


def running_vm(env, vm_id):
    vm = env.vm(vm_id, [Disk(0, SYSTEM_DS, size=16), Disk(1, SYSTEM_DS, size=8)], lcm="RUNNING")
    for d, size in ((0, 16), (1, 8)):
        assert env.r.tm("mkimage", size, "raw", f"node1:{disk_path(vm_id, d)}", vm_id, SYSTEM_DS).ok
    env.lab.write_device("node1", disk_path(vm_id, 1), os.urandom(MiB), 2 * MiB)
    boot(env, vm_id, "node1", disk_path(vm_id, 0))
    assert state(env, "node1", vm_id) == "running"
    vm.backup_config = {"MODE": "INCREMENT", "LAST_INCREMENT_ID": -1, "FS_FREEZE": "NONE"}
    return vm


def whole(env, vm, d):
    path = disk_path(vm.id, d)
    size = int(env.lab.host("node1").run_inside(f"blockdev --getsize64 $(readlink -f {path})").stdout)
    return env.read("node1", path, 0, size)


def test_without_a_guest_agent_the_backup_is_crash_consistent(lenv):
    env = lenv
    vm = running_vm(env, 50)
    run = env.bds.backup(env.r, vm, [0, 1], live=True)
    assert run.ok, f"{run.pre}\n{run.post}"
    assert "crash-consistent" in run.pre.stderr
    assert state(env, "node1", 50) == "running"
    assert env.bds.restored_bytes(run.image_id, 1) == whole(env, vm, 1)


def test_frozen_only_around_one_snapshot_request_and_thawed_on_failure(lenv):
    env = lenv
    vm = running_vm(env, 51)
    shim = env.lab.host("node1").path("/usr/local/bin") / "virsh"
    log = env.lab.host("node1").path("/var/lib/one/datastores") / "virsh.log"
    shim.write_text(AGENT_VIRSH)
    shim.chmod(0o755)
    try:
        failed = env.bds.backup_with_snapshots_refused(env.r, vm, [0, 1], True, "Injected: snapshot refused")
        assert failed.pre.rc == 1 and "Injected" in failed.pre.stderr
        calls = [line.split()[-2:] for line in log.read_text().splitlines()]
        assert calls == [["domfsfreeze", "one-51"], ["domfsthaw", "one-51"]], calls     # thawed anyway
        log.unlink()

        env.lab.linstor.clear_requests()
        run = env.bds.backup(env.r, vm, [0, 1], live=True)
        assert run.ok, f"{run.pre}\n{run.post}"
        entries = [line.split() for line in log.read_text().splitlines()]
        assert [e[-2] for e in entries] == ["domfsfreeze", "domfsthaw"]
        frozen_at, thawed_at = float(entries[0][0]), float(entries[1][0])
        snaps = [r for r in env.lab.linstor.requests()
                 if r["method"] == "POST" and "snapshot" in r["path"] and "restore" not in r["path"]]
        assert len(snaps) == 1 and snaps[0]["path"] == "/v1/actions/snapshot/multi"     # both disks, one request
        assert frozen_at < snaps[0]["t"] < thawed_at
        assert thawed_at - frozen_at < 2.0
        assert "guest filesystems frozen for" in run.pre.stderr
        assert state(env, "node1", 51) == "running"
        assert env.bds.restored_bytes(run.image_id, 1) == whole(env, vm, 1)
    finally:
        shim.unlink(missing_ok=True)
