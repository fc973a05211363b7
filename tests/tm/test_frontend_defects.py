"""Defects a real OpenNebula front-end showed (issue 16, part 3), each reproduced in the lab."""
from __future__ import annotations

import os

from lab.lab import FRONTEND, IMAGE_DS, SYSTEM_DS
from lab.oned import Disk, History, to_xml

from .conftest import PATTERN, SYS, disk_path

CHECKPOINT = os.urandom(300 * 1024)


def ok(result):
    assert result.ok, str(result)
    return result


def files(env, host: str, vm_id: int) -> dict[str, str]:
    """name -> 'link' or the file's bytes (hex digest) in the VM directory on a host."""
    out = env.lab.host(host).run_inside(
        f"cd {SYS}/{vm_id} 2>/dev/null || exit 0; for f in *; do [ -e \"$f\" ] || [ -L \"$f\" ] || continue; "
        f"if [ -L \"$f\" ]; then echo \"$f link\"; else echo \"$f $(sha256sum < \"$f\" | cut -c1-16)\"; fi; done")
    return dict(line.split(" ", 1) for line in out.stdout.decode().splitlines())


def digest(data: bytes) -> str:
    import hashlib
    return hashlib.sha256(data).hexdigest()[:16]


def vm_with_checkpoint_file(env, vm_id: int, host: str = "node1"):
    """A VM whose hypervisor driver (the qemu VM_MAD without our override) saved its memory as a
    file in the VM directory, as the stock kvm `save` does."""
    img = env.image(vm_id, data=PATTERN)
    vm = env.vm(vm_id, [Disk(0, IMAGE_DS, image_id=vm_id, source=img.source, size=32)], host=host)
    ok(env.clone(img, vm_id, 0, host=host))
    env.lab.host(host).run_inside(f"cat > {SYS}/{vm_id}/checkpoint", input=CHECKPOINT)
    env.lab.host(host).run_inside(f"echo '<domain/>' > {SYS}/{vm_id}/deployment.0")
    return vm


def test_stop_and_resume_carry_a_checkpoint_file(env):
    """onevm stop then resume on another host: the memory state survives both moves (it was
    deleted with the old directory: 'RESTORE: Checkpoint file .../checkpoint not found')."""
    vm = vm_with_checkpoint_file(env, 70)
    vm.lcm_state = "EPILOG_STOP"
    ok(env.r.tm("mv", f"node1:{disk_path(70, 0)}", f"{FRONTEND}:{disk_path(70, 0)}", 70, SYSTEM_DS))
    ok(env.r.tm("mv", f"node1:{SYS}/70", f"{FRONTEND}:{SYS}/70", 70, SYSTEM_DS))
    assert files(env, FRONTEND, 70)["checkpoint"] == digest(CHECKPOINT)
    assert files(env, "node1", 70) == {}

    vm.lcm_state = "PROLOG_RESUME"
    ok(env.r.tm("mv", f"{FRONTEND}:{disk_path(70, 0)}", f"node2:{disk_path(70, 0)}", 70, SYSTEM_DS))
    ok(env.r.tm("mv", f"{FRONTEND}:{SYS}/70", f"node2:{SYS}/70", 70, SYSTEM_DS))
    on_node2 = files(env, "node2", 70)
    assert on_node2 == {"checkpoint": digest(CHECKPOINT), "deployment.0": on_node2["deployment.0"], "disk.0": "link"}
    assert env.read("node2", disk_path(70, 0)) == PATTERN


def test_cold_migration_carries_a_checkpoint_file(env):
    vm = vm_with_checkpoint_file(env, 71)
    vm.lcm_state = "PROLOG_MIGRATE_SUSPEND"
    ok(env.r.tm("mv", f"node1:{disk_path(71, 0)}", f"node2:{disk_path(71, 0)}", 71, SYSTEM_DS))
    ok(env.r.tm("mv", f"node1:{SYS}/71", f"node2:{SYS}/71", 71, SYSTEM_DS))
    assert files(env, "node2", 71)["checkpoint"] == digest(CHECKPOINT)
    assert files(env, "node1", 71) == {}


def test_a_file_that_cannot_be_carried_stops_the_move_and_stays(env):
    vm = vm_with_checkpoint_file(env, 72)
    vm.lcm_state = "PROLOG_MIGRATE_SUSPEND"
    ok(env.r.tm("mv", f"node1:{disk_path(72, 0)}", f"node2:{disk_path(72, 0)}", 72, SYSTEM_DS))
    env.lab.fail_command("node2", "tar", "No space left on device")
    result = env.r.tm("mv", f"node1:{SYS}/72", f"node2:{SYS}/72", 72, SYSTEM_DS)
    assert not result.ok
    assert "carry checkpoint, deployment.0" in result.stderr and "No space left on device" in result.stderr
    assert files(env, "node1", 72)["checkpoint"] == digest(CHECKPOINT)        # nothing lost
    env.lab.clear_command_faults()
    ok(env.r.tm("mv", f"node1:{SYS}/72", f"node2:{SYS}/72", 72, SYSTEM_DS))   # the retry completes
    assert files(env, "node2", 72)["checkpoint"] == digest(CHECKPOINT)
    assert files(env, "node1", 72) == {}


