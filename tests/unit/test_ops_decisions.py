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
    settings = SimpleNamespace(placement=None)
    dst = [SimpleNamespace(node="node2"), SimpleNamespace(node="node3")]
    return tm_cpds.native_refusal(FakeApi(clone_refusal, offline), settings, None, vm, snap_id, target, 7, [], dst)


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
    assert tm_clone.complete_marks(SimpleNamespace(clone_mode="copy"), "one-vm-1-disk-0") == [ownership.BUILDING]
    assert tm_clone.complete_marks(SimpleNamespace(clone_mode="snapshot"), "one-vm-1-disk-0") == \
        [ownership.BUILDING, ownership.SNAPSHOT_TOKEN + "one-vm-1-disk-0"]
