"""TM delete: a VM disk (its link, and its volume if it is the VM's own) or the VM directory
(with the VM's checkpoint volume and the memory volumes of its VM snapshots).

argv: <host>:<sys_path>/<vm>[/disk.<n>] <vm_id> <ds_id>
A shared image is detached from the host only when no other VM disk there uses it (BUG-15).
"""
from typing import Optional

from linstor_un import backup_chain, disks, host_ops, names, ownership, snapshots, vm_snapshots
from linstor_un.context import Datastore
from linstor_un.errors import DriverError
from linstor_un.one_input import VmDirArgs, VmPath
from linstor_un.ownership import Owner


def main(act, args: VmDirArgs):
    target, vm_id = args.target, args.vm_id
    ds = act.datastore(args.ds_id)
    if target.disk_id is None:
        delete_vm_dir(act, ds, target, vm_id)
    else:
        delete_disk(act, ds, target, vm_id, target.disk_id)


def delete_vm_dir(act, ds: Datastore, target: VmPath, vm_id: int) -> None:
    """The VM directory, the VM's checkpoint volume and the memory volumes of its VM snapshots."""
    api = ds.api
    checkpoint = names.checkpoint(vm_id)
    rd = api.resource_definition(checkpoint)
    if rd is not None:
        owner = Owner.checkpoint(vm_id, act.one.vm(vm_id).text("STIME"))
        if not ownership.may_remove(rd.props, owner):
            raise DriverError(f"{checkpoint} was made for {rd.props[ownership.MADE_FOR]}, not this VM "
                              f"({owner.mark}): not deleting it")
        api.delete_definition(checkpoint)
    vm_snapshots.forget_memory(api, vm_id, lambda: act.one.vm(vm_id).text("STIME"))
    host_ops.remove_dir(act.hosts[target.host], target.path)
    backup_chain.DigestStore.forget_vm(vm_id)         # the front-end's record of its backups


def delete_disk(act, ds: Datastore, target: VmPath, vm_id: int, disk_id: int) -> None:
    api, host = ds.api, act.hosts[target.host]
    vm = act.one.vm(vm_id)
    res, disk = disks.resource_of(vm, disk_id)
    host_ops.unlink(host, target.path)
    if not disk.cloned:             # a shared image: detached unless another VM disk here uses it
        ds.attacher.detach(target.host, res, host_ops.linked_elsewhere(host, target.path))
        # a persistent image this VM had (ln recorded it) is no longer this VM's: monitoring would
        # report its size for a VM that is gone (oned deletes instead of mvds on recover --delete
        # and after a failed prolog)
        rd = api.resource_definition(res)
        if rd is not None and disks.owned_by(rd.props, vm_id, disk_id):
            api.set_props(res, {}, delete=[k for k in disks.OWNER_PROPS if k in rd.props])
        # this VM's backup chain and VM snapshots on it
        vm_snapshots.disk_leaves_vm(api, res, vm_id, disks.owner_of(vm, disk_id))
        return
    rd = api.resource_definition(res)
    if rd is None:
        return                       # already gone (a retry)
    why_not = not_this_disks(rd.props, res, disks.owner_of(vm, disk_id), vm_id)
    if why_not:
        raise DriverError(why_not)
    snapshots.remove_volume(api, rd)
    image = disk.get("SOURCE")
    if image:                        # the base snapshot of CLONE_MODE=snapshot
        image_res = names.from_source(image)
        if any(s.name == res for s in api.snapshots(image_res)):
            api.delete_snapshot(image_res, res)


def not_this_disks(props: dict, res: str, owner: Owner, vm_id: int) -> Optional[str]:
    """Why the VM's own volume of a disk must not be deleted (None: it may): made for another
    incarnation of the VM or disk, or (unmarked, the bash driver's) recorded as another VM's."""
    if ownership.may_remove(props, owner) and props.get(disks.VM_ID) in (None, str(vm_id)):
        return None
    return (f"{res} was made for {props.get(ownership.MADE_FOR) or 'VM ' + props[disks.VM_ID]}, "
            f"not for {owner.describe()} ({owner.mark}): not deleting it")
