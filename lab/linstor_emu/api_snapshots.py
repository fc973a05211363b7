"""The emulated controller's handlers for snapshots: create (one or many), delete, restore, rollback: a part of controller.Controller."""
from __future__ import annotations

from typing import Any

from linstor import sharedconsts as C

from .apicall import ApiError, Rc, success
from .common import DISKLESS_POOL, _name_filter, _now_ms, _uuid


class SnapshotApi:
    # ---- snapshots ---------------------------------------------------------------------------
    def list_snapshots(self, query: dict, body: Any):
        nodes = _name_filter(query, "nodes")
        rscs = _name_filter(query, "resources")
        out = []
        for rkey in sorted(self.s["rds"]):
            if rscs is not None and rkey not in rscs:
                continue
            rd = self.s["rds"][rkey]
            for skey in sorted(rd["snaps"]):
                snap = rd["snaps"][skey]
                if nodes is not None and not nodes & {n.upper() for n in snap["nodes"]}:
                    continue
                out.append(self._snap_json(rd, snap))
        return out

    def list_rd_snapshots(self, name: str, query: dict, body: Any):
        rd = self._rd(name)
        return [self._snap_json(rd, rd["snaps"][k]) for k in sorted(rd["snaps"])]

    def _snap(self, rd: dict, snap: str) -> dict:
        s = rd["snaps"].get(snap.upper())
        if s is None:
            raise ApiError(Rc(C.FAIL_NOT_FOUND_SNAPSHOT_DFN,
                              f"Snapshot '{snap}' of resource '{rd['name']}' not found.", C.MASK_SNAPSHOT,
                              obj_refs={"RscDfn": rd["name"], "Snapshot": snap}))
        return s

    def get_snapshot(self, name: str, snap: str, query: dict, body: Any):
        rd = self._rd(name)
        return self._snap_json(rd, self._snap(rd, snap))

    def _create_snapshot(self, rd: dict, snap_name: str, nodes: list[str], check_only: bool = False) -> list[Rc]:
        self._check_name(snap_name, C.FAIL_INVLD_SNAPSHOT_NAME, "snapshot", C.MASK_SNAPSHOT)
        refs = {"RscDfn": rd["name"], "Snapshot": snap_name}
        if snap_name.upper() in rd["snaps"]:
            raise ApiError(Rc(C.FAIL_EXISTS_SNAPSHOT_DFN,
                              f"A snapshot definition with the name '{snap_name}' already exists in resource "
                              f"definition '{rd['name']}'.", C.MASK_SNAPSHOT, C.MASK_CRT, obj_refs=refs))
        online = [k for k in self._diskful_nodes(rd) if self.s["nodes"][k]["status"] == "ONLINE"]
        offline = [self.s["nodes"][k]["name"] for k in self._diskful_nodes(rd) if k not in online]
        if offline and not nodes and not self.since("1.26.1"):
            # up to 1.26.0 every diskful satellite of the resource had to be connected (CHANGELOG
            # 1.26.1: "Snapshots: allow taking snapshot if at least one diskfull node is online")
            raise ApiError(Rc(C.FAIL_NOT_CONNECTED, f"No active connection to satellite '{offline[0]}'",
                              C.MASK_SNAPSHOT, C.MASK_CRT, obj_refs=refs))
        if nodes:
            for n in nodes:
                rsc = rd["rscs"].get(n.upper())
                if rsc is not None and self._diskless(rsc):
                    raise ApiError(Rc(C.FAIL_SNAPSHOTS_NOT_SUPPORTED,
                                      f"Cannot create snapshot from diskless resource on node '{n}'",
                                      C.MASK_SNAPSHOT, C.MASK_CRT, obj_refs=refs))
            online = [k for k in online if k in {n.upper() for n in nodes}]
        if not online:
            raise ApiError(Rc(C.FAIL_NOT_CONNECTED, "No diskful connected satellite for snapshot or no resources.",
                              C.MASK_SNAPSHOT, C.MASK_CRT, obj_refs=refs))
        for key in online:
            pool = self.s["pools"][key][rd["rscs"][key]["pool"].upper()]
            if not self._snapshots_ok(pool):
                raise ApiError(Rc(C.FAIL_SNAPSHOTS_NOT_SUPPORTED,
                                  f"Storage driver '{pool['provider_kind']}' does not support snapshots.",
                                  C.MASK_SNAPSHOT, C.MASK_CRT, obj_refs=refs))
        if check_only:
            return []
        loops = self._loops(rd)
        vds = []
        for vnr in sorted(rd["vds"], key=int):
            size = rd["vds"][vnr]["size_kib"]
            self.data.take_snapshot(rd["name"], int(vnr), snap_name, size, loops,
                                    thin_chunk_kib=self.s.get("thin_chunk_kib", 64))
            vds.append({"volume_number": int(vnr), "size_kib": size})
        # the thin device id each snapshot LV would have in its pool (lab/thin_standin.py)
        thin_id = self.s.setdefault("next_thin_id", 100)
        self.s["next_thin_id"] = thin_id + 1
        rd["snaps"][snap_name.upper()] = {
            "name": snap_name, "nodes": [self.s["nodes"][k]["name"] for k in online], "props": {},
            "thin_id": thin_id,
            "rd_props": dict(rd["props"]),
            "flags": ["SUCCESSFUL"], "vds": vds, "uuid": _uuid(), "ts": _now_ms(),
            "pools": {self.s["nodes"][k]["name"]: rd["rscs"][k]["pool"] for k in online},
            "encrypted": any("ENCRYPTED" in vd["flags"] for vd in rd["vds"].values()),
        }
        return [success(f"New snapshot '{snap_name}' of resource '{rd['name']}' registered.", C.MASK_SNAPSHOT,
                        C.MASK_CRT, obj_refs=refs),
                success(f"Snapshot '{snap_name}' of resource '{rd['name']}' successfully taken.", C.MASK_SNAPSHOT,
                        C.MASK_CRT, obj_refs=refs)]

    def create_snapshot(self, name: str, query: dict, body: Any):
        rd = self._rd(name)
        return 201, [m.to_json() for m in self._create_snapshot(rd, body.get("name", ""), body.get("nodes") or [])]

    def snapshot_multi(self, query: dict, body: Any):
        # CtrlSnapshotCrtApiCallHandler.createSnapshot: every snapshot of the request in one
        # transaction, so one refusal creates none of them (checked all first here)
        items = body.get("snapshots") or []
        for item in items:
            self._create_snapshot(self._rd(item.get("resource_name", "")), item.get("name", ""),
                                  item.get("nodes") or [], check_only=True)
        msgs: list[Rc] = []
        for item in items:
            rd = self._rd(item.get("resource_name", ""))
            msgs += self._create_snapshot(rd, item.get("name", ""), item.get("nodes") or [])
        return 201, [m.to_json() for m in msgs]

    def modify_snapshot(self, name: str, snap: str, query: dict, body: Any):
        """CtrlSnapshotApiCallHandler.modifyInTransaction (1.32+): the snapshot definition's own
        properties only (getSnapDfnProps); the copy of the resource definition's it was taken with
        cannot be changed, so deleting one of those keys changes nothing in the listing."""
        rd = self._rd(name)
        s = self._snap(rd, snap)
        self._check_props(body.get("override_props") or {}, "snapshot definition")
        s["props"].update(body.get("override_props") or {})
        for key in body.get("delete_props") or []:
            s["props"].pop(key, None)
        return [success(f"Snapshot '{s['name']}' of '{rd['name']}' modified.", C.MASK_SNAPSHOT, C.MASK_MOD).to_json()]

    def delete_snapshot(self, name: str, snap: str, query: dict, body: Any):
        rd = self.s["rds"].get(name.upper())
        s = rd["snaps"].get(snap.upper()) if rd else None
        if s is None:
            return [Rc(C.WARN_NOT_FOUND, f"Snapshot '{snap}' of resource '{name}' not found.", C.MASK_SNAPSHOT,
                       C.MASK_DEL, obj_refs={"RscDfn": name, "Snapshot": snap}).to_json()]
        only = set()
        for v in query.get("nodes") or []:
            only.update(x.upper() for x in v.split(",") if x)
        going = [n for n in s["nodes"] if not only or n.upper() in only]
        offline = self._offline_nodes(n.upper() for n in going)
        # CtrlSnapshotDeleteApiCallHandler: marked DELETE, the satellites updated; an offline one
        # keeps its snapshot (and the definition, and its name) until it connects again
        s["nodes"] = [n for n in s["nodes"] if n not in going or n in offline]
        if offline:
            if not only:
                s["flags"] = sorted(set(s["flags"]) | {"DELETE"})
            s["deleting_on"] = sorted(set(s.get("deleting_on", [])) | {n.upper() for n in offline})
        elif not s["nodes"]:
            del rd["snaps"][snap.upper()]
            self.data.delete_snapshot(rd["name"], s["name"])
        msgs = [success(f"Snapshot '{s['name']}' of resource '{rd['name']}' deleted.", C.MASK_SNAPSHOT, C.MASK_DEL,
                        obj_refs={"RscDfn": rd["name"], "Snapshot": s["name"]}).to_json()]
        msgs += [self._not_connected_warning(n, C.MASK_SNAPSHOT, C.MASK_DEL) for n in offline]
        if (query.get("delete_empty_resource_definition") or ["false"])[0].lower() == "true" \
                and not rd["rscs"] and not rd["snaps"]:
            msgs += self.delete_rd(rd["name"], {}, {})
        return msgs

    def restore_vd(self, name: str, snap: str, query: dict, body: Any):
        src = self._rd(name)
        s = self._snap(src, snap)
        target = self._rd(body.get("to_resource", ""))
        for vd in s["vds"]:
            flags = ["ENCRYPTED"] if s.get("encrypted") else []
            self._create_vd(target, {"size_kib": vd["size_kib"], "volume_number": vd["volume_number"],
                                     "flags": flags}, None)
        rc = Rc(C.DELETED, f"Volume definitions of '{target['name']}' restored from snapshot '{s['name']}'.",
                C.MASK_SNAPSHOT, C.MASK_CRT, obj_refs={"RscDfn": target["name"], "Snapshot": s["name"]})
        return [rc.to_json()]

    def restore_resource(self, name: str, snap: str, query: dict, body: Any):
        src = self._rd(name)
        s = self._snap(src, snap)
        target = self._rd(body.get("to_resource", ""))
        refs = {"RscDfn": target["name"], "Snapshot": s["name"]}
        if target["rscs"]:
            raise ApiError(Rc(C.FAIL_EXISTS_RSC, "Cannot restore to resource definition which already has resources",
                              C.MASK_SNAPSHOT, C.MASK_CRT, obj_refs=refs))
        if not target["vds"]:
            return [Rc(C.WARN_NOT_FOUND, "No volumes to restore.", C.MASK_SNAPSHOT, C.MASK_CRT,
                       obj_refs=refs).to_json()]
        snap_vds = {v["volume_number"]: v for v in s["vds"]}
        for vnr, vd in target["vds"].items():
            if int(vnr) not in snap_vds:
                raise ApiError(Rc(C.FAIL_NOT_FOUND_SNAPSHOT_VLM_DFN,
                                  f"Snapshot volume definition {vnr} of '{s['name']}' not found.",
                                  C.MASK_SNAPSHOT, C.MASK_CRT, obj_refs=refs))
            if snap_vds[int(vnr)]["size_kib"] != vd["size_kib"]:
                raise ApiError(Rc(C.FAIL_INVLD_VLM_SIZE,
                                  "Snapshot size does not match with volume definition size.",
                                  C.MASK_SNAPSHOT, C.MASK_CRT, obj_refs=refs))
        nodes = body.get("nodes") or s["nodes"]
        rename = body.get("stor_pool_rename") or {}
        # CtrlSnapshotRestoreApiCallHandler: ctrlPropsHelper.copy(getProps(snapshotDfn, true), toRscDfn):
        # the snapshot's copy of the resource definition's properties over the target's
        target["props"].update(s.get("rd_props", {}))
        for vnr, vd in target["vds"].items():
            self.data.fill_from(self.data.snapshot_file(src["name"], s["name"], int(vnr)), target["name"], int(vnr),
                                vd["size_kib"], [])
        msgs: list[Rc] = []
        for n in nodes:
            node = self._node(n)
            pool = s.get("pools", {}).get(node["name"]) or "DfltStorPool"
            pool = rename.get(pool, pool)
            _, m = self._new_resource(target, node, pool, [], {})
            msgs += m
        msgs += self._auto_manage(target)
        msgs.append(success(f"Resource '{target['name']}' restored from snapshot '{s['name']}'.", C.MASK_SNAPSHOT,
                            C.MASK_CRT, obj_refs=refs))
        return [m.to_json() for m in msgs]

    def rollback(self, name: str, snap: str, query: dict, body: Any):
        """CtrlSnapshotRollbackApiCallHandler, release by release:
        - up to 1.30: in place (the definition marked down, each satellite rolls its volumes back),
          to the most recent snapshot only (ensureMostRecentSnapshot);
        - 1.31.0 (prepareRollbackInTransaction): any snapshot. A safety snapshot of the diskful
          resources, every resource deleted (CtrlRscDfnTruncateApiCallHandler: diskless first),
          the snapshot restored on the nodes that hold it (CtrlSnapshotRestoreApiCallHandler: the
          snapshot's copy of the definition's properties copied back over the definition's), the
          safety snapshot deleted. Diskless resources are not made again ("TODO: try to re-create
          diskless resources"); a diskful node without the snapshot is refused first
          (ensureSnapshotsForAllVolumes);
        - 1.31.2: recreateResources - make-available on every node that had a resource (diskful as
          it was); ensureSnapshotsForAllVolumes gone (CHANGELOG: "restores snapshots on nodes that
          don't have a local snapshot");
        - 1.31.3: resetVlmDfns - the volume definitions as they were in the snapshot, sizes included
          (before, a volume of another size than its snapshot fails the restore: the resources are
          restored from the safety snapshot, and not the diskless ones).
        At every release: refused while a resource's satellite is not connected
        (ensureAllSatellitesConnected) or a resource is in use."""
        rd = self._rd(name)
        s = self._snap(rd, snap)
        refs = {"RscDfn": rd["name"], "Snapshot": s["name"]}
        if "SUCCESSFUL" not in s["flags"]:
            raise ApiError(Rc(C.FAIL_UNKNOWN_ERROR, "Unable to use failed snapshot", C.MASK_SNAPSHOT, C.MASK_MOD,
                              obj_refs=refs))
        newest = max(rd["snaps"].values(), key=lambda x: x["ts"])
        if not self.since("1.31.0") and newest is not s:
            raise ApiError(Rc(C.FAIL_EXISTS_SNAPSHOT_DFN, "Rollback is only allowed with the most recent snapshot",
                              C.MASK_SNAPSHOT, C.MASK_MOD, obj_refs=refs))
        live = {k: r for k, r in rd["rscs"].items() if "DELETE" not in r["flags"]}
        if not self.since("1.31.2"):
            holders = {n.upper() for n in s["nodes"]}
            for key in sorted(k for k, r in live.items() if not self._diskless(r)):
                if key not in holders:
                    node = self.s["nodes"][key]["name"]
                    raise ApiError(Rc(C.FAIL_NOT_FOUND_SNAPSHOT, f"Snapshot '{s['name']}' of resource '{rd['name']}' "
                                      f"on node '{node}' not found.", C.MASK_SNAPSHOT, C.MASK_MOD, obj_refs=refs))
        for node in self._offline_nodes(rd["rscs"]):
            raise ApiError(Rc(C.FAIL_NOT_CONNECTED, f"No active connection to satellite '{node}'.", C.MASK_SNAPSHOT,
                              C.MASK_MOD, details="Snapshot rollback cannot be performed when the corresponding "
                              "satellites are not connected.", obj_refs=refs))
        for rsc in rd["rscs"].values():
            if self._in_use(rd, rsc):
                raise ApiError(Rc(C.FAIL_IN_USE, f"Resource '{rd['name']}' on node '{rsc['node']}' is still in use.",
                                  C.MASK_SNAPSHOT, C.MASK_MOD, cause="Resource is mounted/in use.", obj_refs=refs))
        done = success(f"Resource '{rd['name']}' rolled back to snapshot '{s['name']}'.", C.MASK_SNAPSHOT,
                       C.MASK_MOD, obj_refs=refs)
        if not self.since("1.31.0"):
            loops = self._loops(rd)
            for vd in s["vds"]:
                vnr = str(vd["volume_number"])
                if vnr in rd["vds"]:
                    self.data.fill_from(self.data.snapshot_file(rd["name"], s["name"], int(vnr)), rd["name"],
                                        int(vnr), rd["vds"][vnr]["size_kib"], loops)
            return [done.to_json()]
        had = {k: (not self._diskless(r), r["pool"]) for k, r in live.items()}
        msgs: list[Rc] = []
        if self.since("1.31.3"):
            snap_sizes = {str(v["volume_number"]): v["size_kib"] for v in s["vds"]}
            for vnr in [v for v in rd["vds"] if v not in snap_sizes]:
                del rd["vds"][vnr]
            for vnr, size in snap_sizes.items():
                if vnr in rd["vds"]:
                    rd["vds"][vnr]["size_kib"] = size
                else:
                    rd["vds"][vnr] = {"size_kib": size, "props": {}, "flags": [], "minor": self.s["next_minor"],
                                      "uuid": _uuid()}
                    self.s["next_minor"] += 1
        mismatch = next(((vnr, v["size_kib"], rd["vds"][str(vnr)]["size_kib"]) for vnr, v in
                         ((x["volume_number"], x) for x in s["vds"]) if str(vnr) in rd["vds"]
                         and v["size_kib"] != rd["vds"][str(vnr)]["size_kib"]), None)
        # every resource goes, diskless first (the volumes' data stay: the safety snapshot's copy)
        for key in sorted(rd["rscs"], key=lambda k: not self._diskless(rd["rscs"][k])):
            self._detach_devices(rd, rd["rscs"].pop(key))
        if mismatch is not None:
            # restoreOnNode's size check fails: rollbackToSafetySnap(restoreStarted=true) restores
            # the safety snapshot (the data as they were) on the diskful nodes only
            for key, (diskful, pool) in sorted(had.items()):
                if diskful:
                    _, m = self._new_resource(rd, self.s["nodes"][key], pool, [], {})
            self._auto_manage(rd)
            vnr, snap_size, size = mismatch
            raise ApiError(Rc(C.FAIL_INVLD_VLM_SIZE, f"Snapshot size does not match for volume number {vnr}; "
                              f"snapshot size: {snap_size}KiB, required size: {size}KiB", C.MASK_SNAPSHOT,
                              C.MASK_MOD, obj_refs=refs))
        rd["props"].update(s.get("rd_props", {}))
        for vd in s["vds"]:
            vnr = str(vd["volume_number"])
            if vnr in rd["vds"]:
                self.data.fill_from(self.data.snapshot_file(rd["name"], s["name"], int(vnr)), rd["name"], int(vnr),
                                    rd["vds"][vnr]["size_kib"], [])
        for node in s["nodes"]:
            pool = s.get("pools", {}).get(node) or "DfltStorPool"
            _, m = self._new_resource(rd, self._node(node), pool, [], {})
            msgs += m
        msgs += self._auto_manage(rd)
        if self.since("1.31.2"):
            for key, (diskful, pool) in sorted(had.items()):
                existing = rd["rscs"].get(key)
                if existing is None:
                    node = self.s["nodes"][key]
                    if diskful:
                        _, m = self._new_resource(rd, node, self._diskful_pool_for(rd, node), [], {})
                    else:
                        _, m = self._new_resource(rd, node, DISKLESS_POOL, ["DISKLESS", "DRBD_DISKLESS"], {})
                    msgs += m
                elif "TIE_BREAKER" in existing["flags"]:
                    existing["flags"] = [f for f in existing["flags"] if f != "TIE_BREAKER"]
            msgs += self._auto_manage(rd)
        return [m.to_json() for m in msgs + [done]]
