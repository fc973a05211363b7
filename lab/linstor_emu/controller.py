"""The emulated LINSTOR controller: objects, their rules and refusals, and the REST handlers.

State is a plain JSON document written atomically after every change, so a restarted emulator
picks up where it stopped. Names are stored under their upper-case key and shown as created, as
LINSTOR does. Every handler returns (HTTP status, JSON body); refusals raise ApiError and become an
ApiCallRc list with the status LINSTOR would use.
"""
from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any, Optional

from linstor import sharedconsts as C

from . import versions
from .apicall import ApiError, Rc, http_status, success
from .dataplane import DataPlane
from .spec import PARSE_ERROR_STATUS, release_spec
from .common import (AUTO_QUORUM_PROP, DEFAULT_RG, DISKLESS_POOL, Handler, NAME_RE, ON_NO_QUORUM_PROP,
                     PROP_KEY_MAX, PROP_VALUE_MAX, QUORUM_PROP, TIEBREAKER_PROP, WHITELIST,
                     _default_ctrl_props, _now_ms, _pool_props, _uuid)
from .api_cluster import ClusterApi
from .api_definitions import DefinitionApi
from .api_resources import ResourceApi
from .api_snapshots import SnapshotApi
from .lab_control import LabControl


class Controller(ClusterApi, DefinitionApi, ResourceApi, SnapshotApi, LabControl):
    """The state, routing, and the helpers every family of handlers uses (the handlers: api_cluster,
    api_definitions, api_resources, api_snapshots, lab_control)."""
    def __init__(self, state_dir: Path, config: dict):
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.state_file = self.dir / "controller-state.json"
        self.config = config
        self.data = DataPlane(self.dir / "data", config.get("host_devdirs", {}))
        self.lock = threading.RLock()
        if self.state_file.exists():
            self.s = json.loads(self.state_file.read_text())
        else:
            self.s = self._initial_state(config)
            self.save()
        self.version = versions.parse(config.get("version", versions.NEWEST))
        self.spec = release_spec(config.get("version", versions.NEWEST))
        self.routes = self._routes()

    def since(self, release: str) -> bool:
        """True if the controller played is `release` or newer (a rule that changed there)."""
        return self.version >= versions.parse(release)

    # ---- persistence -------------------------------------------------------------------------
    @staticmethod
    def _initial_state(config: dict) -> dict:
        s: dict[str, Any] = {
            "nodes": {}, "pools": {}, "rgs": {}, "rds": {}, "ctrl_props": {**_default_ctrl_props(config),
                                                                          **config.get("controller_props", {})},
            "errors": {}, "next_minor": 1000, "next_port": 7000, "next_err": 1,
            "passphrase": config.get("passphrase", True),
        }
        for node in config.get("nodes", []):
            name = node["name"]
            s["nodes"][name.upper()] = {
                "name": name, "type": node.get("type", "Satellite"), "props": dict(node.get("props", {})),
                "address": node.get("address", "127.0.0.1"), "status": "ONLINE", "uuid": _uuid(),
            }
            pools = {DISKLESS_POOL.upper(): {"name": DISKLESS_POOL, "provider_kind": "DISKLESS",
                                             "total_kib": 0, "props": {}, "uuid": _uuid()}}
            for pool in node.get("pools", []):
                pools[pool["name"].upper()] = {
                    "name": pool["name"], "provider_kind": pool.get("provider_kind", "LVM_THIN"),
                    "total_kib": int(pool.get("total_kib", 100 * 1024 * 1024)),
                    "props": dict(pool.get("props") or _pool_props(pool.get("provider_kind", "LVM_THIN"), pool["name"])),
                    "uuid": _uuid(),
                }
            s["pools"][name.upper()] = pools
        s["rgs"][DEFAULT_RG.upper()] = {"name": DEFAULT_RG, "description": "", "props": {},
                                        "select_filter": {"place_count": 2}, "vgs": [], "uuid": _uuid()}
        for rg in config.get("resource_groups", []):
            s["rgs"][rg["name"].upper()] = {
                "name": rg["name"], "description": rg.get("description", ""), "props": dict(rg.get("props", {})),
                "select_filter": dict(rg.get("select_filter", {})), "uuid": _uuid(),
                "vgs": [{"volume_number": i, "props": {}, "flags": [], "uuid": _uuid()}
                        for i in range(rg.get("volume_groups", 1))],
            }
        return s

    def save(self) -> None:
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.s))
        os.replace(tmp, self.state_file)

    # ---- routing -----------------------------------------------------------------------------
    def _routes(self) -> dict[tuple[str, str], tuple[Handler, bool, re.Pattern]]:
        """The handlers of the routes the release has (its REST API document: spec.py); a
        route the document has and the emulator does not answers 501 (an emulator gap, not LINSTOR)."""
        table = [
            ("GET", "/v1/controller/version", self.get_version, False),
            ("GET", "/v1/controller/properties", self.get_ctrl_props, False),
            ("POST", "/v1/controller/properties", self.set_ctrl_props, True),
            ("GET", "/v1/nodes", self.list_nodes, False),
            ("GET", "/v1/nodes/{}/storage-pools", self.list_node_pools, False),
            ("GET", "/v1/view/storage-pools", self.list_pools, False),
            ("GET", "/v1/resource-groups", self.list_rgs, False),
            ("POST", "/v1/resource-groups", self.create_rg, True),
            ("PUT", "/v1/resource-groups/{}", self.modify_rg, True),
            ("DELETE", "/v1/resource-groups/{}", self.delete_rg, True),
            ("GET", "/v1/resource-groups/{}/volume-groups", self.list_vgs, False),
            ("POST", "/v1/resource-groups/{}/volume-groups", self.create_vg, True),
            ("POST", "/v1/resource-groups/{}/spawn", self.spawn, True),
            ("POST", "/v1/resource-groups/{}/query-size-info", self.query_size_info, False),
            ("GET", "/v1/resource-definitions", self.list_rds, False),
            ("POST", "/v1/resource-definitions", self.create_rd, True),
            ("PUT", "/v1/resource-definitions/{}", self.modify_rd, True),
            ("DELETE", "/v1/resource-definitions/{}", self.delete_rd, True),
            ("POST", "/v1/resource-definitions/{}/clone", self.clone_rd, True),
            ("GET", "/v1/resource-definitions/{}/clone/{}", self.clone_status, False),
            ("GET", "/v1/resource-definitions/{}/sync-status", self.sync_status, False),
            ("GET", "/v1/resource-definitions/{}/volume-definitions", self.list_vds, False),
            ("POST", "/v1/resource-definitions/{}/volume-definitions", self.create_vd, True),
            ("PUT", "/v1/resource-definitions/{}/volume-definitions/{}", self.modify_vd, True),
            ("DELETE", "/v1/resource-definitions/{}/volume-definitions/{}", self.delete_vd, True),
            ("GET", "/v1/resource-definitions/{}/resources", self.list_rd_resources, False),
            ("POST", "/v1/resource-definitions/{}/resources", self.create_resources, True),
            ("POST", "/v1/resource-definitions/{}/resources/{}", self.create_resource_on, True),
            ("PUT", "/v1/resource-definitions/{}/resources/{}", self.modify_resource, True),
            ("DELETE", "/v1/resource-definitions/{}/resources/{}", self.delete_resource, True),
            ("POST", "/v1/resource-definitions/{}/resources/{}/make-available", self.make_available, True),
            ("GET", "/v1/resource-definitions/{}/resources/{}/volumes", self.list_rsc_volumes, False),
            ("POST", "/v1/resource-definitions/{}/autoplace", self.autoplace, True),
            ("GET", "/v1/resource-definitions/{}/resource-connections/{}/{}", self.get_rsc_conn, False),
            ("PUT", "/v1/resource-definitions/{}/resource-connections/{}/{}", self.modify_rsc_conn, True),
            ("GET", "/v1/resource-definitions/{}/snapshots", self.list_rd_snapshots, False),
            ("POST", "/v1/resource-definitions/{}/snapshots", self.create_snapshot, True),
            ("GET", "/v1/resource-definitions/{}/snapshots/{}", self.get_snapshot, False),
            ("PUT", "/v1/resource-definitions/{}/snapshots/{}", self.modify_snapshot, True),
            ("DELETE", "/v1/resource-definitions/{}/snapshots/{}", self.delete_snapshot, True),
            ("POST", "/v1/resource-definitions/{}/snapshot-restore-volume-definition/{}", self.restore_vd, True),
            ("POST", "/v1/resource-definitions/{}/snapshot-restore-resource/{}", self.restore_resource, True),
            ("POST", "/v1/resource-definitions/{}/snapshot-rollback/{}", self.rollback, True),
            ("POST", "/v1/actions/snapshot/multi", self.snapshot_multi, True),
            ("GET", "/v1/view/resources", self.list_resources, False),
            ("GET", "/v1/view/snapshots", self.list_snapshots, False),
            ("GET", "/v1/error-reports", self.list_error_reports, False),
            ("GET", "/v1/error-reports/{}", self.get_error_report, False),
            ("GET", "/v1/encryption/passphrase", self.passphrase_status, False),
            ("POST", "/v1/encryption/passphrase", self.passphrase_create, True),
            ("PATCH", "/v1/encryption/passphrase", self.passphrase_create, True),
        ]
        return {(m, t): (h, mut, re.compile("^" + re.escape(t).replace(r"\{\}", "([^/]+)") + "$"))
                for m, t, h, mut in table if self.spec.has(m, t)}

    def handle(self, method: str, path: str, query: dict, raw: bytes) -> tuple[int, Any]:
        """One request as the release played reads it: its routes, its parsing of the body
        (spec.py), then the handler; the answer cut to the fields the release has."""
        from urllib.parse import unquote
        route, path_known = self.spec.route(method, path)
        if route is None:
            if path_known:        # GrizzlyHttpService.LinstorMapper: NotAllowedException
                rc = Rc(C.FAIL_UNKNOWN_ERROR, f"Method '{method}' not allowed on path '{path}'.")
                return 405, [rc.to_json()]
            rc = Rc(C.FAIL_UNKNOWN_ERROR, f"Path '{path}' not found on server.")   # NotFoundException
            return 404, [rc.to_json()]
        problem, body = self.spec.read_body(route, raw)
        if problem is not None:
            kind = PARSE_ERROR_STATUS.get((method, route.template), "400")
            rc = Rc(C.API_CALL_PARSE_ERROR, "Unable to parse input json.", details=problem)
            if kind.endswith("r"):
                with self.lock:
                    rc.error_report_ids.append(self.add_error_report(rc.message, problem,
                                                                     "JsonMappingException"))
                    self.save()
            return (500 if kind.startswith("500") else 400), [rc.to_json()]
        entry = self.routes.get((method, route.template))
        if entry is None:
            rc = Rc(C.FAIL_UNKNOWN_ERROR, f"The lab's LINSTOR emulator does not implement {method} {route.template}")
            return 501, [rc.to_json()]
        handler, mutating, rx = entry
        hit = rx.match(path)
        args = tuple(unquote(a) for a in hit.groups()) if hit else ()
        with self.lock:
            try:
                result = handler(*args, query=query, body=body if body is not None else {})
            except ApiError as err:
                self._attach_error_reports(err.rcs)
                if mutating:
                    self.save()
                return http_status(err.rcs, 500), [rc.to_json() for rc in err.rcs]
            if mutating:
                self.save()
        status, out = result if isinstance(result, tuple) else (200, result)
        return status, self.spec.shape(self.spec.response_schema(route, status), out)

    def _attach_error_reports(self, rcs: list[Rc]) -> None:
        quiet = {C.FAIL_IN_USE, C.FAIL_NOT_ENOUGH_NODES, C.FAIL_INVLD_VLM_SIZE, C.FAIL_NOT_ALL_UPTODATE}
        for rc in rcs:
            if rc.is_error and rc.code not in quiet and not rc.error_report_ids:
                rc.error_report_ids.append(self.add_error_report(rc.message, rc.details or ""))

    def add_error_report(self, message: str, details: str, exception: str = "ApiRcException") -> str:
        num = self.s["next_err"]
        self.s["next_err"] = num + 1
        report_id = f"6790A1B2-00000-{num:06d}"
        self.s["errors"][report_id] = {
            "node_name": "controller", "error_time": _now_ms(), "filename": f"ErrorReport-{report_id}.log",
            "module": "CONTROLLER", "version": self.config.get("version", versions.NEWEST), "exception": exception,
            "exception_message": message,
            "text": f"ERROR REPORT {report_id}\n\nReported error:\n===============\n\n"
                    f"Category:  RuntimeException\nDescription: {message}\nDetails: {details}\n",
        }
        return report_id

    # ---- lookups -----------------------------------------------------------------------------
    def _rd(self, name: str) -> dict:
        rd = self.s["rds"].get(name.upper())
        if rd is None:
            raise ApiError(Rc(C.FAIL_NOT_FOUND_RSC_DFN, f"Resource definition '{name}' not found.",
                              C.MASK_RSC_DFN, obj_refs={"RscDfn": name}))
        return rd

    def _node(self, name: str) -> dict:
        node = self.s["nodes"].get(name.upper())
        if node is None:
            raise ApiError(Rc(C.FAIL_NOT_FOUND_NODE, f"Node '{name}' not found.", C.MASK_NODE,
                              obj_refs={"Node": name}))
        return node

    def _rg(self, name: str) -> dict:
        rg = self.s["rgs"].get(name.upper())
        if rg is None:
            raise ApiError(Rc(C.FAIL_NOT_FOUND_RSC_GRP, f"Resource group '{name}' not found.", C.MASK_RSC_GRP,
                              obj_refs={"RscGrp": name}))
        return rg

    def _pool(self, node: str, pool: str) -> dict:
        p = self.s["pools"].get(node.upper(), {}).get(pool.upper())
        if p is None:
            raise ApiError(Rc(C.FAIL_NOT_FOUND_STOR_POOL,
                              f"Storage pool '{pool}' on node '{node}' not found.", C.MASK_STOR_POOL,
                              obj_refs={"StorPoolDfn": pool, "Node": node}))
        return p

    @staticmethod
    def _check_name(name: str, code: int, kind: str, mask: int) -> None:
        if not isinstance(name, str) or not NAME_RE.match(name):
            raise ApiError(Rc(code, f"The specified {kind} name '{name}' is not a valid {kind} name.", mask,
                              C.MASK_CRT,
                              cause="Names must be 2-48 characters, start with a letter or '_', "
                                    "and contain only letters, digits, '_' and '-'."))

    def _check_props(self, props: dict, what: str) -> None:
        """CtrlPropsHelper.fillProperties: a key outside `Aux/` must be on the whitelist of the
        object (WhitelistProps, GeneratedPropertyRules + the DRBD options the satellites report)
        with a valid value; a key longer than PropsContainer.PATH_MAX_LENGTH (256) is invalid; a
        value longer than the PROPS_CONTAINERS column (VARCHAR(4096)) fails the database write."""
        for key, value in props.items():
            value = str(value)
            if key.startswith("Aux/"):
                if len(key) > PROP_KEY_MAX:
                    raise ApiError(Rc(C.FAIL_INVLD_PROP, f"Invalid key: {key}", cause=f"The key '{key}' is invalid."))
            else:
                rule = WHITELIST.get(key)
                if rule is None:
                    raise ApiError(Rc(C.FAIL_INVLD_PROP, f"Invalid property key: {key}",
                                      cause=f"The key '{key}' is not whitelisted."))
                if rule and not re.fullmatch(rule, value, re.IGNORECASE):
                    raise ApiError(Rc(C.FAIL_INVLD_PROP, f"Invalid property({key}) value: {value}",
                                      cause=f"The value '{value}' is not valid for the key '{key}'"))
            if len(value) > PROP_VALUE_MAX:
                raise ApiError(Rc(C.FAIL_SQL, f"A database error occurred while modifying {what}",
                                  cause=f"value too long for type character varying({PROP_VALUE_MAX})"))

    def _prop_chain(self, rd: dict, key: str, default: Optional[str] = None) -> Optional[str]:
        if key in rd["props"]:
            return rd["props"][key]
        rg = self.s["rgs"].get(rd["rg"].upper())
        if rg and key in rg["props"]:
            return rg["props"][key]
        return self.s["ctrl_props"].get(key, default)

    # ---- capacity ----------------------------------------------------------------------------
    def _is_thin(self, pool: dict) -> bool:
        return pool["provider_kind"] in ("LVM_THIN", "ZFS_THIN", "FILE_THIN")

    def _pool_used_kib(self, node: str, pool: dict) -> int:
        used = 0
        pkey = pool["name"].upper()
        for rd in self.s["rds"].values():
            rsc = rd["rscs"].get(node.upper())
            if rsc and not self._diskless(rsc) and rsc["pool"].upper() == pkey:
                for vnr, vd in rd["vds"].items():
                    if self._is_thin(pool):
                        used += self.data.allocated_kib(rd["name"], int(vnr))
                    else:
                        used += vd["size_kib"]
            if self._is_thin(pool):
                for snap in rd["snaps"].values():
                    if node.upper() in {n.upper() for n in snap["nodes"]}:
                        for vd in snap["vds"]:
                            f = self.data.snapshot_file(rd["name"], snap["name"], vd["volume_number"])
                            try:
                                used += f.stat().st_blocks // 2
                            except FileNotFoundError:
                                pass
        return used

    def _pool_free_kib(self, node: str, pool: dict) -> int:
        if pool["provider_kind"] == "DISKLESS":
            return 0
        if self._usage is not None:
            used = self._usage.get((node.upper(), pool["name"].upper()), 0)
        else:
            used = self._pool_used_kib(node, pool)
        return max(0, pool["total_kib"] - used)

    # ---- resource helpers --------------------------------------------------------------------
    @staticmethod
    def _diskless(rsc: dict) -> bool:
        return "DISKLESS" in rsc["flags"]

    def _diskful_nodes(self, rd: dict) -> list[str]:
        return [k for k, r in rd["rscs"].items() if not self._diskless(r) and "DELETE" not in r["flags"]]

    def _layers(self, rd: dict, rsc: Optional[dict] = None) -> list[str]:
        if rsc and rsc.get("layers"):
            return rsc["layers"]
        return rd["layers"]

    def _device_paths(self, rd: dict, rsc: dict, vnr: int) -> tuple[str, list[str]]:
        layers = self._layers(rd, rsc)
        name = rd["name"]
        if "DRBD" in layers:
            minor = rd["vds"][str(vnr)]["minor"]
            return f"/dev/drbd{minor}", [f"/dev/drbd/by-res/{name}/{vnr}"]
        if "LUKS" in layers:
            return f"/dev/mapper/{name}_{vnr:05d}", []
        node_pools = self.s["pools"][rsc["node"].upper()]
        pool = node_pools.get(rsc["pool"].upper(), {"props": {}, "name": rsc["pool"]})
        vg = (pool["props"].get("StorDriver/LvmVg") or pool["props"].get("StorDriver/ZPool")
              or pool["props"].get("StorDriver/ZPoolThin") or pool["name"])
        return f"/dev/{vg}/{name}_{vnr:05d}", []

    def _in_use(self, rd: dict, rsc: dict) -> bool:
        if rsc.get("in_use_forced"):
            return True
        return any(self.data.loop_in_use(loop) for loop in rsc.get("loops", {}).values())

    def _loops(self, rd: dict) -> list[str]:
        return [loop for r in rd["rscs"].values() for loop in r.get("loops", {}).values() if loop]

    def _attach_devices(self, rd: dict, rsc: dict) -> None:
        rsc.setdefault("loops", {})
        for vnr in rd["vds"]:
            if rsc["loops"].get(vnr):
                continue
            dev, links = self._device_paths(rd, rsc, int(vnr))
            loop = self.data.attach(rsc["node"], rd["name"], int(vnr), dev, links)
            rsc["loops"][vnr] = loop

    def _detach_devices(self, rd: dict, rsc: dict, only_vnr: Optional[str] = None) -> None:
        for vnr, loop in list(rsc.get("loops", {}).items()):
            if only_vnr is not None and vnr != only_vnr:
                continue
            if vnr in rd["vds"]:
                dev, links = self._device_paths(rd, rsc, int(vnr))
            else:
                dev, links = rsc.get("devs", {}).get(vnr, ("/dev/null-none", []))
            self.data.detach(rsc["node"], loop, dev, links)
            del rsc["loops"][vnr]

    def _ensure_volume_data(self, rd: dict) -> None:
        for vnr, vd in rd["vds"].items():
            if not self.data.has_volume(rd["name"], int(vnr)):
                self.data.create_volume(rd["name"], int(vnr), vd["size_kib"])

    def _new_resource(self, rd: dict, node: dict, pool: str, flags: list[str], props: dict,
                      layers: Optional[list[str]] = None) -> tuple[dict, list[Rc]]:
        key = node["name"].upper()
        if key in rd["rscs"]:
            raise ApiError(Rc(C.FAIL_EXISTS_RSC,
                              f"A resource with the name '{rd['name']}' on node '{node['name']}' already exists.",
                              C.MASK_RSC, C.MASK_CRT, obj_refs={"RscDfn": rd["name"], "Node": node["name"]}))
        pool_obj = self._pool(node["name"], pool)
        diskless = "DISKLESS" in flags or pool_obj["provider_kind"] == "DISKLESS"
        msgs = []
        stack = layers or rd["layers"]
        if diskless:
            if "DRBD" not in stack:
                raise ApiError(Rc(C.FAIL_INVLD_LAYER_STACK,
                                  f"Diskless resource on node '{node['name']}' needs the DRBD layer.",
                                  C.MASK_RSC, C.MASK_CRT))
            if "DISKLESS" not in flags:
                msgs.append(Rc(C.MASK_WARN | 1, "Resource will be automatically flagged as drbd diskless",
                               C.MASK_RSC, C.MASK_CRT))
            flags = sorted(set(flags) | {"DISKLESS", "DRBD_DISKLESS"})
        else:
            need = sum(vd["size_kib"] for vd in rd["vds"].values())
            if not self._is_thin(pool_obj) and need > self._pool_free_kib(node["name"], pool_obj):
                raise ApiError(Rc(C.FAIL_NOT_ENOUGH_FREE_SPACE,
                                  f"Not enough free space in storage pool '{pool}' on node '{node['name']}'.",
                                  C.MASK_RSC, C.MASK_CRT))
        rsc = {"node": node["name"], "pool": pool_obj["name"], "flags": flags, "props": dict(props),
               "uuid": _uuid(), "ts": _now_ms(), "layers": layers, "loops": {}, "node_id": self._node_id(rd)}
        if not diskless:
            self._ensure_volume_data(rd)
        rd["rscs"][key] = rsc
        for other in rd["rscs"].values():      # diskless peers get their device once data exists
            self._attach_devices(rd, other)
        msgs.append(success(f"New resource '{rd['name']}' on node '{node['name']}' registered.", C.MASK_RSC,
                            C.MASK_CRT, obj_refs={"RscDfn": rd["name"], "Node": node["name"]}))
        msgs.append(success(f"Resource '{rd['name']}' on '{node['name']}' ready", C.MASK_RSC, C.MASK_CRT,
                            obj_refs={"RscDfn": rd["name"], "Node": node["name"]}))
        return rsc, msgs

    @staticmethod
    def _node_id(rd: dict) -> int:
        used = {r.get("node_id") for r in rd["rscs"].values()}
        n = 0
        while n in used:
            n += 1
        return n

    def _remove_resource(self, rd: dict, key: str) -> None:
        rsc = rd["rscs"].pop(key)
        self._detach_devices(rd, rsc)
        if not self._diskful_nodes(rd):
            # the last disk is gone: so are the data (snapshots keep their own copies)
            for vnr in rd["vds"]:
                self.data.delete_volume(rd["name"], int(vnr))

    def _tiebreaker_enabled(self, rd: dict) -> bool:
        # CtrlRscAutoTieBreakerHelper.isAutoTieBreakerEnabled: the property (definition, group,
        # controller) equalsIgnoreCase "true"
        return str(self._prop_chain(rd, TIEBREAKER_PROP, "true")).lower() == "true"

    def _tiebreaker_needed(self, rd: dict, leaving: Optional[str] = None) -> bool:
        """CtrlRscAutoTieBreakerHelper.shouldTieBreakerExist: from 1.26.1 an even number (>= 2) of
        diskful DRBD resources ("Tiebreaker: Allow in all even-numbered (>0) diskful and 0 diskless
        setups"), before exactly 2; and no diskless one that is not the tie-breaker (`leaving`:
        one being deleted)."""
        if "DRBD" not in rd["layers"] or not self._tiebreaker_enabled(rd):
            return False
        diskful = [k for k in self._diskful_nodes(rd) if k != leaving]
        diskless = [k for k, r in rd["rscs"].items() if self._diskless(r) and "TIE_BREAKER" not in r["flags"]
                    and "DELETE" not in r["flags"] and k != leaving]
        even = len(diskful) >= 2 and len(diskful) % 2 == 0 if self.since("1.26.1") else len(diskful) == 2
        return even and not diskless

    def _auto_tiebreaker(self, rd: dict) -> list[Rc]:
        tiebreakers = [k for k, r in rd["rscs"].items() if "TIE_BREAKER" in r["flags"]]
        need = self._tiebreaker_needed(rd)
        msgs = []
        if need and not tiebreakers:
            for key in sorted(self.s["nodes"]):
                node = self.s["nodes"][key]
                if key in rd["rscs"] or node["status"] != "ONLINE":
                    continue
                if DISKLESS_POOL.upper() not in self.s["pools"].get(key, {}):
                    continue
                self._new_resource(rd, node, DISKLESS_POOL, ["DISKLESS", "DRBD_DISKLESS", "TIE_BREAKER"], {})
                msgs.append(Rc(C.MASK_INFO | 3, f"Tie breaker resource '{rd['name']}' created on {node['name']}",
                               C.MASK_RSC, C.MASK_CRT, obj_refs={"RscDfn": rd["name"], "Node": node["name"]}))
                break
        elif not need:
            for key in tiebreakers:
                if not self._in_use(rd, rd["rscs"][key]):
                    node = rd["rscs"][key]["node"]
                    self._remove_resource(rd, key)
                    msgs.append(Rc(C.MASK_INFO | 4, f"Tie breaker resource '{rd['name']}' on {node} removed",
                                   C.MASK_RSC, C.MASK_DEL))
        return msgs

    def _auto_quorum(self, rd: dict) -> list[Rc]:
        """CtrlRscAutoQuorumHelper.manage: quorum is feasible with 3+ diskful DRBD resources or 2 and
        a diskless one (the tie-breaker counts; deleting ones do not). From 1.31.0 it sets
        `DrbdOptions/Resource/quorum` majority/off on the definition unless a user set that
        property (Internal/Drbd/QuorumSetBy; on the definition, its group or the controller: then
        that value); up to 1.30 it works only while `DrbdOptions/auto-quorum` is set and not
        "disabled", and sets `on-no-quorum` to its value as well (removed when not feasible)."""
        if "DRBD" not in rd["layers"]:
            return []
        live = [r for r in rd["rscs"].values() if "DELETE" not in r["flags"]]
        diskless = sum(1 for r in live if self._diskless(r))
        diskful = len(live) - diskless
        feasible = diskful >= 3 or (diskful == 2 and diskless >= 1)
        props, msgs = rd["props"], []
        if self.since("1.31.0"):
            if rd.get("quorum_set_by_user"):
                return []
            rg = self.s["rgs"].get(rd["rg"].upper(), {"props": {}})
            user = next((c[QUORUM_PROP] for c in (rg["props"], self.s["ctrl_props"]) if QUORUM_PROP in c), None)
            value = user or ("majority" if feasible else "off")
            if props.get(QUORUM_PROP) != value:
                msgs.append(Rc(C.MASK_INFO | 2, f"Resource-definition property '{QUORUM_PROP}' updated from "
                               f"{props.get(QUORUM_PROP)!r} to '{value}' by {'User' if user else 'AutoQuorum'}",
                               C.MASK_RSC_DFN, C.MASK_MOD))
            props[QUORUM_PROP] = value
            return msgs
        auto = self._prop_chain(rd, AUTO_QUORUM_PROP)
        if auto is None or auto == "disabled":
            return []
        if feasible:
            props[QUORUM_PROP] = "majority"
            props[ON_NO_QUORUM_PROP] = auto
        else:
            props[QUORUM_PROP] = "off"
            props.pop(ON_NO_QUORUM_PROP, None)
        return msgs

    def _auto_manage(self, rd: dict) -> list[Rc]:
        """CtrlRscAutoHelper.manage after a change of the definition's resources: the tie-breaker
        first, then quorum (which counts it)."""
        return self._auto_tiebreaker(rd) + self._auto_quorum(rd)

    # ---- JSON views --------------------------------------------------------------------------
    def _node_json(self, node: dict) -> dict:
        return {
            "name": node["name"], "type": node["type"], "flags": [], "props": dict(node["props"]),
            "net_interfaces": [{"name": "default", "address": node["address"], "satellite_port": 3366,
                                "satellite_encryption_type": "PLAIN", "is_active": True, "uuid": _uuid()}],
            "connection_status": node["status"], "uuid": node["uuid"],
            "storage_providers": ["DISKLESS", "LVM", "LVM_THIN", "ZFS", "ZFS_THIN", "FILE", "FILE_THIN"],
            "resource_layers": ["DRBD", "LUKS", "NVME", "WRITECACHE", "CACHE", "BCACHE", "STORAGE"],
            "unsupported_providers": {}, "unsupported_layers": {},
        }

    def _pool_json(self, node_key: str, pool: dict) -> dict:
        node = self.s["nodes"][node_key]
        out = {
            "storage_pool_name": pool["name"], "node_name": node["name"], "provider_kind": pool["provider_kind"],
            "props": dict(pool["props"]), "uuid": pool["uuid"], "reports": [],
            "free_space_mgr_name": f"{node['name']};{pool['name']}",
            "static_traits": {"Provisioning": "Thin" if self._is_thin(pool) else "Fat",
                              "SupportsSnapshots": "true" if self._snapshots_ok(pool) else "false"},
            "supports_snapshots": self._snapshots_ok(pool), "external_locking": False,
        }
        if pool["provider_kind"] != "DISKLESS":
            out["free_capacity"] = self._pool_free_kib(node_key, pool)
            out["total_capacity"] = pool["total_kib"]
        return out

    def _snapshots_ok(self, pool: dict) -> bool:
        return pool["provider_kind"] in ("LVM_THIN", "ZFS", "ZFS_THIN", "FILE_THIN")

    def _vd_json(self, rd: dict, vnr: str) -> dict:
        vd = rd["vds"][vnr]
        out = {"volume_number": int(vnr), "size_kib": vd["size_kib"], "props": dict(vd["props"]),
               "flags": list(vd["flags"]), "uuid": vd["uuid"], "layer_data": []}
        if "DRBD" in rd["layers"]:
            out["layer_data"].append({"type": "DRBD", "data": {"resource_name_suffix": "", "volume_number": int(vnr),
                                                               "minor_number": vd["minor"]}})
        out["layer_data"].append({"type": "STORAGE"})
        return out

    def _rd_json(self, rd: dict, with_vds: bool) -> dict:
        out = {"name": rd["name"], "props": dict(rd["props"]), "flags": list(rd["flags"]), "uuid": rd["uuid"],
               "resource_group_name": rd["rg"], "layer_data": []}
        if rd.get("external_name"):
            out["external_name"] = rd["external_name"]
        for layer in rd["layers"]:
            if layer == "DRBD":
                out["layer_data"].append({"type": "DRBD", "data": {
                    "resource_name_suffix": "", "peer_slots": 7, "al_stripes": 1, "al_stripe_size_kib": 32,
                    "port": rd["port"], "transport_type": "IP", "secret": "emulated", "down": False}})
            else:
                out["layer_data"].append({"type": layer})
        if with_vds:
            out["volume_definitions"] = [self._vd_json(rd, v) for v in sorted(rd["vds"], key=int)]
        return out

    def _rsc_json(self, rd: dict, key: str, with_volumes: bool) -> dict:
        rsc = rd["rscs"][key]
        in_use = self._in_use(rd, rsc)
        diskless = self._diskless(rsc)
        layers = self._layers(rd, rsc)
        pool = self.s["pools"].get(key, {}).get(rsc["pool"].upper(), {"provider_kind": "DISKLESS"})
        volumes = []
        drbd_volumes = []
        storage_volumes = []
        for vnr in sorted(rd["vds"], key=int):
            vd = rd["vds"][vnr]
            dev, _ = self._device_paths(rd, rsc, int(vnr))
            if diskless:
                allocated = 0
            elif self._is_thin(pool):
                allocated = self.data.allocated_kib(rd["name"], int(vnr))
            else:
                allocated = vd["size_kib"]
            disk_state = "Diskless" if diskless else "UpToDate"
            if "TIE_BREAKER" in rsc["flags"]:
                disk_state = "TieBreaker"
            if "DELETE" in rsc["flags"]:
                disk_state = "DELETING"
            layer_list = []
            if "DRBD" in layers:
                drbd_vol = {"drbd_volume_definition": {"resource_name_suffix": "", "volume_number": int(vnr),
                                                       "minor_number": vd["minor"]},
                            "device_path": dev, "allocated_size_kib": allocated,
                            "usable_size_kib": vd.get("usable_kib", vd["size_kib"]), "disk_state": disk_state}
                if not diskless:
                    drbd_vol["backing_device"] = self._device_paths(rd, {**rsc, "layers": ["STORAGE"]}, int(vnr))[0]
                    drbd_vol["meta_disk"] = "internal"
                drbd_volumes.append(drbd_vol)
                layer_list.append({"type": "DRBD", "data": drbd_vol})
            stor_vol = {"volume_number": int(vnr), "allocated_size_kib": allocated,
                        "usable_size_kib": vd.get("usable_kib", vd["size_kib"]), "disk_state": "[]"}
            if not diskless:
                stor_vol["device_path"] = self._device_paths(rd, {**rsc, "layers": ["STORAGE"]}, int(vnr))[0]
            storage_volumes.append(stor_vol)
            layer_list.append({"type": "STORAGE", "data": stor_vol})
            repl = {}
            for other_key, other in rd["rscs"].items():
                if other_key != key:
                    repl[other["node"]] = {"replication_state": "Established", "done_percentage": 100.0}
            volumes.append({
                "volume_number": int(vnr), "storage_pool_name": rsc["pool"], "provider_kind": pool["provider_kind"],
                "device_path": dev, "allocated_size_kib": allocated,
                "usable_size_kib": vd.get("usable_kib", vd["size_kib"]),
                "props": {"StorPoolName": rsc["pool"]}, "flags": [], "uuid": _uuid(), "reports": [],
                "state": {"disk_state": disk_state, "replication_states": repl},
                "layer_data_list": layer_list,
            })
        storage_layer = {"type": "STORAGE", "resource_name_suffix": "", "children": [],
                         "storage": {"storage_volumes": storage_volumes}}
        if "DRBD" in layers:
            connections = {o["node"]: {"connected": True, "message": "Connected"}
                           for k, o in rd["rscs"].items() if k != key}
            layer_object = {"type": "DRBD", "resource_name_suffix": "", "children": [storage_layer],
                            "drbd": {"node_id": rsc.get("node_id", 0), "tcp_ports": [rd["port"]], "peer_slots": 7,
                                     "al_stripes": 1, "al_size": 32,
                                     "flags": ["DISKLESS", "INITIALIZED"] if diskless else ["INITIALIZED"],
                                     "drbd_volumes": drbd_volumes, "connections": connections,
                                     "promotion_score": 0 if in_use else 10102, "may_promote": not in_use,
                                     "drbd_resource_definition": {"resource_name_suffix": "", "peer_slots": 7,
                                                                  "al_stripes": 1, "al_stripe_size_kib": 32,
                                                                  "port": rd["port"], "transport_type": "IP",
                                                                  "secret": "emulated", "down": False}}}
        else:
            layer_object = storage_layer
        out = {"name": rd["name"], "node_name": rsc["node"], "props": {"StorPoolName": rsc["pool"], **rsc["props"]},
               "flags": list(rsc["flags"]), "layer_object": layer_object, "state": {"in_use": in_use},
               "uuid": rsc["uuid"], "create_timestamp": rsc["ts"]}
        if with_volumes:
            out["volumes"] = volumes
        return out

    def _snap_json(self, rd: dict, snap: dict) -> dict:
        # A snapshot definition holds its own properties and the copy of the resource definition's
        # taken with it (SnapshotDefinition.getSnapDfnProps / getRscDfnProps); from 1.30 (REST
        # 1.24) the listing shows both apart and `props` as the copy with its own on top
        # (Json.apiToSnapshot: `props = rsc dfn props; putAll(snap dfn props)`); older releases
        # have `props` only (spec.py cuts the split fields)
        return {
            "name": snap["name"], "resource_name": rd["name"], "nodes": list(snap["nodes"]),
            "props": {**snap.get("rd_props", {}), **snap["props"]},
            "snapshot_definition_props": dict(snap["props"]),
            "resource_definition_props": dict(snap.get("rd_props", {})),
            "flags": list(snap["flags"]), "uuid": snap["uuid"],
            "volume_definitions": [dict(v) for v in snap["vds"]],
            "snapshots": [{"snapshot_name": snap["name"], "node_name": n, "create_timestamp": snap["ts"],
                           "flags": list(snap["flags"]), "uuid": _uuid(),
                           # SnapshotVolumeNode.state: set only by the EBS provider (CHANGELOG
                           # 1.20.0 "to include a snapshot state"; EbsProvider) - absent otherwise
                           "snapshot_volumes": [{"vlm_nr": v["volume_number"], "uuid": _uuid(), "props": {}}
                                                for v in snap["vds"]]}
                          for n in snap["nodes"]],
        }

    def _rg_json(self, rg: dict) -> dict:
        return {"name": rg["name"], "description": rg.get("description", ""), "props": dict(rg["props"]),
                "select_filter": dict(rg["select_filter"]), "uuid": rg["uuid"]}
