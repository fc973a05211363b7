"""TM cpds (disk save-as) after DS mkfs, as oned runs it: LINSTOR's own copy (clone of a stopped
disk, restore of a snapshot) where the image datastore would place the image there, the host
copy otherwise, and what a failure leaves."""
from __future__ import annotations

from lab.lab import IMAGE_DS
from lab.oned import Disk

from .conftest import PATTERN, disk_path

MADE_FOR = "Aux/one/linstor_un/MADE_FOR"
BUILDING = "Aux/one/linstor_un/BUILDING"


def stopped_vm_with_disk(env, vm_id, image_id):
    img = env.image(image_id, data=PATTERN)
    env.vm(vm_id, [Disk(0, IMAGE_DS, image_id=image_id, source=img.source, size=32)], lcm="LCM_INIT",
           state="POWEROFF")
    assert env.clone(img, vm_id, 0).ok
    return f"one-vm-{vm_id}-disk-0"


def cpds(env, vm_id, target, snap=-1, host="node1"):
    return env.r.tm("cpds", f"{host}:{disk_path(vm_id, 0)}", target.source, snap, vm_id, IMAGE_DS)


def clone_requests(env, src):
    return [r for r in env.lab.linstor.requests() if r["method"] == "POST" and r["path"].endswith(f"/{src}/clone")]


def diskful(env, res):
    return {n for n, f in env.replicas(res).items() if "DISKLESS" not in f}


def test_save_as_of_a_stopped_disk_is_linstors_clone(env):
    disk = stopped_vm_with_disk(env, 60, 600)
    env.lab.write_device("node1", disk_path(60, 0), b"W" * 4096, 8192)
    target = env.save_as_volume(601, 32)
    mkfs_mark = env.rds()["one-image-601"][MADE_FOR]
    for node in ("node1", "node2", "node3"):
        env.lab.fail_command(node, "dd")               # no byte may go through a host
    try:
        result = cpds(env, 60, target)
    finally:
        env.lab.clear_command_faults()
    assert result.ok, str(result)
    assert f"one-image-601 copied by LINSTOR (resource-definition clone of {disk})" in result.stderr
    assert len(clone_requests(env, disk)) == 1
    props = env.rds()["one-image-601"]
    assert props[MADE_FOR] == mkfs_mark and BUILDING not in props
    assert not any(k in props for k in ("Aux/one/VM_ID", "Aux/one/DISK_ID"))
    node = sorted(diskful(env, "one-image-601"))[0]
    dev = "/dev/drbd/by-res/one-image-601/0"
    assert env.lab.read_device(node, dev) == PATTERN
    assert env.lab.read_device(node, dev, 8192, 4096) == b"W" * 4096
    assert diskful(env, "one-image-601") == diskful(env, disk)
    again = cpds(env, 60, target)                      # oned's retry: the same result
    assert again.ok, str(again)
    assert env.lab.read_device(node, dev, 8192, 4096) == b"W" * 4096


def test_save_as_of_a_snapshot_is_linstors_restore(env):
    disk = stopped_vm_with_disk(env, 61, 602)
    assert env.r.tm("snap_create", f"node1:{disk_path(61, 0)}", 0, 61, IMAGE_DS).ok
    env.lab.write_device("node1", disk_path(61, 0), b"N" * 4096)     # after the snapshot
    target = env.save_as_volume(603, 32)
    result = cpds(env, 61, target, snap=0)
    assert result.ok, str(result)
    assert f"copied by LINSTOR (snapshot restore of {disk}/snapshot-0)" in result.stderr
    props = env.rds()["one-image-603"]
    assert props[MADE_FOR].startswith("image 603 born ") and BUILDING not in props
    assert not any(k.startswith("Aux/one/") and k.endswith(("VM_ID", "DISK_ID")) for k in props), props
    node = sorted(diskful(env, "one-image-603"))[0]
    assert env.lab.read_device(node, "/dev/drbd/by-res/one-image-603/0") == PATTERN
    assert env.read("node1", disk_path(61, 0)) == b"N" * 4096       # the disk is untouched
    assert f"{disk}-tmp" not in env.rds()


def test_save_as_goes_through_a_host_when_the_image_datastore_places_otherwise(env):
    env.lab.oned.datastores[IMAGE_DS].template.update(RESOURCE_GROUP="", REPLICA_COUNT="1", STORAGE_POOL="data")
    disk = stopped_vm_with_disk(env, 62, 604)
    target = env.save_as_volume(605, 32)
    result = cpds(env, 62, target)
    assert result.ok, str(result)
    assert "one-image-605 copied through node1 (the image has 2 replicas, the datastore places 1)" in result.stderr
    assert clone_requests(env, disk) == []
    assert len(diskful(env, "one-image-605")) == 1
    node = sorted(diskful(env, "one-image-605"))[0]
    assert env.lab.read_device(node, "/dev/drbd/by-res/one-image-605/0") == PATTERN


def test_a_failed_linstor_copy_falls_back_and_a_double_failure_leaves_mkfs_volume(env):
    stopped_vm_with_disk(env, 63, 606)
    target = env.save_as_volume(607, 32)
    env.lab.linstor.add_fault("/clone$", "rc", method="POST", ret_code=-4611686018407201820,
                              message="Clone of this storage provider is not supported")
    result = cpds(env, 63, target)
    assert result.ok, str(result)
    assert "copied through node1 (LINSTOR's clone failed" in result.stderr or \
        "copied through node1 (LINSTOR's copy failed" in result.stderr, result.stderr
    node = sorted(diskful(env, "one-image-607"))[0]
    assert env.lab.read_device(node, "/dev/drbd/by-res/one-image-607/0") == PATTERN

    target = env.save_as_volume(608, 32)
    mkfs_props = env.rds()["one-image-608"]
    env.lab.linstor.add_fault("/clone$", "rc", method="POST", ret_code=-4611686018407201820,
                              message="Clone of this storage provider is not supported")
    env.lab.fail_command("node1", "dd")
    try:
        result = cpds(env, 63, target)
    finally:
        env.lab.clear_command_faults()
    assert result.rc != 0 and "injected failure: dd" in result.stderr, str(result)
    props = env.rds()["one-image-608"]                  # mkfs's volume is back, marked as mkfs left it
    assert props[MADE_FOR] == mkfs_props[MADE_FOR]
    assert not [r for r in env.rds() if r.startswith("one-vm-63-disk-0-")]
    again = cpds(env, 63, target)                        # oned's retry: LINSTOR's copy this time
    assert again.ok, str(again)
