"""Which node to work on a volume through: one that holds a disk of it (no attach, no network in
the way), chosen the same way by every action (DS cp/mkfs bridges, DS export, TM cpds)."""
from __future__ import annotations

from typing import Optional, Sequence

from .errors import DriverError
from .linstor_api import Linstor, Replica


def disk_holders(replicas: Sequence[Replica]) -> list[Replica]:
    """The usable diskful replicas, by node name."""
    return sorted((r for r in replicas if not r.diskless and r.usable), key=lambda r: r.node.lower())


def pick_holder(replicas: Sequence[Replica], among: Sequence[str] = (), seed: int = 0,
                anywhere: bool = True) -> Optional[Replica]:
    """A usable diskful replica: on one of the hosts `among` (in their order) when one holds a disk,
    else (with `anywhere`) on any node; `seed` (an object's id) spreads the choice. None if none."""
    holders = disk_holders(replicas)
    if among:
        wanted = [h.lower() for h in among]
        chosen = [r for h in wanted for r in holders if r.node.lower() == h]
        if chosen:
            return chosen[seed % len(chosen)]
        if not anywhere:
            return None
    return holders[seed % len(holders)] if holders else None


def pick_bridge(api: Linstor, candidates: list[str], seed: int, resource: str) -> tuple[str, list[Replica]]:
    """A LINSTOR node from BRIDGE_LIST (all nodes when empty) to work on `resource` through,
    preferring one holding a disk of it (then no attach is needed, nor the node list); with the
    resource's replica listing it read (for Attacher.borrow)."""
    replicas = api.replicas(resource)
    holder = pick_holder(replicas, candidates, seed, anywhere=not candidates)
    if holder is not None:
        return holder.node, replicas
    nodes = {n.lower(): n for n in api.node_names()}
    pool = [h for h in candidates if h.lower() in nodes] if candidates else sorted(nodes.values())
    if not pool:
        raise DriverError("no host of BRIDGE_LIST is a LINSTOR node")
    return pool[seed % len(pool)], replicas
