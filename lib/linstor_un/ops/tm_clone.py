"""TM clone: a non-persistent disk for a VM, copied (CLONE_MODE=copy) or restored from a
snapshot of the image (CLONE_MODE=snapshot), then linked on the VM's host.

A copy is LINSTOR's own (resource-definition clone: no bytes through a hypervisor) when what it
makes is what the system datastore's placement would make — the clone lands on the image's nodes
and pools — and a byte copy through the VM's host otherwise (the VM log says which, and why).

argv: <fe>:<SOURCE> <host>:<sys_path>/<vm>/disk.<n> <vm_id> <image_ds_id>
The system datastore (from the path) decides placement, as in the bash driver.
"""
from linstor_un import disks, host_ops, names, ownership, snapshots
from linstor_un.context import Datastore, OnHost
from linstor_un.errors import DriverError
from linstor_un.holders import disk_holders
from linstor_un.linstor_api import thin_only
from linstor_un.one_input import ImageDiskArgs
from linstor_un.ownership import NewVolume
from linstor_un.placement import scheduler


def main(act, args: ImageDiskArgs):
    src_res, vm_id, dst = args.source, args.vm_id, args.disk
    ds = act.context(act.placement_settings(dst.system_ds, args.ds_id))
    settings = ds.settings
    vm = act.one.vm(vm_id)
    disk = vm.disk(dst.disk_id)
    if disk.get("SOURCE") and names.from_source(disk.get("SOURCE")) != src_res:
        raise DriverError(f"{args.source_arg} is not the image of disk {dst.disk_id} of VM {vm_id} "
                          f"({disk.get('SOURCE')}): nothing was changed")
    api = ds.api
    dst_res = names.vm_disk(vm_id, dst.disk_id)
    owner = disks.owner_of(vm, dst.disk_id)

    host = act.hosts[dst.host]
    # the clone (left by an earlier run?) and the image, in one request
    found = api.definitions(dst_res, src_res)
    existing, source = found[dst_res], found[src_res]
    if existing and ownership.may_reuse(api, existing, owner, act.report):
        act.report.info(f"{dst_res} already cloned (retry); linking it")
        device = ds.attacher.attach(dst.host, dst_res)
        host_ops.link(host, device, dst.path)
        return
    if source is None:
        raise DriverError(f"image resource {src_res} does not exist in LINSTOR")
    size_kib = max(disk.size_mb * 1024, source.size_kib)
    with ds.new_volume(dst_res, owner, "clone") as new:
        if settings.clone_mode == "snapshot":
            clone_by_snapshot(ds, src_res, dst_res, size_kib, source.size_kib, owner, new)
            device = ds.attacher.attach(dst.host, dst_res)
        else:
            device = clone_by_copy(act, ds, source, dst_res, size_kib, dst.host, owner, new.props)
        made_dir = host_ops.link(host, device, dst.path)
        new.undo.add(f"remove {dst.path}", lambda: host_ops.unlink(host, dst.path, remove_empty_dir=made_dir))
        # last: marks the clone complete (a retry after this point only relinks)
        new.complete(disks.owner_props(vm_id, dst.system_ds, dst.disk_id), delete=completed_marks(settings, dst_res))


def completed_marks(settings, dst_res) -> tuple[str, ...]:
    """What goes, with the building mark, when the clone is complete: the base snapshot's token a
    restore copied onto it."""
    if settings.clone_mode == "snapshot":
        return (ownership.SNAPSHOT_TOKEN + dst_res,)
    return ()


def clone_by_snapshot(ds: Datastore, src_res, dst_res, size_kib, source_kib, owner, new: NewVolume):
    # the base snapshot keeps the bash driver's name: the clone's resource name. One a killed run
    # of this clone took is reused; one taken for an earlier VM of this id is taken again
    api, settings = ds.api, ds.settings
    if snapshots.take(api, src_res, dst_res, owner, replace_stale=True):
        new.undo.add(f"delete snapshot {dst_res} of {src_res}", lambda: api.delete_snapshot(src_res, dst_res))
    api.restore_snapshot(src_res, dst_res, dst_res, settings.placement.resource_group,
                         settings.placement.layer_list, props=new.props)
    api.set_props(src_res, {}, delete=[ownership.SNAPSHOT_TOKEN + dst_res])    # the snapshot keeps it
    if size_kib > source_kib:           # the restored volume has the snapshot's (= the image's) size
        api.resize(dst_res, size_kib)


def clone_by_copy(act, ds: Datastore, source, dst_res, size_kib, host, owner, props) -> str:
    """Returns the new volume's device on host (attached for the VM)."""
    api, settings = ds.api, ds.settings
    src_res = source.name
    policy = scheduler(api, settings.placement, act.report)
    why_not = api.clone_refusal or policy.refuses(disk_holders(api.replicas(src_res)), host)
    if why_not is None:
        try:
            api.copy_definition(source, dst_res, settings.placement.resource_group, size_kib, props)
        except DriverError as err:      # (a provider or layer its clone cannot copy...)
            why_not = f"LINSTOR's clone failed: {err}"
            left = api.resource_definition(dst_res)
            if left is not None:        # what it left, unfinished: gone (someone else's: refused)
                ownership.may_reuse(api, left, owner, act.report)
        else:
            act.report.info(f"{dst_res} copied by LINSTOR (resource-definition clone of {src_res})")
            return ds.attacher.attach(host, dst_res)
    act.report.info(f"{dst_res} copied through {host} ({why_not})")
    policy.create(dst_res, size_kib, prefer_host=host, props=props)
    dst_dev, replicas = ds.attacher.attach_replicas(host, dst_res)
    ds.copy(act.hosts[host], src_res, OnHost(dst_dev), sparse=thin_only(replicas))
    return dst_dev
