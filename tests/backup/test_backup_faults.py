"""Backups that go wrong: killed, the backup directory full, the controller refusing, a foreign
snapshot in the way. The VM's disks are never touched, nothing stays but what the next backup
needs, and the next backup (or a retry) succeeds."""
from __future__ import annotations

import os
import time

import pytest

from lab.lab import IMAGE_DS, SYSTEM_DS

from tests.tm.conftest import SYS, disk_path

from .test_backups import MiB, backed_up


def leftovers(env, vm_id: int) -> dict:
    """What a backup of this VM may have left: temporary resources, backup snapshots, files."""
    rds = [n for n in env.rds() if n.endswith(("-backup", "-backup-base"))]
    snaps = {}
    for res in (f"one-vm-{vm_id}-disk-0", f"one-image-{101 + vm_id * 2}"):
        snaps[res] = sorted(s for s in env.snapshots(res) if s.startswith("linstor_un-"))
    vm_dir = env.lab.host("node1").path(f"/var/lib/one/datastores/{SYSTEM_DS}/{vm_id}")
    files = sorted(str(p.relative_to(vm_dir)) for p in vm_dir.rglob("*") if not p.is_symlink())
    return {"temporary": rds, "snapshots": snaps, "files": files}


def whole_disk_reads(env) -> None:
    """Increments read the whole snapshot (no thin_delta on the hosts: the digest path)."""
    for node in env.lab.node_names:
        env.lab.fail_command(node, "thin_delta")


def kill_point(env, vm_id: int, point: str):
    """When to SIGKILL prebackup: right after the snapshot request, while a disk is read on the
    host, or once the second disk's temporary resource exists."""
    backup = env.lab.host("node1").path(f"/var/lib/one/datastores/{SYSTEM_DS}/{vm_id}/backup")
    if point == "reading":
        return lambda: backup.exists() and any(".part." in p.name for p in backup.iterdir())

    def seen(path: str):
        return lambda: any(r["method"] == "POST" and r["path"] == path for r in env.lab.linstor.requests())
    if point == "snapshotted":
        return seen("/v1/actions/snapshot/multi")
    return seen(f"/v1/resource-definitions/one-image-{101 + vm_id * 2}/snapshot-restore-resource/"
                f"linstor_un-backup-{vm_id}-1")


@pytest.mark.parametrize("point", ["snapshotted", "reading", "second disk"])
def test_killed_at_each_step_then_the_retry_succeeds(benv, point):
    env = benv
    vm_id = {"snapshotted": 46, "reading": 40, "second disk": 47}[point]
    vm = env.vm_with_disks(vm_id, sizes=(64, 16))
    env.write(vm, 0, os.urandom(8 * MiB), 20 * MiB)
    backed_up(env, vm)                                              # increment 0
    env.write(vm, 0, os.urandom(MiB), 50 * MiB)
    env.lab.linstor.clear_requests()
    whole_disk_reads(env)           # (a read of the changed blocks alone is over before it can be caught)
    try:
        killed = env.bds.backup(env.r, vm, [0, 1], live=False, kill_when=kill_point(env, vm_id, point))
    finally:
        env.lab.clear_command_faults()
    assert killed.pre.rc == -9, str(killed.pre)
    assert not killed.ok
    # the reader on the host notices that its driver is gone and stops
    deadline = time.monotonic() + 10
    while env.lab.host("node1").run_inside("pgrep -f [Q]cow2Writer", check=False).returncode == 0:
        assert time.monotonic() < deadline, "the backup reader on the host outlived the killed action"
        time.sleep(0.2)
    # postbackup (oned runs it after a failed pre) took the temporary resources and the files
    left = leftovers(env, vm_id)
    assert left["temporary"] == [] and left["files"] == [], left
    run = backed_up(env, vm)                                        # the retry: increment 1 again
    assert run.increment == 1
    before = env.disk_bytes(vm, 0)
    assert env.bds.restored_bytes(run.image_id, 0, 1) == before
    left = leftovers(env, vm_id)
    assert left["temporary"] == [] and left["files"] == []
    assert left["snapshots"][f"one-vm-{vm_id}-disk-0"] == [f"linstor_un-backup-{vm_id}-{i}" for i in (0, 1)]


def test_backup_directory_full_is_one_clear_error_and_nothing_stays(benv):
    env = benv
    host = env.lab.host("node1")
    vm_dir = f"/var/lib/one/datastores/{SYSTEM_DS}/41"
    host.run_inside(f"mkdir -p {vm_dir} && mount -t tmpfs -o size=1m tmpfs {vm_dir}")
    try:
        vm = env.vm_with_disks(41, sizes=(16, 8))
        env.write(vm, 0, os.urandom(4 * MiB), 0)
        snaps_before = leftovers(env, 41)["snapshots"]
        run = env.bds.backup(env.r, vm, [0, 1], live=False)
        assert run.pre.rc == 1
        errors = [ln for ln in run.pre.stderr.strip().splitlines() if not ln.startswith("INFO")]
        assert len(errors) == 1, run.pre.stderr
        assert "disk 0" in errors[0] and "No space left" in errors[0] and "node1" in errors[0], errors[0]
        left = leftovers(env, 41)
        assert left == {"temporary": [], "snapshots": snaps_before, "files": []}, left
        host.run_inside(f"mount -o remount,size=64m {vm_dir}")
        run = backed_up(env, vm)
        assert env.bds.restored_bytes(run.image_id, 0) == env.disk_bytes(vm, 0)
    finally:
        host.run_inside(f"umount -l {vm_dir}", check=False)


