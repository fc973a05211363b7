"""The emulated controller's rules that changed between LINSTOR releases, each on the releases
either side of the change (lab/linstor_emu/versions.py and the source cited in controller.py)."""
from __future__ import annotations

import contextlib
from typing import Iterator

import linstor
import pytest
from linstor import sharedconsts as C

from lab.linstor_emu.process import EmulatorConfig, LinstorEmulator
from lab.linstor_emu.versions import rest_api_version
from tests.conftest import THREE_NODES
from tests.lab.test_linstor_emulator import MIB, error_code, ok, raw, read, spawn, write

QUORUM = "DrbdOptions/Resource/quorum"
ON_NO_QUORUM = "DrbdOptions/Resource/on-no-quorum"


@contextlib.contextmanager
def controller(tmp_path, version: str, nodes=None) -> Iterator[tuple[linstor.MultiLinstor, LinstorEmulator]]:
    emu = LinstorEmulator(EmulatorConfig(
        state_dir=tmp_path / f"linstor-{version}", nodes=nodes or THREE_NODES, version=version,
        resource_groups=[{"name": "one_rg", "select_filter": {"place_count": 2, "storage_pool_list": ["data"]}}]))
    emu.start()
    try:
        with linstor.MultiLinstor([emu.url]) as c:
            yield c, emu
    finally:
        emu.shutdown()


def five_nodes():
    return [{"name": f"n{i}", "address": f"127.0.1.{i}",
             "pools": [{"name": "data", "provider_kind": "LVM_THIN", "total_kib": 1 << 22}]} for i in range(1, 6)]


def rd_props(c, name) -> dict:
    return c.resource_dfn_list_raise(filter_by_resource_definitions=[name]).resource_definitions[0].properties


def flags(c, name) -> dict:
    return {r.node_name: set(r.flags) for r in c.resource_list_raise(filter_by_resources=[name]).resources}


@pytest.mark.parametrize("version,rest", [("1.20.0", "1.15.0"), ("1.22.0", "1.18.0"), ("1.31.0", "1.25.0"), ("1.31.2", "1.25.1"),
                                          ("1.32.3", "1.26.0"), ("1.33.2", "1.27.0"),
                                          ("1.34.0", "1.28.0")])
def test_each_release_reports_its_rest_api_version(tmp_path, version, rest):
    assert rest_api_version(version) == rest
    with controller(tmp_path, version) as (c, _):
        assert c.controller_version().rest_api_version == rest
        # python-linstor gates on it: no multi-snapshot request before REST 1.18 (LINSTOR 1.22)
        assert c.api_version_smaller("1.18.0") == (version == "1.20.0")


@pytest.mark.parametrize("version,tiebreakers", [("1.26.0", [1, 0, 0]), ("1.26.1", [1, 0, 1])])
def test_tiebreaker_for_even_counts_from_1_26_1(tmp_path, version, tiebreakers):
    """CtrlRscAutoTieBreakerHelper: exactly 2 diskful before 1.26.1, any even number from it."""
    with controller(tmp_path, version, five_nodes()) as (c, _):
        ok(c.resource_dfn_create("even"))
        ok(c.volume_dfn_create("even", 64 * MIB))
        seen = []
        for count in (1, 2, 3, 4):
            node = sorted({f"n{i}" for i in range(1, 6)} - set(flags(c, "even")))[0]
            ok(c.resource_create([linstor.ResourceData(node, "even", storage_pool="data")]))
            if count > 1:
                seen.append(sum("TIE_BREAKER" in f for f in flags(c, "even").values()))
        assert seen == tiebreakers


