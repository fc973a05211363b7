"""The emulated controller's handlers for resource definitions and volume definitions: a part of controller.Controller."""
from __future__ import annotations

import re
from typing import Any, Optional

from linstor import sharedconsts as C

from .apicall import ApiError, Rc, http_status, success
from .common import DEFAULT_RG, QUORUM_PROP, _name_filter, _props_match, _uuid


class DefinitionApi:
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
