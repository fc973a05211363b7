"""TM clone: copy and snapshot modes, bytes, properties, links, retries, rollback."""
from __future__ import annotations

from lab.lab import IMAGE_DS, SYSTEM_DS
from lab.oned import Disk

from .conftest import PATTERN, disk_path


def test_clone_copy_mode_copies_bytes_and_links(env):
    img = env.image(3, data=PATTERN)
    env.vm(5, [Disk(0, IMAGE_DS, image_id=3, source=img.source, size=64)])
    result = env.clone(img, 5, 0)
    assert result.ok, str(result)
    assert result.stdout == ""
    props = env.rds()["one-vm-5-disk-0"]
    assert props["Aux/one/VM_ID"] == "5" and props["Aux/one/DISK_ID"] == "0"
    assert props["Aux/one/DS_ID"] == str(SYSTEM_DS)
    path = disk_path(5, 0)
    assert env.link("node1", path) == "/dev/drbd/by-res/one-vm-5-disk-0/0"
    assert env.read("node1", path) == PATTERN
    assert env.read("node1", path, 1 << 20) == PATTERN
    size = int(env.lab.host("node1").run_inside(f"blockdev --getsize64 {path}").stdout)
    assert size == 64 << 20                     # grown to the VM disk's SIZE
    # the image's temporary replica on node1 is gone again unless node1 holds a disk of it
    image_on_node1 = env.replicas("one-image-3").get("node1")
    assert image_on_node1 is None or "DISKLESS" not in image_on_node1 or "TIE_BREAKER" in image_on_node1


def test_clone_snapshot_mode(env):
    env.lab.oned.datastores[SYSTEM_DS].template["CLONE_MODE"] = "snapshot"
    img = env.image(4, data=PATTERN)
    env.vm(6, [Disk(0, IMAGE_DS, image_id=4, source=img.source, size=64)])
    result = env.clone(img, 6, 0, host="node3")
    assert result.ok, str(result)
    assert env.read("node3", disk_path(6, 0)) == PATTERN
    with env.lab.client() as c:
        snaps = [s.snapshot_name for s in c.snapshot_dfn_list_raise(filter_by_resources=["one-image-4"]).snapshots]
    assert snaps == ["one-vm-6-disk-0"]


def test_clone_twice_is_harmless(env):
    img = env.image(7, data=PATTERN)
    env.vm(8, [Disk(0, IMAGE_DS, image_id=7, source=img.source, size=32)])
    assert env.clone(img, 8, 0).ok
    again = env.clone(img, 8, 0)
    assert again.ok, str(again)
    assert env.read("node1", disk_path(8, 0)) == PATTERN


def test_clone_fails_cleanly_when_placement_fails(env):
    img = env.image(9, data=PATTERN)
    env.vm(10, [Disk(0, IMAGE_DS, image_id=9, source=img.source, size=32)])
    before = set(env.rds())
    env.lab.linstor.add_fault("/autoplace$|/spawn$", "rc", method="POST", ret_code=-4611686018407201820,
                              message="Not enough available nodes")
    result = env.clone(img, 10, 0)
    assert result.rc != 0
    assert "Not enough available nodes" in result.stderr
    assert set(env.rds()) == before
    assert env.link("node1", disk_path(10, 0)) == ""
