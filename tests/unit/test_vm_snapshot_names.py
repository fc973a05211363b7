"""VM snapshot names and marks: apart from disk snapshots and backups, bound to one VM incarnation."""
from __future__ import annotations

import pytest

from linstor_un import names, ownership, vm_snapshots
from linstor_un.errors import DriverError
from linstor_un.ownership import Owner


def test_vm_snapshot_names_never_look_like_disk_snapshots_or_backups():
    name = names.vm_snapshot(12, 3)
    assert name == "linstor_un-vmsnap-12-3" and names.vm_snapshot_of(name) == (12, 3)
    assert names.snapshot_id(name) is None and names.backup_snapshot_of(name) is None
    assert names.vm_snapshot_of("snapshot-3") is None and names.vm_snapshot_of(names.backup_snapshot(12, 3)) is None
    assert names.vm_snapshot_of(names.vm_revert_safety(12)) is None
    memory = names.vm_snapshot_memory(12, 3)
    assert memory == "one-vm-12-vmsnap-3" and names.NAME_RE.match(memory) and names.vm_resource(memory)
    longest = names.vm_snapshot_memory(10 ** 12 - 1, 10 ** 9 - 1)
    assert names.NAME_RE.match(longest) and names.NAME_RE.match(names.vm_snapshot(10 ** 12 - 1, 10 ** 9 - 1))


def test_a_memory_volume_is_marked_for_one_snapshot_of_one_vm_incarnation():
    owner = Owner.vm_snapshot(5, "1700000000", 2)
    assert owner.mark == "vm 5 born 1700000000 snapshot 2 memory"
    assert owner.mark not in (Owner.vm_snapshot(5, "1700000001", 2).mark, Owner.vm_snapshot(5, "1700000000", 3).mark,
                              Owner.checkpoint(5, "1700000000").mark)
    assert not ownership.may_remove({ownership.MADE_FOR: Owner.vm_snapshot(5, "1", 2).mark}, owner)
    assert owner.describe() == "the memory of snapshot 2 of VM 5"


def test_which_hypervisor_ids_are_ours():
    assert vm_snapshots.ours("snapshot_revert", "linstor_un-vmsnap-5-0", 5)
    assert not vm_snapshots.ours("snapshot_revert", "snap-0", 5)         # the stock script's
    with pytest.raises(DriverError, match="not VM 5's"):
        vm_snapshots.ours("snapshot_delete", "linstor_un-vmsnap-6-0", 5)
    assert vm_snapshots.describe_disks("0:one-vm-5-disk-0 2:one-image-3") == "0, 2"
    assert vm_snapshots.describe_disks("") == "none"
