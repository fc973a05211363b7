"""The emulated LINSTOR controller, driven through python-linstor as the driver drives a real one."""
from __future__ import annotations

import http.client
import json
import os
import ssl
import time

import linstor
import pytest
from linstor import sharedconsts as C

from lab.linstor_emu.process import EmulatorConfig, LinstorEmulator
from lab.linstor_emu.schema import SchemaChecker

MIB = 1024


def ok(replies) -> list:
    assert linstor.Linstor.all_api_responses_no_error(replies), [str(r) for r in replies]
    return replies


def error_code(replies) -> int:
    errors = [r for r in replies if r.is_error()]
    assert errors, [str(r) for r in replies]
    return errors[0].ret_code & C.MASK_BITS_CODE


def raw(emulator, method, path, body=None):
    conn = http.client.HTTPConnection("127.0.0.1", emulator.config.http_port, timeout=10)
    conn.request(method, path, body=json.dumps(body) if body is not None else None)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    return resp.status, json.loads(data) if data else None


def spawn(client, name, size_kib=64 * MIB, rg="one_rg", **kw):
    return ok(client.resource_group_spawn(rg, name, [size_kib], **kw))


def nodes_of(client, rsc, diskless=None):
    out = []
    for r in client.resource_list_raise(filter_by_resources=[rsc]).resources:
        is_diskless = "DISKLESS" in r.flags
        if diskless is None or diskless == is_diskless:
            out.append(r.node_name)
    return sorted(out)


# ---- controller, nodes, pools ---------------------------------------------------------------------
def test_version_and_nodes(client):
    version = client.controller_version()
    assert version.rest_api_version.startswith("1.")
    nodes = client.node_list_raise().nodes
    assert [n.name for n in nodes] == ["node1", "node2", "node3"]
    assert nodes[0].net_interfaces[0].address == "127.0.0.11"
    assert [n.name for n in client.node_list_raise(filter_by_props=["Aux/rack=r2"]).nodes] == ["node3"]
    assert [n.name for n in client.node_list_raise(filter_by_nodes=["NODE2"]).nodes] == ["node2"]


def test_pool_capacity_follows_volumes(client, emulator):
    def free(pool, node="node1"):
        pools = client.storage_pool_list_raise(filter_by_nodes=[node], filter_by_stor_pools=[pool]).storage_pools
        return pools[0].free_space.free_capacity

    thick_before = free("thick")
    ok(client.resource_dfn_create("vol-thick"))
    ok(client.volume_dfn_create("vol-thick", 100 * MIB))
    ok(client.resource_create([linstor.ResourceData("node1", "vol-thick", storage_pool="thick")]))
    assert free("thick") == thick_before - 100 * MIB          # thick: the whole size

    thin_before = free("data")
    spawn(client, "vol-thin", 200 * MIB)
    assert free("data") == thin_before                        # thin: nothing written yet
    with open(emulator.volume_file("vol-thin"), "r+b") as f:  # write 8 MiB of data
        f.write(os.urandom(8 << 20))
        f.flush()
        os.fsync(f.fileno())
    assert thin_before - free("data") >= 8 * MIB

    ok(client.resource_dfn_delete("vol-thick"))
    ok(client.resource_dfn_delete("vol-thin"))
    assert free("thick") == thick_before and free("data") == thin_before
    pool = client.storage_pool_list_raise(filter_by_nodes=["node1"], filter_by_stor_pools=["data"]).storage_pools[0]
    assert pool.is_thin() and pool.supports_snapshots()
    # as `linstor storage-pool create lvmthin node1 data linstor_data/thinpool` leaves it
    assert pool.properties["StorDriver/LvmVg"] == "linstor_data"
    assert pool.properties["StorDriver/ThinPool"] == "thinpool"


