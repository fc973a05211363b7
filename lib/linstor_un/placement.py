"""Where a new volume's replicas go: one small scheduler per placement policy of the datastore.

- GroupScheduler: RESOURCE_GROUP set. One spawn request (definition, volume, auto-place) with the
  datastore's filters as overrides (REPLICA_COUNT, STORAGE_POOL, ...); with ENCRYPTION the volume is
  created encrypted first, then auto-placed.
- NodeListScheduler: NODE_LIST set. A diskful replica on each listed node, in the pool of
  STORAGE_POOL with the most free space there.
- CountScheduler: REPLICA_COUNT (or legacy AUTO_PLACE) with STORAGE_POOL: LINSTOR's auto-placer.
With PREFER_NODE=yes, a diskful replica on the VM's host is tried first (BUG-4 fixed: it is a
plain request for that node, counted in the replica count); if the host has no room, the
normal placement decides alone.
"""
from __future__ import annotations

from typing import Optional

import linstor
from linstor import sharedconsts as C

from .errors import DriverError
from .linstor_api import Linstor, Replica
from .report import Report
from .settings import Placement


class Scheduler:
    def __init__(self, api: Linstor, placement: Placement, report: Report):
        self.api = api
        self.p = placement
        self.report = report

    def create(self, name: str, size_kib: int, prefer_host: Optional[str] = None,
               props: Optional[dict] = None) -> None:
        """Create resource `name` of `size_kib` and place its replicas; the definition is born with
        `props` (ownership marks). The caller owns the rollback."""
        raise NotImplementedError

    def refuses(self, diskful: list[Replica], host: Optional[str] = None) -> Optional[str]:
        """Why replicas already placed (a source's diskful replicas, where LINSTOR's clone of it
        lands: the same nodes and pools) would not be what this policy places; None if they are.
        Filters it cannot check against existing replicas make it say no."""
        p = self.p
        if p.encryption:
            return "encrypted volumes"
        if p.layer_list or p.providers or p.replicas_on_same or p.replicas_on_different or \
                p.do_not_place_with or p.do_not_place_with_regex:
            return "the datastore's placement filters"
        if not diskful:
            return "the image has no disk replica"
        pools = {x.lower() for x in self._pools_of_policy()}
        off = sorted({r.pool for r in diskful if pools and r.pool.lower() not in pools})
        if off:
            return f"the image is in pool {', '.join(off)}, not in the datastore's {', '.join(sorted(pools))}"
        if p.prefer_node and host and host.lower() not in {r.node.lower() for r in diskful}:
            return f"PREFER_NODE and the image has no replica on {host}"
        return self._refuses_nodes(sorted({r.node for r in diskful}))

    def _refuses_nodes(self, nodes: list[str]) -> Optional[str]:
        want = self._count()
        return None if want is None or want == len(nodes) else \
            f"the image has {len(nodes)} replicas, the datastore places {want}"

    def _count(self) -> Optional[int]:
        return self.p.replica_count

    # shared steps ---------------------------------------------------------------------------------
    # each create says how to tell, after a lost reply, that the controller did apply it
    def _defined(self, name: str) -> bool:
        return self.api.resource_definition(name) is not None

    def _sized(self, name: str) -> bool:
        rd = self.api.resource_definition(name)
        return rd is not None and rd.size_kib > 0

    def _placed(self, name: str, nodes: Optional[list[str]] = None) -> bool:
        have = {r.node.lower() for r in self.api.replicas(name) if not r.diskless}
        return bool(have) and all(n.lower() in have for n in nodes or [])

    def _define(self, name: str, size_kib: int, resource_group: Optional[str] = None,
                props: Optional[dict] = None) -> None:
        self.api.do(f"create resource {name}", lambda c: c.resource_dfn_create(
            name, resource_group=resource_group, layer_list=self.p.layer_list or None),
            done=lambda: self._defined(name), create_props=props)
        self.api.do(f"create volume of {name}", lambda c: c.volume_dfn_create(
            name, size_kib, encrypt=self.p.encryption), done=lambda: self._sized(name))

    def _filters(self) -> dict:
        return dict(storage_pool=self.p.storage_pools or None,
                    do_not_place_with=self.p.do_not_place_with or None,
                    do_not_place_with_regex=self.p.do_not_place_with_regex,
                    replicas_on_same=self.p.replicas_on_same or None,
                    replicas_on_different=self.p.replicas_on_different or None,
                    layer_list=self.p.layer_list or None,
                    provider_list=self.p.providers or None)

    def _prefer(self, name: str, host: Optional[str], need: int) -> bool:
        """A diskful replica on the VM's host, if one of its pools has room. True if placed."""
        if not (self.p.prefer_node and host):
            return False
        pools = self._pools_of_policy()
        candidates = [p for p in self.api.storage_pools(pools or None, [host])
                      if p.get("provider_kind") != "DISKLESS"]
        fitting = [p for p in candidates if int(p.get("free_capacity") or 0) >= need]
        if not fitting:
            self.report.info(f"PREFER_NODE: no pool on {host} has room for {name}; normal placement")
            return False
        pool = max(fitting, key=lambda p: int(p.get("free_capacity") or 0))["storage_pool_name"]
        replies = self.api._call(f"place {name} on {host}", lambda c: c.resource_create(
            [linstor.ResourceData(host, name, storage_pool=pool, layer_list=self.p.layer_list or None)]))
        if linstor.Linstor.all_api_responses_no_error(replies):
            return True
        self.report.info(f"PREFER_NODE: could not place {name} on {host}; normal placement")
        return False

    def _pools_of_policy(self) -> list[str]:
        return list(self.p.storage_pools)

    def _autoplace(self, name: str, count: Optional[int]) -> None:
        self.api.do(f"place {name}", lambda c: c.resource_auto_place(name, count, **self._filters()),
                    ok_codes=(C.WARN_RSC_ALREADY_DEPLOYED,))


