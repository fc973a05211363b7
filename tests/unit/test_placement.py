"""Placement (one scheduler per policy) and the capacity monitoring reports, against the lab's
LINSTOR controller run in this process (tests/unit/conftest.py)."""
from __future__ import annotations

from linstor_un.monitoring import capacity
from linstor_un.placement import pools_and_copies, scheduler
from linstor_un.settings import DatastoreSettings

# `api`: the in-process controller of tests/unit/conftest.py (three nodes, pools data and thick)


def settings(**attrs):
    return DatastoreSettings.parse(100, attrs, {})


def diskful(api, name):
    return sorted((r.node, r.pool) for r in api.replicas(name) if not r.diskless)


def test_a_resource_group_spawns_its_count_in_its_pools(api):
    s = settings(RESOURCE_GROUP="one_rg")
    scheduler(api, s.placement, api.report).create("one-image-1", 64 << 10, props={"Aux/one/x": "1"})
    placed = diskful(api, "one-image-1")
    assert len(placed) == 2 and {p for _, p in placed} == {"data"}
    assert api.resource_definition("one-image-1").props["Aux/one/x"] == "1"      # born with its marks


def test_the_template_overrides_the_group(api):
    s = settings(RESOURCE_GROUP="one_rg", REPLICA_COUNT="3", STORAGE_POOL="thick")
    scheduler(api, s.placement, api.report).create("one-image-2", 64 << 10)
    assert diskful(api, "one-image-2") == [("node1", "thick"), ("node2", "thick"), ("node3", "thick")]


def test_a_node_list_places_one_replica_per_node_in_the_roomiest_pool(api):
    s = settings(NODE_LIST="node1 node3", STORAGE_POOL="data thick")
    scheduler(api, s.placement, api.report).create("one-image-3", 64 << 10)
    assert diskful(api, "one-image-3") == [("node1", "data"), ("node3", "data")]


def test_a_count_with_prefer_node_puts_one_on_the_host(api):
    s = settings(REPLICA_COUNT="2", STORAGE_POOL="data", PREFER_NODE="yes")
    scheduler(api, s.placement, api.report).create("one-vm-1-disk-0", 64 << 10, prefer_host="node3")
    placed = diskful(api, "one-vm-1-disk-0")
    assert len(placed) == 2 and ("node3", "data") in placed


def test_pools_and_copies_is_one_rule(api):
    assert pools_and_copies(api, settings(RESOURCE_GROUP="one_rg").placement) == (["data"], 2)
    assert pools_and_copies(api, settings(RESOURCE_GROUP="bare_rg", STORAGE_POOL="thick").placement) == (["thick"], 2)
    assert pools_and_copies(api, settings(NODE_LIST="node1 node2 node3", STORAGE_POOL="data").placement) == \
        (["data"], 3)
    assert pools_and_copies(api, settings(REPLICA_COUNT="1", STORAGE_POOL="data").placement) == (["data"], 1)


def test_capacity_is_the_pools_space_over_the_copies(api):
    used, total, free = capacity(api, settings(RESOURCE_GROUP="one_rg"))
    assert total == (11 + 12 + 13) * 1024 // 2 and used == 0 and free == total
    _, total, _ = capacity(api, settings(NODE_LIST="node1", STORAGE_POOL="thick"))
    assert total == 1024


def test_refuses_says_why_a_clone_would_land_elsewhere(api):
    scheduler(api, settings(RESOURCE_GROUP="one_rg").placement, api.report).create("one-image-4", 64 << 10)
    replicas = [r for r in api.replicas("one-image-4") if not r.diskless]
    nodes = sorted(r.node for r in replicas)
    assert scheduler(api, settings(RESOURCE_GROUP="one_rg").placement, api.report).refuses(replicas) is None
    why = {
        "count": settings(RESOURCE_GROUP="one_rg", REPLICA_COUNT="1"),
        "pool": settings(RESOURCE_GROUP="one_rg", STORAGE_POOL="thick"),
        "nodes": settings(NODE_LIST=" ".join(sorted({"node1", "node2", "node3"} - {nodes[0]})), STORAGE_POOL="data"),
        "filters": settings(RESOURCE_GROUP="one_rg", REPLICAS_ON_DIFFERENT="Aux/rack"),
        "encryption": settings(RESOURCE_GROUP="one_rg", ENCRYPTION="yes"),
    }
    said = {k: scheduler(api, s.placement, api.report).refuses(replicas) for k, s in why.items()}
    assert said["count"] == "the image has 2 replicas, the datastore places 1"
    assert said["pool"] == "the image is in pool data, not in the datastore's thick"
    assert said["nodes"].startswith(f"the image is on {' '.join(nodes)}, the datastore's NODE_LIST is")
    assert said["filters"] == "the datastore's placement filters" and said["encryption"] == "encrypted volumes"
    same = settings(NODE_LIST=" ".join(nodes), STORAGE_POOL="data")
    assert scheduler(api, same.placement, api.report).refuses(replicas) is None