# ---- resource groups, definitions, volumes --------------------------------------------------------
def test_spawn_places_replicas_in_group_pools(client):
    replies = spawn(client, "one-image-1")
    assert any("successfully autoplaced on 2 nodes" in r.message for r in replies)
    diskful = [r for r in client.resource_list_raise(filter_by_resources=["one-image-1"]).resources
               if "DISKLESS" not in r.flags]
    assert len(diskful) == 2 and all(r.volumes[0].storage_pool_name == "data" for r in diskful)
    # LINSTOR adds a diskless tie-breaker on the third node for two diskful replicas
    tiebreakers = [r for r in client.resource_list_raise(filter_by_resources=["one-image-1"]).resources
                   if "TIE_BREAKER" in r.flags]
    assert len(tiebreakers) == 1
    rgs = client.resource_group_list_raise(filter_by_resource_groups=["one_rg"]).resource_groups
    assert rgs[0].select_filter.place_count == 2


def test_spawn_definitions_only_and_unknown_group(client):
    replies = ok(client.resource_group_spawn("one_rg", "defs-only", [MIB], definitions_only=True))
    assert any(r.ret_code & C.MASK_BITS_CODE == C.INFO_NO_RSC_SPAWNED & C.MASK_BITS_CODE for r in replies)
    assert nodes_of(client, "defs-only") == []
    assert error_code(client.resource_group_spawn("no_such_rg", "x1", [MIB])) == 317


def test_resource_definition_props_layers_and_filters(client):
    ok(client.resource_dfn_create("one-vm-7-disk-0", layer_list=["storage"], resource_group="one_rg"))
    ok(client.resource_dfn_modify("one-vm-7-disk-0", {"Aux/one/VM_ID": "7", "Aux/one/DS_ID": "101"}))
    ok(client.resource_dfn_create("one-vm-8-disk-0"))
    ok(client.resource_dfn_modify("one-vm-8-disk-0", {"Aux/one/VM_ID": "8", "Aux/one/DS_ID": "101"}))
    rds = client.resource_dfn_list_raise(filter_by_props=["Aux/one/DS_ID=101", "Aux/one/VM_ID=7"])
    assert [r.name for r in rds.resource_definitions] == ["one-vm-7-disk-0"]
    rd = rds.resource_definitions[0]
    assert rd.resource_group_name == "one_rg"
    assert [ld.type for ld in rd.layer_data] == ["STORAGE"]
    ok(client.resource_dfn_modify("one-vm-7-disk-0", {}, delete_props=["Aux/one/VM_ID"]))
    rd = client.resource_dfn_list_raise(filter_by_resource_definitions=["ONE-VM-7-DISK-0"]).resource_definitions[0]
    assert "Aux/one/VM_ID" not in rd.properties and rd.properties["Aux/one/DS_ID"] == "101"
    assert len(client.resource_dfn_list_raise(filter_by_props=["Aux/one/VM_ID"]).resource_definitions) == 1


def test_non_drbd_layer_reports_storage_device(client):
    ok(client.resource_dfn_create("plain", layer_list=["storage"]))
    ok(client.volume_dfn_create("plain", 10 * MIB))
    ok(client.resource_create([linstor.ResourceData("node2", "plain", storage_pool="data")]))
    vol = client.resource_list_raise(filter_by_resources=["plain"]).resources[0].volumes[0]
    assert vol.device_path == "/dev/linstor_data/plain_00000"


def test_volume_definitions_encryption_and_resize(client, emulator):
    spawn(client, "enc")
    ok(client.resource_dfn_create("enc2"))
    ok(client.volume_dfn_create("enc2", 10 * MIB, encrypt=True))
    vd = client.resource_dfn_list_raise(filter_by_resource_definitions=["enc2"]).resource_definitions[0]
    assert "ENCRYPTED" in vd.volume_definitions[0].flags
    # grow: the size and the backing file follow
    ok(client.volume_dfn_modify("enc", 0, size=128 * MIB))
    assert os.path.getsize(emulator.volume_file("enc")) == 128 * MIB * 1024
    # same size: a warning, not an error
    replies = client.volume_dfn_modify("enc", 0, size=128 * MIB)
    assert not any(r.is_error() for r in replies) and any(r.is_warning() for r in replies)
    # shrinking a deployed DRBD volume is refused
    replies = client.volume_dfn_modify("enc", 0, size=64 * MIB)
    assert error_code(replies) == 206
    assert "Shrinking" in replies[-1].message


