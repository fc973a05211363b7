"""The decisions of the larger actions (linstor_un.ops), without a lab: which copy cpds makes and
why, what a killed restore left, which marks a finished clone clears."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from linstor_un import ownership
from linstor_un.ops import tm_clone, tm_cpds


class FakeApi:
    def __init__(self, clone_refusal=None, offline=()):
        self.clone_refusal = clone_refusal
        self.offline = list(offline)

    def offline_nodes(self, nodes):
        return [n for n in nodes if n in self.offline]


def refusal(monkeypatch, *, running=False, snap_id=-1, target_mark="image 7 born 1", clone_refusal=None,
            placement_refuses=None, offline=()):
    monkeypatch.setattr(tm_cpds, "scheduler", lambda api, placement, report: SimpleNamespace(
        refuses=lambda holders: placement_refuses))
    vm = SimpleNamespace(saving_as_running=running)
    target = None if target_mark is None else SimpleNamespace(props={ownership.MADE_FOR: target_mark} if target_mark
                                                              else {})
    ds = SimpleNamespace(api=FakeApi(clone_refusal, offline), settings=SimpleNamespace(placement=None), report=None)
    dst = [SimpleNamespace(node="node2"), SimpleNamespace(node="node3")]
    return tm_cpds.native_refusal(ds, vm, snap_id, target, 7, [], dst)


def test_cpds_lets_linstor_copy_when_nothing_stands_in_the_way(monkeypatch):
    assert refusal(monkeypatch) is None
    assert refusal(monkeypatch, snap_id=2, running=True) is None         # a snapshot of a running VM
    assert refusal(monkeypatch, target_mark=None) is None                # no volume of mkfs's yet


@pytest.mark.parametrize("case,expected", [
    (dict(running=True), "the VM is running"),
    (dict(target_mark=""), "carries no linstor_un mark"),
    (dict(target_mark="image 8 born 1"), "carries no linstor_un mark"),
    (dict(clone_refusal="LINSTOR before 1.32 cannot mark a clone"), "before 1.32"),
    (dict(placement_refuses="the clone would land on node1, the datastore places on node4"), "node4"),
    (dict(offline=("node3",)), "node3 offline"),
])
def test_cpds_copies_through_a_host_and_says_why(monkeypatch, case, expected):
    assert expected in refusal(monkeypatch, **case)


def test_a_killed_snapshot_restore_of_cpds_is_recognised():
    disk = SimpleNamespace(props={ownership.MADE_FOR: "vm 5 born 1 disk 0"})
    left = SimpleNamespace(props={ownership.MADE_FOR: "vm 5 born 1 disk 0", ownership.BUILDING: "cpds"})
    assert tm_cpds.unfinished_restore(left, disk)
    assert not tm_cpds.unfinished_restore(SimpleNamespace(props={ownership.MADE_FOR: "vm 5 born 1 disk 0"}), disk)
    other = SimpleNamespace(props={ownership.MADE_FOR: "vm 6 born 1 disk 0", ownership.BUILDING: "cpds"})
    assert not tm_cpds.unfinished_restore(other, disk)


def test_a_finished_clone_clears_its_building_mark_and_in_snapshot_mode_its_base_token():
    assert tm_clone.completed_marks(SimpleNamespace(clone_mode="copy"), "one-vm-1-disk-0") == ()
    assert tm_clone.completed_marks(SimpleNamespace(clone_mode="snapshot"), "one-vm-1-disk-0") == \
        (ownership.SNAPSHOT_TOKEN + "one-vm-1-disk-0",)


# ---- DS cp: where an image may come from -------------------------------------------------------

def imports(restricted=(), safe=()):
    from linstor_un.settings import ImportSettings
    return ImportSettings(restricted_dirs=list(restricted), safe_dirs=list(safe))


def test_cp_reads_urls_as_they_are_and_local_files_only_where_allowed(tmp_path, monkeypatch):
    from linstor_un.errors import DriverError
    from linstor_un.ops import ds_cp
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    act = SimpleNamespace(remotes=tmp_path)
    assert ds_cp.source_url(act, "https://example.org/a.qcow2", imports(), "") == "https://example.org/a.qcow2"
    image = tmp_path / "images" / "a.raw"
    image.parent.mkdir()
    image.write_bytes(b"x")
    assert ds_cp.source_url(act, str(image), imports(), "") == str(image)
    with pytest.raises(DriverError, match="Not allowed to copy image file"):
        ds_cp.source_url(act, str(image), imports(restricted=[str(tmp_path / "images")]), "")
    assert ds_cp.source_url(act, str(image), imports(restricted=[str(tmp_path)], safe=[str(image.parent)]), "") \
        == str(image)
    with pytest.raises(DriverError, match="Not allowed"):                 # oned's own directories
        ds_cp.source_url(act, "/etc/one/oned.conf", imports(), "")
    with pytest.raises(DriverError, match="not found on the front-end"):
        ds_cp.source_url(act, str(tmp_path / "missing.raw"), imports(), "")
    fetched = []
    monkeypatch.setattr(ds_cp.image_source, "download", lambda remotes, url, xml: fetched.append(url) or "/tmp/x")
    assert ds_cp.source_url(act, "s3://bucket/a.raw", imports(), "<xml/>") == "/tmp/x" and fetched == ["s3://bucket/a.raw"]


# ---- TM mv: what it refuses before touching anything -------------------------------------------

@pytest.mark.parametrize("src,dst,says", [
    ("node1:/var/lib/one/datastores/100/5/disk.0", "node2:/var/lib/one/datastores/100/5/disk.1", "not the same disk"),
    ("node1:/var/lib/one/datastores/100/5/disk.0", "node2:/var/lib/one/datastores/100/5", "not the same disk"),
])
def test_mv_refuses_to_move_one_disk_onto_another(src, dst, says):
    from linstor_un.errors import DriverError
    from linstor_un.one_input import VmDirArgs
    from linstor_un.ops import tm_mv
    args = VmDirArgs.parse_move([src, dst, "5", "100"])
    act = SimpleNamespace(settings=lambda ds: pytest.fail("mv read settings before refusing"))
    with pytest.raises(DriverError, match=says):
        tm_mv.main(act, args)


# ---- TM mv: what each side does -----------------------------------------------------------------

def path(arg):
    from linstor_un.one_input import VmPath
    return VmPath.parse(arg)


D0 = "/var/lib/one/datastores/100/5/disk.0"
NODES = ["node1", "node2"]


@pytest.mark.parametrize("src,dst,from_fe,to_fe,release,same,attach", [
    # cold migration between LINSTOR nodes: released there, attached here
    (f"node1:{D0}", f"node2:{D0}", False, False, True, False, True),
    # host names are compared as LINSTOR compares node names (case-insensitively)
    (f"NODE1:{D0}", f"Node2:{D0}", False, False, True, False, True),
    # stop/undeploy: released on the host, nothing attached on the front-end
    (f"node1:{D0}", f"frontend:{D0}", False, True, True, False, False),
    # resume from the front-end: nothing to release there
    (f"frontend:{D0}", f"node2:{D0}", True, False, False, False, True),
    # a system datastore change on one host: the old link goes, the volume stays attached
    (f"node1:{D0}", "node1:/var/lib/one/datastores/101/5/disk.0", False, False, True, True, True),
    # the same path again (a retry after the move): nothing released, the link made again
    (f"node2:{D0}", f"node2:{D0}", False, False, False, True, True),
    # a host that is not a LINSTOR node holds no volume
    (f"kvm9:{D0}", f"node2:{D0}", False, False, False, False, True),
])
def test_mv_releases_and_attaches_only_on_linstor_nodes(src, dst, from_fe, to_fe, release, same, attach):
    from linstor_un.ops import tm_mv
    move = tm_mv.plan(path(src), path(dst), NODES, from_fe, to_fe)
    assert (move.release_old, move.same_host, move.attach_new) == (release, same, attach)


def test_mv_records_the_new_system_datastore_only_on_the_disks_own_volume():
    from linstor_un import disks
    from linstor_un.ops import tm_mv
    mine = {disks.VM_ID: "5", disks.DISK_ID: "0", disks.DS_ID: "100"}
    assert tm_mv.new_system_ds(mine, 5, 0, 101)
    assert not tm_mv.new_system_ds(mine, 5, 0, 100)                          # already there
    assert not tm_mv.new_system_ds({**mine, disks.VM_ID: "6"}, 5, 0, 101)    # a persistent image another VM recorded
    assert not tm_mv.new_system_ds({}, 5, 0, 101)                            # an image nobody recorded


# ---- TM delete: whose volume may go ----------------------------------------------------------------

@pytest.mark.parametrize("props,refused", [
    ({ownership.MADE_FOR: "vm 5 born 17 disk 0"}, None),                     # made for this VM and disk
    ({}, None),                                                              # the bash driver's, unmarked
    ({"Aux/one/VM_ID": "5"}, None),                                          # the bash driver's, for this VM
    ({ownership.MADE_FOR: "vm 5 born 12 disk 0"}, "was made for vm 5 born 12 disk 0"),  # an earlier VM 5
    ({ownership.MADE_FOR: "vm 5 born 17 disk 1"}, "was made for vm 5 born 17 disk 1"),
    ({"Aux/one/VM_ID": "8"}, "was made for VM 8"),                           # the bash driver's, another VM's
])
def test_delete_removes_only_the_volume_of_this_vm_incarnation_and_disk(props, refused):
    from linstor_un.ops import tm_delete
    said = tm_delete.not_this_disks(props, "one-vm-5-disk-0", ownership.Owner.vm_disk(5, "17", 0), 5)
    if refused is None:
        assert said is None
    else:
        assert refused in said and "not deleting it" in said


# ---- TM clone: LINSTOR's copy or a copy through the host (in-process controller) ---------------------

class Attacher:
    """Attaches nothing: says which device a volume would have on the host."""
    def __init__(self, api):
        self.api = api

    def attach_replicas(self, host, res):
        return f"/dev/drbd/by-res/{res}/0", self.api.replicas(res)

    def attach(self, host, res):
        return self.attach_replicas(host, res)[0]

    def borrowed(self, host, res, known=()):
        from contextlib import nullcontext
        return nullcontext(f"/dev/drbd/by-res/{res}/0")


def clone_case(api, monkeypatch, name, **template):
    from linstor_un.context import Datastore
    from linstor_un.placement import scheduler
    from linstor_un.settings import DatastoreSettings
    image = DatastoreSettings.parse(1, {"RESOURCE_GROUP": "one_rg"}, {})
    scheduler(api, image.placement, api.report).create(name, 4 << 10,
                                                        props={ownership.MADE_FOR: "image 1 born 1"})
    copies = []
    monkeypatch.setattr("linstor_un.host_ops.copy", lambda host, src, dst, **kw: copies.append((src, dst)))
    settings = DatastoreSettings.parse(100, template, {})
    act = SimpleNamespace(report=api.report, hosts={"node1": SimpleNamespace(name="node1")})
    return act, Datastore(settings, api, Attacher(api), api.report), api.resource_definition(name), copies


def test_clone_lets_linstor_copy_where_the_system_datastore_would_place_it_so(api, monkeypatch):
    act, ds, source, copies = clone_case(api, monkeypatch, "one-image-201", RESOURCE_GROUP="one_rg")
    props = ownership.Owner.vm_disk(20, "17", 0).building("clone")
    device = tm_clone.clone_by_copy(act, ds, source, "one-vm-20-disk-0", 8 << 10, "node1", None, props)
    clone = api.resource_definition("one-vm-20-disk-0")
    assert device == "/dev/drbd/by-res/one-vm-20-disk-0/0" and copies == []
    assert clone.props[ownership.MADE_FOR] == "vm 20 born 17 disk 0" and clone.size_kib == 8 << 10
    assert "copied by LINSTOR (resource-definition clone of one-image-201)" in api.report.stream.getvalue()


def test_clone_copies_through_the_host_where_linstor_would_place_it_elsewhere_and_says_why(api, monkeypatch):
    act, ds, source, copies = clone_case(api, monkeypatch, "one-image-202", RESOURCE_GROUP="one_rg",
                                         STORAGE_POOL="thick")
    props = ownership.Owner.vm_disk(21, "17", 0).building("clone")
    tm_clone.clone_by_copy(act, ds, source, "one-vm-21-disk-0", 4 << 10, "node1", None, props)
    assert copies == [("/dev/drbd/by-res/one-image-202/0", "/dev/drbd/by-res/one-vm-21-disk-0/0")]
    placed = {r.pool for r in api.replicas("one-vm-21-disk-0") if not r.diskless}
    assert placed == {"thick"}                          # where the system datastore places it
    assert "copied through node1 (the image is in pool data, not in the datastore's thick)" in \
        api.report.stream.getvalue()


# ---- TM cpds: LINSTOR's copy, and mkfs's volume back when it fails (in-process controller) ----------

def cpds_case(api, n):
    from linstor_un.context import Datastore
    from linstor_un.placement import scheduler
    from linstor_un.settings import DatastoreSettings
    ds = Datastore(DatastoreSettings.parse(1, {"RESOURCE_GROUP": "one_rg"}, {}), api, None, api.report)
    disk, image = f"one-vm-{n}-disk-0", f"one-image-{n}"
    create = scheduler(api, ds.settings.placement, api.report).create
    create(disk, 4 << 10, props={ownership.MADE_FOR: f"vm {n} born 17 disk 0", "Aux/one/VM_ID": str(n)})
    api.create_snapshot(disk, "snapshot-0")
    create(image, 4 << 10, props={ownership.MADE_FOR: f"image {n} born 5"})       # DS mkfs's empty volume
    found = api.definitions(disk, image)
    return ds, found[disk], found[image], {ownership.MADE_FOR: f"image {n} born 5"}


def test_cpds_of_a_snapshot_by_linstor_leaves_the_image_with_only_its_own_marks(api):
    ds, disk, target, marks = cpds_case(api, 301)
    how = tm_cpds.copy_by_linstor(ds, disk, "one-image-301", target, 0, target.size_kib, marks)
    assert how == "snapshot restore of one-vm-301-disk-0/snapshot-0"
    props = api.resource_definition("one-image-301").props
    assert {k: v for k, v in props.items() if k.startswith("Aux/one/")} == marks    # no VM_ID, no building mark


@pytest.mark.parametrize("snap_id,fails", [(0, "/snapshot-restore-resource/"), (-1, "/clone$")])
def test_cpds_puts_mkfs_s_volume_back_when_linstor_s_copy_fails(api, controller, snap_id, fails):
    from linstor import sharedconsts
    from linstor_un.errors import DriverError
    n = 302 if snap_id == 0 else 303
    ds, disk, target, marks = cpds_case(api, n)
    controller.faults.add({"method": "POST", "path": fails, "kind": "rc", "count": 1,
                           "ret_code": sharedconsts.FAIL_UNKNOWN_ERROR, "message": "injected"})
    try:
        with pytest.raises(DriverError):
            tm_cpds.copy_by_linstor(ds, disk, f"one-image-{n}", target, snap_id, target.size_kib, marks)
    finally:
        controller.faults.clear()
    again = api.resource_definition(f"one-image-{n}")
    assert again is not None and again.size_kib == target.size_kib
    assert {k: v for k, v in again.props.items() if k.startswith("Aux/one/")} == marks
    assert [s.name for s in api.snapshots(disk.name)] == ["snapshot-0"]


@pytest.mark.parametrize("snap_id,running,on_vm_host,expected", [
    (-1, False, True, "lend the disk"),
    (-1, True, True, "running: live"),
    (-1, True, False, "lend the disk"),             # the VM runs elsewhere than the copy: nothing live to follow
    (0, False, True, "snapshot"),
    (0, True, True, "snapshot"),
])
def test_cpds_through_a_host_copies_the_snapshot_the_running_disk_or_the_disk(monkeypatch, snap_id, running,
                                                                                on_vm_host, expected):
    from contextlib import nullcontext
    done = []
    monkeypatch.setattr(tm_cpds, "copy_snapshot", lambda *a: done.append("snapshot"))
    monkeypatch.setattr(tm_cpds, "copy_running", lambda *a: done.append("running: live"))
    ds = SimpleNamespace(copy=lambda *a, **k: done.append("lend the disk"),
                         attacher=SimpleNamespace(borrowed=lambda host, res: nullcontext("/dev/drbd1000")))
    src = SimpleNamespace(host="node1")
    host = SimpleNamespace(name="node1" if on_vm_host else "node2")
    tm_cpds.copy_through_host(None, ds, host, SimpleNamespace(saving_as_running=running), None, src,
                              "one-vm-1-disk-0", "one-image-1", snap_id, [])
    assert done == [expected]