def test_a_failing_command_says_its_reason_not_its_usage_text(env):
    """mkfs.xfs on a 20 MiB volatile disk prints its reason, then 40 lines of usage: the message
    keeps the reason (it kept the last 500 characters of the usage)."""
    env.vm(73, [Disk(0, SYSTEM_DS, type="fs", fs="xfs", size=20)])
    result = env.r.tm("mkimage", 20, "raw", f"node1:{disk_path(73, 0)}", 73, SYSTEM_DS)
    assert not result.ok
    assert "Filesystem must be larger than 300MB." in result.stderr, result.stderr
    assert len(result.stderr.strip().splitlines()[-1]) < 800
    assert "one-vm-73-disk-0" not in env.rds()                  # and nothing is left


def test_snapshots_of_a_persistent_image_never_bring_back_the_vm_that_is_gone(env):
    """A persistent image snapshotted while VM 74 had it: after mvds (terminate) the image names no
    VM, and neither does it after a revert to that snapshot (a later VM 74 of a restored oned must
    not look like its owner). The snapshot keeps its copy of the image's properties of the time -
    LINSTOR cannot change it (a snapshot's PUT edits the snapshot's own properties only, 1.32+) -
    and from LINSTOR 1.31 a rollback merges that copy back: the driver puts them right after it."""
    from lab.runner import ds_action_data
    from lab.oned import Image, to_xml
    img = env.image(74, data=PATTERN, persistent=True)
    env.vm(74, [Disk(0, IMAGE_DS, image_id=74, source=img.source, size=32, persistent=True)])
    ok(env.r.tm("ln", f"{FRONTEND}:{img.source}", f"node1:{disk_path(74, 0)}", 74, IMAGE_DS))
    ok(env.r.tm("snap_create", f"node1:{disk_path(74, 0)}", 0, 74, IMAGE_DS))
    with env.lab.client() as c:
        snaps = c.snapshot_dfn_list_raise(filter_by_resources=["one-image-74"]).snapshots
        assert snaps and snaps[0].data_v1["props"].get("Aux/one/VM_ID") == "74"     # the copy the issue names
    ok(env.r.tm("mvds", f"node1:{disk_path(74, 0)}", img.source, 74, IMAGE_DS))
    owner = {"Aux/one/VM_ID", "Aux/one/DS_ID", "Aux/one/DISK_ID"}
    assert not owner & set(env.rds()["one-image-74"])
    image = Image(74, "img74", IMAGE_DS, source=img.source, size=32, target_snapshot=0, persistent=True,
                  snapshots=[{"id": 0, "active": True}])
    data = ds_action_data(to_xml(image.element()), to_xml(env.lab.oned.datastores[IMAGE_DS].element()))
    ok(env.r.ds("snap_revert", data, 74))
    props = env.rds()["one-image-74"]
    assert not owner & set(props), props
    assert "Aux/one/linstor_un/SNAPSHOT/snapshot-0" not in props       # the token the snapshot took along


SYSTEM2 = 102
SYS2 = f"/var/lib/one//datastores/{SYSTEM2}"


def second_system_ds(env):
    from lab.oned import Datastore
    env.lab.oned.add(Datastore(SYSTEM2, "linstor_system2", "SYSTEM_DS", ds_mad="-",
                               template=env.lab.datastore_template()))


def running_vm_7_4(lab, vm_id: int):
    """A VM with one cloned disk on node1 under OpenNebula 7.4's conventions, and a second system DS."""
    from .conftest import Env
    env = Env(lab)
    env.r = lab.runner("7.4.0")
    second_system_ds(env)
    img = env.image(vm_id, data=PATTERN)
    vm = env.vm(vm_id, [Disk(0, IMAGE_DS, image_id=vm_id, source=img.source, size=32)])
    ok(env.clone(img, vm_id, 0))
    return env, vm