def test_encryption_without_passphrase_is_refused(tmp_path):
    from tests.conftest import THREE_NODES
    emu = LinstorEmulator(EmulatorConfig(state_dir=tmp_path, nodes=THREE_NODES, passphrase=False))
    emu.start()
    try:
        with linstor.MultiLinstor([emu.url]) as c:
            ok(c.resource_dfn_create("enc"))
            replies = c.volume_dfn_create("enc", MIB, encrypt=True)
            assert error_code(replies) == 312
        status, _ = raw(emu, "POST", "/v1/resource-definitions/enc/volume-definitions",
                        {"volume_definition": {"size_kib": 1024, "flags": ["ENCRYPTED"]}})
        assert status == 404
    finally:
        emu.shutdown()


# ---- resources ---------------------------------------------------------------------------------------
def test_resources_on_nodes_diskless_and_make_available(client):
    ok(client.resource_dfn_create("r1"))
    ok(client.volume_dfn_create("r1", 10 * MIB))
    ok(client.resource_create([linstor.ResourceData("node1", "r1", storage_pool="data")]))
    ok(client.resource_create([linstor.ResourceData("node2", "r1", diskless=True)]))
    assert nodes_of(client, "r1", diskless=True) == ["node2"]
    assert error_code(client.resource_create([linstor.ResourceData("node1", "r1", storage_pool="data")])) == 502
    assert error_code(client.resource_create([linstor.ResourceData("node9", "r1")])) == 300
    assert error_code(client.resource_create([linstor.ResourceData("node3", "r1", storage_pool="nope")])) == 310
    replies = ok(client.resource_make_available("node2", "r1"))
    assert "already deployed" in replies[0].message
    ok(client.resource_make_available("node3", "r1"))
    assert nodes_of(client, "r1", diskless=True) == ["node2", "node3"]
    ok(client.resource_make_available("node3", "r1", diskful=True))      # diskless becomes a disk
    assert nodes_of(client, "r1", diskless=False) == ["node1", "node3"]
    ok(client.resource_delete("node2", "r1"))
    assert nodes_of(client, "r1") == ["node1", "node3"] or "node2" in nodes_of(client, "r1", diskless=True)
    assert client.resource_delete("node2", "nope")[0].is_warning()


def test_volume_list_view(client):
    spawn(client, "vl")
    vols = client.volume_list_raise(filter_by_resources=["vl"], filter_by_nodes=["node1"]).resources
    assert vols and vols[0].volumes[0].device_path.startswith("/dev/drbd")