@pytest.mark.parametrize("version", ["1.30.4", "1.31.0"])
def test_auto_quorum_per_release(tmp_path, version):
    """CtrlRscAutoQuorumHelper: majority with 2 diskful + tie-breaker or 3 diskful, off with one;
    up to 1.30 driven by DrbdOptions/auto-quorum (io-error in a new controller's database) and
    setting on-no-quorum too; from 1.31.0 on the quorum property itself."""
    old = version == "1.30.4"
    with controller(tmp_path, version) as (c, emu):
        _, ctrl = raw(emu, "GET", "/v1/controller/properties")
        assert (ctrl.get("DrbdOptions/auto-quorum") == "io-error") == old
        spawn(c, "quorum")                                   # 2 diskful + the tie-breaker
        props = rd_props(c, "quorum")
        assert props[QUORUM] == "majority"
        assert props.get(ON_NO_QUORUM) == ("io-error" if old else None)
        tb = [n for n, f in flags(c, "quorum").items() if "TIE_BREAKER" in f][0]
        diskful = sorted(n for n, f in flags(c, "quorum").items() if "DISKLESS" not in f)
        ok(c.resource_delete(diskful[0], "quorum"))          # 1 diskful: tie-breaker gone, quorum off
        assert tb not in flags(c, "quorum")
        props = rd_props(c, "quorum")
        assert props[QUORUM] == "off" and ON_NO_QUORUM not in props
        if not old:                                     # a user's value stays
            ok(c.resource_dfn_modify("quorum", {QUORUM: "majority"}))
            ok(c.resource_create([linstor.ResourceData(diskful[0], "quorum", storage_pool="data")]))
            ok(c.resource_delete(diskful[0], "quorum"))
            assert rd_props(c, "quorum")[QUORUM] == "majority"


def test_auto_quorum_disabled_before_1_31(tmp_path):
    with controller(tmp_path, "1.30.4") as (c, _):
        ok(c.controller_set_prop("DrbdOptions/auto-quorum", "disabled"))
        spawn(c, "noq")
        assert QUORUM not in rd_props(c, "noq")


@pytest.mark.parametrize("version,refused", [("1.26.0", True), ("1.26.1", False)])
def test_snapshot_with_a_diskful_node_offline(tmp_path, version, refused):
    """CHANGELOG 1.26.1: a snapshot needs one connected diskful satellite, before all of them."""
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "offsnap")
        diskful = sorted(n for n, f in flags(c, "offsnap").items() if "DISKLESS" not in f)
        emu.set_node_status(diskful[1], "OFFLINE")
        replies = c.snapshot_create(None, "offsnap", "s0")
        if refused:
            assert error_code(replies) == C.FAIL_NOT_CONNECTED & C.MASK_BITS_CODE
            assert c.snapshot_dfn_list_raise(filter_by_resources=["offsnap"]).snapshots == []
        else:
            ok(replies)
            [snap] = c.snapshot_dfn_list_raise(filter_by_resources=["offsnap"]).snapshots
            assert snap.nodes == [diskful[0]]


@pytest.mark.parametrize("version,refused", [("1.26.2", True), ("1.27.0", False)])
def test_make_available_with_a_node_offline(tmp_path, version, refused):
    """CHANGELOG 1.27.0: make-available warns about an offline node instead of failing."""
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "ma")
        free = [n for n in ("node1", "node2", "node3") if n not in flags(c, "ma") or
                "TIE_BREAKER" in flags(c, "ma")[n]][0]
        diskful = sorted(n for n, f in flags(c, "ma").items() if "DISKLESS" not in f)
        emu.set_node_status(diskful[0], "OFFLINE")
        replies = c.resource_make_available(free, "ma")
        if refused:
            assert error_code(replies) == C.FAIL_NOT_CONNECTED & C.MASK_BITS_CODE
        else:
            ok(replies)
            assert any(r.is_warning() for r in replies)
            assert "DISKLESS" in flags(c, "ma")[free] and "TIE_BREAKER" not in flags(c, "ma")[free]


@pytest.mark.parametrize("version,refused", [("1.30.3", False), ("1.30.4", True)])
def test_resize_with_a_peer_offline(tmp_path, version, refused):
    """CHANGELOG 1.30.4: a volume definition grows only while every peer is online."""
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "grow")
        emu.set_node_status(sorted(flags(c, "grow"))[0], "OFFLINE")
        replies = c.volume_dfn_modify("grow", 0, size=128 * MIB)
        size = raw(emu, "GET", "/v1/resource-definitions/grow/volume-definitions")[1][0]["size_kib"]
        if refused:
            assert error_code(replies) == C.FAIL_NOT_ALL_UPTODATE & C.MASK_BITS_CODE
            assert "non-UpToDate DRBD device" in replies[0].message and not replies[0].error_report_ids
            assert size == 64 * MIB
        else:
            ok(replies)
            assert size == 128 * MIB


