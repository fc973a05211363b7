"""Disk and image snapshots: `snapshot-<id>` on the volume's resource, with the size property the
system datastore monitor reports (`Aux/one/SNAPSHOT_<id>/DISK_SIZE`, KiB)."""
from __future__ import annotations

from typing import Callable, Optional

from . import host_ops, names
from .attach import Attacher
from .errors import DriverError
from .linstor_api import Linstor, Snapshot
from .remote import Host
from .report import Report

ANY_ROLLBACK_SINCE = (1, 31, 0)     # LINSTOR rolls back to any snapshot from here on (reference §3.10)


def create(api: Linstor, res: str, snap_id: int) -> None:
    api.create_snapshot(res, names.snapshot(snap_id), exist_ok=True)
    allocated = max([r.allocated_kib for r in api.replicas(res) if not r.diskless] or [0])
    try:
        api.set_props(res, {names.snapshot_size_prop(snap_id): str(allocated)})
    except DriverError:
        pass                         # only monitoring depends on it


def delete(api: Linstor, res: str, snap_id: int) -> None:
    rd = api.resource_definition(res)
    if rd is None:
        return
    prop = names.snapshot_size_prop(snap_id)
    if prop in rd.props:
        api.set_props(res, {}, delete=[prop])
    api.delete_snapshot(res, names.snapshot(snap_id))


def remove_volume(api: Linstor, rd, snaps: Optional[list[Snapshot]] = None) -> None:
    """Delete a volume: its snapshot size properties in one request, then the definition and its
    snapshots (rd: the ResourceDef the caller already read; snaps: its snapshots, if listed)."""
    stale = [k for k in rd.props if names.snapshot_of_size_prop(k) is not None]
    if stale:
        api.set_props(rd.name, {}, delete=stale)
    api.delete_definition(rd.name, snaps)


def revert(api: Linstor, attacher: Attacher, host_for: Callable[[], Host], res: str, snap_id: int,
           report: Report, block_size: str = "64k", snaps: Optional[list[Snapshot]] = None) -> None:
    """Make `res` hold the snapshot's exact bytes, zeros included (BUG-12).

    LINSTOR's rollback where it can (the newest snapshot by creation time, BUG-13, or any snapshot
    on servers that allow it); otherwise the snapshot is restored into `<res>-tmp` and copied back
    over the volume on `host`; the temporary resource is always removed (BUG-7)."""
    snap = names.snapshot(snap_id)
    snaps = api.snapshots(res) if snaps is None else snaps
    target = next((s for s in snaps if s.name == snap), None)
    if target is None:
        raise DriverError(f"snapshot {snap} of {res} does not exist")
    newest = max(snaps, key=lambda s: s.created_ms)
    if newest.name == snap or api.server_version() >= ANY_ROLLBACK_SINCE:
        api.rollback(res, snap)
        return
    report.info(f"{snap} is not the newest snapshot of {res}: restoring it through {res}-tmp")
    host = host_for()              # only this path copies bytes on a host
    tmp = f"{res}-tmp"
    found = api.definitions(tmp, res)
    if found[tmp] is not None:
        api.delete_definition(tmp)          # left by an earlier, interrupted revert
    safety = "linstor_un-revert-safety"
    if any(s.name == safety for s in snaps):
        api.delete_snapshot(res, safety)
    safety_made = copied = False
    try:
        api.restore_snapshot(res, snap, tmp, found[res].resource_group if found[res] else None)
        # borrowed: a VM disk already attached there stays; a bridge's replica goes afterwards
        dst_dev = attacher.borrow(host.name, res)
        src_dev = attacher.borrow(host.name, tmp)
        # the newest snapshot can always be rolled back to: a copy that fails half-way is undone
        safety_made = api.create_snapshot(res, safety)
        host_ops.copy(host, src_dev, dst_dev, sparse=False, block_size=block_size)
        copied = True
    finally:
        attacher.give_back(host.name, tmp)
        attacher.give_back(host.name, res)      # detached first: LINSTOR rolls back only unused volumes
        try:
            if safety_made and not copied:
                report.info(f"copy failed: rolling {res} back to its state before the revert")
                api.rollback(res, safety)
            if safety_made:                     # kept if the rollback failed: the state before
                api.delete_snapshot(res, safety)
        finally:
            api.delete_definition(tmp)