def test_autoplace_filters(client):
    def fresh(name):
        ok(client.resource_dfn_create(name))
        ok(client.volume_dfn_create(name, 10 * MIB))

    fresh("same")
    ok(client.resource_auto_place("same", 2, storage_pool="data", replicas_on_same=["Aux/rack"]))
    assert nodes_of(client, "same", diskless=False) == ["node1", "node2"]
    fresh("diff")
    ok(client.resource_auto_place("diff", 2, storage_pool="data", replicas_on_different=["Aux/rack"]))
    placed = nodes_of(client, "diff", diskless=False)
    assert "node3" in placed and len(placed) == 2
    fresh("single")
    ok(client.resource_auto_place("single", 1, storage_pool="data"))
    single_on = nodes_of(client, "single")
    assert len(single_on) == 1                          # one replica: no tie-breaker
    fresh("avoid")
    ok(client.resource_auto_place("avoid", 2, storage_pool="data", do_not_place_with=["single"]))
    assert single_on[0] not in nodes_of(client, "avoid", diskless=False)
    fresh("avoid-rx")
    ok(client.resource_auto_place("avoid-rx", 2, storage_pool="data", do_not_place_with_regex="^SIN"))
    assert single_on[0] not in nodes_of(client, "avoid-rx", diskless=False)
    fresh("prov")
    ok(client.resource_auto_place("prov", 1, provider_list=["LVM"]))
    assert client.resource_list_raise(filter_by_resources=["prov"]).resources[0].volumes[0].storage_pool_name \
        == "thick"
    fresh("layers")
    ok(client.resource_auto_place("layers", 1, storage_pool="data", layer_list=["storage"]))
    assert client.resource_list_raise(filter_by_resources=["layers"]).resources[0].volumes[0].device_path \
        .startswith("/dev/linstor_data/")
    fresh("dl")
    ok(client.resource_auto_place("dl", 1, storage_pool="data", diskless_on_remaining=True))
    assert len(nodes_of(client, "dl", diskless=True)) == 2
    # already enough replicas: a warning, nothing placed
    replies = client.resource_auto_place("same", 2, storage_pool="data")
    assert replies[0].ret_code & C.MASK_BITS_CODE == 1006 and not replies[0].is_error()
    # not enough nodes
    fresh("four")
    replies = client.resource_auto_place("four", 4, storage_pool="data")
    assert error_code(replies) == 996
    assert raw(client_emulator(client), "POST", "/v1/resource-definitions/four/autoplace",
               {"select_filter": {"place_count": 4}})[0] == 500
    # too big for the thick pools
    ok(client.resource_dfn_create("huge"))
    ok(client.volume_dfn_create("huge", 2 * 1024 * MIB))
    assert error_code(client.resource_auto_place("huge", 1, storage_pool="thick")) == 996


def client_emulator(client):
    return client._emulator


@pytest.fixture(autouse=True)
def _expose_emulator(request):
    if "client" in request.fixturenames:
        request.getfixturevalue("client")._emulator = request.getfixturevalue("emulator")


# ---- refusals -----------------------------------------------------------------------------------------
def test_refusals(client, emulator):
    spawn(client, "busy")
    assert error_code(client.resource_dfn_create("busy")) == 501
    assert error_code(client.resource_dfn_create("BUSY")) == 501                # names are case-insensitive
    for bad in ("1abc", "a", "with space", "x" * 49, "semi;colon", "../up"):
        assert error_code(client.resource_dfn_create(bad)) == 202, bad
    assert error_code(client.snapshot_create(None, "busy", "bad name")) == 218
    # in use (DRBD Primary somewhere): neither the resource nor the definition may go
    emulator.set_in_use("busy", "node1")
    assert error_code(client.resource_delete("node1", "busy")) == 997
    assert error_code(client.resource_dfn_delete("busy")) == 997
    status, body = raw(emulator, "DELETE", "/v1/resource-definitions/busy")
    assert status == 500 and body[0]["ret_code"] < 0
    emulator.set_in_use("busy", "node1", False)
    # snapshots block the definition's deletion
    ok(client.snapshot_create(None, "busy", "snapshot-0"))
    replies = client.resource_dfn_delete("busy")
    assert error_code(replies) == 514 and "has snapshots" in replies[0].message
    ok(client.snapshot_delete("busy", "snapshot-0"))
    # the last diskful replica may not go while a diskless one is attached
    ok(client.resource_dfn_create("last"))
    ok(client.volume_dfn_create("last", MIB))
    ok(client.resource_create([linstor.ResourceData("node1", "last", storage_pool="data")]))
    ok(client.resource_make_available("node2", "last"))
    replies = client.resource_delete("node1", "last")
    assert error_code(replies) == 997 and "diskless" in replies[0].message
    # missing objects: warnings on delete, 404 where a single object is asked for
    assert client.resource_dfn_delete("nothing")[0].is_warning()
    assert raw(emulator, "DELETE", "/v1/resource-definitions/nothing")[0] == 200
    status, body = raw(emulator, "POST", "/v1/resource-definitions/nothing/snapshots", {"name": "s1"})
    assert status == 404 and body[0]["ret_code"] & 0x7FFF == 301
    status, body = raw(emulator, "POST", "/v1/resource-definitions", {"resource_definition": {"name": "busy"}})
    assert status == 500 and body[0]["error_report_ids"]
    # error reports can be read back
    reports = client.error_report_list(with_content=True, ids=body[0]["error_report_ids"])
    assert reports and "already exists" in reports[0].text
    ok(client.resource_dfn_delete("busy"))


