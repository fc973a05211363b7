"""The emulated controller's handlers for error reports, and the lab's own controls (not LINSTOR's API): a part of controller.Controller."""
from __future__ import annotations

import copy
from typing import Any

from linstor import sharedconsts as C

from .apicall import ApiError, Rc
from .common import DEFAULT_RG, _now_ms, _uuid


class LabControl:
    # ---- error reports -----------------------------------------------------------------------
    def list_error_reports(self, query: dict, body: Any):
        with_content = (query.get("withContent") or ["false"])[0].lower() == "true"
        ids = set()
        for v in query.get("ids") or []:
            ids.update(v.split(","))
        out = []
        for rid, rep in sorted(self.s["errors"].items()):
            if ids and rid not in ids:
                continue
            item = {k: v for k, v in rep.items() if k != "text" or with_content}
            out.append(item)
        return out

    def get_error_report(self, report_id: str, query: dict, body: Any):
        rep = self.s["errors"].get(report_id)
        if rep is None:
            raise ApiError(Rc(C.MASK_ERROR | 399, f"Error report '{report_id}' not found."))
        return [dict(rep)]

    # ---- lab control (not LINSTOR API) ---------------------------------------------------------
    def set_node_status(self, node: str, status: str) -> None:
        with self.lock:
            n = self._node(node)
            n["status"] = status
            if status == "ONLINE":
                # what the controller finishes when a satellite connects again
                # (resourceDefinitionConnected / snapshotDefinitionConnected listeners)
                key = node.upper()
                for rd in list(self.s["rds"].values()):
                    for snap in list(rd["snaps"].values()):
                        if key in snap.get("deleting_on", []):
                            snap["deleting_on"].remove(key)
                            snap["nodes"] = [n for n in snap["nodes"] if n.upper() != key]
                            if not snap["nodes"]:
                                del rd["snaps"][snap["name"].upper()]
                                self.data.delete_snapshot(rd["name"], snap["name"])
                    if "DELETE" in rd["flags"]:
                        if not self._offline_nodes(rd["rscs"]):
                            self._finish_rd_delete(rd)
                        continue
                    for clone, status in list(rd["clones"].items()):
                        if status == "CLONING" and not self._offline_nodes(self._diskful_nodes(rd)):
                            rd["clones"][clone] = "COMPLETE"
                    rsc = rd["rscs"].get(key)
                    if rsc and "DELETE" in rsc["flags"]:
                        self._remove_resource(rd, key)
            self.save()

    def set_thin_chunk(self, kib: int) -> None:
        """The chunk size of the lab's thin pools, for snapshots taken from now on (lab control)."""
        with self.lock:
            self.s["thin_chunk_kib"] = int(kib)
            self.save()

    def fail_resize(self, rsc_name: str, node: str) -> None:
        """The next growth of the resource fails on a satellite (lab control)."""
        with self.lock:
            self._rd(rsc_name)
            self.s.setdefault("resize_fails", {})[rsc_name.upper()] = node
            self.save()

    def set_in_use(self, rsc_name: str, node: str, in_use: bool) -> None:
        with self.lock:
            rd = self._rd(rsc_name)
            rsc = rd["rscs"].get(node.upper())
            if rsc is None:
                raise ApiError(Rc(C.FAIL_NOT_FOUND_RSC, f"Resource '{rsc_name}' on node '{node}' not found."))
            rsc["in_use_forced"] = in_use
            self.save()

    def release_all_devices(self) -> None:
        """Detach every loop device (lab teardown)."""
        with self.lock:
            for rd in self.s["rds"].values():
                for rsc in rd["rscs"].values():
                    self._detach_devices(rd, rsc)
            self.save()

    def reattach_devices(self) -> None:
        """After a restart: check that every recorded loop still backs the right file."""
        with self.lock:
            for rd in self.s["rds"].values():
                for rsc in rd["rscs"].values():
                    for vnr, loop in list(rsc.get("loops", {}).items()):
                        expect = str(self.data.volume_file(rd["name"], int(vnr)))
                        if loop and self.data.loop_backing_file(loop) != expect:
                            del rsc["loops"][vnr]
                    self._attach_devices(rd, rsc)
            self.save()

    def bulk_definitions(self, prefix: str, count: int, nodes: list, pool: str, size_kib: int,
                         props: dict, snapshots: int = 0) -> None:
        """Many resource definitions at once, for scale tests: metadata only (no data, no devices)."""
        with self.lock:
            for i in range(count):
                name = f"{prefix}{i}"
                node_props = {k: v.replace("{i}", str(i)) for k, v in props.items()}
                rd = {"name": name, "external_name": None, "props": node_props, "flags": [], "rg": DEFAULT_RG,
                      "layers": ["DRBD", "STORAGE"], "uuid": _uuid(), "port": 7000 + i % 1000,
                      "vds": {"0": {"size_kib": size_kib, "props": {}, "flags": [], "minor": 1000 + i,
                                    "uuid": _uuid()}},
                      "rscs": {}, "snaps": {}, "clones": {}, "conns": {}}
                for n, node in enumerate(nodes):
                    rd["rscs"][node.upper()] = {"node": node, "pool": pool, "flags": [], "props": {},
                                                "uuid": _uuid(), "ts": _now_ms(), "layers": None, "loops": {},
                                                "node_id": n}
                for s in range(snapshots):
                    rd["snaps"][f"SNAPSHOT-{s}"] = {"name": f"snapshot-{s}", "nodes": list(nodes),
                                                    "props": {}, "rd_props": {}, "flags": ["SUCCESSFUL"],
                                                    "vds": [{"volume_number": 0, "size_kib": size_kib}],
                                                    "uuid": _uuid(), "ts": _now_ms(), "pools": {}}
                self.s["rds"][name.upper()] = rd
            self.save()

    def snapshot_state(self) -> dict:
        with self.lock:
            return copy.deepcopy(self.s)
