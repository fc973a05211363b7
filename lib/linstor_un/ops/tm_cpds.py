"""TM cpds: disk save-as. The disk (or one of its snapshots) is copied into the new image's
volume (created by DS mkfs, or here if it does not exist yet).

LINSTOR copies it itself — a resource-definition clone of a stopped VM's disk, a snapshot restore
of a snapshot — when the image datastore's placement would put the image where the disk is
(the copy lands on the disk's nodes and pools). LINSTOR makes only new definitions, so DS mkfs's
empty volume (ours: marked for this very image) is deleted first and made again, empty, if the
copy fails. Otherwise the bytes go through a host: a running VM's disk with `virsh blockcopy`,
or else with its filesystems frozen, or else with the VM paused. The VM log says which ran.

argv: <host>:<sys_path>/<vm>/disk.<n> <new image SOURCE> <snap_id|-1> <vm_id> <image_ds_id>
For a stopped or undeployed VM the host is the front-end: the copy then runs on a LINSTOR node
that holds the disk (BUG-29).
"""
from linstor_un import disks, host_ops, names, ownership, snapshots
from linstor_un.context import Datastore, OnHost
from linstor_un.errors import DriverError
from linstor_un.rollback import Rollback
from linstor_un.holders import disk_holders, pick_holder
from linstor_un.one_input import DiskImageArgs
from linstor_un.ownership import Owner
from linstor_un.placement import scheduler

IMAGE_LOCKED = "4"                  # an image's STATE while oned makes it (ImageState, 5.6-7.4)


def main(act, args: DiskImageArgs):
    dst_res, snap_id, vm_id, src = args.image, args.snap_id, args.vm_id, args.disk
    ds = act.datastore(args.ds_id)
    api, settings = ds.api, ds.settings
    vm = act.one.vm(vm_id)
    src_res, disk = disks.resource_of(vm, src.disk_id)
    image_id = names.image_id(dst_res)
    base = names.from_source(disk.get("SOURCE")) if disk.get("SOURCE") else None
    if image_id is None or dst_res in (src_res, base):
        raise DriverError(f"{args.image_arg} is not a new image's volume ({'the disk itself' if dst_res == src_res else ''}"
                          f"{'the disk' + chr(39) + 's own image' if dst_res == base else ''}"
                          f"{'not an image resource' if image_id is None else ''}): nothing was changed")
    image = saveas_agrees(act, vm, src.disk_id, image_id, dst_res, snap_id)
    found = api.definitions(src_res, dst_res)
    source, target = found[src_res], found[dst_res]
    if source is None:
        raise DriverError(f"resource {src_res} does not exist in LINSTOR")
    if target is not None and target.deleting:
        api.being_deleted(target)                 # neither written nor replaced while LINSTOR deletes it
    if target is not None and unfinished_restore(target, source):
        act.report.info(f"{dst_res} is this save-as's unfinished snapshot restore (a killed run): made again")
        api.delete_definition(dst_res, reuse=True)
        target = None
    # the new image, down to its incarnation (a volume made here is born with its mark: 5.x)
    owner = Owner.image(image_id, image.text("REGTIME"))
    if target is not None:
        # DS mkfs made it for the new image (it refused one of another image of that id)
        # (an earlier image of that id - another incarnation - is not this one: REGTIME tells)
        made_for = target.props.get(ownership.MADE_FOR, "")
        if (made_for and made_for != owner.mark) or disks.VM_ID in target.props:
            raise DriverError(f"{dst_res} is {made_for or 'in use by VM ' + target.props[disks.VM_ID]}, not the "
                              f"new image {image_id}'s volume: nothing was changed")
    # the copy runs where the disk is attached (the VM's host); a disk attached nowhere (the VM
    # is undeployed) is copied on a node holding it
    listed = api.replicas_of([src_res, dst_res])
    src_replicas = listed[src_res]
    copy_host = src.host
    if not any(r.node.lower() == copy_host.lower() and r.usable for r in src_replicas):
        holder = pick_holder(src_replicas)
        if holder is None:
            raise DriverError(f"no LINSTOR node holds {src_res}")
        copy_host = holder.node
    marks = ({k: v for k, v in target.props.items() if k.startswith("Aux/one/") and k != ownership.BUILDING}
             if target is not None else {ownership.MADE_FOR: owner.mark})
    size_kib = max(source.size_kib, target.size_kib if target is not None else 0)
    why_not = native_refusal(ds, vm, snap_id, target, image_id, src_replicas, listed[dst_res])
    if why_not is None:
        try:
            how = copy_by_linstor(ds, source, dst_res, target, snap_id, size_kib, marks)
        except DriverError as err:
            why_not = f"LINSTOR's copy failed: {err}"
            target = api.resource_definition(dst_res)        # mkfs's volume again (the rollback)
            if target is not None and target.deleting:
                raise
        else:
            act.report.info(f"{dst_res} copied by LINSTOR ({how})")
            return
    act.report.info(f"{dst_res} copied through {copy_host} ({why_not})")
    host = act.hosts[copy_host]
    if target is not None:
        if target.size_kib < source.size_kib:
            api.resize(dst_res, source.size_kib)
        copy_through_host(act, ds, host, vm, disk, src, src_res, dst_res, snap_id, src_replicas)
        return
    with ds.new_volume(dst_res, owner, "cpds") as new:
        scheduler(api, settings.placement, act.report).create(dst_res, source.size_kib, props=new.props)
        copy_through_host(act, ds, host, vm, disk, src, src_res, dst_res, snap_id, src_replicas)
        new.complete()


