"""VM snapshot names and marks: apart from disk snapshots and backups, bound to one VM incarnation."""
from __future__ import annotations

import re

import pytest

from linstor_un import names, one_input, ownership, vm_snapshots
from linstor_un.one_input import VmmArgs
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


# ---- what a VM snapshot action decides from oned's input, without a lab ---------------------------

class FakeHost:
    def __init__(self, name):
        self.name, self.ran = name, []

    def run(self, args, step, stdin=b"", check=True, bulk=False):
        from types import SimpleNamespace
        self.ran.append((args, stdin))
        return SimpleNamespace(rc=0, stdout=b"snap-7\n", stderr=b"")


class FakeAct:
    def __init__(self):
        from collections import defaultdict
        from types import SimpleNamespace

        class Hosts(defaultdict):
            def __missing__(self, key):
                self[key] = FakeHost(key)
                return self[key]
        self.report = SimpleNamespace(object_id=None)
        self.hosts = Hosts()

    def settings(self, ds_id, template=None, tm_mad=None):
        return f"settings of {ds_id}"

    def linstor(self, settings):
        return f"api for {settings}"

    def datastore(self, ds_id, template=None, tm_mad=None):
        from types import SimpleNamespace
        settings = self.settings(ds_id)
        return SimpleNamespace(settings=settings, api=self.linstor(settings))


def action_data(disks, system_tm="linstor_un", snapshot=None):
    from lab.lab import SYSTEM_DS
    from lab.oned import VM, Datastore, History, to_xml
    from lab.runner import vmm_action_data
    vm = VM(5, disks=disks, history=[History("node1", SYSTEM_DS, tm_mad=system_tm)])
    snap = vm.new_snapshot()
    snap.update(snapshot or {})
    ds = Datastore(SYSTEM_DS, "sys", "SYSTEM_DS", ds_mad="-", tm_mad=system_tm, template={"TM_MAD": system_tm})
    return vmm_action_data(to_xml(vm.element()), to_xml(ds.element()), "node1", "one-5", "")


@pytest.fixture
def stdin(monkeypatch):
    def give(text):
        monkeypatch.setattr(one_input, "vmm_stdin", lambda: text)
    return give


def test_a_vm_without_linstor_disks_goes_to_the_stock_script(stdin, capsys):
    from lab.oned import Disk
    act = FakeAct()
    stdin(action_data([Disk(0, 0, tm_mad="ssh")], system_tm="ssh"))
    assert vm_snapshots.request(act, VmmArgs.snapshot(["one-5", "0", "5", "node1"]), "snapshot_create") is None
    args, fed = act.hosts["node1"].ran[0]
    assert args == ["/var/tmp/one/vmm/kvm/snapshot_create", "one-5", "0", "5", "node1"] and fed.startswith(b"<VMM")
    assert capsys.readouterr().out == "snap-7\n"              # the stock script's hypervisor id, for oned


def test_a_snapshot_the_stock_script_made_is_reverted_by_it(stdin):
    from lab.oned import Disk
    from lab.lab import SYSTEM_DS
    act = FakeAct()
    stdin(action_data([Disk(0, SYSTEM_DS)], snapshot={"ACTION": "REVERT", "HYPERVISOR_ID": "snap-0"}))
    assert vm_snapshots.request(act, VmmArgs.snapshot(["one-5", "snap-0", "5", "node1"]), "snapshot_revert") is None
    assert act.hosts["node1"].ran[0][0][0].endswith("/vmm/kvm/snapshot_revert")


@pytest.mark.parametrize("case,argv,message", [
    ("mixed", ["one-5", "0", "5", "node1"], "disk 1 (ssh)"),
    ("ssh system", ["one-5", "0", "5", "node1"], "need a linstor_un system datastore"),
    ("wrong action", ["one-5", "0", "5", "node1"], "marked for DELETE, not CREATE"),
    ("another vm", ["one-5", "linstor_un-vmsnap-6-0", "5", "node1"], "not VM 5's"),
    ("bad domain", ["one 5;", "0", "5", "node1"], "invalid domain name"),
    ("bad vm id", ["one-5", "0", "5x", "node1"], "invalid VM id"),
])
def test_what_cannot_be_snapshotted_is_refused_with_one_line(stdin, case, argv, message):
    from lab.oned import Disk
    from lab.lab import SYSTEM_DS
    disks = [Disk(0, SYSTEM_DS)]
    if case == "mixed":
        disks.append(Disk(1, 0, tm_mad="ssh"))
    script = "snapshot_revert" if case == "another vm" else "snapshot_create"
    stdin(action_data(disks, system_tm="ssh" if case == "ssh system" else "linstor_un",
                      snapshot={"ACTION": "DELETE"} if case == "wrong action" else
                      {"ACTION": "REVERT"} if case == "another vm" else None))
    act = FakeAct()
    with pytest.raises(DriverError, match=re.escape(message)) as err:
        vm_snapshots.request(act, VmmArgs.snapshot(argv), script)
    assert "\n" not in str(err.value) and not act.hosts["node1"].ran


def test_a_read_only_disk_of_another_driver_does_not_stop_a_snapshot(stdin):
    from lab.oned import Disk
    from lab.lab import SYSTEM_DS
    stdin(action_data([Disk(0, SYSTEM_DS), Disk(1, 0, tm_mad="ssh", type="CDROM", image_id=3, source="/x.iso")]))
    r = vm_snapshots.request(FakeAct(), VmmArgs.snapshot(["one-5", "0", "5", "node1"]), "snapshot_create")
    assert r is not None and [v.disk_id for v in r.volumes] == [0] and r.taken() == "0:one-vm-5-disk-0"
    assert r.name == "linstor_un-vmsnap-5-0" and r.memory == "one-vm-5-vmsnap-0" and r.vm_dir.endswith("/5")
