"""The emulated LINSTOR controller: objects, their rules and refusals, and the REST handlers.

State is a plain JSON document written atomically after every change, so a restarted emulator
picks up where it stopped. Names are stored under their upper-case key and shown as created, as
LINSTOR does. Every handler returns (HTTP status, JSON body); refusals raise ApiError and become an
ApiCallRc list with the status LINSTOR would use.
"""
from __future__ import annotations

import copy
import json
import os
import re
import threading
import time
import random
import uuid
from pathlib import Path
from typing import Any, Callable, Optional

from linstor import sharedconsts as C

from . import placement, versions
from .spec import PARSE_ERROR_STATUS, release_spec
from .apicall import ApiError, Rc, http_status, success
from .dataplane import DataPlane

NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_-]{1,47}$")
DISKLESS_POOL = "DfltDisklessStorPool"
DEFAULT_RG = "DfltRscGrp"
TIEBREAKER_PROP = "DrbdOptions/auto-add-quorum-tiebreaker"
AUTO_QUORUM_PROP = "DrbdOptions/auto-quorum"
QUORUM_PROP = "DrbdOptions/Resource/quorum"
ON_NO_QUORUM_PROP = "DrbdOptions/Resource/on-no-quorum"


def _pool_props(kind: str, name: str) -> dict:
    """The storage pool properties `linstor storage-pool create <kind> ...` leaves (python-linstor's
    storage pool create: lvmthin takes `vg/thinpool` and sets LvmVg and ThinPool, zfs ZPool,
    zfsthin ZPoolThin; file pools their directory)."""
    vg = "linstor_" + name.lower()
    return {"LVM": {"StorDriver/LvmVg": vg},
            "LVM_THIN": {"StorDriver/LvmVg": vg, "StorDriver/ThinPool": "thinpool"},
            "ZFS": {"StorDriver/ZPool": vg}, "ZFS_THIN": {"StorDriver/ZPoolThin": vg},
            "FILE": {"StorDriver/FileDir": f"/var/lib/linstor-pools/{name}"},
            "FILE_THIN": {"StorDriver/FileDir": f"/var/lib/linstor-pools/{name}"}}.get(kind, {})

Handler = Callable[..., tuple[int, Any]]

PROP_KEY_MAX = 256          # PropsContainer.PATH_MAX_LENGTH
PROP_VALUE_MAX = 4096       # PROPS_CONTAINERS.PROP_VALUE VARCHAR(4096) (init-db.sql)
# The whitelisted keys (outside Aux/) the lab's users set, with the values LINSTOR accepts for them
# (a regular expression; "" = any): the DRBD options come from drbdsetup's option list, the rest
# from GeneratedPropertyRules. Any other key is refused as LINSTOR refuses a key it does not know.
WHITELIST = {
    "StorPoolName": r"[A-Za-z_][A-Za-z0-9_-]{1,47}",
    "DrbdOptions/Net/allow-two-primaries": r"yes|no",
    "DrbdOptions/Net/protocol": r"A|B|C",
    "DrbdOptions/Resource/quorum": r"off|majority|all|[0-9]+",
    "DrbdOptions/Resource/on-no-quorum": r"io-error|suspend-io",
    "DrbdOptions/auto-quorum": r"io-error|suspend-io|disabled",
    "DrbdOptions/auto-add-quorum-tiebreaker": r"true|false|yes|no",
    "FileSystem/Type": r"ext4|xfs",
    "FileSystem/MkfsParams": "",
    "PeerSlotsNewResource": r"[0-9]+",
}


def _default_ctrl_props(config: dict) -> dict:
    """What a new controller's database holds: up to 1.30 `DrbdOptions/auto-quorum io-error`
    (linstor-server's migrations set it on /CTRLCFG); 1.31.0's Migration_2025_02_19_AutoQuorumInheritRework
    deleted the property (auto-quorum works on DrbdOptions/Resource/quorum itself since)."""
    if versions.parse(config.get("version", versions.NEWEST)) < (1, 31, 0):
        return {AUTO_QUORUM_PROP: "io-error"}
    return {}


def _uuid() -> str:
    # random like LINSTOR's, without a urandom call each (listings make tens of thousands)
    return str(uuid.UUID(int=random.getrandbits(128), version=4))


def _now_ms() -> int:
    return int(time.time() * 1000)


def _props_match(props: dict, filters: list[str]) -> bool:
    for item in filters:
        key, eq, value = item.partition("=")
        if key not in props or (eq and props[key] != value):
            return False
    return True


def _name_filter(query: dict, key: str) -> Optional[set[str]]:
    values = query.get(key)
    if not values:
        return None
    out = set()
    for v in values:
        out.update(x.upper() for x in v.split(",") if x)
    return out


