"""LINSTOR's autoplacer, reduced to the rules a storage driver can observe (reference §3.7).

Candidates are (node, pool) pairs of online nodes; each filter of the select filter removes some;
the survivors are rated by free space (MaxFreeSpace, LINSTOR's default weight), ties broken by node
then pool name, and the best combination of distinct nodes that satisfies replicas-on-same and
replicas-on-different is chosen.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional


@dataclass
class Candidate:
    node: str            # display name
    pool: str            # display name
    free_kib: int
    node_props: dict


def _same_ok(chosen: list[Candidate], cand: Candidate, keys: list[str]) -> bool:
    for item in keys:
        key, _, pinned = item.partition("=")
        value = cand.node_props.get(key)
        if value is None:
            return False
        if pinned and value != pinned:
            return False
        if any(c.node_props.get(key) != value for c in chosen):
            return False
    return True


def _different_ok(chosen: list[Candidate], cand: Candidate, keys: list[str]) -> bool:
    for key in keys:
        value = cand.node_props.get(key)
        if value is not None and any(c.node_props.get(key) == value for c in chosen):
            return False
    return True


def choose(candidates: list[Candidate], count: int, existing: list[Candidate],
           replicas_on_same: list[str], replicas_on_different: list[str]) -> Optional[list[Candidate]]:
    """Pick `count` candidates on distinct nodes, honouring the existing replicas' placement."""
    # one pool per node: the best-rated one
    best: dict[str, Candidate] = {}
    for c in sorted(candidates, key=lambda c: (-c.free_kib, c.node.upper(), c.pool.upper())):
        best.setdefault(c.node.upper(), c)
    ranked = sorted(best.values(), key=lambda c: (-c.free_kib, c.node.upper()))
    # greedy from each possible first pick: finds a fitting group for replicas-on-same
    for start in range(len(ranked) or 1):
        chosen: list[Candidate] = []
        order = ranked[start:] + ranked[:start]
        for cand in order:
            if len(chosen) == count:
                break
            group = existing + chosen
            if replicas_on_same and not _same_ok(group, cand, replicas_on_same):
                continue
            if replicas_on_different and not _different_ok(group, cand, replicas_on_different):
                continue
            chosen.append(cand)
        if len(chosen) == count:
            return chosen
        if not replicas_on_same:
            break
    return None


def excluded_by_neighbours(node_rscs: set[str], not_place_with: list[str],
                           regex: Optional[str]) -> bool:
    """not_place_with_rsc / not_place_with_rsc_regex: node already hosts such a resource."""
    names = {n.upper() for n in not_place_with}
    if node_rscs & names:
        return True
    if regex:
        pattern = re.compile(regex, re.IGNORECASE)
        return any(pattern.search(r) for r in node_rscs)
    return False
