"""VM backups through the real TM actions, with OpenNebula's side played as its rsync backup
datastore and oned do it (lab/backup_ds.py); every backup is restored and compared byte for byte."""
from __future__ import annotations

import base64
import os
import random

import pytest

from lab.lab import IMAGE_DS, SYSTEM_DS
from lab.oned import Image, to_xml
from lab.runner import ds_action_data

from tests.tm.conftest import SYS, disk_path

MiB = 1 << 20


def backed_up(env, vm, live=False, disks=(0, 1)):
    run = env.bds.backup(env.r, vm, list(disks), live=live)
    assert run.ok, f"{run.pre}\n{run.post}\n{run.error}"
    return run


def scattered(env, vm, disk_id, count, size_mb, seed):
    rnd = random.Random(seed)
    for _ in range(count):
        env.write(vm, disk_id, os.urandom(rnd.choice((512, 4096, 70000))), rnd.randrange(0, size_mb * MiB - 70000))


def test_increment_chain_gives_back_each_backup_bit_exact(benv):
    env = benv
    vm = env.vm_with_disks(20, KEEP_LAST=4)
    r0, r1 = "one-vm-20-disk-0", "one-image-141"
    states, runs = [], []

    def backup():
        runs.append(backed_up(env, vm))
        states.append({d: env.disk_bytes(vm, d) for d in (0, 1)})
        inc = runs[-1].increment
        assert inc == len(runs) - 1
        for d in (0, 1):        # the chain so far gives back this very backup
            assert env.bds.restored_bytes(runs[-1].image_id, d, inc) == states[-1][d], (inc, d)

    env.write(vm, 1, b"P" * 4096, 0)
    backup()                                                        # 0: full
    full = env.bds.root / "20" / runs[0].source
    assert sorted(p.name for p in full.iterdir()) == ["disk.0.0", "disk.1.0", "vm.xml"]
    assert base64.b64decode((full / "vm.xml").read_text()).decode().startswith("<VM>")

    scattered(env, vm, 0, 12, 32, 1)
    env.write(vm, 1, b"E" * 4096, 16 * MiB - 4096)                  # the very end of the disk
    backup()                                                        # 1
    inc1 = env.bds.root / "20" / runs[1].source
    assert (inc1 / "disk.1.1").stat().st_size < 1 * MiB             # only what changed (+ metadata)

    assert env.r.tm("resize", f"node1:{disk_path(20, 1)}", 24, 20, IMAGE_DS).ok
    vm.disks[1].size = 24
    env.write(vm, 1, b"G" * 8192, 24 * MiB - 8192)                  # in the grown part
    backup()                                                        # 2: after a resize

    assert env.r.tm("snap_create", f"node1:{disk_path(20, 0)}", 0, 20, IMAGE_DS).ok
    vm.disks[0].snapshots = [{"id": 0, "name": "s0", "size": 32}]
    scattered(env, vm, 0, 5, 32, 2)
    assert env.r.tm("snap_revert", f"node1:{disk_path(20, 0)}", 0, 20, IMAGE_DS).ok
    env.write(vm, 0, b"R" * 4096, 5 * MiB)
    backup()                                                        # 3: after a revert

    env.write(vm, 0, bytes(70000), 0)                               # data become zeros
    env.write(vm, 1, bytes(4096), 0)
    backup()                                                        # 4: flattened to KEEP_LAST=4

    image = env.lab.oned.images[runs[0].image_id]
    assert [i["ID"] for i in image.backup_increments] == [1, 2, 3, 4]
    for inc in (1, 2, 3, 4):
        for d in (0, 1):
            assert env.bds.restored_bytes(image.id, d, inc) == states[inc][d], (inc, d)
    # the base of the next increment and this one (until oned confirms it) stay; nothing else
    for res in (r0, r1):
        backups = {s for s in env.snapshots(res) if s.startswith("linstor_un-backup")}
        assert backups == {"linstor_un-backup-20-3", "linstor_un-backup-20-4"}, (res, backups)
    assert "snapshot-0" in env.snapshots(r0)
    assert not [n for n in env.rds() if n.endswith(("-backup", "-backup-base"))]
    # the disk snapshot is OpenNebula's as before: deleted with no backup snapshot in the way
    assert env.r.tm("snap_delete", f"node1:{disk_path(20, 0)}", 0, 20, IMAGE_DS).ok
    vm.disks[0].snapshots = []

    # oneimage restore: our DS cp imports an rsync:// URL of increment 2 (through downloader.sh)
    url = env.bds.urls(image.id, 2)[1]
    target = Image(60, "restored", IMAGE_DS, path=url, size=24, format="")
    env.lab.oned.add(target)
    data = ds_action_data(to_xml(target.element()), to_xml(env.lab.oned.datastores[IMAGE_DS].element()))
    result = env.r.ds("cp", data, 60)
    assert result.ok, str(result)
    with env.lab.client() as c:
        c.resource_make_available("node1", "one-image-60")
    assert env.read("node1", "/dev/drbd/by-res/one-image-60/0", 0, 24 * MiB) == states[2][1]

    # onevm restore, in place (POWEROFF): disk 1 to increment 1, then everything to the last
    vm.state, vm.lcm_state = "POWEROFF", "LCM_INIT"
    result = env.r.tm("restore", f"node1:{SYS}/20", 20, image.id, 1, 1)
    assert result.ok, str(result)
    now = env.disk_bytes(vm, 1)
    assert now[:16 * MiB] == states[1][1] and now[16 * MiB:] == bytes(8 * MiB)
    assert env.disk_bytes(vm, 0) == states[4][0]
    result = env.r.tm("restore", f"node1:{SYS}/20", 20, image.id, -1, -1)
    assert result.ok, str(result)
    assert env.disk_bytes(vm, 0) == states[4][0] and env.disk_bytes(vm, 1) == states[4][1]
    for res in (r0, r1):            # the chain starts anew after a restore
        assert not {s for s in env.snapshots(res) if s.startswith("linstor_un-")}, env.snapshots(res)
    vm.state, vm.lcm_state = "ACTIVE", "RUNNING"
    vm.backup_config["LAST_INCREMENT_ID"] = -1                      # as oned does after a restore
    run = backed_up(env, vm)
    assert run.increment == 0 and run.image_id != image.id
    assert env.bds.restored_bytes(run.image_id, 1, 0) == env.disk_bytes(vm, 1)


