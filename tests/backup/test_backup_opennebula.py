"""What OpenNebula's own backup machinery expects of a TM driver, 7.2 to 7.4: a restic datastore
read with its password decrypted, `onevm backup-cancel` finding and stopping prebackup, the vTPM
state in the backup and back, a failed backup (BACKUP_RESULT) advancing nothing, the backup
datastore's limits on the reader, and no safety token left after an in-place restore."""
from __future__ import annotations

import threading
import time

from lab.lab import SYSTEM_DS
from lab.oned import to_xml

from tests.backup.test_backups import backed_up, scattered
from tests.tm.conftest import SYS

MiB = 1 << 20


def restore(env, vm, image_id, increment=-1, disk=-1):
    return env.r.tm("restore", f"node1:{SYS}/{vm.id}", vm.id, image_id, increment, disk)


def test_in_place_restore_reads_the_backup_datastore_with_its_password_decrypted(benv):
    env = benv
    ds = env.lab.oned.datastores[env.bds.ds_id]
    ds.template.update(RESTIC_PASSWORD="s3cret", LAB_REPOSITORY_PASSWORD="s3cret")
    try:
        vm = env.vm_with_disks(40)
        env.write(vm, 0, b"R" * 4096, 2 * MiB)
        run = backed_up(env, vm, disks=(0,))
        before = env.disk_bytes(vm, 0)
        env.write(vm, 0, b"X" * 4096, 2 * MiB)
        vm.state, vm.lcm_state = "POWEROFF", "LCM_INIT"
        result = restore(env, vm, run.image_id)
        assert result.ok, str(result)
        assert env.disk_bytes(vm, 0) == before
        # no mark of the restore's safety snapshot stays on the disk (it would be copied into
        # every later snapshot)
        assert not [k for k in env.rds()["one-vm-40-disk-0"] if "restore-safety" in k]
    finally:
        for key in ("RESTIC_PASSWORD", "LAB_REPOSITORY_PASSWORD"):
            ds.template.pop(key, None)
        vm.state, vm.lcm_state = "ACTIVE", "RUNNING"


def test_backup_cancel_stops_prebackup_and_leaves_nothing(benv):
    env = benv
    vm = env.vm_with_disks(41)
    host = env.lab.host("node1")
    shim = host.path("/usr/local/bin") / "python3"           # the disk reader hangs
    shim.write_text("#!/bin/sh\nmkdir -p /var/tmp/one; touch /var/tmp/one/reading-41\nexec sleep 3600\n")
    shim.chmod(0o755)
    marker = host.path("/var/tmp/one") / "reading-41"
    result = {}
    t = threading.Thread(target=lambda: result.setdefault("run", env.bds.backup(env.r, vm, [0, 1], live=True)))
    try:
        t.start()
        deadline = time.monotonic() + 60
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert marker.exists(), "prebackup never reached the disk reader"
        cancelled = env.bds.cancel([0, 1])
        assert cancelled.returncode == 0, cancelled.stderr
        t.join(60)
        assert not t.is_alive(), "backup-cancel did not stop prebackup"
    finally:
        shim.unlink(missing_ok=True)
        marker.unlink(missing_ok=True)
        host.run_inside("pkill -f 'sleep 3600' || true", check=False)
    run = result["run"]
    assert not run.pre.ok and not run.ok, str(run.pre)
    assert vm.backup_config.get("LAST_INCREMENT_ID") == -1                 # nothing recorded
    for res in ("one-vm-41-disk-0", "one-image-183"):
        assert env.snapshots(res) == set(), res
    assert not [n for n in env.rds() if n.endswith("-backup") or n.endswith("-backup-base")]


def test_the_vtpm_state_is_backed_up_and_restored(benv):
    env = benv
    vm = env.vm_with_disks(42)
    vm.template["TPM"] = {"MODEL": "tpm-crb"}
    host = env.lab.host("node1")
    vm_dir = f"{SYS}/42"
    host.run_inside(f"mkdir -p {vm_dir}/tpm && printf permall-1 > {vm_dir}/tpm/tpm2-00.permall")
    run = backed_up(env, vm, disks=(0,))
    folder = env.bds.root / "42" / run.source
    assert (folder / "disk.tpm.0").exists()
    host.run_inside(f"printf changed > {vm_dir}/tpm/tpm2-00.permall")
    vm.state, vm.lcm_state = "POWEROFF", "LCM_INIT"
    try:
        result = restore(env, vm, run.image_id)
        assert result.ok, str(result)
        assert host.run_inside(f"cat {vm_dir}/tpm/tpm2-00.permall").stdout == b"permall-1"
    finally:
        vm.state, vm.lcm_state = "ACTIVE", "RUNNING"


def test_a_failed_backup_advances_nothing(benv):
    """7.4.1+: postbackup after a failed datastore step gets BACKUP_RESULT=FAILURE; the snapshot of
    the failed backup and its digests go, the chain goes on from its last good backup."""
    env = benv
    env.bds.failure_result = True
    try:
        vm = env.vm_with_disks(43)
        good = backed_up(env, vm, disks=(0,))
        scattered(env, vm, 0, 4, 32, 43)
        real = env.bds.copy_away
        env.bds.copy_away = lambda *a: (_ for _ in ()).throw(RuntimeError("Error copying backup: disk full"))
        try:
            failed = env.bds.backup(env.r, vm, [0], live=True)
        finally:
            env.bds.copy_away = real
        assert not failed.ok and failed.post.ok
        assert env.snapshots("one-vm-43-disk-0") == {"linstor_un-backup-43-0"}
        assert "the backup failed" in failed.post.stderr
        run = backed_up(env, vm, disks=(0,))
        assert run.increment == 1 and run.image_id == good.image_id
        assert env.bds.restored_bytes(run.image_id, 0, 1) == env.disk_bytes(vm, 0)
    finally:
        env.bds.failure_result = False


def test_the_backup_datastores_limits_confine_the_reader(benv):
    """<DS_MAD>_NICE / _IONICE as OpenNebula applies them (the systemd slice limits need oneadmin's
    user manager, which the lab's hosts do not run: the command is checked instead)."""
    env = benv
    ds = env.lab.oned.datastores[env.bds.ds_id]
    host = env.lab.host("node1")
    seen = host.path("/var/tmp/one") / "nice-args"
    shim = host.path("/usr/local/bin") / "nice"
    shim.write_text("#!/bin/sh\nprintf '%s ' \"$@\" | cut -c1-40 > /var/tmp/one/nice-args\nexec /usr/bin/nice \"$@\"\n")
    shim.chmod(0o755)
    ds.template.update(RSYNC_NICE="15", RSYNC_IONICE="6")
    try:
        vm = env.vm_with_disks(44)
        vm.backup_config["LAST_DATASTORE_ID"] = env.bds.ds_id
        run = backed_up(env, vm, disks=(0,))
        assert seen.read_text().startswith("-n 15 ionice -c2 -n6 python3"), seen.read_text()
        assert env.bds.restored_bytes(run.image_id, 0, 0) == env.disk_bytes(vm, 0)
        ds.template["RSYNC_NICE"] = "²"
        bad = env.bds.backup(env.r, vm, [0], live=True)
        assert not bad.pre.ok and "RSYNC_NICE '²' is not a whole number" in bad.pre.stderr
    finally:
        for key in ("RSYNC_NICE", "RSYNC_IONICE"):
            ds.template.pop(key, None)
        shim.unlink(missing_ok=True)