@pytest.mark.parametrize("version,read", [("1.31.3", False), ("1.32.0", True)])
def test_clone_reads_override_props_from_1_32(tmp_path, version, read):
    """CHANGELOG 1.32.0-rc.1 / OPENAPI 1.26.0: the clone request's override_props and delete_props;
    an older controller's Jackson refuses the body (ResourceDefinitions.cloneRscDfn does not catch
    the parse error: the exception mapper's 500) and makes nothing."""
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "csrc")
        ok(c.resource_dfn_modify("csrc", {"Aux/one/mark": "src"}))
        status, body = raw(emu, "POST", "/v1/resource-definitions/csrc/clone",
                           {"name": "cdst", "override_props": {"Aux/x": "1"}, "delete_props": ["Aux/one/mark"]})
        if read:
            assert status == 201
            props = rd_props(c, "cdst")
            assert "Aux/x" in props and "Aux/one/mark" not in props
        else:
            assert status == 500 and body[0]["message"] == "Unable to parse input json."
            assert 'Unrecognized field "override_props"' in body[0]["details"]
            assert body[0]["error_report_ids"]
            assert not c.resource_dfn_list_raise(filter_by_resource_definitions=["cdst"]).resource_definitions


@pytest.mark.parametrize("version,read", [("1.26.2", False), ("1.27.0", True)])
def test_spawn_reads_definition_props_from_1_27(tmp_path, version, read):
    """OPENAPI 1.22.0 (LINSTOR 1.27.0): ResourceGroupSpawn.resource_definition_props; before, the
    spawn is refused whole (400: ResourceGroups.spawn catches the parse error) and nothing is made."""
    with controller(tmp_path, version) as (c, emu):
        status, body = raw(emu, "POST", "/v1/resource-groups/one_rg/spawn",
                           {"resource_definition_name": "sp", "volume_sizes": [64 * MIB],
                            "resource_definition_props": {"Aux/one/mark": "x"}})
        defs = c.resource_dfn_list_raise(filter_by_resource_definitions=["sp"]).resource_definitions
        if read:
            assert status == 201 and defs[0].properties.get("Aux/one/mark") == "x"
        else:
            assert status == 400 and body[0]["message"] == "Unable to parse input json."
            assert "resource_definition_props" in body[0]["details"] and "error_report_ids" not in body[0]
            assert not defs


@pytest.mark.parametrize("version,status", [("1.21.1", 404), ("1.22.0", 201), ("1.24.2", 201)])
def test_routes_are_the_releases_own(tmp_path, version, status):
    """Routes come from the release's document, with its errata: 1.22-1.24 document the multi
    snapshot under /v1/action/ while the controller (Actions.java) answers /v1/actions/."""
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "multi")
        got, body = raw(emu, "POST", "/v1/actions/snapshot/multi",
                        {"snapshots": [{"name": "snap0", "resource_name": "multi"}]})
        assert got == status, body
        got, body = raw(emu, "POST", "/v1/action/snapshot/multi",
                        {"snapshots": [{"name": "snap1", "resource_name": "multi"}]})
        assert got == 404 and body[0]["message"] == "Path '/v1/action/snapshot/multi' not found on server."
        got, body = raw(emu, "DELETE", "/v1/actions/snapshot/multi") if status == 201 else (405, None)
        assert got == 405


@pytest.mark.parametrize("body,problem", [
    ({"volume_definition": {"size_kib": 1, "size": 2}}, 'Unrecognized field "size"'),
    ({"volume_definition": {"size_kib": {"a": 1}}}, "from Object value"),
    ({"volume_definition": {"size_kib": "lots"}}, "not a valid representation"),
    ({"volume_definition": {"size_kib": 1, "flags": "ENCRYPTED"}}, "ArrayList"),
    ({"volume_definition": {"size_kib": "65536", "props": {"Aux/x": 5}}}, None),     # Jackson coerces these
])
def test_request_bodies_are_read_as_jackson_reads_them(client, emulator, body, problem):
    spawn(client, "jack")
    status, answer = raw(emulator, "POST", "/v1/resource-definitions/jack/volume-definitions", body)
    if problem is None:
        assert status == 201, answer
    else:
        assert status == 400 and problem in answer[0]["details"], answer


