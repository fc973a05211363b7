"""The emulated controller's handlers for the controller itself, nodes and storage pools, resource groups: a part of controller.Controller."""
from __future__ import annotations

from typing import Any, Optional

from linstor import sharedconsts as C

from . import versions
from .apicall import ApiError, Rc, success
from .common import _name_filter, _props_match, _uuid


class ClusterApi:
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
