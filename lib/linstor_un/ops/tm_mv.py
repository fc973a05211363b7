"""TM mv: a disk or the VM directory moves between hosts (cold migration, stop/undeploy to the
front-end, resume from it, system datastore change). The volume stays in LINSTOR: it is detached
from the old host and attached and linked on the new one.

argv: <src_host>:<path> <dst_host>:<path> <vm_id> <ds_id>
"""
from dataclasses import dataclass
from typing import Iterable

from linstor_un import disks, host_ops
from linstor_un.context import Datastore
from linstor_un.errors import DriverError, HostUnreachable
from linstor_un.one_input import VmDirArgs, VmPath


def main(act, args: VmDirArgs):
    vm_id, src, dst = args.vm_id, args.target, args.dst
    if dst is None:
        raise DriverError("mv needs a source and a destination path")
    if (src.disk_id is None) != (dst.disk_id is None) or src.disk_id != dst.disk_id:
        raise DriverError(f"mv from {src.path} to {dst.path}: not the same disk (or directory): nothing was changed")
    settings = act.settings(args.ds_id)
    vm = act.one.vm(vm_id)
    from_frontend, to_frontend = vm.coming_from_frontend, vm.going_to_frontend

    if src.disk_id is None:
        # disks were moved first; what else is in the old directory (a checkpoint file written by
        # a save that is not ours) is carried, then the directory goes unless it is the new one
        # (issue #4) or on the front-end (resume: it is left as it was)
        if (src.host, src.path) != (dst.host, dst.path):
            try:
                carried = host_ops.leave_dir(act.hosts[src.host], src.path, act.hosts[dst.host], dst.path,
                                             remove=not from_frontend)
            except HostUnreachable as err:    # a dead source host must not block the move
                act.report.info(f"old directory not removed: {err}")
                return
            if carried:
                act.report.info(f"carried {', '.join(carried)} from {src.host} to {dst.host}")
        return

    ds = act.context(settings)
    res, _ = disks.resource_of(vm, src.disk_id)
    move = plan(src, dst, ds.api.node_names(), from_frontend, to_frontend)
    if move.release_old:
        leave(act, ds, src, res, move.same_host)
    if not move.attach_new:
        return
    rd = ds.api.resource_definition(res)
    if rd is None:
        raise DriverError(f"resource {res} does not exist in LINSTOR")
    if new_system_ds(rd.props, vm_id, src.disk_id, dst.system_ds):
        ds.api.set_props(res, {disks.DS_ID: str(dst.system_ds)})     # the new system datastore (BUG-14)
    host_ops.link(act.hosts[dst.host], ds.attacher.attach(dst.host, res), dst.path)


@dataclass(frozen=True)
class DiskMove:
    release_old: bool       # unlink on the old host, and detach there unless the host stays
    same_host: bool         # the volume stays attached there for the new path
    attach_new: bool        # attach and link on the new host


def plan(src: VmPath, dst: VmPath, nodes: Iterable[str], from_frontend: bool, to_frontend: bool) -> DiskMove:
    """What a disk's move does on each side. The front-end and hosts that are not LINSTOR nodes
    hold no volume: nothing is released there (a resume from the front-end finds only its copy of
    the directory) and nothing attached (a stop or undeploy leaves the volume in LINSTOR)."""
    lin = {n.lower() for n in nodes}
    moved = (src.host, src.path) != (dst.host, dst.path)
    return DiskMove(release_old=not from_frontend and src.host.lower() in lin and moved,
                    same_host=src.host == dst.host,
                    attach_new=not to_frontend and dst.host.lower() in lin)


def new_system_ds(props: dict, vm_id: int, disk_id: int, system_ds: int) -> bool:
    """The volume is this VM disk's and records another system datastore (monitoring reports it
    under the one it records)."""
    return disks.owned_by(props, vm_id, disk_id) and props.get(disks.DS_ID) != str(system_ds)


def leave(act, ds: Datastore, src: VmPath, res: str, same_host: bool) -> None:
    """Unlink on the old host and detach there; a dead old host is not an error."""
    host = act.hosts[src.host]
    try:
        host_ops.unlink(host, src.path, check=True)
        if same_host:
            return                    # the volume stays attached for the new path
        ds.attacher.detach(src.host, res, host_ops.linked_elsewhere(host, src.path))
    except DriverError as err:
        act.report.info(f"{res} not released on {src.host}: {err}")