def test_tiebreaker_counts_as_diskless_for_the_last_disk(tmp_path):
    """CtrlRscDeleteApiHelper.ensureNotLastDisk: hasDisklessNotDeleting sees the tie-breaker's
    DRBD_DISKLESS flag - the last diskful resource is not deleted while a tie-breaker remains."""
    with controller(tmp_path, "1.33.2") as (c, emu):
        spawn(c, "last")
        tb = [n for n, f in flags(c, "last").items() if "TIE_BREAKER" in f][0]
        diskful = sorted(n for n, f in flags(c, "last").items() if "DISKLESS" not in f)
        emu.set_node_status(diskful[1], "OFFLINE")
        ok(c.resource_delete(diskful[1], "last"))       # pending: DELETE flag, no longer counted
        emu.set_in_use("last", tb, True)                # a tie-breaker in use stays
        replies = c.resource_delete(diskful[0], "last")
        assert error_code(replies) == C.FAIL_IN_USE & C.MASK_BITS_CODE
        assert "still has diskless resources attached" in replies[0].message


def test_snapshot_volumes_carry_no_state(client, emulator):
    """SnapshotVolumeNode.state is set by the EBS provider only."""
    spawn(client, "nostate")
    ok(client.snapshot_create(None, "nostate", "s0"))
    status, snaps = raw(emulator, "GET", "/v1/resource-definitions/nostate/snapshots")
    assert status == 200 and snaps[0]["snapshots"]
    for node in snaps[0]["snapshots"]:
        assert node["snapshot_volumes"] and all("state" not in v for v in node["snapshot_volumes"])


def test_toggle_disk_checks_free_space(client):
    """CHANGELOG 1.33.0-rc.2 "ToggleDisk: Added missing free-space check" (a thick pool)."""
    ok(client.resource_group_create("thick_rg", storage_pool=["thick"]))
    ok(client.resource_dfn_create("toggle", resource_group="thick_rg"))
    ok(client.volume_dfn_create("toggle", 2 * 1024 * MIB))                 # larger than 'thick' (1 GiB)
    ok(client.resource_create([linstor.ResourceData("node1", "toggle", storage_pool="data")]))
    ok(client.resource_create([linstor.ResourceData("node2", "toggle", diskless=True)]))
    replies = client.resource_make_available("node2", "toggle", diskful=True)
    assert error_code(replies) == C.FAIL_NOT_ENOUGH_FREE_SPACE & C.MASK_BITS_CODE
    assert "DISKLESS" in flags(client, "toggle")["node2"]


# ---- rollback (CtrlSnapshotRollbackApiCallHandler at each tag) ----------------------------------------
def attach_diskless(c, name) -> str:
    """A diskless replica on the node that has none (a VM's host): the node's name."""
    node = sorted({"node1", "node2", "node3"} - set(flags(c, name)))[0] if len(flags(c, name)) < 3 else \
        next(n for n, f in flags(c, name).items() if "TIE_BREAKER" in f)
    ok(c.resource_make_available(node, name, diskful=False))
    assert "DISKLESS" in flags(c, name)[node] and "TIE_BREAKER" not in flags(c, name)[node]
    return node


def attached(c, name, node) -> bool:
    """A usable replica there (gone, or LINSTOR's tie-breaker in its place, is not)."""
    return "TIE_BREAKER" not in flags(c, name).get(node, {"TIE_BREAKER"})


@pytest.mark.parametrize("version,any_snapshot", [("1.30.4", False), ("1.31.0", True)])
def test_rollback_to_any_snapshot_from_1_31_0(tmp_path, version, any_snapshot):
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "rb")
        write(emu, "rb", 0, b"old")
        ok(c.snapshot_create(None, "rb", "s0"))
        write(emu, "rb", 0, b"new")
        ok(c.snapshot_create(None, "rb", "s1"))
        replies = c.snapshot_rollback("rb", "s0")
        if any_snapshot:
            ok(replies)
            assert read(emu, "rb", 0, 3) == b"old"
        else:
            assert error_code(replies) == C.FAIL_EXISTS_SNAPSHOT_DFN & C.MASK_BITS_CODE
            assert read(emu, "rb", 0, 3) == b"new"
        ok(c.snapshot_rollback("rb", "s1"))
        assert read(emu, "rb", 0, 3) == b"new"


