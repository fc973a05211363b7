"""Which LINSTOR resource backs a VM disk, and the Aux/one properties that tie them together."""
from __future__ import annotations

from . import names
from .one_api import DiskInfo, VmDoc
from .ownership import Owner

VM_ID, DS_ID, DISK_ID = "Aux/one/VM_ID", "Aux/one/DS_ID", "Aux/one/DISK_ID"
OWNER_PROPS = [VM_ID, DS_ID, DISK_ID]


def resource_of(vm: VmDoc, disk_id: int) -> tuple[str, DiskInfo]:
    """A cloned or volatile disk has its own resource; a persistent/CDROM disk is the image's."""
    disk = vm.disk(disk_id)
    if disk.cloned:
        return names.vm_disk(vm.id, disk_id), disk
    return names.from_source(disk.get("SOURCE")), disk


def owner_props(vm_id: int, system_ds: int, disk_id: int) -> dict:
    return {VM_ID: str(vm_id), DS_ID: str(system_ds), DISK_ID: str(disk_id)}


def owned_by(props: dict, vm_id: int, disk_id: int) -> bool:
    return props.get(VM_ID) == str(vm_id) and props.get(DISK_ID) == str(disk_id)


def owner_of(vm: VmDoc, disk_id: int) -> Owner:
    """The VM disk as the owner of its own volume (this incarnation of the VM)."""
    return Owner.vm_disk(vm.id, vm.text("STIME"), disk_id)


def snapshot_owner(one, vm: VmDoc, disk_id: int) -> Owner:
    """Whose a disk's snapshots are: a VM's own disk's are that VM's; a persistent image's are the
    image's (they outlive the VM, and the next VM reverts to them)."""
    disk = vm.disk(disk_id)
    if disk.cloned or disk.image_id is None:
        return owner_of(vm, disk_id)
    return Owner.image(disk.image_id, one.image(disk.image_id).text("REGTIME"))
