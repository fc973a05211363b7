"""TM mv: a disk or the VM directory moves between hosts (cold migration, stop/undeploy to the
front-end, resume from it, system datastore change). The volume stays in LINSTOR: it is detached
from the old host and attached and linked on the new one.

argv: <src_host>:<path> <dst_host>:<path> <vm_id> <ds_id>
"""
from linstor_un import disks, host_ops
from linstor_un.errors import DriverError, HostUnreachable
from linstor_un.one_input import VmDirArgs


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

    api = act.linstor(settings)
    res, disk = disks.resource_of(vm, src.disk_id)
    nodes = {n.lower() for n in api.node_names()}
    if not from_frontend and src.host.lower() in nodes and (src.host, src.path) != (dst.host, dst.path):
        leave(act, settings, src, res, same_host=src.host == dst.host)
    if to_frontend or dst.host.lower() not in nodes:
        return
    rd = api.resource_definition(res)
    if rd is None:
        raise DriverError(f"resource {res} does not exist in LINSTOR")
    if disks.owned_by(rd.props, vm_id, src.disk_id) and rd.props.get(disks.DS_ID) != str(dst.system_ds):
        api.set_props(res, {disks.DS_ID: str(dst.system_ds)})     # the new system datastore (BUG-14)
    device = act.attacher(settings).attach(dst.host, res)
    host_ops.link(act.hosts[dst.host], device, dst.path)


def leave(act, settings, src, res, same_host):
    """Unlink on the old host and detach there; a dead old host is not an error."""
    host = act.hosts[src.host]
    try:
        host_ops.unlink(host, src.path, check=True)
        if same_host:
            return                    # the volume stays attached for the new path
        act.attacher(settings).detach(src.host, res, host_ops.linked_elsewhere(host, src.path))
    except DriverError as err:
        act.report.info(f"{res} not released on {src.host}: {err}")