def test_live_migration_to_another_system_datastore_with_disk_snapshots(lab):
    """OpenNebula 7.4 allows it with DS_LIVE_MIGRATE and DS_MIGRATE_SNAP (install.py sets both):
    the destination gets the new directory (and the old paths the running domain names, until
    postmigrate), the source's old directory goes, DS_ID follows, and the disk's snapshot stays
    usable."""
    env, vm = running_vm_7_4(lab, 75)
    ok(env.r.tm("snap_create", f"node1:{disk_path(75, 0)}", 0, 75, IMAGE_DS))
    env.lab.write_device("node1", disk_path(75, 0), b"\0" * 4096)          # written after the snapshot
    vm.lcm_state = "MIGRATE"
    vm.history.append(History("node2", SYSTEM2))
    xml = to_xml(vm.element())
    new_path = f"{SYS2}/75/disk.0"
    ok(env.r.migrate("premigrate", "node1", "node2", f"{SYS2}/75", 75, SYSTEM2, xml))
    assert env.link("node2", new_path) == env.link("node2", disk_path(75, 0)) == "/dev/drbd/by-res/one-vm-75-disk-0/0"
    assert env.rds()["one-vm-75-disk-0"]["Aux/one/DS_ID"] == str(SYSTEM2)
    ok(env.r.migrate("postmigrate", "node1", "node2", f"{SYS2}/75", 75, SYSTEM2, xml))
    assert lab.host("node1").run_inside(f"test -e {SYS}/75", check=False).returncode != 0
    assert lab.host("node2").run_inside(f"test -e {SYS}/75", check=False).returncode != 0   # no stray links
    assert env.read("node2", new_path) == b"\0" * 4096
    vm.lcm_state = "DISK_SNAPSHOT_REVERT_POWEROFF"
    ok(env.r.tm("snap_revert", f"node2:{new_path}", 0, 75, IMAGE_DS))
    assert env.read("node2", new_path) == PATTERN


def test_a_failed_live_migration_to_another_system_datastore_leaves_the_source_as_it_was(lab):
    env, vm = running_vm_7_4(lab, 76)
    vm.lcm_state = "MIGRATE"
    vm.history.append(History("node2", SYSTEM2))
    xml = to_xml(vm.element())
    ok(env.r.migrate("premigrate", "node1", "node2", f"{SYS2}/76", 76, SYSTEM2, xml))
    ok(env.r.migrate("failmigrate", "node1", "node2", f"{SYS2}/76", 76, SYSTEM2, xml))
    for path in (f"{SYS}/76", f"{SYS2}/76"):
        assert lab.host("node2").run_inside(f"test -e {path}", check=False).returncode != 0, path
    assert env.rds()["one-vm-76-disk-0"]["Aux/one/DS_ID"] == str(SYSTEM_DS)
    assert env.read("node1", disk_path(76, 0)) == PATTERN


def test_cold_migration_to_another_system_datastore_keeps_disk_snapshots(env):
    vm = env.vm(77, [])
    img = env.image(77, data=PATTERN)
    vm.disks.append(Disk(0, IMAGE_DS, image_id=77, source=img.source, size=32))
    ok(env.clone(img, 77, 0))
    ok(env.r.tm("snap_create", f"node1:{disk_path(77, 0)}", 0, 77, IMAGE_DS))
    second_system_ds(env)
    vm.lcm_state = "PROLOG_MIGRATE_POWEROFF"
    vm.history.append(History("node2", SYSTEM2))
    ok(env.r.tm("mv", f"node1:{disk_path(77, 0)}", f"node2:{SYS2}/77/disk.0", 77, SYSTEM2))
    ok(env.r.tm("mv", f"node1:{SYS}/77", f"node2:{SYS2}/77", 77, SYSTEM2))
    assert env.rds()["one-vm-77-disk-0"]["Aux/one/DS_ID"] == str(SYSTEM2)
    env.lab.write_device("node2", f"{SYS2}/77/disk.0", b"\0" * 4096)
    ok(env.r.tm("snap_revert", f"node2:{SYS2}/77/disk.0", 0, 77, IMAGE_DS))
    assert env.read("node2", f"{SYS2}/77/disk.0") == PATTERN


def test_a_path_outside_the_vms_system_datastore_touches_nothing(env):
    """argv names VM 78's disk in system datastore 999, where oned does not have the VM: delete
    (and every other action with a VM path) refuses before anything; the disk and its real link stay."""
    img = env.image(78, data=PATTERN)
    env.vm(78, [Disk(0, IMAGE_DS, image_id=78, source=img.source, size=32)])
    ok(env.clone(img, 78, 0))
    wrong = "/var/lib/one//datastores/999/78/disk.0"
    for args in (("delete", f"node1:{wrong}", 78, IMAGE_DS),
                 ("mvds", f"node1:{wrong}", img.source, 78, IMAGE_DS),
                 ("snap_create", f"node1:{wrong}", 0, 78, IMAGE_DS),
                 ("resize", f"node1:{wrong}", 64, 78, IMAGE_DS)):
        result = env.r.tm(*args)
        assert not result.ok and "system datastore 999; oned has VM 78 in 101" in result.stderr, str(result)
    assert "one-vm-78-disk-0" in env.rds()
    assert env.link("node1", disk_path(78, 0)) == "/dev/drbd/by-res/one-vm-78-disk-0/0"
    assert env.read("node1", disk_path(78, 0)) == PATTERN


