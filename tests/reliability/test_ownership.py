"""A name is not proof of ownership (issue 14): volumes and snapshots with the expected name that
this driver did not make for exactly this object are never replaced, reused or deleted; argv
that disagrees with itself or with oned changes nothing. Each test asserts bytes and LINSTOR
state after the refusal."""
from __future__ import annotations

import base64
import os
import time

import pytest

from lab.lab import FRONTEND, IMAGE_DS, SYSTEM_DS
from lab.oned import Disk, Image, to_xml
from lab.runner import ds_action_data

from tests.tm.conftest import PATTERN, Env, disk_path

OTHER = os.urandom(4096)          # what someone else's volume holds


@pytest.fixture
def env(lab):
    return Env(lab)


def ok(result):
    assert result.ok, str(result)
    return result


def refused(result, *words):
    assert not result.ok, str(result)
    assert result.stdout == ""
    last = result.stderr.strip().splitlines()[-1]
    for w in words:
        assert w in last, last
    return last


def foreign_volume(env, name: str, props: dict, data: bytes = OTHER, snapshot: str = "") -> str:
    """A volume made outside this driver's action (another OpenNebula, an operator, an earlier
    incarnation of the object), holding `data`, maybe with a snapshot."""
    import linstor
    with env.lab.client() as c:
        c.resource_dfn_create(name)
        c.volume_dfn_create(name, 32 * 1024)
        c.resource_create([linstor.ResourceData("node2", name, storage_pool="data")])
        if props:
            c.resource_dfn_modify(name, props)
    env.lab.write_device("node2", f"/dev/drbd/by-res/{name}/0", data)
    if snapshot:
        with env.lab.client() as c:
            c.snapshot_create(["node2"], name, snapshot)
    return name


def intact(env, name: str, props: dict, data: bytes = OTHER, snapshots: tuple = ()) -> None:
    rd = env.rds()[name]
    for k, v in props.items():
        assert rd.get(k) == v, (k, rd)
    with env.lab.client() as c:
        c.resource_make_available("node2", name)
        snaps = [s.name for s in c.snapshot_dfn_list_raise(filter_by_resources=[name]).snapshots]
    assert env.lab.read_device("node2", f"/dev/drbd/by-res/{name}/0", 0, len(data)) == data
    assert sorted(snaps) == sorted(snapshots)


def ds(env, action, image):
    data = ds_action_data(to_xml(image.element()), to_xml(env.lab.oned.datastores[IMAGE_DS].element()))
    return env.r.ds(action, data, image.id)


def vm_disk_scenario(scenario):
    return scenario("Ownership: a VM disk's volume name is taken (another incarnation of the VM, unmarked) - "
                    "clone, mkimage, delete",
                    "refused in one line naming it; the other volume's bytes and properties as they were, no link")


def snapshot_scenario(scenario):
    return scenario("Ownership: foreign and stale snapshots - snap_create, snap_revert, snap_delete, the base "
                    "snapshot of a snapshot-mode clone",
                    "foreign: refused, nothing changed; a killed run's own: kept; a stale base: taken again "
                    "(the VM gets the image as it is now)")


def argv_scenario(scenario):
    return scenario("Ownership: argv that disagrees with itself or oned - clone, mkimage, ln, cpds, DS rm, mvds",
                    "refused before anything is touched; the other VM's link, disk and image bytes as they were")


# ---- collisions: a restored oned database, another OpenNebula on the same controller ------------

