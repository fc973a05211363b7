"""Names (the bash driver's), argv parsing of oned's calls, and the one node picker."""
from __future__ import annotations

import base64

import pytest

from linstor_un import names
from linstor_un.errors import DriverError
from linstor_un.holders import pick_holder
from linstor_un.linstor_api import Replica
from linstor_un.one_input import HostPath, VmPath, ds_input, migrate_input
from linstor_un.validate import integer, snapshot_id


def test_resource_and_snapshot_names_are_the_bash_drivers():
    assert names.image(7) == "one-image-7" and names.vm_disk(5, 0) == "one-vm-5-disk-0"
    assert names.checkpoint(5) == "one-vm-5-checkpoint" and names.snapshot(3) == "snapshot-3"
    assert names.source("one-image-7") == "/dev/drbd/by-res/one-image-7/0"
    assert names.image_id("one-image-12") == 12 and names.image_id("one-vm-1-disk-0") is None
    assert names.snapshot_id("snapshot-4") == 4 and names.snapshot_id("linstor_un-backup-1-2") is None
    assert names.backup_snapshot_of(names.backup_snapshot(9, 3)) == (9, 3)
    assert names.snapshot_of_size_prop(names.snapshot_size_prop(2)) == 2
    assert names.vm_resource("one-vm-3-checkpoint") and not names.vm_resource("one-image-3")


@pytest.mark.parametrize("value,res", [("/dev/drbd/by-res/one-image-7/0", "one-image-7"),
                                       ("fe:/dev/drbd/by-res/one-image-7/0", "one-image-7"),
                                       ("one-image-8", "one-image-8")])
def test_sources(value, res):
    assert names.from_source(value) == res


@pytest.mark.parametrize("value", ["/dev/sda", "one image", "$(id)", "/dev/drbd/by-res/x;y/0"])
def test_a_source_that_is_not_ours(value):
    with pytest.raises(DriverError, match="not a linstor_un volume"):
        names.from_source(value)


def test_vm_paths():
    p = VmPath.parse("node1:/var/lib/one//datastores/101/5/disk.2")
    assert (p.host, p.system_ds, p.vm_id, p.disk_id) == ("node1", 101, 5, 2)
    assert p.of_vm(5).disk_id == 2
    with pytest.raises(DriverError, match="is VM 5's, not VM 6's"):
        p.of_vm(6)
    for bad in ("node1", "-oProxy:/x", "node1:relative/path", "node1:/var/lib/one/../../etc"):
        with pytest.raises(DriverError):
            HostPath.parse(bad) if ":" in bad and not bad.startswith("-") else VmPath.parse(bad)


@pytest.mark.parametrize("value", ["1e3", "٣", "", "0x10", "12 "])
def test_numbers_are_ascii_digits(value):
    with pytest.raises(DriverError, match="expected a number"):
        integer(value, "VM id")


def test_snapshot_id_minus_one_is_no_snapshot():
    assert snapshot_id("0") == 0
    with pytest.raises(DriverError, match="no snapshot given"):
        snapshot_id("-1")


def test_ds_input_in_its_three_shapes():
    xml = "<DS_DRIVER_ACTION_DATA/>"
    b64 = base64.b64encode(xml.encode()).decode()
    assert ds_input([b64, "7"]) == (xml, 7)
    assert ds_input(["-", "7"], stdin_reader=lambda: b64) == (xml, 7)
    assert ds_input(["7"], stdin_reader=lambda: b64) == (xml, 7)
    with pytest.raises(DriverError):
        ds_input(["not base64!", "7"])


def test_migrate_input_template_in_argv_or_stdin():
    vm = base64.b64encode(b"<VM><ID>4</ID></VM>").decode()
    args = ["node1", "node2", "/var/lib/one//datastores/101/4", "4", "101"]
    from_argv = migrate_input(args + [vm])
    from_stdin = migrate_input(args, stdin_reader=lambda: vm)
    assert from_argv.vm_id == from_stdin.vm_id == 4


def replica(node, flags=(), device="/dev/drbd1000"):
    return Replica("r", node, list(flags), {}, False, device, "LVM_THIN", "data", 0)


def test_one_node_picker():
    reps = [replica("node3"), replica("node1"), replica("node2", ["DISKLESS", "DRBD_DISKLESS"]),
            replica("node4", ["DELETE"])]
    assert pick_holder(reps).node == "node1"                       # by name, diskful, usable
    assert [pick_holder(reps, seed=s).node for s in (0, 1, 2)] == ["node1", "node3", "node1"]
    assert pick_holder(reps, among=["node3", "node2"]).node == "node3"
    assert pick_holder(reps, among=["node2"]).node == "node1"      # none of those holds one: anywhere
    assert pick_holder(reps, among=["node2"], anywhere=False) is None
    assert pick_holder([replica("node2", ["DISKLESS", "TIE_BREAKER"])]) is None


# ---- oned's call signatures (one_input): parsed once, before main runs -------------------------------
from linstor_un.one_input import (ContextArgs, DiskImageArgs, DiskSnapshotArgs, ImageDiskArgs,  # noqa: E402
                                  VmDirArgs, VolatileArgs)

DISK = "node1:/var/lib/one//datastores/101/5/disk.0"


