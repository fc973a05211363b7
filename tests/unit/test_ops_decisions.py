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
    assert tm_clone.complete_marks(SimpleNamespace(clone_mode="copy"), "one-vm-1-disk-0") == [ownership.BUILDING]
    assert tm_clone.complete_marks(SimpleNamespace(clone_mode="snapshot"), "one-vm-1-disk-0") == \
        [ownership.BUILDING, ownership.SNAPSHOT_TOKEN + "one-vm-1-disk-0"]


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