def test_ln_of_another_vms_volume_changes_nothing_of_it(env):
    """argv's SOURCE is VM 79's disk, not VM 80's persistent image: refused; VM 79's volume keeps
    its owner properties (its own delete still works)."""
    img = env.image(79, data=PATTERN)
    env.vm(79, [Disk(0, IMAGE_DS, image_id=79, source=img.source, size=32)])
    ok(env.clone(img, 79, 0))
    pimg = env.image(80, persistent=True)
    env.vm(80, [Disk(0, IMAGE_DS, image_id=80, source=pimg.source, size=32, persistent=True)])
    before = env.rds()["one-vm-79-disk-0"]
    result = env.r.tm("ln", f"{FRONTEND}:/dev/drbd/by-res/one-vm-79-disk-0/0", f"node1:{disk_path(80, 0)}", 80,
                      IMAGE_DS)
    assert not result.ok and "is not the image of disk 0 of VM 80" in result.stderr, str(result)
    assert env.rds()["one-vm-79-disk-0"] == before
    ok(env.r.tm("delete", f"node1:{disk_path(79, 0)}", 79, IMAGE_DS))
    assert "one-vm-79-disk-0" not in env.rds()


def test_a_persistent_image_is_nobodys_after_its_vm_is_deleted(env):
    """`onevm recover --delete` (and a failed prolog) removes the disk with `delete`, not `mvds`:
    the image's owner properties go with it, so monitoring reports no disk of a VM that is gone;
    another VM's claim on the image is left as it is."""
    img = env.image(84, data=PATTERN, persistent=True)
    vm = env.vm(84, [Disk(0, IMAGE_DS, image_id=84, source=img.source, size=32, persistent=True)])
    ok(env.r.tm("ln", f"{FRONTEND}:{img.source}", f"node1:{disk_path(84, 0)}", 84, IMAGE_DS))
    assert env.rds()["one-image-84"]["Aux/one/VM_ID"] == "84"
    vm.lcm_state = "CLEANUP_DELETE"
    ok(env.r.tm("delete", f"node1:{disk_path(84, 0)}", 84, SYSTEM_DS))
    props = env.rds()["one-image-84"]
    assert not any(k in props for k in ("Aux/one/VM_ID", "Aux/one/DS_ID", "Aux/one/DISK_ID")), props
    assert env.read("node1", img.source) == PATTERN                          # the image itself stays
    # the same image now another VM's: a stale delete by VM 84 leaves that claim alone
    with env.lab.client() as c:
        c.resource_dfn_modify("one-image-84", {"Aux/one/VM_ID": "85", "Aux/one/DISK_ID": "0",
                                               "Aux/one/DS_ID": str(SYSTEM_DS)})
    ok(env.r.tm("delete", f"node1:{disk_path(84, 0)}", 84, SYSTEM_DS))
    assert env.rds()["one-image-84"]["Aux/one/VM_ID"] == "85"



def test_a_resize_the_satellites_did_not_make_is_not_reported_done(env):
    """LINSTOR records the new size before its satellites grow the devices; one fails and the reply
    saying so is lost: the retry reads "same size". The action reads what the devices offer."""
    img = env.image(86, data=PATTERN)
    vm = env.vm(86, [Disk(0, IMAGE_DS, image_id=86, source=img.source, size=32)], lcm="RUNNING")
    ok(env.clone(img, 86, 0))
    vm.lcm_state = "DISK_RESIZE"
    res = "one-vm-86-disk-0"
    env.lab.linstor.fail_resize(res, "node2")
    env.lab.linstor.add_fault(rf"/resource-definitions/{res}/volume-definitions/0$", "drop_after", method="PUT")
    try:
        result = env.r.tm("resize", f"node1:{disk_path(86, 0)}", 64, 86, IMAGE_DS)
    finally:
        env.lab.linstor.clear_faults()
    assert not result.ok, str(result)
    assert f"{res} did not grow to 64 MB" in result.stderr and "32 MB on node" in result.stderr, result.stderr
    assert int(env.lab.host("node1").run_inside(f"blockdev --getsize64 {disk_path(86, 0)}").stdout) == 32 << 20
    # oned's retry says the same; a resize that works (the satellites well again) is done
    again = env.r.tm("resize", f"node1:{disk_path(86, 0)}", 64, 86, IMAGE_DS)
    assert not again.ok and "did not grow" in again.stderr, str(again)
    ok(env.r.tm("resize", f"node1:{disk_path(86, 0)}", 96, 86, IMAGE_DS))
    assert int(env.lab.host("node1").run_inside(f"blockdev --getsize64 {disk_path(86, 0)}").stdout) == 96 << 20