class Controller:
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

    # ---- controller --------------------------------------------------------------------------
    def get_version(self, query: dict, body: Any):
        return {"version": self.config.get("version", versions.NEWEST), "git_hash": "0e9b3f6e2c5d1c1d",
                "build_time": "2026-05-01T00:00:00+00:00",
                "rest_api_version": self.config.get("rest_api_version")
                or versions.rest_api_version(self.config.get("version", versions.NEWEST))}

    def get_ctrl_props(self, query: dict, body: Any):
        return dict(self.s["ctrl_props"])

    def set_ctrl_props(self, query: dict, body: Any):
        self._check_props(body.get("override_props") or {}, "the controller's properties")
        self.s["ctrl_props"].update(body.get("override_props", {}))
        for key in body.get("delete_props", []) or []:
            self.s["ctrl_props"].pop(key, None)
        return 201, [success("Successfully set property", C.MASK_CTRL_CONF, C.MASK_MOD).to_json()]

    def passphrase_status(self, query: dict, body: Any):
        return []

    def passphrase_create(self, query: dict, body: Any):
        self.s["passphrase"] = True
        return [success("Crypt passphrase created.", C.MASK_CTRL_CONF, C.MASK_CRT).to_json()]

    # ---- nodes and pools ---------------------------------------------------------------------
    def list_nodes(self, query: dict, body: Any):
        names = _name_filter(query, "nodes")
        props = query.get("props", [])
        return [self._node_json(n) for k, n in sorted(self.s["nodes"].items())
                if (names is None or k in names) and _props_match(n["props"], props)]

    def list_pools(self, query: dict, body: Any, only_node: Optional[str] = None):
        self._usage = self._usage_map()          # one pass over the definitions for all pools
        try:
            return self._list_pools(query, only_node)
        finally:
            self._usage = None

    def _usage_map(self) -> dict:
        used: dict = {}
        thin_kib: dict = {}
        for rd in self.s["rds"].values():
            for nkey, rsc in rd["rscs"].items():
                if self._diskless(rsc):
                    continue
                pool = self.s["pools"].get(nkey, {}).get(rsc["pool"].upper())
                if pool is None:
                    continue
                key = (nkey, pool["name"].upper())
                thin = self._is_thin(pool)
                if thin and rd["name"] not in thin_kib:     # one backing file per volume, whatever the node
                    thin_kib[rd["name"]] = (
                        sum(self.data.allocated_kib(rd["name"], int(vnr)) for vnr in rd["vds"])
                        + sum(self.data.snapshot_allocated_kib(rd["name"], snap["name"], vd["volume_number"])
                              for snap in rd["snaps"].values() for vd in snap["vds"]))
                size = thin_kib[rd["name"]] if thin else sum(vd["size_kib"] for vd in rd["vds"].values())
                used[key] = used.get(key, 0) + size
        return used

    _usage: Optional[dict] = None

    def _list_pools(self, query: dict, only_node: Optional[str]):
        nodes = {only_node.upper()} if only_node else _name_filter(query, "nodes")
        pools = _name_filter(query, "storage_pools")
        props = query.get("props", [])
        out = []
        for nkey in sorted(self.s["pools"]):
            if nodes is not None and nkey not in nodes:
                continue
            for pkey, pool in sorted(self.s["pools"][nkey].items()):
                if (pools is None or pkey in pools) and _props_match(pool["props"], props):
                    out.append(self._pool_json(nkey, pool))
        return out

    def list_node_pools(self, node: str, query: dict, body: Any):
        self._node(node)
        return self.list_pools(query, body, only_node=node)

    # ---- resource groups ---------------------------------------------------------------------
    def list_rgs(self, query: dict, body: Any):
        names = _name_filter(query, "resource_groups")
        props = query.get("props", [])
        return [self._rg_json(rg) for k, rg in sorted(self.s["rgs"].items())
                if (names is None or k in names) and _props_match(rg["props"], props)]

    def create_rg(self, query: dict, body: Any):
        name = body.get("name", "")
        self._check_props(dict(body.get("props") or {}), f"resource group '{name}'")
        self._check_name(name, C.FAIL_INVLD_RSC_GRP_NAME, "resource group", C.MASK_RSC_GRP)
        if name.upper() in self.s["rgs"]:
            raise ApiError(Rc(C.FAIL_EXISTS_RSC_GRP, f"Resource group '{name}' already exists.", C.MASK_RSC_GRP,
                              C.MASK_CRT, obj_refs={"RscGrp": name}))
        self.s["rgs"][name.upper()] = {"name": name, "description": body.get("description", ""),
                                       "props": dict(body.get("props", {})),
                                       "select_filter": dict(body.get("select_filter", {})), "vgs": [],
                                       "uuid": _uuid()}
        return 201, [success(f"Resource group '{name}' created.", C.MASK_RSC_GRP, C.MASK_CRT,
                             obj_refs={"RscGrp": name}).to_json()]

    def modify_rg(self, name: str, query: dict, body: Any):
        rg = self._rg(name)
        self._check_props(body.get("override_props") or {}, f"resource group '{rg['name']}'")
        rg["props"].update(body.get("override_props", {}) or {})
        for key in body.get("delete_props", []) or []:
            rg["props"].pop(key, None)
        if body.get("select_filter"):
            rg["select_filter"].update(body["select_filter"])
        if "description" in body:
            rg["description"] = body["description"]
        return [success(f"Resource group '{rg['name']}' modified.", C.MASK_RSC_GRP, C.MASK_MOD).to_json()]

    def delete_rg(self, name: str, query: dict, body: Any):
        rg = self.s["rgs"].get(name.upper())
        if rg is None:
            return [Rc(C.WARN_NOT_FOUND, f"Resource group '{name}' not found.", C.MASK_RSC_GRP, C.MASK_DEL).to_json()]
        if any(rd["rg"].upper() == name.upper() for rd in self.s["rds"].values()):
            raise ApiError(Rc(C.FAIL_EXISTS_RSC_DFN, f"Resource group '{name}' still has resource definitions.",
                              C.MASK_RSC_GRP, C.MASK_DEL))
        del self.s["rgs"][name.upper()]
        return [success(f"Resource group '{rg['name']}' deleted.", C.MASK_RSC_GRP, C.MASK_DEL).to_json()]

    def list_vgs(self, name: str, query: dict, body: Any):
        rg = self._rg(name)
        return [dict(vg) for vg in rg["vgs"]]

    def create_vg(self, name: str, query: dict, body: Any):
        rg = self._rg(name)
        nr = body.get("volume_number", len(rg["vgs"]))
        rg["vgs"].append({"volume_number": nr, "props": dict(body.get("props", {})), "flags": body.get("flags", []),
                          "uuid": _uuid()})
        return 201, [success(f"Volume group {nr} of '{rg['name']}' created.", C.MASK_VLM_GRP, C.MASK_CRT).to_json()]

    def query_size_info(self, name: str, query: dict, body: Any):
        rg = self._rg(name)
        sf = {**rg["select_filter"], **(body.get("select_filter") or {})}
        pools = {p.upper() for p in (sf.get("storage_pool_list") or ([sf["storage_pool"]] if sf.get("storage_pool")
                                                                      else []))}
        free, total, best = 0, 0, 0
        for nkey, node_pools in self.s["pools"].items():
            for pkey, pool in node_pools.items():
                if pool["provider_kind"] == "DISKLESS" or (pools and pkey not in pools):
                    continue
                f = self._pool_free_kib(nkey, pool)
                free += f
                total += pool["total_kib"]
                best = max(best, f)
        place = max(1, int(sf.get("place_count") or 2))
        return {"space_info": {"max_vlm_size_in_kib": best, "available_size_in_kib": free // place,
                               "capacity_in_kib": total // place, "default_max_oversubscription_ratio": 20.0,
                               "max_oversubscription_ratio": 20.0, "max_free_capacity_oversubscription_ratio": 10.0,
                               "max_total_capacity_oversubscription_ratio": 20.0, "next_spawn_result": []},
                "reports": []}

    def spawn(self, name: str, query: dict, body: Any):
        rg = self._rg(name)
        rsc_name = body.get("resource_definition_name") or ""
        msgs: list[Rc] = []
        rd, create_msgs = self._create_rd(rsc_name, body.get("resource_definition_external_name"), rg["name"],
                                          None, dict(body.get("resource_definition_props") or {}))
        msgs += create_msgs
        sizes = body.get("volume_sizes") or []
        vgs = rg["vgs"]
        if vgs and len(sizes) != len(vgs) and not body.get("partial"):
            raise ApiError(Rc(C.FAIL_INVLD_VLM_SIZES,
                              f"Volume group count ({len(vgs)}) does not match the number of sizes ({len(sizes)}).",
                              C.MASK_RSC_GRP, C.MASK_CRT), msgs)
        if not vgs:
            msgs.append(Rc(C.MASK_INFO | 5, "Resource group has no volume groups; spawning in partial mode.",
                           C.MASK_RSC_GRP, C.MASK_CRT))
        for i, size in enumerate(sizes):
            msgs += self._create_vd(rd, {"size_kib": int(size), "volume_number": i}, None)
        sf = {**rg["select_filter"], **{k: v for k, v in (body.get("select_filter") or {}).items() if v is not None}}
        if body.get("definitions_only") or not sf.get("place_count"):
            msgs.append(Rc(C.INFO_NO_RSC_SPAWNED, "No resources spawned.", C.MASK_RSC_GRP, C.MASK_CRT))
            return 201, [m.to_json() for m in msgs]
        msgs += self._autoplace(rd, sf, bool(sf.get("diskless_on_remaining")), sf.get("layer_stack"), msgs)
        return 201, [m.to_json() for m in msgs]

    # ---- resource definitions ----------------------------------------------------------------
    def list_rds(self, query: dict, body: Any):
        names = _name_filter(query, "resource_definitions")
        props = query.get("props", [])
        with_vds = (query.get("with_volume_definitions") or ["false"])[0].lower() == "true"
        return [self._rd_json(rd, with_vds) for k, rd in sorted(self.s["rds"].items())
                if (names is None or k in names) and _props_match(rd["props"], props)]

    def _create_rd(self, name: str, external_name: Optional[str], rg_name: Optional[str],
                   layers: Optional[list[str]], props: dict) -> tuple[dict, list[Rc]]:
        self._check_props(props, f"resource definition '{name or external_name}'")
        if not name and external_name:
            base = re.sub(r"[^A-Za-z0-9_-]", "_", external_name)[:40] or "rsc"
            if not re.match(r"[A-Za-z_]", base):
                base = "_" + base
            name = base
            n = 1
            while name.upper() in self.s["rds"]:
                name = f"{base}_{n}"
                n += 1
        self._check_name(name, C.FAIL_INVLD_RSC_NAME, "resource", C.MASK_RSC_DFN)
        if name.upper() in self.s["rds"]:
            raise ApiError(Rc(C.FAIL_EXISTS_RSC_DFN, f"A resource definition with the name '{name}' already exists.",
                              C.MASK_RSC_DFN, C.MASK_CRT, obj_refs={"RscDfn": name}))
        rg = self._rg(rg_name or DEFAULT_RG)
        if not layers:
            layers = rg["select_filter"].get("layer_stack") or ["DRBD", "STORAGE"]
        layers = [x.upper() for x in layers]
        msgs = []
        if layers[-1] != "STORAGE":
            layers.append("STORAGE")
            msgs.append(Rc(C.MASK_WARN | 7, "Layer stack did not end in STORAGE; STORAGE appended.", C.MASK_RSC_DFN,
                           C.MASK_CRT))
        port = self.s["next_port"]
        self.s["next_port"] += 1
        rd = {"name": name, "external_name": external_name, "props": dict(props), "flags": [], "rg": rg["name"],
              "layers": layers, "uuid": _uuid(), "port": port, "vds": {}, "rscs": {}, "snaps": {}, "clones": {},
              "conns": {}}
        self.s["rds"][name.upper()] = rd
        msgs.append(success(f"New resource definition '{name}' created.", C.MASK_RSC_DFN, C.MASK_CRT,
                            obj_refs={"RscDfn": name}))
        return rd, msgs

    def create_rd(self, query: dict, body: Any):
        spec = body.get("resource_definition") or {}
        layers = [ld["type"] for ld in spec.get("layer_data", []) if "type" in ld] or None
        _, msgs = self._create_rd(spec.get("name", ""), spec.get("external_name"), spec.get("resource_group_name"),
                                  layers, spec.get("props", {}))
        return 201, [m.to_json() for m in msgs]

    def modify_rd(self, name: str, query: dict, body: Any):
        rd = self._rd(name)
        msgs = []
        if self.since("1.31.0"):
            # CtrlRscDfnApiCallHandler / CtrlPropsHelper: a quorum value set by the user is marked
            # Internal/Drbd/QuorumSetBy=user and left alone by auto-quorum; deleting it hands back
            if QUORUM_PROP in (body.get("override_props") or {}):
                rd["quorum_set_by_user"] = True
            elif QUORUM_PROP in (body.get("delete_props") or []):
                rd["quorum_set_by_user"] = False
        self._check_props(body.get("override_props") or {}, f"resource definition '{rd['name']}'")
        for key, value in (body.get("override_props") or {}).items():
            rd["props"][key] = value
        for key in body.get("delete_props") or []:
            if key in rd["props"]:
                del rd["props"][key]
            else:
                msgs.append(Rc(C.WARN_DEL_UNSET_PROP, f"Property '{key}' was not set.", C.MASK_RSC_DFN, C.MASK_MOD))
        for ns in body.get("delete_namespaces") or []:
            for key in [k for k in rd["props"] if k.startswith(ns.rstrip("/") + "/")]:
                del rd["props"][key]
        if body.get("resource_group"):
            rd["rg"] = self._rg(body["resource_group"])["name"]
        msgs.append(success(f"Resource definition '{rd['name']}' modified.", C.MASK_RSC_DFN, C.MASK_MOD,
                            obj_refs={"RscDfn": rd["name"]}))
        # the auto-tiebreaker turned off removes the tie-breaker (CtrlRscAutoTieBreakerHelper.manage:
        # not enabled -> marked for deletion), on the definition's next change: this one
        msgs += self._auto_manage(rd)
        return [m.to_json() for m in msgs]

    def delete_rd(self, name: str, query: dict, body: Any):
        rd = self.s["rds"].get(name.upper())
        if rd is None:
            return [Rc(C.WARN_NOT_FOUND, f"Resource definition '{name}' not found.", C.MASK_RSC_DFN, C.MASK_DEL,
                       obj_refs={"RscDfn": name}).to_json()]
        if rd["snaps"]:
            raise ApiError(Rc(C.FAIL_EXISTS_SNAPSHOT_DFN,
                              f"Cannot delete resource definition '{rd['name']}' because it has snapshots.",
                              C.MASK_RSC_DFN, C.MASK_DEL, obj_refs={"RscDfn": rd["name"]}))
        for key, rsc in rd["rscs"].items():
            if self._in_use(rd, rsc):
                raise ApiError(Rc(C.FAIL_IN_USE, f"Resource '{rd['name']}' on node '{rsc['node']}' is still in use.",
                                  C.MASK_RSC_DFN, C.MASK_DEL, cause="Resource is mounted/in use.",
                                  obj_refs={"RscDfn": rd["name"], "Node": rsc["node"]}))
        marked = success(f"Resource definition '{rd['name']}' marked for deletion.", C.MASK_RSC_DFN, C.MASK_DEL,
                         obj_refs={"RscDfn": rd["name"]})
        offline = self._offline_nodes(rd["rscs"])
        if offline:
            # CtrlRscDfnDeleteApiCallHandler: the definition and its resources are marked DELETE and
            # the satellites updated; an offline one answers with a "not connected" warning that
            # ends the flux (DelayedApiRcException, swallowed): the rest happens when it connects
            # again (resourceDefinitionConnected restarts the deletion). The name stays taken.
            rd["flags"] = sorted(set(rd["flags"]) | {"DELETE"})
            for key, rsc in rd["rscs"].items():
                rsc["flags"] = sorted(set(rsc["flags"]) | {"DELETE", "DRBD_DELETE"})
                if key not in offline:
                    self._detach_devices(rd, rsc)         # that satellite took it down
            return [marked.to_json()] + [self._not_connected_warning(n, C.MASK_RSC_DFN, C.MASK_DEL) for n in offline]
        self._finish_rd_delete(rd)
        return [marked.to_json(), success(f"Resource definition '{rd['name']}' deleted.", C.MASK_RSC_DFN, C.MASK_DEL,
                                          obj_refs={"RscDfn": rd["name"]}).to_json()]

    def _finish_rd_delete(self, rd: dict) -> None:
        for key in sorted(rd["rscs"], key=lambda k: not self._diskless(rd["rscs"][k])):
            self._remove_resource(rd, key)
        for vnr in rd["vds"]:
            self.data.delete_volume(rd["name"], int(vnr))
        del self.s["rds"][rd["name"].upper()]

    def _offline_nodes(self, keys) -> list[str]:
        return [self.s["nodes"][k]["name"] for k in sorted(keys) if self.s["nodes"][k]["status"] != "ONLINE"]

    @staticmethod
    def _not_connected_warning(node: str, obj_mask: int, op_mask: int) -> dict:
        # ResponseUtils.makeNotConnectedWarning
        return Rc(C.WARN_NOT_CONNECTED, f"No active connection to satellite '{node}'", obj_mask, op_mask,
                  details="The controller is trying to (re-) establish a connection to the satellite. The controller "
                          "stored the changes and as soon the satellite is connected, it will receive this update.",
                  obj_refs={"Node": node}).to_json()

    def clone_rd(self, name: str, query: dict, body: Any):
        src = self._rd(name)
        if not self.since("1.32.0"):
            # override_props / delete_props came with 1.32.0 (CHANGELOG-OPENAPI 1.26.0), layer_list
            # and resource_group with 1.30.0 (1.24.0): older controllers do not read them
            body = {k: v for k, v in body.items() if k not in ("override_props", "delete_props")}
            if not self.since("1.30.0"):
                body = {k: v for k, v in body.items() if k not in ("layer_list", "resource_group")}
        offline = self._offline_nodes(self._diskful_nodes(src))
        if offline and self.since("1.31.0"):
            # CtrlRscDfnApiCallHandler.failIfWrongRscState (1.31.0): every diskful DRBD resource
            # UpToDate; a satellite that is not connected reports no state, which counts as not
            # UpToDate (allVolumesUpToDate(..., defaultIfUnknown=false))
            raise ApiError(Rc(C.FAIL_NOT_ALL_UPTODATE,
                              "Cannot clone resource-definition, because we have a non-UpToDate DRBD device.",
                              C.MASK_RSC_DFN, C.MASK_CRT))
        props = {**src["props"], **(body.get("override_props") or {})}
        for key in body.get("delete_props") or []:
            props.pop(key, None)
        layers = body.get("layer_list") or src["layers"]
        rd, msgs = self._create_rd(body.get("name", ""), body.get("external_name"),
                                   body.get("resource_group") or src["rg"], layers, props)
        sizes = body.get("volume_sizes") or []
        for vnr in sorted(src["vds"], key=int):
            vd = src["vds"][vnr]
            size = max(vd["size_kib"], int(sizes[int(vnr)]) if int(vnr) < len(sizes) else 0)
            msgs += self._create_vd(rd, {"size_kib": size, "volume_number": int(vnr),
                                         "flags": list(vd["flags"])}, None)
        self.data.flush(self._loops(src))
        for vnr in src["vds"]:
            if self.data.has_volume(src["name"], int(vnr)):
                self.data.fill_from(self.data.volume_file(src["name"], int(vnr)), rd["name"], int(vnr),
                                    rd["vds"][vnr]["size_kib"], [])
        # cloneRscDfnInTransaction: a resource for every resource of the source, diskless ones and
        # tie-breakers included, with its flags (Resource.Flags.restoreFlags) and its properties
        for key, s_rsc in sorted(src["rscs"].items()):
            if "DELETE" in s_rsc["flags"]:
                continue
            flags = [f for f in s_rsc["flags"] if f in ("DISKLESS", "DRBD_DISKLESS", "TIE_BREAKER", "NVME_INITIATOR")]
            _, m = self._new_resource(rd, self.s["nodes"][key], s_rsc["pool"], flags, dict(s_rsc["props"]))
            msgs += m
        # the satellites copy the data; one that is not connected never reports its copy done
        src["clones"][rd["name"].upper()] = "CLONING" if offline else "COMPLETE"
        return 201, {"location": f"/v1/resource-definitions/{src['name']}/clone/{rd['name']}",
                     "source_name": src["name"], "clone_name": rd["name"], "messages": [m.to_json() for m in msgs]}

    def clone_status(self, name: str, clone: str, query: dict, body: Any):
        src = self._rd(name)
        status = src["clones"].get(clone.upper())
        if status is None:
            raise ApiError(Rc(C.FAIL_NOT_FOUND_RSC_DFN, f"Clone '{clone}' of '{name}' not found.", C.MASK_RSC_DFN))
        return {"status": status}

    def sync_status(self, name: str, query: dict, body: Any):
        self._rd(name)
        return {"synced_on_all": True}

    # ---- volume definitions ------------------------------------------------------------------
    def list_vds(self, name: str, query: dict, body: Any):
        rd = self._rd(name)
        return [self._vd_json(rd, v) for v in sorted(rd["vds"], key=int)]

    def _create_vd(self, rd: dict, spec: dict, passphrase: Optional[str]) -> list[Rc]:
        size = spec.get("size_kib")
        if not isinstance(size, int) or size <= 0:
            raise ApiError(Rc(C.FAIL_INVLD_VLM_SIZE, f"Invalid volume size {size!r}.", C.MASK_VLM_DFN, C.MASK_CRT))
        vnr = spec.get("volume_number")
        if vnr is None:
            vnr = 0
            while str(vnr) in rd["vds"]:
                vnr += 1
        if str(vnr) in rd["vds"]:
            raise ApiError(Rc(C.FAIL_EXISTS_VLM_DFN, f"Volume definition {vnr} of '{rd['name']}' already exists.",
                              C.MASK_VLM_DFN, C.MASK_CRT))
        flags = list(spec.get("flags") or [])
        msgs = []
        if "ENCRYPTED" in flags:
            if not self.s["passphrase"] and not passphrase:
                raise ApiError(Rc(C.FAIL_NOT_FOUND_CRYPT_KEY,
                                  "Could not create encrypted volume definition: no master passphrase set.",
                                  C.MASK_VLM_DFN, C.MASK_CRT,
                                  correction="Create a master passphrase with 'linstor encryption create-passphrase'."))
            if "LUKS" not in rd["layers"]:
                rd["layers"] = [x for x in rd["layers"] if x != "STORAGE"] + ["LUKS", "STORAGE"]
        minor = self.s["next_minor"]
        self.s["next_minor"] += 1
        rd["vds"][str(vnr)] = {"size_kib": size, "props": dict(spec.get("props") or {}), "flags": flags,
                               "minor": minor, "uuid": _uuid()}
        if self._diskful_nodes(rd):
            self.data.create_volume(rd["name"], vnr, size)
            for rsc in rd["rscs"].values():
                self._attach_devices(rd, rsc)
        msgs.append(success(f"New volume definition with number '{vnr}' of resource definition '{rd['name']}' "
                            "created.", C.MASK_VLM_DFN, C.MASK_CRT,
                            obj_refs={"RscDfn": rd["name"], "VlmNr": vnr}))
        return msgs

    def create_vd(self, name: str, query: dict, body: Any):
        rd = self._rd(name)
        return 201, [m.to_json() for m in self._create_vd(rd, body.get("volume_definition") or {},
                                                           body.get("passphrase"))]

    def modify_vd(self, name: str, vnr: str, query: dict, body: Any):
        rd = self._rd(name)
        vd = rd["vds"].get(vnr)
        if vd is None:
            raise ApiError(Rc(C.FAIL_NOT_FOUND_VLM_DFN, f"Volume definition {vnr} of '{rd['name']}' not found.",
                              C.MASK_VLM_DFN, C.MASK_MOD))
        msgs = []
        self._check_props(body.get("override_props") or {}, f"volume definition {vnr} of '{rd['name']}'")
        vd["props"].update(body.get("override_props") or {})
        for key in body.get("delete_props") or []:
            vd["props"].pop(key, None)
        new = body.get("size_kib")
        offline = self._offline_nodes(self._diskful_nodes(rd)) if "DRBD" in rd["layers"] else []
        if new is not None and new != vd["size_kib"] and offline and self.since("1.30.4"):
            # CHANGELOG 1.30.4 "VlmDfn,Resize: Only allow resize if all peers are online and UpToDate":
            # CtrlVlmDfnModifyApiCallHandler asks allVolumesUpToDate(..., defaultIfUnknown=false), and a
            # satellite that is not connected reports no state (before, unknown counted as UpToDate
            # and an offline satellite grew its volume when it came back). No error report.
            raise ApiError(Rc(C.FAIL_NOT_ALL_UPTODATE,
                              "Cannot resize volume, because we have a non-UpToDate DRBD device.",
                              C.MASK_VLM_DFN, C.MASK_MOD, obj_refs={"RscDfn": rd["name"], "VlmNr": vnr}))
        if new is not None:
            if new < vd["size_kib"]:
                if rd["rscs"] and ("DRBD" in rd["layers"]):
                    raise ApiError(Rc(C.FAIL_INVLD_VLM_SIZE,
                                      "Shrinking volumes is not supported by layer 'DRBD'. Volumes can only grow "
                                      "in size.", C.MASK_VLM_DFN, C.MASK_MOD))
                vd["size_kib"] = new
            elif new == vd["size_kib"]:
                msgs.append(Rc(C.WARN_VLMDFN_RESIZE_SAME_SIZE, "Volume definition already has the requested size.",
                               C.MASK_VLM_DFN, C.MASK_MOD))
            else:
                grow = new - vd["size_kib"]
                for key in self._diskful_nodes(rd):
                    pool = self.s["pools"][key][rd["rscs"][key]["pool"].upper()]
                    if not self._is_thin(pool) and grow > self._pool_free_kib(key, pool):
                        raise ApiError(Rc(C.FAIL_NOT_ENOUGH_FREE_SPACE,
                                          f"Not enough free space in '{pool['name']}' on '{key}' to grow.",
                                          C.MASK_VLM_DFN, C.MASK_MOD))
                failing = self.s.setdefault("resize_fails", {}).pop(rd["name"].upper(), None)
                if failing is not None:
                    # CtrlVlmDfnModifyApiCallHandler: the new size and the RESIZE flag are committed
                    # before the satellites are asked (modifyInTransaction, then updateSatellites);
                    # a satellite whose lvresize fails answers an error and the flag stays, the
                    # devices keep their size (its own comment: "UpToDate with different allocated
                    # sizes"); a request of the same size then only warns WARN_VLMDFN_RESIZE_SAME_SIZE
                    vd.setdefault("usable_kib", vd["size_kib"])
                    vd["size_kib"] = new
                    vd.setdefault("flags", [])
                    if "RESIZE" not in vd["flags"]:
                        vd["flags"].append("RESIZE")
                    msgs.append(success(f"Volume definition {vnr} of '{rd['name']}' modified.", C.MASK_VLM_DFN,
                                        C.MASK_MOD, obj_refs={"RscDfn": rd["name"], "VlmNr": vnr}))
                    msgs.append(Rc(C.FAIL_UNKNOWN_ERROR, f"(Node: '{failing}') Failed to resize volume "
                                   f"'{rd['name']}/{vnr}': lvresize: Insufficient free space",
                                   C.MASK_VLM_DFN, C.MASK_MOD))
                    self._attach_error_reports(msgs)
                    return http_status(msgs, 200), [m.to_json() for m in msgs]
                vd["size_kib"] = new
                vd.pop("usable_kib", None)
                self.data.grow(rd["name"], int(vnr), new, [r["loops"][vnr] for r in rd["rscs"].values()
                                                          if r.get("loops", {}).get(vnr)])
        msgs.append(success(f"Volume definition {vnr} of '{rd['name']}' modified.", C.MASK_VLM_DFN, C.MASK_MOD,
                            obj_refs={"RscDfn": rd["name"], "VlmNr": vnr}))
        return [m.to_json() for m in msgs]

    def delete_vd(self, name: str, vnr: str, query: dict, body: Any):
        rd = self._rd(name)
        if vnr not in rd["vds"]:
            return [Rc(C.WARN_NOT_FOUND, f"Volume definition {vnr} of '{rd['name']}' not found.", C.MASK_VLM_DFN,
                       C.MASK_DEL).to_json()]
        for rsc in rd["rscs"].values():
            if self._in_use(rd, rsc):
                raise ApiError(Rc(C.FAIL_IN_USE, f"Resource '{rd['name']}' is still in use.", C.MASK_VLM_DFN,
                                  C.MASK_DEL))
            self._detach_devices(rd, rsc, vnr)
        del rd["vds"][vnr]
        self.data.delete_volume(rd["name"], int(vnr))
        return [success(f"Volume definition {vnr} of '{rd['name']}' deleted.", C.MASK_VLM_DFN, C.MASK_DEL).to_json()]

    # ---- resources ---------------------------------------------------------------------------
    def list_resources(self, query: dict, body: Any):
        nodes = _name_filter(query, "nodes")
        rscs = _name_filter(query, "resources")
        pools = _name_filter(query, "storage_pools")
        props = query.get("props", [])
        out = []
        for rkey in sorted(self.s["rds"]):
            if rscs is not None and rkey not in rscs:
                continue
            rd = self.s["rds"][rkey]
            for nkey in sorted(rd["rscs"]):
                rsc = rd["rscs"][nkey]
                if nodes is not None and nkey not in nodes:
                    continue
                if pools is not None and rsc["pool"].upper() not in pools:
                    continue
                if not _props_match({"StorPoolName": rsc["pool"], **rsc["props"]}, props):
                    continue
                out.append(self._rsc_json(rd, nkey, True))
        return out

    def list_rd_resources(self, name: str, query: dict, body: Any):
        rd = self._rd(name)
        nodes = _name_filter(query, "nodes")
        return [self._rsc_json(rd, k, False) for k in sorted(rd["rscs"]) if nodes is None or k in nodes]

    def list_rsc_volumes(self, name: str, node: str, query: dict, body: Any):
        rd = self._rd(name)
        if node.upper() not in rd["rscs"]:
            raise ApiError(Rc(C.FAIL_NOT_FOUND_RSC, f"Resource '{name}' on node '{node}' not found.", C.MASK_RSC))
        return self._rsc_json(rd, node.upper(), True)["volumes"]

    def _create_from_spec(self, rd: dict, item: dict) -> list[Rc]:
        spec = item.get("resource") or {}
        node = self._node(spec.get("node_name", ""))
        flags = [f for f in (spec.get("flags") or []) if f in ("DISKLESS", "DRBD_DISKLESS", "NVME_INITIATOR")]
        if "DRBD_DISKLESS" in flags:
            flags = sorted(set(flags) | {"DISKLESS"})
        props = dict(spec.get("props") or {})
        self._check_props(props, f"resource '{rd['name']}' on node '{node['name']}'")
        pool = props.pop("StorPoolName", None)
        if pool is None:
            pool = DISKLESS_POOL if "DISKLESS" in flags else (self._prop_chain(rd, "StorPoolName") or "DfltStorPool")
        if not rd["vds"]:
            raise ApiError(Rc(C.FAIL_NOT_FOUND_VLM_DFN, f"Resource definition '{rd['name']}' has no volumes.",
                              C.MASK_RSC, C.MASK_CRT))
        layers = [x.upper() for x in item.get("layer_list") or []] or None
        existing = rd["rscs"].get(node["name"].upper())
        if existing is not None and "TIE_BREAKER" in existing["flags"] and "DISKLESS" in flags:
            # CtrlRscCrtApiHelper: a diskless resource asked for where the tie-breaker is takes it
            # over (it becomes an ordinary diskless resource) instead of failing as "exists"
            existing["flags"] = [f for f in existing["flags"] if f != "TIE_BREAKER"]
            existing["props"].update(props)
            return [success(f"Tiebreaker resource '{rd['name']}' on '{node['name']}' taken over as a diskless "
                            "resource", C.MASK_RSC, C.MASK_CRT,
                            obj_refs={"RscDfn": rd["name"], "Node": node["name"]})]
        _, msgs = self._new_resource(rd, node, pool, flags, props, layers)
        return msgs

    def create_resources(self, name: str, query: dict, body: Any):
        rd = self._rd(name)
        msgs: list[Rc] = []
        for item in body if isinstance(body, list) else [body]:
            msgs += self._create_from_spec(rd, item)
        msgs += self._auto_manage(rd)
        return 201, [m.to_json() for m in msgs]

    def create_resource_on(self, name: str, node: str, query: dict, body: Any):
        rd = self._rd(name)
        item = dict(body or {})
        item.setdefault("resource", {})["node_name"] = node
        msgs = self._create_from_spec(rd, item) + self._auto_manage(rd)
        return 201, [m.to_json() for m in msgs]

    def modify_resource(self, name: str, node: str, query: dict, body: Any):
        rd = self._rd(name)
        rsc = rd["rscs"].get(node.upper())
        if rsc is None:
            raise ApiError(Rc(C.FAIL_NOT_FOUND_RSC, f"Resource '{name}' on node '{node}' not found.", C.MASK_RSC,
                              C.MASK_MOD))
        self._check_props(body.get("override_props") or {}, f"resource '{rd['name']}' on node '{rsc['node']}'")
        rsc["props"].update(body.get("override_props") or {})
        for key in body.get("delete_props") or []:
            rsc["props"].pop(key, None)
        return [success(f"Resource '{rd['name']}' on '{rsc['node']}' modified.", C.MASK_RSC, C.MASK_MOD).to_json()]

    def delete_resource(self, name: str, node: str, query: dict, body: Any):
        rd = self.s["rds"].get(name.upper())
        rsc = rd["rscs"].get(node.upper()) if rd else None
        if rsc is None:
            return [Rc(C.WARN_NOT_FOUND, f"Resource '{name}' on node '{node}' not found.", C.MASK_RSC, C.MASK_DEL,
                       obj_refs={"RscDfn": name, "Node": node}).to_json()]
        refs = {"RscDfn": rd["name"], "Node": rsc["node"]}
        if self._in_use(rd, rsc):
            raise ApiError(Rc(C.FAIL_IN_USE, f"Resource '{rd['name']}' on node '{rsc['node']}' is still in use.",
                              C.MASK_RSC, C.MASK_DEL, cause="Resource is mounted/in use.", obj_refs=refs))
        diskful = self._diskful_nodes(rd)
        if not self._diskless(rsc) and diskful == [node.upper()] and any(
                self._diskless(r) and "DELETE" not in r["flags"] for r in rd["rscs"].values()):
            # CtrlRscDeleteApiHelper.ensureNotLastDisk: ResourceDefinition.hasDisklessNotDeleting
            # looks at the DRBD_DISKLESS flag, which a tie-breaker has too
            raise ApiError(Rc(C.FAIL_IN_USE,
                              f"Last resource of '{rd['name']}' with disk still has diskless resources attached.",
                              C.MASK_RSC, C.MASK_DEL, cause="Resource still has diskless users.",
                              correction="Before deleting this resource, delete the diskless resources attached "
                              "to it.", obj_refs=refs))
        key = node.upper()
        has_tiebreaker = any("TIE_BREAKER" in r["flags"] for r in rd["rscs"].values())
        if "TIE_BREAKER" in rsc["flags"] and self._tiebreaker_needed(rd):
            # CtrlRscAutoTieBreakerHelper.manage: a tie-breaker deleted by hand turns the automatic
            # tie-breaker off on the definition (else it would come right back)
            rd["props"][TIEBREAKER_PROP] = "False"
            self._remove_resource(rd, key)
            msgs = [success(f"Resource '{rd['name']}' on '{rsc['node']}' deleted.", C.MASK_RSC, C.MASK_DEL,
                            obj_refs=refs),
                    Rc(C.MASK_INFO | 2, f"Disabling auto-tiebreaker on resource-definition "
                       f"'{rd['name']}' as tiebreaker resource was manually deleted", C.MASK_RSC_DFN,
                       C.MASK_MOD)]
            return [m.to_json() for m in msgs + self._auto_quorum(rd)]
        if "TIE_BREAKER" not in rsc["flags"] and not has_tiebreaker and self._tiebreaker_needed(rd, leaving=key) \
                and (self._diskless(rsc) or DISKLESS_POOL.upper() in self.s["pools"].get(key, {})):
            # CtrlRscAutoTieBreakerHelper.manage/takeover: the resource being deleted is kept as the
            # tie-breaker the remaining ones need (a diskful one gives up its disk)
            if not self._diskless(rsc):
                rsc["flags"] = sorted(set(rsc["flags"]) | {"DISKLESS", "DRBD_DISKLESS"})
                rsc["pool"] = DISKLESS_POOL
            rsc["flags"] = sorted(set(rsc["flags"]) | {"TIE_BREAKER"})
            self._auto_quorum(rd)
            return [Rc(C.MASK_INFO | 6, "The given resource will not be deleted but will be taken over as a linstor "
                       "managed tiebreaker resource.", C.MASK_RSC, C.MASK_DEL, obj_refs=refs).to_json()]
        if self.s["nodes"][node.upper()]["status"] != "ONLINE":
            rsc["flags"] = sorted(set(rsc["flags"]) | {"DELETE", "DRBD_DELETE"})
            self._auto_quorum(rd)
            return [Rc(C.WARN_NOT_CONNECTED, f"No active connection to satellite '{rsc['node']}'. The resource will "
                       "be deleted when the satellite reconnects.", C.MASK_RSC, C.MASK_DEL, obj_refs=refs).to_json()]
        self._remove_resource(rd, node.upper())
        msgs = [success(f"Resource '{rd['name']}' on '{rsc['node']}' marked for deletion.", C.MASK_RSC, C.MASK_DEL,
                        obj_refs=refs),
                success(f"Resource '{rd['name']}' on '{rsc['node']}' deleted.", C.MASK_RSC, C.MASK_DEL,
                        obj_refs=refs)]
        msgs += self._auto_manage(rd)
        return [m.to_json() for m in msgs]

    def make_available(self, name: str, node: str, query: dict, body: Any):
        rd = self._rd(name)
        node_obj = self._node(node)
        key = node.upper()
        diskful = bool(body.get("diskful"))
        layers = [x.upper() for x in body.get("layer_list") or []] or None
        rsc = rd["rscs"].get(key)
        refs = {"RscDfn": rd["name"], "Node": node_obj["name"]}
        offline = sorted({self.s["nodes"][k]["name"] for k in [*rd["rscs"], key]
                          if self.s["nodes"][k]["status"] != "ONLINE"})
        warnings = []
        if offline:
            # CHANGELOG 1.27.0 "Make-available will no longer return an error if an involved node is
            # offline (warn instead)"
            rc = Rc(C.WARN_NOT_CONNECTED if self.since("1.27.0") else C.FAIL_NOT_CONNECTED,
                    f"No active connection to satellite '{offline[0]}'", C.MASK_RSC, C.MASK_CRT, obj_refs=refs)
            if not self.since("1.27.0"):
                raise ApiError(rc)
            warnings.append(rc)
        if rsc is not None:
            if layers and layers != self._layers(rd, rsc):
                raise ApiError(Rc(C.FAIL_INVLD_LAYER_STACK, "Resource already deployed with a different layer list.",
                                  C.MASK_RSC, C.MASK_CRT, obj_refs=refs))
            if "TIE_BREAKER" in rsc["flags"]:
                rsc["flags"] = [f for f in rsc["flags"] if f != "TIE_BREAKER"]
            if "DELETE" in rsc["flags"]:
                rsc["flags"] = [f for f in rsc["flags"] if f not in ("DELETE", "DRBD_DELETE")]
            if diskful and self._diskless(rsc):
                # a toggle-disk: from 1.33.0 the controller checks the pool's free space first
                # (CHANGELOG 1.33.0-rc.2 "ToggleDisk: Added missing free-space check"); before,
                # the satellite's lvcreate failed and left the resource diskless - a refusal too
                pool = self._diskful_pool_for(rd, node_obj)
                pool_obj = self._pool(node_obj["name"], pool)
                need = sum(vd["size_kib"] for vd in rd["vds"].values())
                if not self._is_thin(pool_obj) and need > self._pool_free_kib(node_obj["name"], pool_obj):
                    raise ApiError(Rc(C.FAIL_NOT_ENOUGH_FREE_SPACE,
                                      f"Not enough free space in storage pool '{pool}' on node '{node_obj['name']}'.",
                                      C.MASK_RSC, C.MASK_MOD, obj_refs=refs))
                rsc["flags"] = [f for f in rsc["flags"] if f not in ("DISKLESS", "DRBD_DISKLESS")]
                rsc["pool"] = pool
                return [m.to_json() for m in warnings + [success(
                    f"Resource '{rd['name']}' on '{node_obj['name']}' toggled to diskful.", C.MASK_RSC, C.MASK_MOD,
                    obj_refs=refs)] + self._auto_manage(rd)]
            return [m.to_json() for m in warnings + [success("Resource already deployed as requested", C.MASK_RSC,
                                                             C.MASK_CRT, obj_refs=refs)]]
        if diskful:
            pool = self._diskful_pool_for(rd, node_obj)
            _, msgs = self._new_resource(rd, node_obj, pool, [], {}, layers)
        elif not self._diskful_nodes(rd):
            # CtrlRscMakeAvailableApiCallHandler: without a diskful DRBD peer "make available" is
            # read as making the first diskful resource, on this node (an empty volume if none
            # holds the data any more)
            if not rd["vds"]:
                raise ApiError(Rc(C.FAIL_NOT_FOUND_VLM_DFN, f"Resource definition '{rd['name']}' has no volumes.",
                                  C.MASK_RSC, C.MASK_CRT))
            pool = self._diskful_pool_for(rd, node_obj)
            _, msgs = self._new_resource(rd, node_obj, pool, [], {}, layers)
        else:
            _, msgs = self._new_resource(rd, node_obj, DISKLESS_POOL, ["DISKLESS", "DRBD_DISKLESS"], {}, layers)
        msgs += self._auto_manage(rd)
        return [m.to_json() for m in warnings + msgs]

    def _diskful_pool_for(self, rd: dict, node: dict) -> str:
        rg = self.s["rgs"].get(rd["rg"].upper(), {"select_filter": {}})
        wanted = [p.upper() for p in (rg["select_filter"].get("storage_pool_list") or [])]
        candidates = [p for k, p in sorted(self.s["pools"][node["name"].upper()].items())
                      if p["provider_kind"] != "DISKLESS" and (not wanted or k in wanted)]
        if not candidates:
            raise ApiError(Rc(C.FAIL_NOT_FOUND_STOR_POOL,
                              f"Autoplacer could not find diskful stor pool on node {node['name']} matching "
                              "resource-groups autoplace-settings", C.MASK_RSC, C.MASK_CRT))
        return max(candidates, key=lambda p: self._pool_free_kib(node["name"], p))["name"]

    def autoplace(self, name: str, query: dict, body: Any):
        rd = self._rd(name)
        rg = self.s["rgs"].get(rd["rg"].upper(), {"select_filter": {}})
        req = {k: v for k, v in (body.get("select_filter") or {}).items() if v is not None}
        sf = {**rg["select_filter"], **req}
        msgs = self._autoplace(rd, sf, bool(body.get("diskless_on_remaining") or sf.get("diskless_on_remaining")),
                               body.get("layer_list") or sf.get("layer_stack"), [])
        return 201, [m.to_json() for m in msgs]

    def _autoplace(self, rd: dict, sf: dict, diskless_on_remaining: bool, layers: Optional[list[str]],
                   before: list[Rc]) -> list[Rc]:
        if not rd["vds"]:
            raise ApiError(Rc(C.FAIL_NOT_FOUND_VLM_DFN, f"Resource definition '{rd['name']}' has no volumes.",
                              C.MASK_RSC, C.MASK_CRT), before)
        place_count = int(sf.get("place_count") or 2)
        existing = self._diskful_nodes(rd)
        additional = sf.get("additional_place_count")
        additional = int(additional) if additional else place_count - len(existing)
        if additional <= 0:
            return [Rc(C.WARN_RSC_ALREADY_DEPLOYED,
                       f"Resource '{rd['name']}' was already deployed on {len(existing)} nodes. Skipping.",
                       C.MASK_RSC, C.MASK_CRT, obj_refs={"RscDfn": rd["name"]})]
        pools = [p.upper() for p in (sf.get("storage_pool_list") or ([sf["storage_pool"]] if sf.get("storage_pool")
                                                                      else []))]
        node_names = {n.upper() for n in sf.get("node_name_list") or []}
        providers = {p.upper() for p in sf.get("provider_list") or []}
        need = sum(vd["size_kib"] for vd in rd["vds"].values())
        not_with = list(sf.get("not_place_with_rsc") or []) + [rd["name"]]
        regex = sf.get("not_place_with_rsc_regex")
        candidates = []
        for nkey, node in sorted(self.s["nodes"].items()):
            if node["status"] != "ONLINE" or (node_names and nkey not in node_names):
                continue
            here = {r["name"] for r in self.s["rds"].values() if nkey in r["rscs"]
                    and not (r is rd and self._diskless(r["rscs"][nkey]))}
            if placement.excluded_by_neighbours({h.upper() for h in here}, not_with, regex):
                continue
            for pkey, pool in self.s["pools"][nkey].items():
                if pool["provider_kind"] == "DISKLESS" or (pools and pkey not in pools):
                    continue
                if providers and pool["provider_kind"] not in providers:
                    continue
                free = self._pool_free_kib(nkey, pool)
                if free < need and not self._is_thin(pool):
                    continue
                if self._is_thin(pool) and free <= 0:
                    continue
                candidates.append(placement.Candidate(node["name"], pool["name"], free, node["props"]))
        existing_c = [placement.Candidate(self.s["nodes"][k]["name"], rd["rscs"][k]["pool"], 0,
                                          self.s["nodes"][k]["props"]) for k in existing]
        chosen = placement.choose(candidates, additional, existing_c, list(sf.get("replicas_on_same") or []),
                                  list(sf.get("replicas_on_different") or []))
        if chosen is None:
            raise ApiError(Rc(C.FAIL_NOT_ENOUGH_NODES, "Not enough available nodes", C.MASK_RSC, C.MASK_CRT,
                              details=f"Not enough nodes fulfilling the following auto-place criteria:\n"
                                      f" * has a deployed storage pool named {sf.get('storage_pool_list')}\n"
                                      f" * the storage pools have to have at least '{need}' free space\n"
                                      f" * the current access context has enough privileges to use the node and "
                                      f"the storage pool\n * the node is online\n\nAuto-place configuration "
                                      f"details:\n   Replica count: {place_count}\n   Additional replica count: "
                                      f"{additional}\n   Don't place with resource: {not_with}\n   Don't place "
                                      f"with resource (regex): {regex}\n   Replicas on same: "
                                      f"{sf.get('replicas_on_same')}\n   Replicas on different: "
                                      f"{sf.get('replicas_on_different')}",
                              obj_refs={"RscDfn": rd["name"]}), before)
        msgs: list[Rc] = []
        layers = [x.upper() for x in layers] if layers else None
        for cand in chosen:
            key = cand.node.upper()
            if key in rd["rscs"]:        # a diskless replica becomes a disk
                rsc = rd["rscs"][key]
                self._detach_devices(rd, rsc)
                del rd["rscs"][key]
            _, m = self._new_resource(rd, self.s["nodes"][key], cand.pool, [], {}, layers)
            msgs += m
        msgs.insert(0, success(f"Resource '{rd['name']}' successfully autoplaced on {len(chosen)} nodes",
                               C.MASK_RSC, C.MASK_CRT, details="Used nodes (storage pool name): " + ", ".join(
                                   f"'{c.node}' ({c.pool})" for c in chosen), obj_refs={"RscDfn": rd["name"]}))
        if diskless_on_remaining:
            for nkey, node in sorted(self.s["nodes"].items()):
                if nkey not in rd["rscs"] and node["status"] == "ONLINE":
                    _, m = self._new_resource(rd, node, DISKLESS_POOL, ["DISKLESS", "DRBD_DISKLESS"], {}, layers)
                    msgs += m
        msgs += self._auto_manage(rd)
        return msgs

    def get_rsc_conn(self, name: str, a: str, b: str, query: dict, body: Any):
        rd = self._rd(name)
        key = "|".join(sorted([a.upper(), b.upper()]))
        return [{"node_a": a, "node_b": b, "props": dict(rd["conns"].get(key, {})), "flags": []}]

    def modify_rsc_conn(self, name: str, a: str, b: str, query: dict, body: Any):
        rd = self._rd(name)
        self._node(a)
        self._node(b)
        key = "|".join(sorted([a.upper(), b.upper()]))
        self._check_props(body.get("override_props") or {}, f"resource connection {a}/{b} of '{rd['name']}'")
        props = rd["conns"].setdefault(key, {})
        props.update(body.get("override_props") or {})
        for k in body.get("delete_props") or []:
            props.pop(k, None)
        return [success(f"Resource connection between '{a}' and '{b}' of '{rd['name']}' modified.", C.MASK_RSC_CONN,
                        C.MASK_MOD).to_json()]

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