@pytest.mark.parametrize("version,diskless_back,props_back", [("1.30.4", True, False), ("1.31.0", False, True),
                                                              ("1.31.1", False, True), ("1.31.2", True, True)])
def test_rollback_deletes_and_restores_from_1_31_0(tmp_path, version, diskless_back, props_back):
    """1.31.0: every resource deleted and the snapshot restored, its copy of the definition's
    properties merged back; diskless resources made again only from 1.31.2 (recreateResources)."""
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "rb")
        host = attach_diskless(c, "rb")
        ok(c.resource_dfn_modify("rb", {"Aux/one/VM_ID": "7", "Aux/one/token": "then"}))
        ok(c.snapshot_create(None, "rb", "s0"))
        ok(c.resource_dfn_modify("rb", {"Aux/one/VM_ID": "8"}, delete_props=["Aux/one/token"]))
        ok(c.snapshot_rollback("rb", "s0"))
        assert attached(c, "rb", host) == diskless_back
        props = rd_props(c, "rb")
        assert props.get("Aux/one/VM_ID") == ("7" if props_back else "8")
        assert ("Aux/one/token" in props) == props_back


@pytest.mark.parametrize("version,outcome", [("1.31.2", "refused"), ("1.31.3", "size reset")])
def test_rollback_after_a_resize(tmp_path, version, outcome):
    """1.31.3 resetVlmDfns: the snapshot's size; before, the restore's size check fails and the
    safety snapshot is restored on the diskful nodes (the diskless ones are not made again)."""
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "rs")
        host = attach_diskless(c, "rs")
        write(emu, "rs", 0, b"old")
        ok(c.snapshot_create(None, "rs", "s0"))
        ok(c.volume_dfn_modify("rs", 0, size=128 * MIB))
        write(emu, "rs", 0, b"new")
        replies = c.snapshot_rollback("rs", "s0")
        size = raw(emu, "GET", "/v1/resource-definitions/rs/volume-definitions")[1][0]["size_kib"]
        if outcome == "refused":
            assert error_code(replies) == C.FAIL_INVLD_VLM_SIZE & C.MASK_BITS_CODE
            assert read(emu, "rs", 0, 3) == b"new" and size == 128 * MIB and not attached(c, "rs", host)
        else:
            ok(replies)
            assert read(emu, "rs", 0, 3) == b"old" and size == 64 * MIB and attached(c, "rs", host)


@pytest.mark.parametrize("version", ["1.20.0", "1.31.2", "1.33.2"])
def test_rollback_refused_while_a_node_is_offline(tmp_path, version):
    """ensureAllSatellitesConnected, at every release: nothing is changed."""
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "off")
        host = attach_diskless(c, "off")
        write(emu, "off", 0, b"old")
        ok(c.snapshot_create(None, "off", "s0"))
        write(emu, "off", 0, b"new")
        emu.set_node_status(host, "OFFLINE")
        replies = c.snapshot_rollback("off", "s0")
        assert error_code(replies) == C.FAIL_NOT_CONNECTED & C.MASK_BITS_CODE
        assert read(emu, "off", 0, 3) == b"new" and host in flags(c, "off")


@pytest.mark.parametrize("version,refused", [("1.31.1", True), ("1.31.2", False)])
def test_rollback_with_a_diskful_node_lacking_the_snapshot(tmp_path, version, refused):
    """ensureSnapshotsForAllVolumes (up to 1.31.1): each diskful resource's node must hold the
    snapshot; from 1.31.2 the node gets its disk back from the others (make-available)."""
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "lack")
        diskful = sorted(n for n, f in flags(c, "lack").items() if "DISKLESS" not in f)
        write(emu, "lack", 0, b"old")
        ok(c.snapshot_create([diskful[0]], "lack", "s0"))
        write(emu, "lack", 0, b"new")
        replies = c.snapshot_rollback("lack", "s0")
        if refused:
            assert error_code(replies) == C.FAIL_NOT_FOUND_SNAPSHOT & C.MASK_BITS_CODE
            assert read(emu, "lack", 0, 3) == b"new"
        else:
            ok(replies)
            assert read(emu, "lack", 0, 3) == b"old"
            assert all("DISKLESS" not in flags(c, "lack")[n] for n in diskful)