@pytest.mark.parametrize("action", ["cp", "mkfs", "clone"])
@pytest.mark.parametrize("whose", ["restored database", "another installation", "unmarked"])
def test_a_new_image_never_replaces_a_volume_of_that_name(env, action, whose, scenario):
    sc = scenario("Ownership: a new image's volume name is taken (restored oned database, another installation, "
                  "unmarked) - DS cp, mkfs, clone",
                  "refused in one line naming it; the volume's bytes, properties and snapshot as they were")
    image_id = {"cp": 20, "mkfs": 21, "clone": 22}[action]
    res = f"one-image-{image_id}"
    props = {"restored database": {"Aux/one/linstor_un/MADE_FOR": f"image {image_id} born 1700000000"},
             "another installation": {"Aux/one/linstor_un/MADE_FOR": f"image {image_id} born 1600000000",
                                      "Aux/one/SNAPSHOT_0/DISK_SIZE": "1024"},
             "unmarked": {}}[whose]
    foreign_volume(env, res, props, snapshot="snapshot-0")
    before = env.rds()[res]
    if action == "cp":
        src = env.lab.workdir / "a.raw"
        src.write_bytes(PATTERN * 256)
        env.lab.oned.datastores[IMAGE_DS].template["SAFE_DIRS"] = str(env.lab.workdir)
        img = Image(image_id, "new", IMAGE_DS, path=str(src), size=1)
    elif action == "mkfs":
        img = Image(image_id, "new", IMAGE_DS, size=16, fs="ext4", type=2)
    else:
        base = env.image(23, data=PATTERN)
        img = Image(image_id, "new", IMAGE_DS, path=base.source, size=32)
    sc.run()
    last = refused(ds(env, action, img), res, "nothing was changed", "delete it")
    assert ("carries no linstor_un mark" in last) == (whose == "unmarked")
    assert env.rds()[res] == before
    intact(env, res, props, snapshots=("snapshot-0",))


@pytest.mark.parametrize("action", ["clone", "mkimage"])
def test_a_vm_disk_never_replaces_or_reuses_another_vms_volume_of_that_name(env, action, scenario):
    """VM 30 of a restored database (another STIME) gets disk 0: one-vm-30-disk-0 is the old VM's."""
    props = {"Aux/one/VM_ID": "30", "Aux/one/DISK_ID": "0", "Aux/one/DS_ID": str(SYSTEM_DS),
             "Aux/one/linstor_un/MADE_FOR": "vm 30 born 1600000000 disk 0"}
    foreign_volume(env, "one-vm-30-disk-0", props)
    img = env.image(31, data=PATTERN)
    env.vm(30, [Disk(0, IMAGE_DS, image_id=31, source=img.source, size=32) if action == "clone"
                else Disk(0, SYSTEM_DS, size=32)])
    vm_disk_scenario(scenario).run()
    result = env.clone(img, 30, 0) if action == "clone" else \
        env.r.tm("mkimage", 32, "raw", f"node1:{disk_path(30, 0)}", 30, SYSTEM_DS)
    refused(result, "one-vm-30-disk-0", "vm 30 born 1600000000 disk 0", "nothing was changed")
    intact(env, "one-vm-30-disk-0", props)
    assert env.link("node1", disk_path(30, 0)) == ""                 # no link to the old VM's data


def test_an_unmarked_vm_disk_of_that_name_is_refused_too(env, scenario):
    """The same name, no linstor_un mark at all (made by hand or by another tool)."""
    foreign_volume(env, "one-vm-32-disk-0", {"Aux/one/VM_ID": "32", "Aux/one/DISK_ID": "0"})
    img = env.image(33, data=PATTERN)
    env.vm(32, [Disk(0, IMAGE_DS, image_id=33, source=img.source, size=32)])
    vm_disk_scenario(scenario).run()
    refused(env.clone(img, 32, 0), "one-vm-32-disk-0", "carries no linstor_un mark")
    intact(env, "one-vm-32-disk-0", {"Aux/one/VM_ID": "32"})


def test_delete_leaves_a_volume_made_for_another_incarnation(env, scenario):
    props = {"Aux/one/VM_ID": "34", "Aux/one/DISK_ID": "0", "Aux/one/DS_ID": str(SYSTEM_DS),
             "Aux/one/linstor_un/MADE_FOR": "vm 34 born 1600000000 disk 0"}
    foreign_volume(env, "one-vm-34-disk-0", props)
    img = env.image(35, data=PATTERN)
    env.vm(34, [Disk(0, IMAGE_DS, image_id=35, source=img.source, size=32)])
    vm_disk_scenario(scenario).run()
    refused(env.r.tm("delete", f"node1:{disk_path(34, 0)}", 34, SYSTEM_DS), "not deleting it")
    intact(env, "one-vm-34-disk-0", props)


# ---- foreign and stale snapshots ----------------------------------------------------------------