def test_controller_refusing_the_snapshots_changes_nothing(benv):
    env = benv
    vm = env.vm_with_disks(42, sizes=(16, 8))
    backed_up(env, vm)
    before = leftovers(env, 42)
    run = env.bds.backup_with_snapshots_refused(env.r, vm, [0, 1], False, "Injected: satellite unreachable")
    assert run.pre.rc == 1
    errors = [ln for ln in run.pre.stderr.strip().splitlines() if not ln.startswith("INFO")]
    assert len(errors) == 1 and "snapshot" in errors[0] and "Injected" in errors[0], run.pre.stderr
    assert leftovers(env, 42) == before
    run = backed_up(env, vm)
    assert run.increment == 1


def test_a_foreign_snapshot_of_the_name_stops_it_before_anything(benv):
    env = benv
    vm = env.vm_with_disks(43, sizes=(16, 8))
    with env.lab.client() as c:
        assert not any(r.is_error() for r in c.snapshot_create(None, "one-vm-43-disk-0", "linstor_un-backup-43-0"))
    run = env.bds.backup(env.r, vm, [0, 1], live=False)
    assert run.pre.rc == 1 and "was not taken for disk 0 of VM 43" in run.pre.stderr, run.pre.stderr
    assert "linstor_un-backup-43-0" in env.snapshots("one-vm-43-disk-0")           # theirs, kept
    assert leftovers(env, 43)["files"] == []


def test_terminate_takes_the_chain_with_it(benv):
    env = benv
    vm = env.vm_with_disks(44, sizes=(16, 8))
    backed_up(env, vm)
    backed_up(env, vm)
    image_res = f"one-image-{101 + 44 * 2}"
    assert {s for s in env.snapshots(image_res) if s.startswith("linstor_un-backup")}
    digests = env.lab.one_location / "var" / "linstor_un" / "digests"
    assert list(digests.glob("vm-44-*"))
    assert env.r.tm("mvds", f"node1:{disk_path(44, 1)}", vm.disks[1].source, 44, IMAGE_DS).ok
    assert env.r.tm("delete", f"node1:{disk_path(44, 0)}", 44, IMAGE_DS).ok
    assert env.r.tm("delete", f"node1:{SYS}/44", 44, SYSTEM_DS).ok
    assert not {s for s in env.snapshots(image_res) if s.startswith("linstor_un-")}
    assert "one-vm-44-disk-0" not in env.rds()
    assert not list(digests.glob("vm-44-*"))


def test_cancelled_with_sigterm_undoes_itself(benv):
    env = benv
    vm = env.vm_with_disks(45, sizes=(64, 16))
    env.write(vm, 0, os.urandom(8 * MiB), 0)
    backed_up(env, vm)
    before = leftovers(env, 45)
    env.write(vm, 0, os.urandom(MiB), 40 * MiB)
    part = env.lab.host("node1").path(f"/var/lib/one/datastores/{SYSTEM_DS}/45/backup")
    # postbackup is not run here: what is left is what prebackup itself left
    vm.lcm_state = "BACKUP_POWEROFF"
    from lab.oned import to_xml
    whole_disk_reads(env)
    try:
        result = env.r.backup_step("prebackup", "node1", f"/var/lib/one//datastores/{SYSTEM_DS}/45", [0, 1],
                                   "one-45", 45, SYSTEM_DS, to_xml(vm.element()),
                                   kill_when=lambda: part.exists() and any(".part." in p.name for p in part.iterdir()),
                                   kill_signal=15)
    finally:
        env.lab.clear_command_faults()
    vm.lcm_state = "RUNNING"
    assert "terminated (SIGTERM)" in result.stderr, str(result)
    assert leftovers(env, 45) == before
    run = backed_up(env, vm)
    assert run.increment == 1
    assert env.bds.restored_bytes(run.image_id, 0, 1) == env.disk_bytes(vm, 0)


def test_controller_down_is_one_line_and_touches_nothing(benv):
    import socket
    env = benv
    vm = env.vm_with_disks(48, sizes=(16, 8))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    templates = [env.lab.oned.datastores[ds].template for ds in (IMAGE_DS, SYSTEM_DS)]
    saved = [t["LS_CONTROLLERS"] for t in templates]
    for t in templates:
        t["LS_CONTROLLERS"] = f"http://127.0.0.1:{dead}"
    try:
        run = env.bds.backup(env.r, vm, [0, 1], live=False)
    finally:
        for t, value in zip(templates, saved):
            t["LS_CONTROLLERS"] = value
    assert run.pre.rc == 1
    errors = [ln for ln in run.pre.stderr.strip().splitlines() if not ln.startswith("INFO")]
    assert len(errors) == 1 and "127.0.0.1" in errors[0], run.pre.stderr
    assert leftovers(env, 48)["files"] == []
    run = backed_up(env, vm)
    assert env.bds.restored_bytes(run.image_id, 0) == env.disk_bytes(vm, 0)