# ---- deferred deletion (CtrlRscDfnDeleteApiCallHandler, CtrlSnapshotDeleteApiCallHandler) ------------
@pytest.mark.parametrize("version", ["1.20.0", "1.33.2"])
def test_deleting_with_a_node_offline_finishes_when_it_returns(tmp_path, version):
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "gone")
        node = sorted(flags(c, "gone"))[0]
        emu.set_node_status(node, "OFFLINE")
        replies = c.resource_dfn_delete("gone")
        ok(replies)
        assert any(r.ret_code & C.MASK_BITS_CODE == C.WARN_NOT_CONNECTED & C.MASK_BITS_CODE for r in replies)
        listed = c.resource_dfn_list_raise(filter_by_resource_definitions=["gone"]).resource_definitions
        assert listed and "DELETE" in listed[0].flags
        assert all("DELETE" in f for f in flags(c, "gone").values())
        # the name stays taken meanwhile
        assert error_code(c.resource_dfn_create("gone")) == C.FAIL_EXISTS_RSC_DFN & C.MASK_BITS_CODE
        emu.set_node_status(node, "ONLINE")
        assert not c.resource_dfn_list_raise(filter_by_resource_definitions=["gone"]).resource_definitions
        ok(c.resource_dfn_create("gone"))


@pytest.mark.parametrize("version", ["1.20.0", "1.33.2"])
def test_snapshot_deletion_waits_for_its_node(tmp_path, version):
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "sg")
        ok(c.snapshot_create(None, "sg", "s0"))
        node = sorted(n for n, f in flags(c, "sg").items() if "DISKLESS" not in f)[0]
        emu.set_node_status(node, "OFFLINE")
        replies = c.snapshot_delete("sg", "s0")
        assert any(r.ret_code & C.MASK_BITS_CODE == C.WARN_NOT_CONNECTED & C.MASK_BITS_CODE for r in replies)
        snaps = raw(emu, "GET", "/v1/resource-definitions/sg/snapshots")[1]
        assert [s["name"] for s in snaps] == ["s0"] and "DELETE" in snaps[0]["flags"] and snaps[0]["nodes"] == [node]
        # the definition cannot go while it has a snapshot, even one being deleted
        assert error_code(c.resource_dfn_delete("sg")) == C.FAIL_EXISTS_SNAPSHOT_DFN & C.MASK_BITS_CODE
        emu.set_node_status(node, "ONLINE")
        assert raw(emu, "GET", "/v1/resource-definitions/sg/snapshots")[1] == []
        ok(c.resource_dfn_delete("sg"))


# ---- clone (CtrlRscDfnApiCallHandler.cloneRscDfnInTransaction) ----------------------------------------
def test_clone_copies_every_resource(tmp_path):
    with controller(tmp_path, "1.33.2") as (c, emu):
        spawn(c, "full")
        host = attach_diskless(c, "full")
        ok(c.resource_modify(host, "full", {"Aux/one/mark": "attached"}))
        status, _ = raw(emu, "POST", "/v1/resource-definitions/full/clone", {"name": "copy"})
        assert status == 201
        assert flags(c, "copy") == flags(c, "full")
        rsc = next(r for r in c.resource_list_raise(filter_by_resources=["copy"]).resources if r.node_name == host)
        assert rsc.properties.get("Aux/one/mark") == "attached"


