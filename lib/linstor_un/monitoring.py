"""Datastore monitoring: capacity, and (system datastores) VM disk and snapshot sizes.

Capacity counts the pools the datastore's placement really uses (STORAGE_POOL, else the resource
group's pools) and divides by the replica count: a 10 GiB image uses 20 GiB of pool with two
replicas (BUG-27). The request count does not grow with the number of resources: one listing of
the datastore's definitions (by property), and resource listings in chunks of 200 names.
"""
from __future__ import annotations

import base64
import gc
import os
import re
import socket
import zlib
from collections import defaultdict
from pathlib import Path
from typing import Optional

from . import disks, names
from .errors import DriverError
from .linstor_api import Linstor
from .validate import natural
from .placement import pools_and_copies
from .report import Report
from .settings import DatastoreSettings


def capacity(api: Linstor, settings: DatastoreSettings) -> tuple[int, int, int]:
    """(used, total, free) in MB, as the datastore can use them: its pools' space over its copies."""
    p = settings.placement
    pools, copies = pools_and_copies(api, p)
    if not pools:
        raise DriverError("Datastore template missing 'STORAGE_POOL' attribute." if not p.resource_group
                          else f"resource group {p.resource_group} has no storage pools")
    total = free = 0
    for pool in api.storage_pools(pools, p.node_list or None):
        if pool.diskless or pool.total_kib is None:
            continue
        total += pool.total_kib
        free += pool.free_kib
    total_mb, free_mb = total // 1024 // copies, free // 1024 // copies
    return total_mb - free_mb, total_mb, free_mb


def capacity_lines(used: int, total: int, free: int) -> str:
    return f"USED_MB={used}\nTOTAL_MB={total}\nFREE_MB={free}\n"


def vm_disk_sizes(api: Linstor, ds_id: int, report: Optional[Report] = None) -> dict[int, list[str]]:
    """VM id -> DISK_SIZE / SNAPSHOT_SIZE entries for the disks placed in system datastore ds_id.
    A definition whose properties do not parse is skipped (and logged), never the whole report."""
    # the listings of a big cluster are millions of small objects and no reference cycles: the
    # cyclic garbage collector would only scan them again and again (0.4 s at 10,000 disks)
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _vm_disk_sizes(api, ds_id, report)
    finally:
        if enabled:
            gc.enable()


def _vm_disk_sizes(api: Linstor, ds_id: int, report: Optional[Report]) -> dict[int, list[str]]:
    rds = api.resource_definitions(props=[f"{disks.DS_ID}={ds_id}"], sizes=False)   # sizes come from replicas
    owned, odd, seen = [], [], set()
    parsed = []
    for rd in rds:
        vm_id, disk_id = natural(rd.props.get(disks.VM_ID, "")), natural(rd.props.get(disks.DISK_ID, ""))
        if vm_id is None or disk_id is None:
            if disks.VM_ID in rd.props or disks.DISK_ID in rd.props:
                odd.append(rd.name)
            continue
        parsed.append((rd, vm_id, disk_id))
    # a disk claimed twice: the VM's own volume (its name) first, then a persistent image's
    parsed.sort(key=lambda t: (t[0].name != names.vm_disk(t[1], t[2]), t[0].name))
    for rd, vm_id, disk_id in parsed:
        if (vm_id, disk_id) in seen:            # two definitions claim one disk: report it once
            odd.append(rd.name)
            continue
        seen.add((vm_id, disk_id))
        owned.append((rd, vm_id, disk_id))
    if odd and report is not None:
        report.info(f"not monitored (VM/disk properties that do not parse or repeat another's): {', '.join(odd)}")
    replicas = api.replicas_of([rd.name for rd, _, _ in owned]) if owned else {}
    out: dict[int, list[str]] = defaultdict(list)
    for rd, vm_id, disk_id in owned:
        sizes = [r.allocated_kib for r in replicas.get(rd.name, []) if not r.diskless]
        if not sizes:
            continue
        out[vm_id].append(f"DISK_SIZE=[ID={disk_id},SIZE={max(sizes) // 1024}]")
        for key, value in sorted(rd.props.items()):
            snap_id, size = names.snapshot_of_size_prop(key), natural(value)
            if snap_id is not None and size is not None:
                out[vm_id].append(f"SNAPSHOT_SIZE=[ID={snap_id},DISK_ID={disk_id},SIZE={size // 1024}]")
    return dict(out)


def poll_lines(sizes: dict[int, list[str]]) -> str:
    """Before 5.12: VM lines on stdout, read by oned."""
    return "".join(f'VM=[ID={vm},POLL="{" ".join(items)} "]\n' for vm, items in sorted(sizes.items()))


def monitor_lines(sizes: dict[int, list[str]]) -> str:
    """5.12+: what onemonitord takes as MONITOR_VM: one VM line each, MONITOR base64-encoded."""
    return "".join(f'VM = [ ID = {vm}, MONITOR = "{base64.b64encode(" ".join(items).encode()).decode()}" ]\n'
                   for vm, items in sorted(sizes.items()))


def monitord_address(one_location: Optional[str] = None) -> tuple[str, int]:
    """Address of onemonitord from monitord.conf (the places send_to_monitor looks at)."""
    candidates = ["/var/tmp/one_db/etc/monitord.conf", "/etc/one/monitord.conf"]
    if one_location:
        candidates.insert(0, f"{one_location}/etc/monitord.conf")
    for path in candidates:
        try:
            text = Path(path).read_text()
        except OSError:
            continue
        net = re.search(r"NETWORK\s*=\s*\[(.*?)\]", text, re.S)
        body = net.group(1) if net else text
        addr = re.search(r"MONITOR_ADDRESS\s*=\s*\"?([^\",\s]+)", body)
        port = re.search(r"PORT\s*=\s*\"?([0-9]+)", body)
        host = addr.group(1) if addr else "auto"
        return ("127.0.0.1" if host == "auto" else host), int(port.group(1)) if port else 4124
    return "127.0.0.1", 4124


def send_to_monitor(payload: str, one_location: Optional[str] = None) -> None:
    """One UDP datagram `MONITOR_VM SUCCESS -1 0 <b64(zlib(payload))>`, like send_to_monitor."""
    text = " ".join(payload.split()) + "\n"
    data = base64.b64encode(zlib.compress(text.encode())).decode()
    message = f"MONITOR_VM SUCCESS -1 0 {data}\n".encode()
    host, port = monitord_address(one_location or os.environ.get("ONE_LOCATION"))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(message, (host, port))