def test_snapshot_refusals(client):
    ok(client.resource_dfn_create("thick1"))
    ok(client.volume_dfn_create("thick1", MIB))
    ok(client.resource_create([linstor.ResourceData("node1", "thick1", storage_pool="thick")]))
    assert error_code(client.snapshot_create(None, "thick1", "s0")) == 994            # thick LVM
    ok(client.resource_dfn_create("nodisk"))
    ok(client.volume_dfn_create("nodisk", MIB))
    assert error_code(client.snapshot_create(None, "nodisk", "s0")) == 995            # no diskful resource
    spawn(client, "snapd")
    ok(client.snapshot_create(None, "snapd", "s1"))
    assert error_code(client.snapshot_create(None, "snapd", "S1")) == 514


# ---- snapshots and the data plane --------------------------------------------------------------------
def write(emulator, rsc, offset, data):
    with open(emulator.volume_file(rsc), "r+b") as f:
        f.seek(offset)
        f.write(data)


def read(emulator, rsc, offset, length):
    with open(emulator.volume_file(rsc), "rb") as f:
        f.seek(offset)
        return f.read(length)


def test_snapshot_restore_clone_rollback_keep_bytes(client, emulator):
    spawn(client, "src", 16 * MIB)
    write(emulator, "src", 0, b"A" * 4096)
    ok(client.snapshot_create(None, "src", "snapshot-0"))
    write(emulator, "src", 0, b"B" * 4096)
    write(emulator, "src", 1 << 20, b"C" * 4096)          # written after the snapshot: must vanish on revert
    snaps = client.snapshot_dfn_list_raise(filter_by_resources=["src"]).snapshots
    assert [s.snapshot_name for s in snaps] == ["snapshot-0"] and snaps[0].nodes

    # restore into a new definition: VDs, then resources
    ok(client.resource_dfn_create("restored", resource_group="one_rg"))
    ok(client.snapshot_volume_definition_restore("src", "snapshot-0", "restored"))
    ok(client.snapshot_resource_restore([], "src", "snapshot-0", "restored"))
    assert read(emulator, "restored", 0, 4096) == b"A" * 4096
    assert error_code(client.snapshot_resource_restore([], "src", "snapshot-0", "restored")) == 502
    assert sorted(nodes_of(client, "restored", diskless=False)) == sorted(snaps[0].nodes)

    # rollback restores the snapshot's bytes, zero ranges included
    ok(client.snapshot_rollback("src", "snapshot-0"))
    assert read(emulator, "src", 0, 4096) == b"A" * 4096
    assert read(emulator, "src", 1 << 20, 4096) == b"\0" * 4096

    # a native clone copies bytes and properties
    ok(client.resource_dfn_modify("src", {"Aux/one/VM_ID": "3"}))
    started = client.resource_dfn_clone("src", "src-clone", resource_group="one_rg")
    assert started.clone_name == "src-clone"
    assert client.resource_dfn_clone_status("src", "src-clone").status.value == "COMPLETE"
    assert read(emulator, "src-clone", 0, 4096) == b"A" * 4096
    rd = client.resource_dfn_list_raise(filter_by_resource_definitions=["src-clone"]).resource_definitions[0]
    assert rd.properties["Aux/one/VM_ID"] == "3"
    status, body = raw(client._emulator, "POST", "/v1/resource-definitions/src/clone", {"name": "src-clone"})
    assert status == 500 and body[0]["ret_code"] & 0x7FFF == 501

    # restore into a definition of another size is refused; deleting snapshots works
    ok(client.resource_dfn_create("wrong-size"))
    ok(client.volume_dfn_create("wrong-size", 8 * MIB))
    assert error_code(client.snapshot_resource_restore([], "src", "snapshot-0", "wrong-size")) == 206
    ok(client.snapshot_delete("src", "snapshot-0"))
    assert client.snapshot_delete("src", "snapshot-0")[0].is_warning()
    assert client.snapshot_dfn_list_raise(filter_by_resources=["src"]).snapshots == []