@pytest.mark.parametrize("version,outcome", [("1.30.4", "CLONING"), ("1.31.0", "refused")])
def test_clone_with_a_diskful_node_offline(tmp_path, version, outcome):
    """1.31.0 failIfWrongRscState: every diskful DRBD resource UpToDate (unknown: not); before, the
    clone starts and the offline satellite never reports its copy."""
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "src")
        node = sorted(n for n, f in flags(c, "src").items() if "DISKLESS" not in f)[0]
        emu.set_node_status(node, "OFFLINE")
        status, body = raw(emu, "POST", "/v1/resource-definitions/src/clone", {"name": "dst"})
        if outcome == "refused":
            assert status == 500 and body[0]["ret_code"] & C.MASK_BITS_CODE == C.FAIL_NOT_ALL_UPTODATE & C.MASK_BITS_CODE
            assert not c.resource_dfn_list_raise(filter_by_resource_definitions=["dst"]).resource_definitions
        else:
            assert status == 201
            assert raw(emu, "GET", "/v1/resource-definitions/src/clone/dst")[1]["status"] == "CLONING"
            emu.set_node_status(node, "ONLINE")
            assert raw(emu, "GET", "/v1/resource-definitions/src/clone/dst")[1]["status"] == "COMPLETE"


# ---- snapshot properties ---------------------------------------------------------------------------
@pytest.mark.parametrize("version,split", [("1.29.2", False), ("1.30.0", True)])
def test_snapshot_listing_splits_its_properties_from_1_30(tmp_path, version, split):
    with controller(tmp_path, version) as (c, emu):
        spawn(c, "sp")
        ok(c.resource_dfn_modify("sp", {"Aux/one/VM_ID": "3"}))
        ok(c.snapshot_create(None, "sp", "s0"))
        snap = raw(emu, "GET", "/v1/resource-definitions/sp/snapshots/s0")[1]
        assert snap["props"]["Aux/one/VM_ID"] == "3"
        assert ("resource_definition_props" in snap) == split and ("snapshot_definition_props" in snap) == split


def test_snapshot_modify_changes_only_the_snapshots_own_properties(tmp_path):
    """1.32 PUT .../snapshots/{snapshot}: getSnapDfnProps only; the copy of the definition's
    properties the snapshot carries cannot be changed."""
    with controller(tmp_path, "1.32.0") as (c, emu):
        spawn(c, "sm")
        ok(c.resource_dfn_modify("sm", {"Aux/one/VM_ID": "3"}))
        ok(c.snapshot_create(None, "sm", "s0"))
        ok(c.snapshot_dfn_modify("sm", "s0", {"Aux/own": "x"}, delete_props=["Aux/one/VM_ID"]))
        snap = raw(emu, "GET", "/v1/resource-definitions/sm/snapshots/s0")[1]
        assert snap["props"]["Aux/one/VM_ID"] == "3" and snap["props"]["Aux/own"] == "x"
        assert snap["snapshot_definition_props"] == {"Aux/own": "x"}


# ---- properties (CtrlPropsHelper.fillProperties, PropsContainer) -----------------------------------------
@pytest.mark.parametrize("props,code", [
    ({"Aux/one/anything": "x" * 4096}, None),
    ({"DrbdOptions/Net/allow-two-primaries": "yes"}, None),
    ({"Aux/" + "k" * 253: "v"}, C.FAIL_INVLD_PROP),                 # 257 characters
    ({"DrbdOptions/Net/allow-two-primaries": "maybe"}, C.FAIL_INVLD_PROP),
    ({"One/VM_ID": "3"}, C.FAIL_INVLD_PROP),                          # not whitelisted
    ({"Aux/one/x": "v" * 4097}, C.FAIL_SQL),
])
def test_properties_outside_aux_are_whitelisted_and_lengths_bounded(client, emulator, props, code):
    spawn(client, "wl")
    replies = client.resource_dfn_modify("wl", props)
    if code is None:
        ok(replies)
    else:
        assert error_code(replies) == code & C.MASK_BITS_CODE
        assert not set(props) & set(rd_props(client, "wl"))


# ---- make-available --------------------------------------------------------------------------------
def test_make_available_without_a_disk_left_makes_an_empty_disk(client, emulator):
    """CtrlRscMakeAvailableApiCallHandler: no diskful DRBD peer -> the first diskful resource."""
    spawn(client, "last")
    write(emulator, "last", 0, b"data")
    for node in sorted(flags(client, "last"), key=lambda n: "DISKLESS" not in flags(client, "last")[n]):
        ok(client.resource_delete(node, "last"))
    assert flags(client, "last") == {}
    ok(client.resource_make_available("node3", "last", diskful=False))
    assert "DISKLESS" not in flags(client, "last")["node3"]
    assert read(emulator, "last", 0, 4) == bytes(4)
