"""Where a new volume's replicas go: one small scheduler per placement policy of the datastore.

- GroupScheduler: RESOURCE_GROUP set. One spawn request (definition, volume, auto-place) with the
  datastore's filters as overrides (REPLICA_COUNT, STORAGE_POOL, ...); with ENCRYPTION, or where
  the spawn request cannot carry the definition's properties (before LINSTOR 1.27), the definition
  is created in the group with its properties, then auto-placed with the same filters.
- NodeListScheduler: NODE_LIST set. A diskful replica on each listed node, in the pool of
  STORAGE_POOL with the most free space there.
- CountScheduler: REPLICA_COUNT (or legacy AUTO_PLACE) with STORAGE_POOL: LINSTOR's auto-placer.
With PREFER_NODE=yes, a diskful replica on the VM's host is tried first (BUG-4 fixed: it is a
plain request for that node, counted in the replica count); if the host has no room, the
normal placement decides alone.
"""
from __future__ import annotations

from functools import cached_property
from typing import Optional

from .errors import DriverError
from .linstor_api import Linstor, Replica
from .report import Report
from .settings import Placement


def pools_and_copies(api: Linstor, p: Placement) -> tuple[list[str], int]:
    """The storage pools a datastore places volumes in and how many diskful copies it makes: the
    template's, else its resource group's (LINSTOR places 2 when the group says nothing), else
    one per NODE_LIST node. One rule for placement and monitoring."""
    pools, copies = list(p.storage_pools), p.replica_count
    if p.resource_group and not (pools and copies):
        group = api.resource_group(p.resource_group)
        pools, copies = pools or group.pools, copies or group.place_count or 2
    return pools, copies or len(p.node_list) or 2


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
        pools = {x.lower() for x in self._policy[0]}
        off = sorted({r.pool for r in diskful if pools and r.pool.lower() not in pools})
        if off:
            return f"the image is in pool {', '.join(off)}, not in the datastore's {', '.join(sorted(pools))}"
        if p.prefer_node and host and host.lower() not in {r.node.lower() for r in diskful}:
            return f"PREFER_NODE and the image has no replica on {host}"
        return self._refuses_nodes(sorted({r.node for r in diskful}))

    def _refuses_nodes(self, nodes: list[str]) -> Optional[str]:
        want = self._policy[1]
        return None if want == len(nodes) else f"the image has {len(nodes)} replicas, the datastore places {want}"

    @cached_property
    def _policy(self) -> tuple[list[str], int]:
        """(pools, copies): the resource group, where one is needed, is read once per action."""
        return pools_and_copies(self.api, self.p)

    # shared steps ---------------------------------------------------------------------------------
    def _define(self, name: str, size_kib: int, resource_group: Optional[str] = None,
                props: Optional[dict] = None) -> None:
        self.api.define(name, size_kib, resource_group, self.p.layer_list, self.p.encryption, props)

    def _prefer(self, name: str, host: Optional[str], need: int) -> bool:
        """A diskful replica on the VM's host, if one of its pools has room. True if placed."""
        if not (self.p.prefer_node and host):
            return False
        fitting = [p for p in self.api.storage_pools(self._policy[0] or None, [host]) if not p.diskless and p.free_kib >= need]
        if not fitting:
            self.report.info(f"PREFER_NODE: no pool on {host} has room for {name}; normal placement")
            return False
        pool = max(fitting, key=lambda p: p.free_kib).name
        if self.api.place(name, [(host, pool)], self.p.layer_list, required=False):
            return True
        self.report.info(f"PREFER_NODE: could not place {name} on {host}; normal placement")
        return False


class GroupScheduler(Scheduler):
    def create(self, name: str, size_kib: int, prefer_host: Optional[str] = None,
               props: Optional[dict] = None) -> None:
        rg = self.p.resource_group
        if rg is not None and not self.p.encryption and not (self.p.prefer_node and prefer_host) and \
                (self.api.spawn_takes_props or not props):
            self.api.spawn(rg, name, size_kib, self.p.replica_count, self.p.filters(), props)
            return
        # the definition first, born with its marks, then placed from its group: encryption, a
        # replica on the VM's host first, or a LINSTOR whose spawn cannot carry the marks
        self._define(name, size_kib, resource_group=rg, props=props)
        self._prefer(name, prefer_host, size_kib)
        self.api.autoplace(name, self._policy[1], self.p.filters())


class NodeListScheduler(Scheduler):
    def create(self, name: str, size_kib: int, prefer_host: Optional[str] = None,
               props: Optional[dict] = None) -> None:
        self._define(name, size_kib, props=props)
        pools = self.api.storage_pools(self.p.storage_pools, self.p.node_list)
        replicas = []
        for node in self.p.node_list:
            here = [p for p in pools if p.node.lower() == node.lower()]
            if not here:
                raise DriverError(f"place {name}: node {node} has none of the pools {' '.join(self.p.storage_pools)}")
            replicas.append((node, max(here, key=lambda p: p.free_kib).name))
        self.api.place(name, replicas, self.p.layer_list)

    def _refuses_nodes(self, nodes: list[str]) -> Optional[str]:
        if {n.lower() for n in nodes} == {n.lower() for n in self.p.node_list}:
            return None
        return f"the image is on {' '.join(nodes)}, the datastore's NODE_LIST is {' '.join(self.p.node_list)}"


class CountScheduler(Scheduler):
    def create(self, name: str, size_kib: int, prefer_host: Optional[str] = None,
               props: Optional[dict] = None) -> None:
        self._define(name, size_kib, props=props)
        self._prefer(name, prefer_host, size_kib)
        self.api.autoplace(name, self.p.replica_count, self.p.filters())


def scheduler(api: Linstor, placement: Placement, report: Report) -> Scheduler:
    placement.require()
    if placement.resource_group:
        return GroupScheduler(api, placement, report)
    if placement.node_list:
        return NodeListScheduler(api, placement, report)
    return CountScheduler(api, placement, report)