def test_snap_create_never_keeps_a_snapshot_it_did_not_take(env, scenario):
    img = env.image(40, data=PATTERN)
    env.vm(40, [Disk(0, IMAGE_DS, image_id=40, source=img.source, size=32)])
    ok(env.clone(img, 40, 0))
    with env.lab.client() as c:                      # someone's snapshot-0, of other bytes
        env.lab.write_device("node1", disk_path(40, 0), OTHER)
        c.snapshot_create([], "one-vm-40-disk-0", "snapshot-0")
    env.lab.write_device("node1", disk_path(40, 0), PATTERN)
    snapshot_scenario(scenario).run()
    refused(env.r.tm("snap_create", f"node1:{disk_path(40, 0)}", 0, 40, IMAGE_DS), "snapshot-0",
            "someone else", "nothing was changed")
    assert "Aux/one/linstor_un/SNAPSHOT/snapshot-0" not in env.rds()["one-vm-40-disk-0"]
    assert "Aux/one/SNAPSHOT_0/DISK_SIZE" not in env.rds()["one-vm-40-disk-0"]
    # and a snap_revert 0 that oned might still ask for never restores the foreign bytes as ours
    assert env.read("node1", disk_path(40, 0)) == PATTERN


def test_snap_create_keeps_the_snapshot_a_killed_run_of_it_took(env, scenario):
    """A retry of snap_create after a kill between the snapshot and the size record: the snapshot
    carries this disk's token, so it is the one this action took: kept, not taken again."""
    img = env.image(41, data=PATTERN)
    vm = env.vm(41, [Disk(0, IMAGE_DS, image_id=41, source=img.source, size=32)])
    ok(env.clone(img, 41, 0))
    env.lab.linstor.add_fault(r"/resource-definitions/one-vm-41-disk-0$", "rc", method="PUT", skip=1,
                              ret_code=-4611686018427387102, message="lost the size record")
    env.r.tm("snap_create", f"node1:{disk_path(41, 0)}", 0, 41, IMAGE_DS)
    env.lab.linstor.clear_faults()
    with env.lab.client() as c:
        first = [s.uuid for s in c.snapshot_dfn_list_raise(filter_by_resources=["one-vm-41-disk-0"]).snapshots]
    env.lab.write_device("node1", disk_path(41, 0), OTHER)            # not what snapshot-0 should hold
    snapshot_scenario(scenario).run()
    ok(env.r.tm("snap_create", f"node1:{disk_path(41, 0)}", 0, 41, IMAGE_DS))
    with env.lab.client() as c:
        again = [s.uuid for s in c.snapshot_dfn_list_raise(filter_by_resources=["one-vm-41-disk-0"]).snapshots]
    assert first == again and len(again) == 1
    vm.lcm_state = "DISK_SNAPSHOT_REVERT_POWEROFF"
    ok(env.r.tm("snap_revert", f"node1:{disk_path(41, 0)}", 0, 41, IMAGE_DS))
    assert env.read("node1", disk_path(41, 0)) == PATTERN


def test_revert_and_delete_refuse_a_snapshot_taken_for_another_incarnation(env, scenario):
    sc = snapshot_scenario(scenario)
    img = env.image(42, data=PATTERN)
    vm = env.vm(42, [Disk(0, IMAGE_DS, image_id=42, source=img.source, size=32)])
    ok(env.clone(img, 42, 0))
    ok(env.r.tm("snap_create", f"node1:{disk_path(42, 0)}", 0, 42, IMAGE_DS))
    with env.lab.client() as c:                      # the mark an earlier VM 42 of a restored oned left
        c.snapshot_dfn_modify("one-vm-42-disk-0", "snapshot-0", {
            "Aux/one/linstor_un/SNAPSHOT/snapshot-0": "vm 42 born 1600000000 disk 0 snapshot snapshot-0"})
    env.lab.write_device("node1", disk_path(42, 0), OTHER)
    vm.lcm_state = "DISK_SNAPSHOT_REVERT_POWEROFF"
    sc.run()
    refused(env.r.tm("snap_revert", f"node1:{disk_path(42, 0)}", 0, 42, IMAGE_DS), "vm 42 born 1600000000")
    assert env.read("node1", disk_path(42, 0)) == OTHER            # not reverted
    vm.lcm_state = "DISK_SNAPSHOT_DELETE_POWEROFF"
    sc.run()
    refused(env.r.tm("snap_delete", f"node1:{disk_path(42, 0)}", 0, 42, IMAGE_DS), "vm 42 born 1600000000")
    with env.lab.client() as c:
        assert [s.name for s in c.snapshot_dfn_list_raise(filter_by_resources=["one-vm-42-disk-0"]).snapshots] \
            == ["snapshot-0"]


