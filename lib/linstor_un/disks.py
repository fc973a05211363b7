"""Which LINSTOR resource backs a VM disk, and the Aux/one properties that tie them together."""
from __future__ import annotations

from . import names
from .one_api import DiskInfo, VmDoc

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