def test_rollback_refused_in_use(client, emulator):
    spawn(client, "inuse")
    ok(client.snapshot_create(None, "inuse", "s0"))
    emulator.set_in_use("inuse", "node1")
    assert error_code(client.snapshot_rollback("inuse", "s0")) == 997


# ---- persistence, faults, recording --------------------------------------------------------------------
def test_state_survives_restart(client, emulator):
    spawn(client, "durable")
    write(emulator, "durable", 512, b"persist")
    ok(client.snapshot_create(None, "durable", "s0"))
    emulator.restart()
    with linstor.MultiLinstor([emulator.url]) as c:
        assert nodes_of(c, "durable", diskless=False)
        assert [s.snapshot_name for s in c.snapshot_dfn_list_raise(filter_by_resources=["durable"]).snapshots] \
            == ["s0"]
        assert read(emulator, "durable", 512, 7) == b"persist"
        assert error_code(c.resource_dfn_create("durable")) == 501


def test_fault_injection(emulator):
    emulator.add_fault("/v1/resource-definitions$", "rc", method="POST", ret_code=C.FAIL_UNKNOWN_ERROR,
                       message="injected")
    with linstor.MultiLinstor([emulator.url]) as c:
        replies = c.resource_dfn_create("f1")
        assert error_code(replies) == 998 and replies[0].message == "injected"
        ok(c.resource_dfn_create("f1"))                        # count=1: the next one passes
    emulator.add_fault("/v1/nodes", "http", status=503)
    with linstor.MultiLinstor([emulator.url]) as c:
        with pytest.raises(linstor.LinstorError, match="HTTP-Status"):
            c.node_list()
    emulator.add_fault("/v1/resource-definitions$", "drop", method="GET")
    with linstor.MultiLinstor([emulator.url]) as c:
        with pytest.raises(linstor.LinstorNetworkError):
            c.resource_dfn_list()
    # lost reply: the create is applied, the answer never comes
    emulator.add_fault("/v1/resource-definitions$", "drop_after", method="POST")
    with linstor.MultiLinstor([emulator.url]) as c:
        with pytest.raises(linstor.LinstorNetworkError):
            c.resource_dfn_create("applied")
    with linstor.MultiLinstor([emulator.url]) as c:
        assert c.resource_dfn_list_raise(filter_by_resource_definitions=["applied"]).resource_definitions
    emulator.add_fault("/v1/nodes", "delay", seconds=1.5)
    with linstor.MultiLinstor([emulator.url], timeout=0.5) as c:
        with pytest.raises(linstor.LinstorTimeoutError):
            c.node_list()
    emulator.add_fault("/v1/nodes", "delay", seconds=0.3)
    with linstor.MultiLinstor([emulator.url]) as c:
        start = time.monotonic()
        c.node_list_raise()
        assert time.monotonic() - start >= 0.3
    emulator.clear_faults()


def test_controller_down_and_up(emulator):
    emulator.stop()
    with pytest.raises(linstor.LinstorNetworkError):
        linstor.MultiLinstor([emulator.url], timeout=2).connect()
    emulator.start()
    with linstor.MultiLinstor([emulator.url]) as c:
        assert c.node_list_raise().nodes