def test_a_stale_base_snapshot_is_taken_again_and_a_foreign_one_refused(lab, scenario):
    """CLONE_MODE=snapshot: the image's base snapshot is named after the clone. One an earlier VM
    45 left (linstor_un's token, another STIME) holds old bytes: it is taken again, and the VM gets
    the image as it is now. One without any token is somebody else's: refused."""
    env = Env(lab)
    sc = snapshot_scenario(scenario)
    lab.oned.datastores[SYSTEM_DS].template["CLONE_MODE"] = "snapshot"
    img = env.image(45, data=OTHER)
    with lab.client() as c:
        c.resource_dfn_modify("one-image-45", {
            "Aux/one/linstor_un/SNAPSHOT/one-vm-45-disk-0": "vm 45 born 1600000000 disk 0 snapshot one-vm-45-disk-0"})
        c.snapshot_create([], "one-image-45", "one-vm-45-disk-0")          # the stale base, of OTHER
        c.resource_dfn_modify("one-image-45", {}, delete_props=["Aux/one/linstor_un/SNAPSHOT/one-vm-45-disk-0"])
    node = next(n for n, f in env.replicas("one-image-45").items() if "DISKLESS" not in f)
    lab.write_device(node, "/dev/drbd/by-res/one-image-45/0", PATTERN)   # the image now
    env.vm(45, [Disk(0, IMAGE_DS, image_id=45, source=img.source, size=32)])
    sc.run()
    ok(env.clone(img, 45, 0))
    assert env.read("node1", disk_path(45, 0)) == PATTERN

    with lab.client() as c:
        c.snapshot_create([], "one-image-45", "one-vm-46-disk-0")          # someone's, no token
    env.vm(46, [Disk(0, IMAGE_DS, image_id=45, source=img.source, size=32)])
    sc.run()
    refused(env.clone(img, 46, 0), "one-vm-46-disk-0", "someone else")
    assert "one-vm-46-disk-0" not in env.rds()
    with lab.client() as c:
        names = [s.name for s in c.snapshot_dfn_list_raise(filter_by_resources=["one-image-45"]).snapshots]
    assert "one-vm-46-disk-0" in names                                    # left as it was


# ---- argv that disagrees with itself or with oned -----------------------------------------------

def test_clone_and_mkimage_refuse_another_vms_path(env, scenario):
    sc = argv_scenario(scenario)
    img = env.image(50, data=PATTERN)
    env.vm(7, [Disk(0, IMAGE_DS, image_id=50, source=img.source, size=32)])
    ok(env.clone(img, 7, 0))
    env.vm(8, [Disk(0, IMAGE_DS, image_id=50, source=img.source, size=32)])
    before = env.rds()
    sc.run()
    refused(env.r.tm("clone", f"{FRONTEND}:{img.source}", f"node1:{disk_path(7, 0)}", 8, IMAGE_DS),
            "VM 7's, not VM 8's")
    sc.run()
    refused(env.r.tm("mkimage", 32, "raw", f"node1:{disk_path(7, 0)}", 8, SYSTEM_DS), "VM 7's, not VM 8's")
    sc.run()
    refused(env.r.tm("ln", f"{FRONTEND}:{img.source}", f"node1:{disk_path(7, 0)}", 8, IMAGE_DS), "VM 7's")
    assert env.rds() == before
    assert env.link("node1", disk_path(7, 0)) == "/dev/drbd/by-res/one-vm-7-disk-0/0"
    assert env.read("node1", disk_path(7, 0)) == PATTERN


