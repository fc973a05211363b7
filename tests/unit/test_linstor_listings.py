"""Listings of many resources in one request (in-process controller of tests/unit/conftest.py)."""
from __future__ import annotations

from types import SimpleNamespace

from linstor_un import snapshots
from linstor_un.placement import scheduler
from linstor_un.settings import DatastoreSettings


def test_the_snapshots_of_a_vm_s_disks_come_in_one_request_each_under_its_own_disk(api):
    placement = DatastoreSettings.parse(100, {"RESOURCE_GROUP": "one_rg"}, {}).placement
    for name in ("one-vm-40-disk-0", "one-vm-40-disk-1", "one-vm-40-disk-2"):
        scheduler(api, placement, api.report).create(name, 4 << 10)
    api.create_snapshot("one-vm-40-disk-0", "snapshot-0")
    api.create_snapshot("one-vm-40-disk-0", "snapshot-1")
    api.create_snapshot("one-vm-40-disk-2", "snapshot-0")
    volumes = [SimpleNamespace(api=api, resource=f"one-vm-40-disk-{i}") for i in range(3)]
    before = api.requests
    listed = snapshots.listings(volumes)
    assert api.requests == before + 1
    assert {k: sorted(s.name for s in v) for k, v in listed.items()} == {
        "one-vm-40-disk-0": ["snapshot-0", "snapshot-1"], "one-vm-40-disk-1": [], "one-vm-40-disk-2": ["snapshot-0"]}
    assert [s.name for s in api.snapshots("one-vm-40-disk-2")] == ["snapshot-0"]