def test_requests_are_recorded(client, emulator):
    emulator.clear_requests()
    ok(client.resource_dfn_create("rec", resource_group="one_rg"))
    client.resource_list_raise(filter_by_resources=["rec"])
    recorded = [(r["method"], r["path"]) for r in emulator.requests()]
    assert ("POST", "/v1/resource-definitions") in recorded
    assert ("GET", "/v1/view/resources") in recorded
    body = next(r["body"] for r in emulator.requests() if r["method"] == "POST")
    assert body["resource_definition"]["name"] == "rec"


def test_node_offline_leaves_delete_pending(client, emulator):
    spawn(client, "offline")
    emulator.set_node_status("node2", "OFFLINE")
    replies = client.resource_delete("node2", "offline")
    assert not any(r.is_error() for r in replies)
    flags = {r.node_name: r.flags for r in client.resource_list_raise(filter_by_resources=["offline"]).resources}
    assert "DELETE" in flags["node2"]
    ok(client.resource_dfn_create("while-off"))
    ok(client.volume_dfn_create("while-off", MIB))
    ok(client.resource_auto_place("while-off", 2, storage_pool="data"))
    assert "node2" not in nodes_of(client, "while-off", diskless=False)
    emulator.set_node_status("node2", "ONLINE")
    assert "node2" not in nodes_of(client, "offline")


# ---- TLS ------------------------------------------------------------------------------------------
def test_tls_requires_a_client_certificate(tmp_path):
    from lab.certs import make_tls
    from tests.conftest import THREE_NODES
    tls = make_tls(tmp_path / "tls")
    emu = LinstorEmulator(EmulatorConfig(state_dir=tmp_path / "s", nodes=THREE_NODES,
                                         tls={"cert": tls["server_cert"], "key": tls["server_key"],
                                              "ca": tls["ca"], "require_client_cert": True}))
    emu.start()
    try:
        good = linstor.MultiLinstor([emu.https_url])
        good.certfile, good.keyfile, good.cafile = tls["client_cert"], tls["client_key"], tls["ca"]
        with good as c:
            assert c.node_list_raise().nodes
        for cert, key in ((None, None), (tls["rogue_cert"], tls["rogue_key"])):
            bad = linstor.MultiLinstor([emu.https_url], timeout=5)
            if cert:
                bad.certfile, bad.keyfile = cert, key
            bad.cafile = tls["ca"]
            with pytest.raises((linstor.LinstorError, ssl.SSLError, OSError)):
                bad.connect()
                bad.node_list_raise()
        # the server is verified against the CA: a client trusting another CA refuses it
        other = linstor.MultiLinstor([emu.https_url], timeout=5)
        other.certfile, other.keyfile, other.cafile = tls["client_cert"], tls["client_key"], tls["rogue_cert"]
        with pytest.raises((linstor.LinstorError, ssl.SSLError, OSError)):
            other.connect()
    finally:
        emu.shutdown()


# ---- schema ---------------------------------------------------------------------------------------
def test_schema_checker_catches_wrong_shapes():
    checker = SchemaChecker()
    assert checker.check("GET", "/v1/nodes", 200, [{"name": "n1", "type": "Satellite"}]) == []
    assert checker.check("GET", "/v1/nodes", 200, [{"name": "n1"}])                       # type missing
    assert checker.check("GET", "/v1/nodes", 200, [{"name": "n1", "type": "Satellite", "flags": "x"}])
    assert checker.check("GET", "/v1/view/resources", 200, [{"name": 5}])
    assert checker.check("POST", "/v1/resource-definitions", 201, [{"message": "no ret_code"}])
    assert checker.check("GET", "/v1/invented", 200, {})                                  # not in the API


def test_emulator_records_schema_violations(emulator):
    # an ApiCallRc list where a node list is due, with status 200: the check must flag it
    emulator.add_fault("/v1/nodes", "rc", ret_code=C.MASK_INFO | 1, message="not a node list", status=200)
    raw(emulator, "GET", "/v1/nodes")
    problems = emulator.violations()
    assert problems and "GET /v1/nodes" in problems[0]["problem"]
    (emulator.dir / "schema-violations.jsonl").unlink()       # expected here; keep the fixture's check clean


