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


from linstor_un.linstor_api import UNMARKED_CLONES as OLD_CLONE  # noqa: E402


def clones_are_born_marked(env) -> bool:
    """LINSTOR 1.32+ (REST 1.26) sets a clone's properties with the clone itself; before, TM clone
    copies through the host (a killed clone would leave a volume nobody can prove is its own)."""
    from lab.linstor_emu.versions import parse
    return parse(env.lab.config.linstor_version) >= (1, 32, 0)


def host_copy_placement(env):
    """A system datastore placement LINSTOR's clone of a two-replica image would not give (one
    replica, by count): the copy goes through the VM's host."""
    env.lab.oned.datastores[SYSTEM_DS].template.update(RESOURCE_GROUP="", REPLICA_COUNT="1", STORAGE_POOL="data")


def test_clone_copy_mode_is_linstors_own_clone_when_the_placement_matches(env):
    img = env.image(30, data=PATTERN)
    env.vm(31, [Disk(0, IMAGE_DS, image_id=30, source=img.source, size=64)])
    with env.lab.client() as c:
        c.resource_dfn_modify("one-image-30", {"Aux/one/linstor_un/MADE_FOR": "image 30 born 1"})
    native = clones_are_born_marked(env)
    if native:
        env.lab.fail_command("node1", "dd")       # no byte may go through the host
    try:
        result = env.clone(img, 31, 0)
    finally:
        env.lab.clear_command_faults()
    assert result.ok, str(result)
    clones = [r for r in env.lab.linstor.requests() if r["method"] == "POST" and r["path"].endswith("/clone")]
    if not native:
        assert f"copied through node1 ({OLD_CLONE})" in result.stderr and clones == []
        return
    assert "copied by LINSTOR (resource-definition clone of one-image-30)" in result.stderr
    assert len(clones) == 1
    path = disk_path(31, 0)
    assert env.read("node1", path) == PATTERN and env.read("node1", path, 1 << 20) == PATTERN
    assert int(env.lab.host("node1").run_inside(f"blockdev --getsize64 {path}").stdout) == 64 << 20
    props = env.rds()["one-vm-31-disk-0"]
    assert props["Aux/one/VM_ID"] == "31" and props["Aux/one/linstor_un/MADE_FOR"].startswith("vm 31 ")
    assert "Aux/one/linstor_un/BUILDING" not in props
    # on the image's nodes and pools, as the datastore's resource group would place it
    assert {n for n, f in env.replicas("one-vm-31-disk-0").items() if "DISKLESS" not in f} == \
        {n for n, f in env.replicas("one-image-30").items() if "DISKLESS" not in f}


def test_clone_copy_goes_through_the_host_when_linstors_clone_would_place_it_otherwise(env):
    host_copy_placement(env)
    img = env.image(32, data=PATTERN)
    env.vm(33, [Disk(0, IMAGE_DS, image_id=32, source=img.source, size=32)])
    result = env.clone(img, 33, 0)
    assert result.ok, str(result)
    why = "the image has 2 replicas, the datastore places 1" if clones_are_born_marked(env) else OLD_CLONE
    assert f"copied through node1 ({why})" in result.stderr
    assert env.read("node1", disk_path(33, 0)) == PATTERN
    assert len([f for f in env.replicas("one-vm-33-disk-0").values() if "DISKLESS" not in f]) == 1


def test_a_refused_linstor_clone_falls_back_to_the_host_copy(env):
    img = env.image(34, data=PATTERN)
    env.vm(35, [Disk(0, IMAGE_DS, image_id=34, source=img.source, size=32)])
    env.lab.linstor.add_fault("/clone$", "rc", method="POST", ret_code=-4611686018407201820,
                              message="Clone of this storage provider is not supported")
    result = env.clone(img, 35, 0)
    assert result.ok, str(result)
    if clones_are_born_marked(env):
        assert "copied through node1 (LINSTOR's clone failed" in result.stderr and "not supported" in result.stderr
    else:
        assert f"copied through node1 ({OLD_CLONE})" in result.stderr
    assert env.read("node1", disk_path(35, 0)) == PATTERN


def test_a_clone_that_fails_both_ways_leaves_nothing(env):
    img = env.image(36, data=PATTERN)
    env.vm(37, [Disk(0, IMAGE_DS, image_id=36, source=img.source, size=32)])
    before = set(env.rds())
    env.lab.linstor.add_fault("/clone$", "rc", method="POST", ret_code=-4611686018407201820,
                              message="Not enough free space")
    env.lab.fail_command("node1", "dd")
    try:
        result = env.clone(img, 37, 0)
    finally:
        env.lab.clear_command_faults()
    assert result.rc != 0 and "injected failure: dd" in result.stderr, str(result)
    assert set(env.rds()) == before
    assert env.link("node1", disk_path(37, 0)) == ""
    again = env.clone(img, 37, 0)                 # the retry oned would run
    assert again.ok, str(again)
    assert env.read("node1", disk_path(37, 0)) == PATTERN


def test_clone_fails_cleanly_when_placement_fails(env):
    host_copy_placement(env)
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