def copy_through_host(act, ds: Datastore, host, vm, disk, src, src_res, dst_res, snap_id, src_replicas):
    """The disk (or its snapshot) onto the image's volume on `host`: a snapshot restored there, a
    running VM's disk live (when it runs on that host), else the disk lent to the host."""
    if snap_id < 0 and not (vm.saving_as_running and host.name == src.host):
        ds.copy(host, src_res, dst_res, sparse=False, replicas={src_res: src_replicas})
        return
    with ds.attacher.borrowed(host.name, dst_res) as dst_dev:
        if snap_id >= 0:
            copy_snapshot(ds, host, src_res, snap_id, dst_dev)
        else:
            copy_running(act, ds, host, vm, disk, src_res, dst_dev)


def saveas_agrees(act, vm, disk_id, image_id, dst_res, snap_id):
    """argv must name the save-as oned has in progress: that disk (flagged
    HOTPLUG_SAVE_AS_ACTIVE), that image (HOTPLUG_SAVE_AS, its SOURCE), that snapshot, and the image
    still LOCKED (being made). Anything else would write over a volume oned did not ask for.
    Returns oned's image."""
    saving = vm.saveas()
    if saving is None:
        raise DriverError(f"oned has no save-as of VM {vm.id} in progress: nothing was changed")
    said = f"oned saves disk {saving.disk_id} ({'snapshot ' + str(saving.snap_id) if saving.snap_id != -1 else 'itself'})" \
           f" as image {saving.image_id}"
    if saving.disk_id != disk_id or saving.image_id != image_id or saving.snap_id != snap_id or \
            (saving.source and names.from_source(saving.source) != dst_res):
        raise DriverError(f"{said}{' (' + saving.source + ')' if saving.source else ''}, not disk {disk_id} "
                          f"({'snapshot ' + str(snap_id) if snap_id != -1 else 'itself'}) as {dst_res}: "
                          f"nothing was changed")
    image = act.one.image(image_id)
    if image.text("STATE") != IMAGE_LOCKED:
        raise DriverError(f"image {image_id} is not being made in oned (state {image.text('STATE') or 'unknown'}, "
                          f"not LOCKED): nothing was changed")
    return image


def unfinished_restore(target, source) -> bool:
    """A snapshot restore of this disk into the image's volume, killed before the image's marks
    replaced the disk's (LINSTOR's restore copies the disk's properties over the ones the volume
    was born with; the building mark, which the disk never has, stays)."""
    made_for = target.props.get(ownership.MADE_FOR)
    return bool(made_for) and target.props.get(ownership.BUILDING) == "cpds" and \
        made_for == source.props.get(ownership.MADE_FOR)