# ---- tie-breakers (linstor-server CtrlRscAutoTieBreakerHelper) ----------------------------------------
def _flags(client, rsc) -> dict:
    return {r.node_name: set(r.flags) for r in client.resource_list_raise(filter_by_resources=[rsc]).resources}


def _tiebreakers(client, rsc) -> list:
    return sorted(n for n, f in _flags(client, rsc).items() if "TIE_BREAKER" in f)


def test_tiebreaker_for_every_even_diskful_count(tmp_path):
    """shouldTieBreakerExist: diskful >= 2 and even, and no diskless resource besides it."""
    import linstor
    nodes = [{"name": f"n{i}", "address": f"127.0.1.{i}",
              "pools": [{"name": "data", "provider_kind": "LVM_THIN", "total_kib": 1 << 22}]} for i in range(1, 6)]
    emu = LinstorEmulator(EmulatorConfig(state_dir=tmp_path / "linstor", nodes=nodes))
    emu.start()
    try:
        with linstor.MultiLinstor([emu.url]) as c:
            ok(c.resource_dfn_create("even"))
            ok(c.volume_dfn_create("even", 64 * MIB))
            for count in (1, 2, 3, 4):
                free = sorted({f"n{i}" for i in range(1, 6)} - set(_flags(c, "even")))[0]
                ok(c.resource_create([linstor.ResourceData(free, "even", storage_pool="data")]))
                assert len(_tiebreakers(c, "even")) == (1 if count % 2 == 0 else 0), count
            # a diskless resource asked for where the tie-breaker is takes it over
            [tb] = _tiebreakers(c, "even")
            ok(c.resource_create([linstor.ResourceData(tb, "even", diskless=True)]))
            assert "TIE_BREAKER" not in _flags(c, "even")[tb] and "DISKLESS" in _flags(c, "even")[tb]
    finally:
        emu.shutdown()


def test_deleting_the_tiebreaker_turns_the_automatic_one_off(client):
    spawn(client, "tbdel")
    [tb] = _tiebreakers(client, "tbdel")
    replies = ok(client.resource_delete(tb, "tbdel"))
    assert any("Disabling auto-tiebreaker" in r.message for r in replies)
    assert _tiebreakers(client, "tbdel") == [] and tb not in _flags(client, "tbdel")
    props = client.resource_dfn_list_raise(filter_by_resource_definitions=["tbdel"]).resource_definitions[0].properties
    assert props["DrbdOptions/auto-add-quorum-tiebreaker"].lower() == "false"


def test_a_diskful_replica_being_deleted_becomes_the_tiebreaker(client):
    ok(client.resource_dfn_create("tbtake"))
    ok(client.volume_dfn_create("tbtake", 64 * MIB))
    import linstor
    ok(client.resource_create([linstor.ResourceData(n, "tbtake", storage_pool="data")
                               for n in ("node1", "node2", "node3")]))
    assert _tiebreakers(client, "tbtake") == []
    replies = ok(client.resource_delete("node3", "tbtake"))
    assert any("taken over as a linstor managed tiebreaker" in r.message for r in replies)
    flags = _flags(client, "tbtake")
    assert {"TIE_BREAKER", "DISKLESS"} <= flags["node3"]
    assert not flags["node1"] & {"DISKLESS"} and not flags["node2"] & {"DISKLESS"}


def test_turning_the_property_off_removes_the_tiebreaker(client):
    spawn(client, "tboff")
    assert len(_tiebreakers(client, "tboff")) == 1
    ok(client.resource_dfn_modify("tboff", {"DrbdOptions/auto-add-quorum-tiebreaker": "false"}))
    assert _tiebreakers(client, "tboff") == []
    assert len(_flags(client, "tboff")) == 2