class GroupScheduler(Scheduler):
    _group: Optional[dict] = None

    def _select_filter(self) -> dict:
        if self._group is None:             # read once per action
            self._group = self.api.resource_group(self.p.resource_group)
        return self._group.get("select_filter") or {}

    def _pools_of_policy(self) -> list[str]:
        if self.p.storage_pools:
            return list(self.p.storage_pools)
        return list(self._select_filter().get("storage_pool_list") or [])

    def _count(self) -> Optional[int]:
        if self.p.replica_count:
            return self.p.replica_count
        return self._select_filter().get("place_count") or 2

    def create(self, name: str, size_kib: int, prefer_host: Optional[str] = None,
               props: Optional[dict] = None) -> None:
        rg = self.p.resource_group
        if not self.p.encryption and not (self.p.prefer_node and prefer_host):
            self.api.do(f"create resource {name} in group {rg}", lambda c: c.resource_group_spawn(
                rg, name, [size_kib], partial=True, place_count=self.p.replica_count, **self._filters()),
                done=lambda: self._sized(name) and self._placed(name), create_props=props)
            return
        self._define(name, size_kib, resource_group=rg, props=props)
        self._prefer(name, prefer_host, size_kib)
        self._autoplace(name, self._count())


class NodeListScheduler(Scheduler):
    def create(self, name: str, size_kib: int, prefer_host: Optional[str] = None,
               props: Optional[dict] = None) -> None:
        self._define(name, size_kib, props=props)
        pools = self.api.storage_pools(self.p.storage_pools, self.p.node_list)
        replicas = []
        for node in self.p.node_list:
            here = [p for p in pools if p.get("node_name", "").lower() == node.lower()]
            if not here:
                raise DriverError(f"place {name}: node {node} has none of the pools {' '.join(self.p.storage_pools)}")
            best = max(here, key=lambda p: int(p.get("free_capacity") or 0))
            replicas.append(linstor.ResourceData(node, name, storage_pool=best["storage_pool_name"],
                                                 layer_list=self.p.layer_list or None))
        self.api.do(f"place {name} on {' '.join(self.p.node_list)}", lambda c: c.resource_create(replicas),
                    done=lambda: self._placed(name, self.p.node_list))

    def _refuses_nodes(self, nodes: list[str]) -> Optional[str]:
        if {n.lower() for n in nodes} == {n.lower() for n in self.p.node_list}:
            return None
        return f"the image is on {' '.join(nodes)}, the datastore's NODE_LIST is {' '.join(self.p.node_list)}"


class CountScheduler(Scheduler):
    def create(self, name: str, size_kib: int, prefer_host: Optional[str] = None,
               props: Optional[dict] = None) -> None:
        self._define(name, size_kib, props=props)
        self._prefer(name, prefer_host, size_kib)
        self._autoplace(name, self.p.replica_count)


def scheduler(api: Linstor, placement: Placement, report: Report) -> Scheduler:
    placement.require()
    if placement.resource_group:
        return GroupScheduler(api, placement, report)
    if placement.node_list:
        return NodeListScheduler(api, placement, report)
    return CountScheduler(api, placement, report)
