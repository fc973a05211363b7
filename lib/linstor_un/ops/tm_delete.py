"""TM delete: a VM disk (its link, and its volume if it is the VM's own) or the VM directory
(with the VM's checkpoint volume and the memory volumes of its VM snapshots).

argv: <host>:<sys_path>/<vm>[/disk.<n>] <vm_id> <ds_id>
A shared image is detached from the host only when no other VM disk there uses it (BUG-15).
"""
from linstor_un import backup_chain, disks, host_ops, names, ownership, snapshots, vm_snapshots
from linstor_un.errors import DriverError
from linstor_un.one_input import VmDirArgs
from linstor_un.ownership import Owner


def main(act, args: VmDirArgs):
    target, vm_id = args.target, args.vm_id
    settings = act.settings(args.ds_id)
    api = act.linstor(settings)
    host = act.hosts[target.host]

    if target.disk_id is None:
        checkpoint = names.checkpoint(vm_id)
        rd = api.resource_definition(checkpoint)
        if rd is not None:
            owner = Owner.checkpoint(vm_id, act.one.vm(vm_id).text("STIME"))
            if not ownership.may_remove(rd.props, owner):
                raise DriverError(f"{checkpoint} was made for {rd.props[ownership.MADE_FOR]}, not this VM "
                                  f"({owner.mark}): not deleting it")
            api.delete_definition(checkpoint)
        # the memory of its VM snapshots
        vm_snapshots.forget_memory(api, vm_id, lambda: act.one.vm(vm_id).text("STIME"))
        host_ops.remove_dir(host, target.path)
        backup_chain.DigestStore.forget_vm(vm_id)         # the front-end's record of its backups
        return

    vm = act.one.vm(vm_id)
    res, disk = disks.resource_of(vm, target.disk_id)
    host_ops.unlink(host, target.path)
    if not disk.cloned:             # a shared image: detached unless another VM disk here uses it
        act.attacher(settings).detach(target.host, res, host_ops.linked_elsewhere(host, target.path))
        # a persistent image this VM had (ln recorded it) is no longer this VM's: monitoring would
        # report its size for a VM that is gone (oned deletes instead of mvds on recover --delete
        # and after a failed prolog)
        rd = api.resource_definition(res)
        if rd is not None and disks.owned_by(rd.props, vm_id, target.disk_id):
            api.set_props(res, {}, delete=[k for k in disks.OWNER_PROPS if k in rd.props])
        # this VM's backup chain and VM snapshots on it
        vm_snapshots.disk_leaves_vm(api, res, vm_id, disks.owner_of(vm, target.disk_id))
        return
    rd = api.resource_definition(res)
    if rd is None:
        return                       # already gone (a retry)
    owner = disks.owner_of(vm, target.disk_id)
    if not ownership.may_remove(rd.props, owner) or rd.props.get(disks.VM_ID) not in (None, str(vm_id)):
        raise DriverError(f"{res} was made for {rd.props.get(ownership.MADE_FOR) or 'VM ' + rd.props[disks.VM_ID]}, "
                          f"not for {owner.describe()} ({owner.mark}): not deleting it")
    snapshots.remove_volume(api, rd)
    image = disk.get("SOURCE")
    if image:                        # the base snapshot of CLONE_MODE=snapshot
        image_res = names.from_source(image)
        if any(s.name == res for s in api.snapshots(image_res)):
            api.delete_snapshot(image_res, res)