@pytest.mark.parametrize("version", ["6.6.0", "6.8.0", "6.10.0", "7.4.0"])
def test_full_mode_each_version_keeps_no_snapshot(benv, version):
    env = benv
    vm_id = 21 + ["6.6.0", "6.8.0", "6.10.0", "7.4.0"].index(version)
    runner = env.lab.runner(version)
    try:
        vm = env.vm_with_disks(vm_id, sizes=(16, 8), mode="FULL")
        env.write(vm, 0, os.urandom(MiB), 3 * MiB)
        run = env.bds.backup(runner, vm, [0, 1], live=False)
        assert run.ok, f"{run.pre}\n{run.post}"
        assert env.bds.restored_bytes(run.image_id, 0) == env.disk_bytes(vm, 0)
        assert env.bds.restored_bytes(run.image_id, 1) == env.disk_bytes(vm, 1)
        for res in (f"one-vm-{vm_id}-disk-0", f"one-image-{101 + vm_id * 2}"):
            assert not {s for s in env.snapshots(res) if s.startswith("linstor_un-")}
        folder = env.bds.root / str(vm_id) / run.source
        # a full backup holds what is written, not the zeros
        assert (folder / "disk.0.0").stat().st_size < 2 * MiB
        assert not env.lab.host("node1").path(f"/var/lib/one/datastores/{SYSTEM_DS}/{vm_id}/backup").exists()
    finally:
        env.lab.runner(env.lab.config.version)


def test_bad_arguments_are_one_line_errors(benv):
    env = benv
    script = env.r.remotes / "tm" / "linstor_un" / "prebackup"
    for args, stdin, words in (
            (["node1:/var/lib/one//datastores/101/30", "0:x", "one-30", "-", "30", "101"], b"<VM/>", "disk ids"),
            (["node1:/var/lib/one//datastores/101/31", "0", "one-30", "-", "30", "101"], b"<VM/>", "not VM 30"),
            (["node1:/var/lib/one//datastores/101/30", "0", "one-30", "-", "30", "101"], b"", "no VM XML")):
        result = env.r._run(f"{script} {' '.join(args)}", stdin=stdin)
        assert result.rc != 0
        errors = [ln for ln in result.stderr.strip().splitlines() if not ln.startswith("INFO")]
        assert len(errors) == 1 and words in errors[0], result.stderr