def native_refusal(ds: Datastore, vm, snap_id, target, image_id, src_replicas, dst_replicas):
    """Why LINSTOR cannot make the copy itself; None if it can."""
    api = ds.api
    if snap_id < 0 and vm.saving_as_running:
        return "the VM is running: its disk is copied live"
    if target is not None and not target.props.get(ownership.MADE_FOR, "").startswith(f"image {image_id} born "):
        return "the image's volume carries no linstor_un mark for it: it is written, not replaced"
    if snap_id < 0 and api.clone_refusal:
        return api.clone_refusal
    refusal = scheduler(api, ds.settings.placement, ds.report).refuses(disk_holders(src_replicas))
    if refusal is None and target is not None:
        # mkfs's volume is deleted and made again by LINSTOR's copy: with a node of it offline
        # LINSTOR would keep the name until that node is back
        offline = api.offline_nodes([r.node for r in dst_replicas])
        if offline:
            return f"{', '.join(offline)} offline: the image's volume could not be made anew"
    return refusal


def copy_by_linstor(ds: Datastore, source, dst_res, target, snap_id, size_kib, marks) -> str:
    """The image's volume as LINSTOR's copy of the disk (or of its snapshot): `marks` (the image's
    ownership) on it, complete at the end; on failure mkfs's empty volume is back as it was."""
    api, placement, report = ds.api, ds.settings.placement, ds.report
    with Rollback(report) as undo:
        if target is not None:
            api.delete_definition(dst_res, reuse=True)
            undo.add(f"make {dst_res} again, empty, as DS mkfs left it", lambda: scheduler(
                api, placement, report).create(dst_res, target.size_kib, props=marks))
        how = linstor_copy(ds, source, dst_res, snap_id, size_kib, marks)
        undo.commit()
    return how


def linstor_copy(ds: Datastore, source, dst_res, snap_id, size_kib, marks) -> str:
    api, placement = ds.api, ds.settings.placement
    with ds.new_volume(dst_res, marks, "cpds") as new:
        if snap_id >= 0:
            snap = names.snapshot(snap_id)
            api.restore_snapshot(source.name, snap, dst_res, placement.resource_group, placement.layer_list,
                                 props=new.props)
            # (restore_snapshot puts the marks it was born with back over the disk's own properties)
            restored = api.resource_definition(dst_res)
            if restored is None:
                raise DriverError(f"LINSTOR restored {source.name}/{snap} into {dst_res}, which it does not list")
            if size_kib > restored.size_kib:
                api.resize(dst_res, size_kib)
            how = f"snapshot restore of {source.name}/{snap}"
        else:
            api.copy_definition(source, dst_res, placement.resource_group, size_kib, new.props)
            how = f"resource-definition clone of {source.name}"
        new.complete()
    return how


def copy_snapshot(ds: Datastore, host, src_res, snap_id, dst_dev):
    with snapshots.restored(ds, host.name, src_res, names.snapshot(snap_id), "cpds") as snap_dev:
        ds.copy(host, OnHost(snap_dev), OnHost(dst_dev), sparse=False)


def copy_running(act, ds: Datastore, host, vm, disk, src_res, dst_dev):
    domain = vm.deploy_id or f"one-{vm.id}"
    target = disk.get("TARGET")
    done = host_ops.virsh(host, ["blockcopy", domain, target, dst_dev, "--blockdev", "--reuse-external",
                                 "--wait", "--finish"], "blockcopy", check=False)
    if done.rc == 0:
        return
    act.report.info("blockcopy failed; copying with the guest frozen or paused")
    frozen = host_ops.virsh(host, ["domfsfreeze", domain], "freeze guest filesystems", check=False).rc == 0
    paused = False
    if not frozen:
        paused = host_ops.virsh(host, ["suspend", domain], "pause the VM", check=False).rc == 0
        if not paused:
            raise DriverError(f"could not freeze or pause {domain} for a consistent copy")
    try:
        ds.copy(host, src_res, OnHost(dst_dev), sparse=False)
    finally:
        host_ops.virsh(host, ["domfsthaw" if frozen else "resume", domain], "unfreeze the VM", check=False)
