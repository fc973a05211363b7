"""Disk and image snapshots: `snapshot-<id>` on the volume's resource, with the size property the
system datastore monitor reports (`Aux/one/SNAPSHOT_<id>/DISK_SIZE`, KiB)."""
from __future__ import annotations

from contextlib import contextmanager
from typing import TYPE_CHECKING, Callable, Iterator, Optional, Sequence

from . import names, ownership
from .context import Datastore, OnHost
from .errors import DriverError, NotFound
from .linstor_api import Linstor, Snapshot
from .ownership import Owner
from .remote import Host

if TYPE_CHECKING:
    from .disks import VmVolume


def create(api: Linstor, res: str, snap_id: int, owner: Owner) -> None:
    """`snapshot-<id>` of the disk as it is now. One left by a killed run of this very action is
    kept; any other snapshot of that name stops it (it holds some other state)."""
    snap = names.snapshot(snap_id)
    take(api, res, snap, owner)
    allocated = max([r.allocated_kib for r in api.replicas(res) if not r.diskless] or [0])
    try:
        api.set_props(res, {names.snapshot_size_prop(snap_id): str(allocated)},
                      delete=[ownership.SNAPSHOT_TOKEN + snap])
    except DriverError as err:       # only monitoring depends on the size; the token is inert
        api.report.info(f"{snap} of {res} is taken; its size for monitoring is not recorded: {err}")


def per_controller(volumes: Sequence["VmVolume"]) -> list[tuple[Linstor, list[str]]]:
    """The volumes' resources grouped by the LINSTOR session (controller) that holds them."""
    groups: dict[int, tuple[Linstor, list[str]]] = {}
    for v in volumes:
        groups.setdefault(id(v.api), (v.api, []))[1].append(v.resource)
    return list(groups.values())


def together(volumes: Sequence["VmVolume"], snap: str) -> None:
    """`snap` of every volume at one instant: one LINSTOR request per controller they live on (the
    callers have set each volume's ownership token for it)."""
    for api, resources in per_controller(volumes):
        api.create_snapshots(resources, snap)


def listings(volumes: Sequence["VmVolume"]) -> dict[str, list[Snapshot]]:
    """Each volume's snapshots, by resource: one LINSTOR request per controller they live on."""
    out: dict[str, list[Snapshot]] = {}
    for api, resources in per_controller(volumes):
        out.update(api.snapshots_of(resources))
    return out


def take(api: Linstor, res: str, snap: str, owner: Owner, replace_stale: bool = False) -> bool:
    """Snapshot `snap` of `res`, carrying this owner's token (set on the definition for the
    request: LINSTOR copies it into the snapshot). True if taken now. An existing snapshot of the
    name is kept only if it carries the token (a killed run of this action took it); one linstor_un
    took for another object is retaken when `replace_stale`; anything else is an error."""
    key = ownership.SNAPSHOT_TOKEN + snap
    api.set_props(res, {key: owner.snapshot_token(snap)})
    if api.create_snapshot(res, snap, exist_ok=True):
        return True
    existing = next((s for s in api.snapshots(res) if s.name == snap), None)
    if existing is None or ownership.snapshot_is_mine(existing, owner):
        return False
    if replace_stale and ownership.made_by_linstor_un(existing):
        api.delete_snapshot(res, snap)
        return api.create_snapshot(res, snap)
    api.set_props(res, {}, delete=[key])
    took = "linstor_un for another object" if ownership.made_by_linstor_un(existing) else "someone else"
    raise DriverError(f"snapshot {snap} of {res} already exists and was taken by {took}, not for "
                      f"{owner.describe()} now: nothing was changed. Delete it if nobody needs it "
                      f"(linstor snapshot delete {res} {snap}) and retry")


def delete(api: Linstor, res: str, snap_id: int, owner: Optional[Owner] = None) -> None:
    """`snapshot-<id>` goes, with its size property; one taken for another object (a token of
    another incarnation of this VM) is refused."""
    snap = names.snapshot(snap_id)
    if owner is not None:
        existing = next((s for s in api.snapshots(res) if s.name == snap), None)
        if existing is None:
            return                  # already gone (a retry)
        belongs(existing, res, owner)
    try:
        api.set_props(res, {}, delete=[names.snapshot_size_prop(snap_id)])
    except NotFound:
        return                      # the volume is gone, and its snapshots with it
    api.delete_snapshot(res, snap)


def belongs(snapshot: Snapshot, res: str, owner: Owner) -> None:
    """A snapshot an action acts on for `owner`: taken for it, or unmarked (the bash driver's, an
    older linstor_un's); one linstor_un took for another object stops the action."""
    if ownership.made_by_linstor_un(snapshot) and not ownership.snapshot_is_mine(snapshot, owner):
        raise DriverError(f"snapshot {snapshot.name} of {res} was taken for "
                          f"{snapshot.props[ownership.SNAPSHOT_TOKEN + snapshot.name].rsplit(' snapshot ', 1)[0]}, "
                          f"not for {owner.describe()} ({owner.mark}): nothing was changed")


