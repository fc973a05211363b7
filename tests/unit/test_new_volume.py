"""One lifetime for every new volume (ownership.NewVolume, context.Datastore.new_volume) and the one
host copy (context.Datastore.copy): against the in-process controller of tests/unit/conftest.py."""
from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

import pytest

from linstor_un import ownership
from linstor_un.context import Datastore, OnHost
from linstor_un.errors import DriverError
from linstor_un.ownership import BUILDING, MADE_FOR, Owner
from linstor_un.placement import scheduler
from linstor_un.settings import DatastoreSettings

OWNER = Owner.image(7, "1700000000")


def ds_of(api, attacher=None) -> Datastore:
    return Datastore(DatastoreSettings.parse(100, {"RESOURCE_GROUP": "one_rg"}, {}), api, attacher, api.report)


def make(api, name, props):
    scheduler(api, ds_of(api).settings.placement, api.report).create(name, 4 << 10, props=props)


def test_a_completed_volume_is_kept_without_its_building_mark_and_with_its_properties(api):
    with ds_of(api).new_volume("one-image-101", OWNER, "mkfs") as new:
        assert new.props == {MADE_FOR: OWNER.mark, BUILDING: "mkfs"}
        make(api, "one-image-101", new.props)
        assert api.resource_definition("one-image-101").props[BUILDING] == "mkfs"
        new.complete({"Aux/one/DS_ID": "100"})
    props = api.resource_definition("one-image-101").props
    assert BUILDING not in props and props[MADE_FOR] == OWNER.mark and props["Aux/one/DS_ID"] == "100"


def test_a_failed_block_removes_the_volume_after_the_steps_that_followed_it(api):
    order = []
    with pytest.raises(DriverError, match="copy failed"):
        with ds_of(api).new_volume("one-image-102", OWNER, "cp") as new:
            make(api, "one-image-102", new.props)
            new.undo.add("unlink", lambda: order.append(("unlink", api.resource_definition("one-image-102") is None)))
            raise DriverError("copy failed")
    assert order == [("unlink", False)]                 # the later step's undo ran first, the volume was still there
    assert api.resource_definition("one-image-102") is None


def test_a_volume_someone_else_made_under_that_name_meanwhile_is_never_undone(api):
    other = {MADE_FOR: "image 7 born 1600000000", BUILDING: "cp"}    # another installation's image 7
    with pytest.raises(DriverError):
        with ds_of(api).new_volume("one-image-103", OWNER, "cp"):
            make(api, "one-image-103", other)           # (our create then fails: the name is taken)
            raise DriverError("resource definition one-image-103 exists")
    assert api.resource_definition("one-image-103").props[MADE_FOR] == "image 7 born 1600000000"
    assert "not the volume this action made" in api.report.stream.getvalue()


def test_a_block_that_forgets_to_complete_is_a_bug_and_leaves_nothing(api):
    with pytest.raises(RuntimeError, match="without complete"):
        with ds_of(api).new_volume("one-image-104", OWNER, "mkfs") as new:
            make(api, "one-image-104", new.props)
    assert api.resource_definition("one-image-104") is None


def test_a_kept_volume_survives_a_later_failure_still_marked_building(api):
    with pytest.raises(DriverError):
        with ds_of(api).new_volume("one-vm-5-checkpoint", Owner.checkpoint(5, "17"), "save") as new:
            make(api, "one-vm-5-checkpoint", new.props)
            new.keep()                                  # it holds the only copy of the VM's memory
            raise DriverError("marking it complete failed")
    assert api.resource_definition("one-vm-5-checkpoint").props[BUILDING] == "save"


def test_a_volume_born_with_inherited_marks_is_undone_by_them(api):
    # cpds over a bash driver's volume: the new one carries that volume's (unmarked) properties
    marks = {"Aux/one/DS_ID": "100", BUILDING: "old"}
    with pytest.raises(DriverError):
        with ds_of(api).new_volume("one-image-105", marks, "cpds") as new:
            assert new.props == {"Aux/one/DS_ID": "100", BUILDING: "cpds"}
            make(api, "one-image-105", new.props)
            raise DriverError("clone failed")
    assert api.resource_definition("one-image-105") is None


def test_the_undo_removes_a_restore_of_this_owners_snapshot_cut_off_before_its_marks(api):
    # LINSTOR's restore copies the snapshot's definition properties (the image's marks and this
    # owner's token) over the new definition's: that volume is still this action's
    owner = Owner.vm_disk(9, "17", 0)
    name = "one-vm-9-disk-0"
    make(api, name, {MADE_FOR: OWNER.mark, ownership.SNAPSHOT_TOKEN + name: owner.snapshot_token(name)})
    ownership.undo_create(api, name, owner.mark)()
    assert api.resource_definition(name) is None


def test_extra_properties_are_born_with_the_volume(api):
    with ds_of(api).new_volume("one-vm-6-vmsnap-0", Owner.vm_snapshot(6, "17", 0), "snapshot_create",
                               extra={"Aux/one/linstor_un/VM_SNAPSHOT_OF": "6"}) as new:
        make(api, "one-vm-6-vmsnap-0", new.props)
        new.complete()
    props = api.resource_definition("one-vm-6-vmsnap-0").props
    assert props["Aux/one/linstor_un/VM_SNAPSHOT_OF"] == "6" and BUILDING not in props


# ---- one host copy -----------------------------------------------------------------------------

class LendingAttacher:
    def __init__(self):
        self.events = []

    @contextmanager
    def borrowed(self, host, resource, known=()):
        self.events.append(("lend", host, resource, len(known)))
        try:
            yield f"/dev/drbd/by-res/{resource}/0"
        finally:
            self.events.append(("give back", host, resource))


def test_a_copy_lends_what_is_named_by_resource_target_first_and_gives_everything_back(api, monkeypatch):
    attacher = LendingAttacher()
    copies = []
    monkeypatch.setattr("linstor_un.host_ops.copy", lambda host, src, dst, sparse, block_size:
                        copies.append((src, dst, sparse, block_size)))
    host = SimpleNamespace(name="node1")
    ds = ds_of(api, attacher)
    ds.copy(host, "one-image-1", "one-image-2", sparse=True, replicas={"one-image-1": ["r1", "r2"]})
    assert attacher.events == [("lend", "node1", "one-image-2", 0), ("lend", "node1", "one-image-1", 2),
                               ("give back", "node1", "one-image-1"), ("give back", "node1", "one-image-2")]
    assert copies == [("/dev/drbd/by-res/one-image-1/0", "/dev/drbd/by-res/one-image-2/0", True,
                       ds.settings.dd_block_size)]


def test_a_device_already_on_the_host_is_not_lent_and_a_failed_copy_still_gives_back(api, monkeypatch):
    attacher = LendingAttacher()

    def failing(*args, **kwargs):
        raise DriverError("dd: error writing")
    monkeypatch.setattr("linstor_un.host_ops.copy", failing)
    with pytest.raises(DriverError, match="dd"):
        ds_of(api, attacher).copy(SimpleNamespace(name="node2"), "one-image-1", OnHost("/dev/drbd1001"), sparse=False)
    assert attacher.events == [("lend", "node2", "one-image-1", 0), ("give back", "node2", "one-image-1")]