def test_clone_refuses_a_source_that_is_not_the_disks_image(env, scenario):
    sc = argv_scenario(scenario)
    img, other = env.image(51, data=PATTERN), env.image(52, data=OTHER)
    env.vm(9, [Disk(0, IMAGE_DS, image_id=51, source=img.source, size=32)])
    sc.run()
    refused(env.clone(other, 9, 0), "is not the image of disk 0 of VM 9")
    assert "one-vm-9-disk-0" not in env.rds()


def test_cpds_never_writes_into_a_vm_disk_or_the_disks_own_image(env, scenario):
    sc = argv_scenario(scenario)
    img = env.image(53, data=PATTERN)
    env.vm(10, [Disk(0, IMAGE_DS, image_id=53, source=img.source, size=32)])
    env.vm(11, [Disk(0, IMAGE_DS, image_id=53, source=img.source, size=32)])
    ok(env.clone(img, 10, 0))
    ok(env.clone(img, 11, 0))
    env.lab.write_device("node1", disk_path(10, 0), OTHER)
    for target, why in (("/dev/drbd/by-res/one-vm-11-disk-0/0", "not an image resource"),
                        (img.source, "own image")):
        sc.run()
        refused(env.r.tm("cpds", f"node1:{disk_path(10, 0)}", target, -1, 10, IMAGE_DS), why)
    assert env.read("node1", disk_path(11, 0)) == PATTERN
    node = next(n for n, f in env.replicas("one-image-53").items() if "DISKLESS" not in f)
    assert env.lab.read_device(node, img.source) == PATTERN


def test_ds_rm_never_deletes_a_vm_disk_named_as_an_image_source(env, scenario):
    sc = argv_scenario(scenario)
    img = env.image(54, data=PATTERN)
    env.vm(12, [Disk(0, IMAGE_DS, image_id=54, source=img.source, size=32)])
    ok(env.clone(img, 12, 0))
    bogus = Image(55, "bogus", IMAGE_DS, source="/dev/drbd/by-res/one-vm-12-disk-0/0", size=32)
    sc.run()
    refused(ds(env, "rm", bogus), "not deleting it")
    assert "one-vm-12-disk-0" in env.rds()
    assert env.read("node1", disk_path(12, 0)) == PATTERN


def test_mvds_refuses_a_source_that_is_not_the_disks_image(env, scenario):
    sc = argv_scenario(scenario)
    img = env.image(56, data=PATTERN, persistent=True)
    other = env.image(57, data=OTHER, persistent=True)
    env.vm(13, [Disk(0, IMAGE_DS, image_id=56, source=img.source, size=32, persistent=True)])
    ok(env.r.tm("ln", f"{FRONTEND}:{img.source}", f"node1:{disk_path(13, 0)}", 13, IMAGE_DS))
    sc.run()
    refused(env.r.tm("mvds", f"node1:{disk_path(13, 0)}", other.source, 13, IMAGE_DS),
            "is not the image of disk 0 of VM 13")
    assert env.link("node1", disk_path(13, 0)) == "/dev/drbd/by-res/one-image-56/0"
    assert env.rds()["one-image-56"].get("Aux/one/VM_ID") == "13"


# ---- monitoring: one odd object never hides the datastore ---------------------------------------

def test_monitoring_survives_odd_properties_and_reports_a_disk_once(env, scenario):
    sc = scenario("Monitoring: VM/disk properties that do not parse ('\u00b2', '\u0663'), a disk claimed twice",
                  "capacity still reported; the odd definitions named in the log; the VM's disk reported once")
    img = env.image(60, data=PATTERN)
    env.vm(60, [Disk(0, IMAGE_DS, image_id=60, source=img.source, size=32)])
    ok(env.clone(img, 60, 0))
    with env.lab.client() as c:
        for name, vm_id in (("odd-super", "\u00b2"), ("odd-arabic", "\u0663"), ("copy-of-60", "60")):
            c.resource_dfn_create(name, resource_group="one_rg")
            c.resource_dfn_modify(name, {"Aux/one/VM_ID": vm_id, "Aux/one/DS_ID": str(SYSTEM_DS),
                                         "Aux/one/DISK_ID": "0"})
    data = ds_action_data("", to_xml(env.lab.oned.datastores[SYSTEM_DS].element()),
                          "<MONITOR_VM_DISKS>1</MONITOR_VM_DISKS>")
    env.lab.monitor.messages.clear()
    sc.run()
    result = ok(env.r.tm_monitor(data, SYSTEM_DS))
    assert "TOTAL_MB=" in result.stdout and "odd-super" in result.stderr and "odd-arabic" in result.stderr
    deadline = time.time() + 5
    while not env.lab.monitor.messages and time.time() < deadline:
        time.sleep(0.05)
    payload = env.lab.monitor.messages[-1]["payload"]
    vm60 = [line for line in payload.replace(" ]", " ]\n").splitlines() if "ID = 60," in line]
    assert len(vm60) == 1
    monitor = base64.b64decode(vm60[0].split('MONITOR = "')[1].split('"')[0]).decode()
    assert monitor.count("DISK_SIZE=[ID=0,") == 1


