"""The emulated controller's handlers for resources (replicas): create, modify, delete, make-available, autoplace, connections: a part of controller.Controller."""
from __future__ import annotations

from typing import Any, Optional

from linstor import sharedconsts as C

from . import placement
from .apicall import ApiError, Rc, success
from .common import DISKLESS_POOL, TIEBREAKER_PROP, _name_filter, _props_match


class ResourceApi:
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