def remove_volume(api: Linstor, rd, snaps: Optional[list[Snapshot]] = None) -> None:
    """Delete a volume: its snapshot size properties in one request, then the definition and its
    snapshots (rd: the ResourceDef the caller already read; snaps: its snapshots, if listed)."""
    stale = [k for k in rd.props if names.snapshot_of_size_prop(k) is not None]
    if stale:
        api.set_props(rd.name, {}, delete=stale)
    api.delete_definition(rd.name, snaps)


def revert(ds: Datastore, host_for: Callable[[], Host], res: str, snap_id: int,
           snaps: Optional[list[Snapshot]] = None, owner: Optional[Owner] = None) -> None:
    """`res` back to its `snapshot-<id>` (revert_to)."""
    revert_to(ds, host_for, res, names.snapshot(snap_id), snaps, owner)


def revert_to(ds: Datastore, host_for: Callable[[], Host], res: str, snap: str,
              snaps: Optional[list[Snapshot]] = None, owner: Optional[Owner] = None) -> None:
    """Make `res` hold the snapshot's exact bytes, zeros included (BUG-12).

    LINSTOR's rollback where it can (Linstor.rollback_refusal: the newest snapshot by creation
    time before LINSTOR 1.31, BUG-13; any from 1.31; every node online; before 1.31.2 a copy of the
    snapshot on every disk); otherwise the snapshot is restored into `<res>-tmp` and copied back
    over the volume on `host`; the temporary resource is always removed (BUG-7)."""
    api, report = ds.api, ds.report
    snaps = api.snapshots(res) if snaps is None else snaps
    target = next((s for s in snaps if s.name == snap), None)
    if target is None:
        raise DriverError(f"snapshot {snap} of {res} does not exist")
    if owner is not None:
        belongs(target, res, owner)
    newest = max(snaps, key=lambda s: s.created_ms)
    replicas = api.replicas(res)
    why_not = api.rollback_refusal(target, newest.name == snap, replicas)
    if why_not is None:
        why_not = api.rollback(res, snap, replicas=replicas)
        if why_not is None:
            return
    report.info(f"{snap} of {res} is restored through {res}-tmp: LINSTOR cannot roll back to it ({why_not})")
    host = host_for()              # only this path copies bytes on a host
    safety = "linstor_un-revert-safety"
    if any(s.name == safety for s in snaps):
        api.delete_snapshot(res, safety)
    with restored(ds, host.name, res, snap, "snap_revert") as src_dev:
        # the newest snapshot can always be rolled back to: a copy that fails half-way is undone
        safety_made = api.create_snapshot(res, safety)
        try:
            # lent: a VM disk already attached there stays; a bridge's replica goes afterwards
            # (and before any rollback: LINSTOR rolls back only unused volumes)
            ds.copy(host, OnHost(src_dev), res, sparse=False)
        except BaseException:
            if safety_made:
                report.info(f"copy failed: rolling {res} back to its state before the revert")
                refused = api.rollback(res, safety)
                if refused:
                    raise DriverError(f"the copy onto {res} failed and it could not be rolled back to its state "
                                      f"before the revert, kept as snapshot {safety}: {refused}")
                api.delete_snapshot(res, safety)    # kept if the rollback failed: the state before
            raise
        if safety_made:
            api.delete_snapshot(res, safety)


@contextmanager
def restored(ds: Datastore, host: str, res: str, snap: str, step: str, suffix: str = "tmp") -> Iterator[str]:
    """`res`'s snapshot as a device on `host`, for reading: restored into `<res>-<suffix>` on one
    node that holds the snapshot (the host itself when it does: no network in the way), attached
    to the host if it is elsewhere. The temporary resource is always removed; one an interrupted
    run left is removed first (if it is one)."""
    api, tmp = ds.api, f"{res}-{suffix}"
    defs = api.definitions(tmp, res)
    leftover, source = defs[tmp], defs[res]
    if leftover is not None:
        ownership.clear_temporary(api, leftover, res, source.props if source is not None else None)
    found = next((s for s in api.snapshots(res) if s.name == snap), None)
    if found is None:
        raise DriverError(f"snapshot {snap} of {res} does not exist")
    offline = {n.lower() for n in api.offline_nodes(found.nodes)}
    holders = [n for n in found.nodes if n.lower() not in offline]
    if not holders:
        raise DriverError(f"snapshot {snap} of {res} is only on {', '.join(found.nodes)}, offline now")
    local = [n for n in holders if n.lower() == host.lower()]
    try:
        api.restore_snapshot(res, snap, tmp, None, props=ownership.temporary(res, step),
                             nodes=(local or holders)[:1])
        with ds.attacher.borrowed(host, tmp) as device:
            yield device
    except BaseException:
        # a reader on the host that was cut off may hold the device a moment longer; the error
        # that brought us here is the one to report
        try:
            api.delete_definition(tmp, patience=15)
        except DriverError as err:
            api.report.error(f"could not remove {tmp}: {err}")
        raise
    api.delete_definition(tmp)