def test_a_temporary_name_taken_by_someone_else_is_never_deleted(env, scenario):
    """cpds of a snapshot restores it into <disk>-tmp: a volume of that name that is not a
    temporary copy linstor_un made stops it; that volume stays as it was."""
    sc = argv_scenario(scenario)
    env.lab.oned.datastores[IMAGE_DS].template["REPLICA_COUNT"] = "1"     # a copy through the host
    img = env.image(58, data=PATTERN)
    env.vm(14, [Disk(0, IMAGE_DS, image_id=58, source=img.source, size=32)])
    ok(env.clone(img, 14, 0))
    ok(env.r.tm("snap_create", f"node1:{disk_path(14, 0)}", 0, 14, IMAGE_DS))
    props = {"Aux/one/linstor_un/MADE_FOR": "image 99 born 1600000000"}
    foreign_volume(env, "one-vm-14-disk-0-tmp", props)
    env.save_as_target(59)
    sc.run()
    refused(env.r.tm("cpds", f"node1:{disk_path(14, 0)}", "/dev/drbd/by-res/one-image-59/0", 0, 14, IMAGE_DS),
            "one-vm-14-disk-0-tmp", "not a temporary copy")
    intact(env, "one-vm-14-disk-0-tmp", props)


@pytest.mark.parametrize("action", ["mkfs", "mkimage"])
def test_a_volume_of_that_name_made_between_the_check_and_the_create_is_never_undone(env, action, scenario):
    """Another OpenNebula on this controller makes a volume of the name after the action looked and
    before its create reached LINSTOR: the create is refused, and the action's undo leaves that
    volume alone (it carries another installation's mark), bytes and properties."""
    import re
    sc = scenario("Ownership: a volume of the name appears between the action's check and its create (another "
                  "installation) - DS mkfs, TM mkimage",
                  "the action fails in one line; its undo leaves the other volume as it was")
    res = {"mkfs": "one-image-24", "mkimage": "one-vm-15-disk-0"}[action]
    props = {"Aux/one/linstor_un/MADE_FOR": "image 24 born 1600000000" if action == "mkfs" else
             "vm 15 born 1600000000 disk 0"}
    create = r"/resource-groups/[^/]+/spawn$|/resource-definitions$"
    env.lab.linstor.add_fault(create, "delay", method="POST", seconds=2)
    made: dict = {}

    def other_installation() -> bool:              # polled while the action runs: never kills it
        if not made and any(r["method"] == "POST" and re.search(create, r["path"])
                            for r in env.lab.linstor.requests()):
            made["at"] = foreign_volume(env, res, props)
        return False
    sc.run()
    if action == "mkfs":
        img = Image(24, "new", IMAGE_DS, size=16, type=2)
        data = ds_action_data(to_xml(img.element()), to_xml(env.lab.oned.datastores[IMAGE_DS].element()))
        result = env.r.ds("mkfs", data, 24, kill_when=other_installation)
    else:
        env.vm(15, [Disk(0, SYSTEM_DS, size=32)])
        result = env.r.tm("mkimage", 32, "raw", f"node1:{disk_path(15, 0)}", 15, SYSTEM_DS,
                          kill_when=other_installation)
    env.lab.linstor.clear_faults()
    assert made, "the other installation's volume was not made while the action ran"
    assert not result.ok, str(result)
    assert "is not the volume this action made" in result.stderr, result.stderr
    intact(env, res, props)