def test_signatures_parse_into_typed_arguments():
    a = ImageDiskArgs.parse(["fe:/dev/drbd/by-res/one-image-3/0", DISK, "5", "100"])
    assert (a.source, a.disk.disk_id, a.vm_id, a.ds_id, a.object_id) == ("one-image-3", 0, 5, 100, 5)
    s = DiskImageArgs.parse_saveas([DISK, "/dev/drbd/by-res/one-image-9/0", "-1", "5", "100"])
    assert (s.image, s.snap_id, s.object_id) == ("one-image-9", -1, 5)
    assert DiskSnapshotArgs.parse([DISK, "2", "5", "101"]).snap_id == 2
    assert DiskSnapshotArgs.parse_resize([DISK, "2048", "5", "101"]).number == 2048
    v = VolatileArgs.parse_swap(["512", DISK, "5", "101"])
    assert (v.format, v.size_mb, v.disk.path) == ("swap", 512, "/var/lib/one/datastores/101/5/disk.0")
    m = VmDirArgs.parse_move(["node1:/var/lib/one/datastores/101/5", "node2:/var/lib/one/datastores/101/5", "5", "101"])
    assert (m.target.host, m.dst.host, m.dst.disk_id) == ("node1", "node2", None)
    c = ContextArgs.parse(["/tmp/context.sh", "/etc/hosts:hosts", "node1:/var/lib/one/datastores/101/5/disk.1", "5",
                           "101"])
    assert c.files == ["/tmp/context.sh", "/etc/hosts:hosts"] and c.disk.disk_id == 1


@pytest.mark.parametrize("parse,argv,says", [
    (ImageDiskArgs.parse, ["fe:/dev/drbd/by-res/one-image-3/0", DISK, "5"], "usage: "),
    (DiskSnapshotArgs.parse, [DISK, "-1", "5", "101"], "no snapshot given"),
    (DiskSnapshotArgs.parse, [DISK, "0", "6", "101"], "is VM 5's, not VM 6's"),
    (VmDirArgs.parse, ["node1:/var/lib/one/datastores/101/5", "6", "101"], "does not belong to VM 6"),
    (DiskImageArgs.parse, [DISK, "/etc/passwd", "5", "100"], "not a linstor_un volume"),
    (VolatileArgs.parse, ["1e3", "raw", DISK, "5", "101"], "invalid size '1e3'"),
])
def test_bad_arguments_are_one_error(parse, argv, says):
    with pytest.raises(DriverError) as err:
        parse(argv)
    assert says in str(err.value)


def test_an_error_after_the_vm_id_still_names_the_vm():
    with pytest.raises(DriverError) as err:
        DiskSnapshotArgs.parse(["node1:relative", "0", "7", "101"])
    assert err.value.object_id == 7


# ---- the conventions that changed between OpenNebula versions (opennebula-interface.md) -------------
from linstor_un.one_input import BackupArgs, RestoreArgs  # noqa: E402

VM_XML = "<VM><ID>4</ID></VM>"
VM_B64 = base64.b64encode(VM_XML.encode()).decode()
MIGRATE = ["node1", "node2", "/var/lib/one//datastores/101/4", "4", "101"]


@pytest.mark.parametrize("argv,stdin,caller", [
    (MIGRATE + [VM_B64], "", None),                       # 5.6, 5.8: the template in argv[6]
    (MIGRATE + [VM_B64, "ceph"], "", "ceph"),             # ... and the calling TM after it
    (MIGRATE, VM_B64, None),                              # 5.10+: on stdin
    (MIGRATE + ["ceph"], VM_B64, "ceph"),                 # 5.10+ through migrate_other
])
def test_migrate_hooks_in_each_versions_form(argv, stdin, caller):
    args = migrate_input(argv, stdin_reader=lambda: stdin)
    assert (args.vm_xml, args.caller, args.vm_dir, args.object_id) == (VM_XML, caller,
                                                                        "/var/lib/one/datastores/101/4", 4)


def test_backup_hooks_before_and_after_6_8(monkeypatch):
    import io
    import sys
    where = "node1:/var/lib/one//datastores/101/4"
    monkeypatch.setattr(sys, "stdin", io.StringIO(VM_XML))
    six_six = BackupArgs.parse([where, "0:1", "one-4", "4", "101"])
    monkeypatch.setattr(sys, "stdin", io.StringIO(VM_XML))
    six_eight = BackupArgs.parse([where, "0:1:1", "one-4", "7", "4", "101"])
    assert six_six.job_id is None and six_eight.job_id == 7
    assert six_six.disk_ids == (0, 1) and six_eight.disk_ids == (0, 1)      # repeats once
    with pytest.raises(DriverError, match="invalid disk ids"):
        BackupArgs.parse([where, "0;reboot", "one-4", "4", "101"])


def test_restore_minus_one_means_the_last_increment_and_every_disk():
    r = RestoreArgs.parse(["node1:/var/lib/one//datastores/101/4", "4", "9", "-1", "-1"])
    assert (r.image_id, r.increment_id, r.disk_id, r.system_ds) == (9, -1, -1, 101)
    with pytest.raises(DriverError, match="invalid restore arguments"):
        RestoreArgs.parse(["node1:/var/lib/one//datastores/101/4", "4", "9", "-2", "0"])
